"""Atomic file writes, for every writer of the package: readers see the old file or the whole
new one, never part of one, and a writer that fails leaves neither a temporary file nor a change."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "atomic_open",
    "atomic_path",
    "atomic_savefig",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_path",
]


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
    except BaseException:
        tmp.unlink(missing_ok=True)
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


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file or a folder (its entries: a rename) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
