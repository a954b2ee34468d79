"""Hub and local file access for the readers: the ``datasets`` streaming entry point, the pinned
commit a run reads, byte-counted reads, and which failures are worth a retry."""

from __future__ import annotations

import io
import os
import re
import time
from dataclasses import dataclass

from .format import GeoDatasetInfo, dataset_location

__all__ = ["DatasetSource", "HubRangeFile", "load_geo_dataset", "open_shard"]


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


@dataclass(frozen=True)
class DatasetSource:
    """What a reader needs before its first byte of pixels, resolved once for a whole job: the
    commit every rank reads (None for a local folder), the dataset's ``geofm_dataset.json``,
    the shard files in order and their row counts. Rank 0 resolves it
    (:func:`geofm_hf.data.resolve_source`) and hands it to every rank, so a job makes the same
    Hub requests at 8 ranks as at 8,192, and no rank can land on another commit."""

    commit: str | None
    info: GeoDatasetInfo | None
    files: tuple[str, ...]
    counts: tuple[int, ...]


def _hub_commit(repo_id: str, revision: str | None, tries: int = 5) -> str:
    """The commit ``revision`` points at now; a rate limit (429) or a server error is retried
    with backoff (1, 2, 4, 8 s) before it fails the run."""
    from huggingface_hub import HfApi

    for attempt in range(tries):
        try:
            return HfApi().dataset_info(repo_id, revision=revision).sha
        except Exception as err:
            if attempt == tries - 1 or not _is_transient(err):
                raise
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


_HF_PATH = re.compile(r"^hf://datasets/(?P<repo>[^@]+)@(?P<commit>[0-9a-f]{40})/(?P<file>.+)$")


class HubRangeFile(io.RawIOBase):
    """A read-only file of a dataset repo at a fixed commit, read by exact HTTP range requests.

    No API call: the URL is built from (repo, commit, file), and the size comes from one
    ``HEAD`` of the file itself when first needed. ``HfFileSystem`` instead asks the API for
    the revision and lists the folder on every process that opens a file, requests that grow
    with the ranks of a job."""

    def __init__(self, repo_id: str, filename: str, commit: str) -> None:
        from huggingface_hub import hf_hub_url

        super().__init__()
        self.url = hf_hub_url(repo_id, filename, repo_type="dataset", revision=commit)
        self.name = f"{repo_id}@{commit}/{filename}"
        self._pos = 0
        self._size: int | None = None

    @classmethod
    def from_hf_path(cls, path: str) -> HubRangeFile | None:
        """For an ``hf://datasets/REPO@COMMIT/FILE`` path pinned to a full commit, else None."""
        match = _HF_PATH.match(path)
        return None if match is None else cls(match["repo"], match["file"], match["commit"])

    @property
    def size(self) -> int:
        if self._size is None:
            from huggingface_hub import get_hf_file_metadata
            from huggingface_hub.errors import EntryNotFoundError

            try:
                # Retried on 5xx/429 with backoff, as the range reads below are.
                self._size = int(get_hf_file_metadata(self.url, retry_on_errors=True).size)
            except EntryNotFoundError as err:
                raise FileNotFoundError(f"{self.name} is not in the repository") from err
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self._pos + n)
        if end <= self._pos:
            return b""
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_backoff

        headers = {**build_hf_headers(), "Range": f"bytes={self._pos}-{end - 1}"}
        # Server errors, rate limits and dropped connections are retried with backoff (1-8 s);
        # what still fails reaches the stream, which stops the run rather than skip good data.
        response = http_backoff("GET", self.url, headers=headers, follow_redirects=True)
        hf_raise_for_status(response)
        data = response.content
        self._pos += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def open_shard(path: str):
    """A shard for reading: a local file, a pinned Hub file (:class:`HubRangeFile`), or any
    other ``hf://`` path through ``HfFileSystem`` (unpinned; no read-ahead)."""
    if not path.startswith("hf://"):
        return open(path, "rb")
    pinned = HubRangeFile.from_hf_path(path)
    if pinned is not None:
        return pinned
    from huggingface_hub import HfFileSystem

    # Every read is one exact range request, and pyarrow coalesces the column chunks of the row
    # groups asked for into as few reads as it can.
    return HfFileSystem().open(path, "rb", cache_type="none")


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
