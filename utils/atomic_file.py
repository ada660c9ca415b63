"""Atomic file writes: write a temporary file in the target folder, fsync, then rename over the target.

A crash or kill mid-write leaves the previous file intact (rename is atomic on POSIX filesystems).
"""
import json
import os
import tempfile


def atomic_write(path, write, binary=True):
    """Call ``write(stream)`` on a temporary file, then atomically move it to ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(handle, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _umask():
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_json(data, path):
    atomic_write(path, lambda stream: json.dump(data, stream, indent=2), binary=False)
