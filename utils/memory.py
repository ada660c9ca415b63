"""Handing freed heap memory back to the operating system between phases of a step, on a CPU."""
import ctypes


def _malloc_trim():
    """glibc's malloc_trim, or None (musl, macOS and Windows have no such call)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_free_heap(device):
    """On a CPU with glibc, return the heap's free pages to the OS (malloc_trim); elsewhere do nothing.

    glibc keeps blocks below its mmap threshold in the heap after they are freed, so a phase that freed many
    (the gradient cache's first pass and its full-batch loss) still counts in the RSS of the next one, whose
    peak then adds to it. Returns whether memory was released.
    """
    if device.type != "cpu" or _TRIM is None:
        return False
    return bool(_TRIM(0))
