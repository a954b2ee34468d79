"""Atomic file writes: readers see the old file or the whole new one, never part of one.

Every writer in the package goes through :func:`atomic_path`: the new content goes to a
temporary name in the destination's folder (a rename is atomic only within one file system),
which replaces the destination only once the writer returned; a writer that raises leaves the
destination as it was and no temporary file behind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to write; on a normal exit it is
    renamed to ``path``, on an exception it is removed and the exception goes on.

    The temporary name is ``<name>.<random>.tmp`` (unique, so two processes writing the same
    destination do not write into one file; ``*.tmp`` finds leftovers of a killed process), so
    writers that pick a format from the file name must be told the format. The result gets the
    permissions of a plain ``open()`` (0644 under the usual umask) even where the writer made
    its file 0600 (``safetensors`` writes through a private temporary file; issue 16).
    ``fsync`` flushes the file and then the folder to disk, for files that must survive a power
    loss (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer for {path} returned without writing {tmp}")
        os.chmod(tmp, 0o666 & ~_umask())
        if fsync:
            _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        if fsync:
            _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns the path."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_path`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def _umask() -> int:
    """The process umask, read without setting it (``os.umask`` can only swap it, which races
    with other threads creating files)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
