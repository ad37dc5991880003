"""Atomic file writes: the one place where core puts a finished file on disk.

Why one owner: checkpoints, training states, metrics, demo slides, annotations, the store's CSV
and every export used to hand-roll the same "write a temporary sibling, rename it into place"
dance, with three permission policies between them (mkstemp's private 0600, a fixed 0644, the
umask). Here it is done once, with one policy and one check:

- Permissions: those of any file the user creates, 0o666 with the umask applied. The temporary
  file is created with mode 0o666 and the kernel applies the umask (and a default ACL, if the
  folder has one), so the umask is never read or changed (``os.umask`` is process-wide: setting
  it to read it would race with other threads creating files).
- The destination must be a regular file, or not exist yet. A device (``/dev/null``,
  ``/dev/full``), a FIFO, a socket, a directory or a symbolic link is refused with
  :class:`~core.errors.FileWriteError`: renaming over ``/dev/full`` would turn the device into a
  plain file, and a symbolic link is not followed.
- A failure (an exception in the body, a full disk) leaves the destination as it was and no
  ``.NAME.XXXX.partial`` file behind.

Plain Python, no torch: ``core.model`` passes the open file to ``torch.save``.
"""

from __future__ import annotations

import io
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO

from core.errors import FileWriteError

__all__ = ["atomic_write", "atomic_write_bytes", "check_destination"]

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def check_destination(path: str | os.PathLike) -> None:
    """Raise FileWriteError unless ``path`` is missing or a regular file (a symbolic link is refused).

    Raises:
        FileWriteError: the path is a symbolic link, a directory, a device, a FIFO or a socket.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError:
        return  # e.g. a missing or unreadable parent folder: the write itself will say why
    if stat.S_ISREG(mode):
        return
    if stat.S_ISLNK(mode):
        raise FileWriteError(f"{os.fspath(path)} is a symbolic link; not followed, not replaced")
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise FileWriteError(f"{os.fspath(path)} is {kind}, not a regular file; not replaced")


def _create_partial(path: Path) -> tuple[BinaryIO, Path]:
    """Create and open ``.NAME.XXXX.partial`` next to ``path``; return (binary file, its path).

    ``open(..., "xb")`` creates the file with mode 0o666 and the kernel applies the umask,
    exactly as for any file the user creates; "x" never opens an existing file.
    """
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
        try:
            return open(tmp, "xb"), tmp  # closed by atomic_write
        except FileExistsError:
            continue  # another writer drew the same name: draw again


@contextmanager
def atomic_write(
    path: str | os.PathLike,
    mode: str = "wb",
    *,
    encoding: str | None = None,
    newline: str | None = None,
    parents: bool = True,
) -> Iterator[IO[Any]]:
    """Yield a file that replaces ``path`` atomically when the block ends without an exception.

    The data goes to ``.NAME.XXXX.partial`` in the same folder, is flushed and fsynced, then
    renamed over ``path``. On any exception the partial file is removed, ``path`` is left as it
    was, and the exception is re-raised.

    Args:
        mode: ``"wb"`` (bytes) or ``"w"`` (text, with ``encoding`` and ``newline`` as for ``open``).
        parents: create a missing parent folder (else the write fails with FileNotFoundError).

    Raises:
        FileWriteError: ``path`` exists and is not a regular file (see ``check_destination``).
        OSError: the file cannot be written; callers wrap it in their own error type.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes whole files: mode 'wb' or 'w', not {mode!r}")
    path = Path(path)
    check_destination(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    raw, tmp = _create_partial(path)
    try:
        try:
            handle = raw if mode == "wb" else io.TextIOWrapper(raw, encoding=encoding, newline=newline)
        except BaseException:
            raw.close()  # e.g. an unknown encoding
            raise
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        check_destination(path)  # again: it may have been swapped for something else meanwhile
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, parents: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see ``atomic_write``); return the path."""
    with atomic_write(path, "wb", parents=parents) as handle:
        handle.write(data)
    return Path(path)
