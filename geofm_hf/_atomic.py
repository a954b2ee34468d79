"""Atomic file writes, for every writer of the package: readers see the old file or the whole
new one, never part of one, and a writer that fails leaves neither a temporary file nor a change."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ._errors import DiskFullError

__all__ = [
    "atomic_open",
    "atomic_path",
    "atomic_savefig",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_free_space",
    "disk_full_as",
    "free_bytes",
    "fsync_path",
    "is_disk_full",
]

# Below this much free space a failed write is taken for a full disk even when the library that
# wrote says only "write failed" (torch's zip writer): a write fails there for want of room.
_NEARLY_FULL = 1 << 20


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same folder: a rename is atomic only within one
    file system) for the caller to write; on a normal exit it replaces ``path``, on an exception
    it is removed and the exception goes on.

    The file, ``<name>.<random>.tmp``, is created empty here, unique (two processes writing one
    destination do not share a file; ``*.tmp`` finds what a killed process left), so writers
    that take the format from the file name must be told it. The result keeps the mode of a
    plain ``open()`` (0644 under the usual umask) even where the writer replaced the file by a
    0600 one (``safetensors`` does; issue 16). ``fsync`` flushes the file, then the folder, to
    disk (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
    mode = stat.S_IMODE(tmp.stat().st_mode)
    try:
        yield tmp
        os.chmod(tmp, mode)
        if fsync:
            fsync_path(tmp)
        os.replace(tmp, path)
        if fsync:
            fsync_path(path.parent)
    except BaseException as err:
        full = isinstance(err, Exception) and is_disk_full(err, path.parent)
        tmp.unlink(missing_ok=True)
        if full and not isinstance(err, DiskFullError):
            raise DiskFullError(path) from err
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[BinaryIO]:
    """A binary file object to stream into, for ``path``: it writes a temporary file beside it
    (see :func:`atomic_path`), which replaces ``path`` only once the block has ended normally
    and the file is closed (and, with ``fsync``, on disk). On an exception the temporary file
    is removed and ``path`` is left as it was."""
    with atomic_path(path, fsync=fsync) as tmp, open(tmp, "wb") as handle:
        yield handle


def atomic_savefig(fig, path: str | os.PathLike, format: str | None = None) -> Path:
    """Save the matplotlib figure ``fig`` to ``path`` atomically, then close it (also on error).
    ``format`` defaults to the suffix of ``path`` (PNG without one); returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=format or path.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns the path."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_path`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes (for this user) on the file system that holds ``path`` or would hold it."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_free_space(path: str | os.PathLike, need_bytes: int) -> None:
    """Refuse, before anything is written, a write of ``need_bytes`` to ``path`` that cannot
    fit: a :class:`DiskFullError` saying how much more room it needs."""
    free = free_bytes(path)
    if need_bytes > free:
        raise DiskFullError(path, need_bytes - free)


def is_disk_full(err: BaseException, path: str | os.PathLike | None = None) -> bool:
    """Whether ``err`` (or an error it came from) is a full disk, however the library that wrote
    reports it: ``ENOSPC`` (Python, Arrow), the words (GDAL, safetensors), or, given the
    ``path`` written, a failed write where (almost) no space is left."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if getattr(cause, "errno", None) == errno.ENOSPC or "No space left" in str(cause):
            return True
        cause = cause.__cause__ or cause.__context__
    if path is None:
        return False
    try:
        return free_bytes(path) < _NEARLY_FULL
    except OSError:
        return False


@contextlib.contextmanager
def disk_full_as(path: str | os.PathLike, need_bytes=None, **kwargs) -> Iterator[None]:
    """Report a full disk met in the block as one :class:`DiskFullError` naming ``path`` (the
    folder the user chose, rather than the temporary file that failed). ``need_bytes``: a
    number, or a function called after the failure (the caller's clean-up has freed its
    partial files by then); other arguments as :class:`DiskFullError` takes them."""
    try:
        yield
    except Exception as err:
        if not is_disk_full(err, path):
            raise
        need = need_bytes() if callable(need_bytes) else need_bytes
        if need is None and isinstance(err, DiskFullError):  # refused up front, need known
            need, kwargs = err.need_bytes, {"at_least": err.at_least, **kwargs}
        raise DiskFullError(path, need, **kwargs) from err


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file or a folder (its entries: a rename) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
