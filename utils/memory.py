"""Handing freed heap memory back to the operating system between phases of a step, on a CPU."""
import ctypes
import ctypes.util

_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None
_TRIM = getattr(_LIBC, "malloc_trim", None)  # glibc only; musl and macOS have no such call


def release_free_heap(device):
    """On a CPU with glibc, return the heap's free pages to the OS (malloc_trim); elsewhere do nothing.

    glibc keeps blocks below its mmap threshold in the heap after they are freed, so a phase that freed many
    (the gradient cache's first pass and its full-batch loss) still counts in the RSS of the next one, whose
    peak then adds to it. Returns whether memory was released.
    """
    if device.type != "cpu" or _TRIM is None:
        return False
    return bool(_TRIM(0))
