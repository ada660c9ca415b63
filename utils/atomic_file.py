"""Atomic file writes: write a temporary file in the target folder, fsync, rename over the target, fsync the
folder.

A crash or kill mid-write leaves the previous file intact (rename is atomic on POSIX filesystems).
"""
import json
import os
import tempfile

from utils.errors import UserError

# Read once at import: os.umask can only be read by setting it, which is not thread-safe later on.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


TEMPORARY_PREFIX = ".tmp-"  # every temporary file of this writer; a killed write leaves one behind


def atomic_write(path, write, binary=True):
    """Call ``write(stream)`` on a temporary file, then atomically move it to ``path``.

    An OSError (unwritable folder, full disk, path is a directory) becomes a UserError naming ``path``.
    """
    def fill(handle, temporary):
        # text: newline="" leaves line ends to the writer (csv writes its own)
        text_options = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(handle, "wb" if binary else "w", **text_options) as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())

    _write_and_rename(path, fill)


def atomic_write_to_path(path, write):
    """``atomic_write`` for a library that writes only to a file name (``faiss.write_index``): call
    ``write(temporary_path)``, fsync that file, then atomically move it to ``path``."""
    def fill(handle, temporary):
        os.close(handle)
        write(temporary)
        handle = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)

    _write_and_rename(path, fill)


def remove_temporaries(directory):
    """Remove what killed atomic writes left in ``directory`` (a sweep before a folder is written again)."""
    for name in os.listdir(directory):
        if name.startswith(TEMPORARY_PREFIX):
            os.remove(os.path.join(directory, name))


def _write_and_rename(path, fill):
    """``fill(handle, temporary)`` writes and fsyncs a temporary file beside ``path``; it then replaces ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    temporary = None
    try:
        os.makedirs(directory, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=TEMPORARY_PREFIX,
                                             suffix=os.path.splitext(path)[1])
        fill(handle, temporary)
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(temporary, path)
        temporary = None
        _fsync_directory(directory)
    except BaseException as error:
        if temporary and os.path.exists(temporary):
            os.remove(temporary)
        if isinstance(error, OSError):
            raise UserError(f"cannot write '{path}': {error.strerror or error}") from None
        raise


def _fsync_directory(directory):
    """Make the rename itself durable: without this a power loss can bring back the old directory entry."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some filesystems and platforms cannot open a directory; the rename is still atomic
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def atomic_write_json(path, data):
    """Write ``data`` as indented JSON to ``path``, atomically."""
    atomic_write(path, lambda stream: json.dump(data, stream, indent=2), binary=False)


def check_writable(path):
    """Fail before long work (a training run), not after it, when ``path`` cannot be written."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    try:
        os.makedirs(directory, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-")
        probe.close()
    except OSError as error:
        raise UserError(f"cannot write '{path}': {error.strerror or error}") from None
    if os.path.isdir(path):
        raise UserError(f"cannot write '{path}': it is a directory")
