"""Hub and local file access for the readers: the ``datasets`` streaming entry point, the pinned
commit a run reads, byte-counted reads, and which failures are worth a retry."""

from __future__ import annotations

import os

from .format import dataset_location

__all__ = ["load_geo_dataset"]


def load_geo_dataset(name_or_path: str | os.PathLike, split: str = "train",
                     revision: str | None = None):  # fmt: skip
    """Stream a geofm dataset (Hub dataset repo id or local folder) as a ``datasets``
    ``IterableDataset``.

    One code path for both: ``datasets.load_dataset(name_or_path, split=split,
    revision=revision, streaming=True)``. Rows keep ``image`` as bytes (no int64 blow-up);
    decode a row with :func:`geofm_hf.data.decode_image` or an Arrow batch
    (``ds.with_format("arrow").iter(batch_size=n)``) with :func:`geofm_hf.data.decode_batch`.
    """
    import datasets
    import pyarrow.dataset as pds

    dataset_location(name_or_path)  # a mistyped path fails here, before any network call
    # Verify each page's CRC32 (written by geofm-make-shards): a flipped byte is an error,
    # not altered pixels. Pages written without a checksum are read as before.
    scan = pds.ParquetFragmentScanOptions(page_checksum_verification=True)
    try:
        return datasets.load_dataset(
            str(name_or_path), split=split, revision=revision, streaming=True,
            fragment_scan_options=scan,
        )  # fmt: skip
    except ValueError as err:
        if "Unknown split" in str(err) or "split" in str(err).lower():
            raise ValueError(f"{name_or_path}: cannot stream split {split!r}: {err}") from err
        raise


def _hub_commit(repo_id: str, revision: str | None) -> str:
    from huggingface_hub import HfApi

    return HfApi().dataset_info(repo_id, revision=revision).sha


def _file_size(fh) -> int:
    size = getattr(fh, "size", None)
    return int(size) if size is not None else os.fstat(fh.fileno()).st_size


class _CountingFile:
    """Read-only file wrapper that reports the bytes read (so ``stats`` shows the I/O)."""

    def __init__(self, fh, size: int, count):
        self._fh, self._size, self._count = fh, size, count
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._count(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def size(self) -> int:
        return self._size

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def _is_transient(err: BaseException) -> bool:
    """A server or network failure (5xx, 429, timeouts, dropped connections), not bad data."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        response = getattr(err, "response", None)
        status = getattr(response, "status_code", None)
        if status is not None and (status >= 500 or status == 429):
            return True
        if isinstance(err, (ConnectionError, TimeoutError)):
            return True
        if type(err).__module__.split(".")[0].startswith("httpx") and not status:
            return True  # the HTTP client's transport errors (connect, read, protocol)
        err = err.__cause__ or err.__context__
    return False
