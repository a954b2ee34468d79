"""Streaming readers: ``datasets`` IterableDataset access and the MAE pretraining stream.

``load_geo_dataset`` is the single entry point for a Hub repo id and a local folder
(``datasets.load_dataset(..., streaming=True)``). ``GeoPretrainStream`` builds on it: each
(rank, DataLoader worker) reads a disjoint part (whole shards when they divide evenly, else
every W-th row), produces whole batches, and orders, augments and drops samples as pure
functions of (seed, epoch, sample index), so a loader restored from ``state_dict()`` yields
exactly the batches an uninterrupted run would have yielded.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from .format import (
    BadInputError,
    GeoDatasetInfo,
    TooManyErrorsError,
    decode_batch,
    decode_valid_masks,
    read_dataset_info,
)

__all__ = ["GeoPretrainStream", "PretrainLoader", "load_geo_dataset", "make_pretrain_dataloader"]

logger = logging.getLogger(__name__)

_STATE_VERSION = 1
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


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


def _splitmix64(x: np.ndarray) -> np.ndarray:
    # Counter-based hash: augmentation draws are a pure function of their inputs, so a resumed
    # stream needs no RNG state (uint64 arithmetic wraps by design).
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return x ^ (x >> np.uint64(31))


def augmentation_params(seed: int, epoch: int, sample_index: np.ndarray, size: int,
                        crop: int) -> np.ndarray:  # fmt: skip
    """Per-sample (crop_y, crop_x, hflip, vflip, rot90_k) for ``sample_index`` (int array).

    A pure function of (seed, epoch, global sample index): same inputs, same augmentation.
    """
    idx = np.asarray(sample_index, dtype=np.uint64)
    base = _splitmix64(_splitmix64(np.full_like(idx, seed % 2**63)) ^ np.uint64(epoch % 2**63))
    base = _splitmix64(base ^ idx)
    span = np.uint64(size - crop + 1)
    out = np.empty((len(idx), 5), dtype=np.int64)
    for k, modulus in enumerate((span, span, np.uint64(2), np.uint64(2), np.uint64(4))):
        out[:, k] = (_splitmix64(base ^ np.uint64(k + 1)) % modulus).astype(np.int64)
    return out


class _Layout:
    """Which rows each reader (rank x worker) takes in an epoch; pure metadata, no I/O."""

    def __init__(self, counts: list[int], seed: int, world_size: int, num_workers: int,
                 batch_size: int, drop_last: bool):  # fmt: skip
        self.counts = [int(c) for c in counts]
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.total = int(self.offsets[-1])
        self.seed = seed
        self.num_readers = world_size * max(num_workers, 1)
        self.batch_size = batch_size
        self.drop_last = drop_last
        n_shards = len(self.counts)
        self.mode = "shard" if n_shards % self.num_readers == 0 else "row"
        if self.mode == "shard":
            # Readers get different shards, hence different counts: every reader stops at the
            # smallest so ranks stay in step (the excess is reported in ``stats``).
            per_reader = self._shard_counts_per_reader(0)
            self.samples_per_reader = min(per_reader)
        else:
            self.samples_per_reader = self.total // self.num_readers
        if self.samples_per_reader == 0:
            raise ValueError(
                f"{self.total} samples cannot feed {self.num_readers} readers "
                f"(world_size x num_workers); use fewer ranks/workers or more data"
            )
        if drop_last:
            self.batches_per_epoch = self.samples_per_reader // batch_size
        else:
            self.batches_per_epoch = math.ceil(self.samples_per_reader / batch_size)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"each of the {self.num_readers} readers gets {self.samples_per_reader} samples "
                f"per epoch, fewer than batch_size={batch_size}; lower batch_size or drop_last"
            )

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64([self.seed, *key]))

    def shard_order(self, epoch: int) -> np.ndarray:
        return self._rng(epoch, 0).permutation(len(self.counts))

    def row_order(self, epoch: int, shard: int) -> np.ndarray:
        return self._rng(epoch, 1, shard).permutation(self.counts[shard])

    def _shard_counts_per_reader(self, epoch: int) -> list[int]:
        order = self.shard_order(epoch)
        return [sum(self.counts[s] for s in order[g :: self.num_readers])
                for g in range(self.num_readers)]  # fmt: skip

    def dropped_per_epoch(self) -> dict[str, int]:
        """Samples per epoch not seen (all readers): to keep readers in step, and by drop_last."""
        if self.mode == "shard":
            balance = sum(c - self.samples_per_reader for c in self._shard_counts_per_reader(0))
        else:
            balance = self.total - self.samples_per_reader * self.num_readers
        last = (self.samples_per_reader % self.batch_size) if self.drop_last else 0
        return {"to_balance_readers": int(balance), "by_drop_last": int(last * self.num_readers)}

    def reader_positions(self, epoch: int, reader: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard, row) arrays of ``reader``'s samples in epoch order (length samples_per_reader)."""
        order = self.shard_order(epoch)
        if self.mode == "shard":
            mine = order[reader :: self.num_readers]
            shards = np.concatenate([np.full(self.counts[s], s) for s in mine])
            rows = np.concatenate([self.row_order(epoch, s) for s in mine])
        else:
            shards = np.concatenate([np.full(self.counts[s], s) for s in order])
            rows = np.concatenate([self.row_order(epoch, s) for s in order])
            shards, rows = shards[reader :: self.num_readers], rows[reader :: self.num_readers]
        n = self.samples_per_reader
        return shards[:n].astype(np.int64), rows[:n].astype(np.int64)


class GeoPretrainStream(torch.utils.data.IterableDataset):
    """Infinite stream of normalised, augmented float32 batches (B, C, crop, crop).

    Yields whole batches (use ``DataLoader(batch_size=None)``; :func:`make_pretrain_dataloader`
    does this). ``start_batch`` is the number of batches this rank already consumed; with
    ``num_workers`` > 0 DataLoader workers take batches round-robin, so worker ``w`` of a
    resumed loader plays logical worker ``(w + start_batch) % num_workers``.
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike,
        *,
        split: str = "train",
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        crop_size: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        augment: bool = True,
        revision: str | None = None,
        drop_last: bool = True,
        on_error: str = "raise",
        max_error_fraction: float = 0.05,
        return_chip_ids: bool = False,
        info: GeoDatasetInfo | None = None,
        cache_mb: float = 512.0,
        return_masks: bool = False,
    ):
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}); got {rank}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive; got {batch_size}")
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise'; got {on_error!r}")
        self.name_or_path = str(name_or_path)
        self.split = split
        self.revision = revision
        self.batch_size = batch_size
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.augment = augment
        self.drop_last = drop_last
        self.on_error = on_error
        self.max_error_fraction = max_error_fraction
        self.return_chip_ids = return_chip_ids
        self.return_masks = return_masks
        self.start_batch = 0
        self.cache_mb = cache_mb
        if info is None:
            try:
                info = read_dataset_info(name_or_path, revision=revision)
            except FileNotFoundError:
                if mean is None or std is None:
                    raise
                info = None
        self.info = info
        self.chip_size = info.chip_size if info else None
        if info is not None and split in info.shards:
            counts = [s["num_rows"] for s in info.shards[split]]
        else:
            if info is not None and split not in info.num_samples:
                raise ValueError(
                    f"split {split!r} not in {self.name_or_path}; it has {sorted(info.num_samples)}"
                )
            counts = self._count_rows()
        self.counts = counts
        self.mean = np.asarray(mean if mean is not None else info.mean, dtype=np.float32)
        self.std = np.asarray(std if std is not None else info.std, dtype=np.float32)
        if self.mean.shape != self.std.shape or (
            info is not None and len(self.mean) != len(info.band_names)
        ):
            raise ValueError(
                f"mean ({self.mean.shape}) and std ({self.std.shape}) must have one value per "
                f"band ({len(info.band_names) if info else '?'} bands)"
            )
        if (self.std <= 0).any():
            raise ValueError(f"std must be positive for every band; got {self.std.tolist()}")
        self.crop_size = crop_size or self.chip_size
        if self.chip_size is not None and self.crop_size > self.chip_size:
            raise ValueError(f"crop_size {self.crop_size} exceeds the chip size {self.chip_size}")
        self.layout = _Layout(counts, self.seed, world_size, num_workers, batch_size, drop_last)
        self._ds = None
        self._tables: OrderedDict[int, Any] = OrderedDict()
        self._arrays: dict[tuple[str, int], Any] = {}
        self._bad_shards: set[int] = set()
        self.stats: dict[str, Any] = {}

    # -- reading ---------------------------------------------------------------------------
    def _dataset(self):
        if self._ds is None:
            ds = load_geo_dataset(self.name_or_path, split=self.split, revision=self.revision)
            if ds.num_shards != len(self.counts):
                raise ValueError(
                    f"{self.name_or_path} split {self.split!r} streams as {ds.num_shards} shards "
                    f"but geofm_dataset.json lists {len(self.counts)}; the folder and its "
                    "metadata disagree (rewrite the dataset)"
                )
            self._ds = ds.with_format("arrow")
        return self._ds

    def _count_rows(self) -> list[int]:
        # Only for datasets without geofm_dataset.json: one pass over every shard.
        ds = load_geo_dataset(self.name_or_path, split=self.split, revision=self.revision)
        ds = ds.with_format("arrow")
        return [sum(t.num_rows for t in ds.shard(ds.num_shards, i).iter(batch_size=4096))
                for i in range(ds.num_shards)]  # fmt: skip

    def _table(self, shard: int):
        if shard in self._tables:
            self._tables.move_to_end(shard)
            return self._tables[shard]
        if shard in self._bad_shards:
            return None
        import pyarrow as pa

        ds = self._dataset()
        try:
            parts = list(ds.shard(num_shards=ds.num_shards, index=shard).iter(batch_size=4096))
            # One chunk per column, so decode_batch can view the image bytes without copying.
            table = pa.concat_tables(parts).combine_chunks() if parts else None
            if table is None or table.num_rows != self.counts[shard]:
                raise BadInputError(
                    "bad_shard",
                    f"expected {self.counts[shard]} rows, found "
                    f"{0 if table is None else table.num_rows}",
                )
        except Exception as err:
            message = f"shard {shard} of {self.name_or_path}:{self.split} is unreadable: {err}"
            if self.on_error == "raise":
                raise BadInputError("bad_shard", message) from err
            self._bad_shards.add(shard)
            self.stats["bad_shards"] = sorted(self._bad_shards)
            self.stats["rows_lost_to_bad_shards"] = sum(self.counts[s] for s in self._bad_shards)
            logger.warning("skipping %s", message)
            if len(self._bad_shards) > self.max_error_fraction * len(self.counts):
                raise TooManyErrorsError(
                    f"{len(self._bad_shards)} of {len(self.counts)} shards are unreadable "
                    f"({sorted(self._bad_shards)}); max_error_fraction={self.max_error_fraction}"
                ) from err
            return None
        self._tables[shard] = table
        # Keep decoded-from-Parquet shards up to cache_mb (at least the current one and the one
        # a batch may straddle): small datasets are then read once per worker, not per epoch.
        while (
            len(self._tables) > 2
            and sum(t.nbytes for t in self._tables.values()) > self.cache_mb * 1e6
        ):
            self._tables.popitem(last=False)
        return table

    def mark_bad_shards(self, problems: list[dict[str, Any]]) -> None:
        """Skip shards found bad before reading (``{"shard": i, "problem": ...}`` from the
        start-up check), counted like shards found bad while reading."""
        for p in problems:
            self._bad_shards.add(int(p["shard"]))
            logger.warning("skipping shard %s (%s): %s", p["shard"], p.get("file"), p["problem"])
        self.stats["bad_shards"] = sorted(self._bad_shards)
        self.stats["rows_lost_to_bad_shards"] = sum(self.counts[s] for s in self._bad_shards)
        if len(self._bad_shards) > self.max_error_fraction * len(self.counts):
            raise TooManyErrorsError(
                f"{len(self._bad_shards)} of {len(self.counts)} shards of {self.name_or_path}:"
                f"{self.split} are bad ({problems[0]['file']}: {problems[0]['problem']}; ...); "
                f"max_error_fraction={self.max_error_fraction}"
            )

    def _no_batch_error(self, epoch: int) -> TooManyErrorsError:
        return TooManyErrorsError(
            f"no batch can be produced from {self.name_or_path}:{self.split}: shards "
            f"{sorted(self._bad_shards)} of {len(self.counts)} are unreadable and this reader's "
            f"epochs up to {epoch} yielded nothing (max_error_fraction={self.max_error_fraction} "
            "let the run go on). Fix or rewrite the shards."
        )

    # -- batches ---------------------------------------------------------------------------
    def _shard_array(self, shard: int):
        """(N, C, H, W) view of a cached shard's images (zero-copy when rows are uniform)."""
        table = self._table(shard)
        if table is None:
            return None, None
        key = ("array", shard)
        cached = self._arrays.get(key)
        if cached is None or cached[0] is not table:
            try:
                arr = decode_batch(table, _view=True)
            except BadInputError as err:
                if err.reason != "not_viewable":
                    raise
                arr = None  # GeoTIFF bytes: decoded row by row in _make_batch
            cached = (table, arr)
            self._arrays = {k: v for k, v in self._arrays.items() if k[1] in self._tables}
            self._arrays[key] = cached
        return table, cached[1]

    def _make_batch(self, epoch: int, shards: np.ndarray, rows: np.ndarray):
        keep = np.ones(len(rows), dtype=bool)
        sources: list[tuple[Any, int] | None] = [None] * len(rows)
        masks: list[np.ndarray | None] = [None] * len(rows)
        chip_ids: list[str] = []
        for shard in np.unique(shards):
            sel = np.flatnonzero(shards == shard)
            table, arr = self._shard_array(int(shard))
            if table is None:
                keep[sel] = False
                continue
            if arr is None:  # GeoTIFF bytes or ragged rows: decode just these rows
                decoded = decode_batch(table, rows[sel])
                for j, i in enumerate(sel):
                    sources[i] = (decoded, j)
                height, width = decoded.shape[-2:]
            else:
                for i in sel:
                    sources[i] = (arr, int(rows[i]))
                height, width = arr.shape[-2:]
            valid = decode_valid_masks(table, rows[sel], height, width)
            if valid is not None:
                for j, i in enumerate(sel):
                    masks[i] = valid[j]
        if not keep.any():
            return None
        positions = np.flatnonzero(keep)
        if self.return_chip_ids:
            chip_ids = [
                self._table(int(shards[i])).column("chip_id")[int(rows[i])].as_py()
                for i in positions
            ]
        sample_index = self.layout.offsets[shards[positions]] + rows[positions]
        batch, valid = self._transform(
            [sources[i] for i in positions], epoch, sample_index, [masks[i] for i in positions]
        )
        if self.return_masks:
            out = {"pixel_values": batch, "pixel_mask": valid}
            if self.return_chip_ids:
                out["chip_ids"] = chip_ids
            return out
        if self.return_chip_ids:
            return batch, chip_ids
        return batch

    def _transform(self, sources, epoch: int, sample_index: np.ndarray, masks=None):
        """Crop/flip/rotate and normalise; returns (pixels, valid mask (B, crop, crop) bool).

        Invalid pixels (stored mask, NaN/inf) are set to 0 after normalisation (the band
        mean), never fed as raw fill values; the mask says which they are.
        """
        first, j = sources[0]
        _, c, h, w = first.shape
        if len(self.mean) != c:
            raise ValueError(f"images have {c} bands; mean/std have {len(self.mean)}")
        n = len(sources)
        crop = self.crop_size or h
        raw = np.empty((n, c, crop, crop), dtype=first.dtype)
        valid = np.ones((n, crop, crop), dtype=bool)
        if self.augment:
            params = augmentation_params(self.seed, epoch, sample_index, min(h, w), crop)
        else:
            params = np.zeros((n, 5), dtype=np.int64)
            params[:, 0], params[:, 1] = (h - crop) // 2, (w - crop) // 2
        for i, ((arr, j), (y, x, hflip, vflip, k)) in enumerate(zip(sources, params)):
            view = arr[j, :, y : y + crop, x : x + crop]
            if hflip:
                view = view[:, :, ::-1]
            if vflip:
                view = view[:, ::-1, :]
            if k:
                view = np.rot90(view, k, axes=(1, 2))
            # A per-sample transposed copy is slow; copy odd rotations untransposed and
            # transpose them together below (same pixels, several times faster).
            raw[i] = view.swapaxes(1, 2) if k % 2 else view
            if masks is not None and masks[i] is not None:
                mview = masks[i][y : y + crop, x : x + crop]
                if hflip:
                    mview = mview[:, ::-1]
                if vflip:
                    mview = mview[::-1, :]
                if k:
                    mview = np.rot90(mview, k)
                valid[i] = mview.T if k % 2 else mview
        odd = np.flatnonzero(params[:, 4] % 2 == 1)
        if len(odd):
            raw[odd] = raw[odd].swapaxes(2, 3)
            valid[odd] = valid[odd].swapaxes(1, 2)
        out = raw.astype(np.float32)
        out -= self.mean[None, :, None, None]
        out /= self.std[None, :, None, None]
        if np.issubdtype(raw.dtype, np.floating):
            valid &= np.isfinite(out).all(axis=1)
        if not valid.all():
            out *= valid[:, None]  # 0 = the band mean; NaN/inf never reach the model
            out[~np.isfinite(out)] = 0.0
        return torch.from_numpy(out), torch.from_numpy(valid)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        nw = max(self.num_workers, 1)
        if info is None:
            if self.num_workers > 0:
                raise RuntimeError(
                    f"stream built for num_workers={self.num_workers} but iterated in the main "
                    "process; pass the same num_workers to the DataLoader"
                )
            worker = 0
        else:
            if info.num_workers != nw:
                raise RuntimeError(
                    f"stream built for num_workers={self.num_workers}, DataLoader has "
                    f"{info.num_workers}; they must match for a deterministic order"
                )
            worker = info.id
        # After k batches the DataLoader restarts its round-robin at worker 0: worker w now
        # produces what logical worker (w + k) % nw would have produced next.
        k = self.start_batch
        logical = (worker + k) % nw
        skip = (k - logical + nw - 1) // nw if k > logical else 0
        reader = self.rank * nw + logical
        per_epoch = self.layout.batches_per_epoch
        epoch, batch_in_epoch = divmod(skip, per_epoch)
        self.stats.update(self.describe())
        empty_epochs = 0
        while True:
            shards, rows = self.layout.reader_positions(epoch, reader)
            self.stats["epoch"] = epoch
            whole_epoch, produced = batch_in_epoch == 0, 0
            for b in range(batch_in_epoch, per_epoch):
                sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
                batch = self._make_batch(epoch, shards[sl], rows[sl])
                if batch is None:
                    self.stats["batches_lost_to_bad_shards"] = (
                        self.stats.get("batches_lost_to_bad_shards", 0) + 1
                    )
                    if len(self._bad_shards) == len(self.counts):
                        raise self._no_batch_error(epoch)
                    continue
                produced += 1
                yield batch
            # All shards bad is caught above; with a few good ones left, one reader may draw
            # none of them for an epoch by chance, but not ten epochs running.
            empty_epochs = empty_epochs + 1 if whole_epoch and not produced else 0
            if empty_epochs >= 10:
                raise self._no_batch_error(epoch)
            batch_in_epoch = 0
            epoch += 1

    def describe(self) -> dict[str, Any]:
        """Static accounting of this rank's stream: layout, and samples dropped per epoch."""
        return {
            "mode": self.layout.mode,
            "readers": self.layout.num_readers,
            "num_samples": self.layout.total,
            "samples_per_reader_per_epoch": self.layout.samples_per_reader,
            "batches_per_epoch_per_rank": self.layout.batches_per_epoch * max(self.num_workers, 1),
            "dropped_per_epoch": self.layout.dropped_per_epoch(),
        }


class PretrainLoader:
    """Iterable of float32 batches with exact resume: ``state_dict()`` / ``load_state_dict()``.

    Wraps ``torch.utils.data.DataLoader(stream, batch_size=None)``. Infinite: iterate it for
    as many steps as the trainer needs. ``stats`` reports the layout and every dropped sample.
    """

    def __init__(self, stream: GeoPretrainStream, *, num_workers: int = 0,
                 pin_memory: bool = False, prefetch_factor: int | None = 2):  # fmt: skip
        self.stream = stream
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor if num_workers > 0 else None
        self._consumed = 0
        self.stats = stream.describe()
        dropped = self.stats["dropped_per_epoch"]
        if any(dropped.values()):
            logger.info(
                "pretrain stream %s:%s: %d samples per epoch dropped across all ranks "
                "(%d to keep readers in step, %d by drop_last)", stream.name_or_path,
                stream.split, sum(dropped.values()), dropped["to_balance_readers"],
                dropped["by_drop_last"],
            )  # fmt: skip

    @property
    def batches_per_epoch(self) -> int:
        """Batches this rank yields per epoch."""
        return self.stats["batches_per_epoch_per_rank"]

    def __iter__(self):
        self.stream.start_batch = self._consumed
        if self.num_workers == 0:
            iterator = iter(self.stream)
        else:
            loader = torch.utils.data.DataLoader(
                self.stream, batch_size=None, num_workers=self.num_workers,
                pin_memory=self.pin_memory, prefetch_factor=self.prefetch_factor,
                persistent_workers=False,
            )  # fmt: skip
            iterator = iter(loader)
        for batch in iterator:
            self._consumed += 1
            self.stats.update(self.stream.stats)  # bad shards met in this process, live
            self.stats["batches_consumed"] = self._consumed
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """JSON-able position of the stream (batches consumed + what fixes the order)."""
        s = self.stream
        return {
            "version": _STATE_VERSION,
            "batches_consumed": self._consumed,
            "seed": s.seed,
            "split": s.split,
            "rank": s.rank,
            "world_size": s.world_size,
            "num_workers": s.num_workers,
            "batch_size": s.batch_size,
            "drop_last": s.drop_last,
            "shard_rows": list(s.counts),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``; the loader must be built with the same order-defining settings."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported stream state version {state.get('version')!r}")
        mine = self.state_dict()
        keys = ("seed", "split", "world_size", "num_workers", "batch_size", "drop_last",
                "shard_rows")  # fmt: skip
        diff = {k: (state.get(k), mine[k]) for k in keys if state.get(k) != mine[k]}
        if diff:
            raise ValueError(
                "cannot resume: the saved stream state differs from this loader in "
                + ", ".join(f"{k} (saved {a!r}, now {b!r})" for k, (a, b) in diff.items())
                + "; rebuild the loader with the saved settings"
            )
        self._consumed = int(state["batches_consumed"])


def make_pretrain_dataloader(
    name_or_path: str | os.PathLike,
    *,
    split: str = "train",
    batch_size: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    crop_size: int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    augment: bool = True,
    revision: str | None = None,
    drop_last: bool = True,
    on_error: str = "raise",
    max_error_fraction: float = 0.05,
    return_chip_ids: bool = False,
    pin_memory: bool = False,
    return_masks: bool = False,
    check_shards: bool = True,
) -> PretrainLoader:
    """Build the MAE pretraining loader for a Hub repo id or local folder.

    Yields float32 tensors (B, C, crop, crop) normalised as ``(x - mean) / std`` per band
    (mean/std default to ``geofm_dataset.json``) and, with ``augment``, randomly cropped,
    flipped and rotated by multiples of 90 degrees as a function of (seed, epoch, sample).
    ``return_chip_ids=True`` yields ``(tensor, chip_ids)`` (for tests/debugging).
    ``return_masks=True`` yields ``{"pixel_values", "pixel_mask"}`` dicts: ``pixel_mask``
    ``(B, crop, crop)`` bool, True where the pixel is valid (stored ``valid_mask``: nodata,
    fill, cloud/QA; and NaN/inf), augmented with the pixels; pass it to the model so the
    loss ignores invalid pixels. Invalid pixels are 0 (the band mean) in ``pixel_values``.
    ``check_shards`` reads every shard's footer first (split across ranks; collective when
    ``world_size`` > 1): a bad shard is an error at once, or skipped and counted under
    ``on_error="skip"``.
    """
    stream = GeoPretrainStream(
        name_or_path, split=split, batch_size=batch_size, seed=seed, rank=rank,
        world_size=world_size, num_workers=num_workers, crop_size=crop_size, mean=mean, std=std,
        augment=augment, revision=revision, drop_last=drop_last, on_error=on_error,
        max_error_fraction=max_error_fraction, return_chip_ids=return_chip_ids,
        return_masks=return_masks,
    )  # fmt: skip
    if check_shards and stream.info is not None:
        from .verify import check_shard_footers_on_all_ranks

        problems = check_shard_footers_on_all_ranks(
            name_or_path, stream.info, split, revision=revision, rank=rank, world_size=world_size
        )
        missing = [p for p in problems if p["problem"] == "is missing"]
        if missing:  # shards are addressed by position in the folder: a gap shifts them all
            raise BadInputError(
                "missing_shard",
                f"{len(missing)} shard file(s) of {name_or_path}:{split} listed in "
                f"geofm_dataset.json are missing ({', '.join(p['file'] for p in missing[:5])}); "
                "a missing file cannot be skipped. Restore it or rewrite the dataset.",
            )
        if problems and on_error == "raise":
            listed = "; ".join(
                f"shard {p['shard']} ({p['file']}) {p['problem']}" for p in problems[:5]
            )
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise BadInputError(
                "bad_shard",
                f"{len(problems)} of {len(stream.counts)} shards of {name_or_path}:{split} are "
                f"bad: {listed}{more}. Rewrite them, or pass on_error='skip' to train on the rest.",
            )
        if problems:
            stream.mark_bad_shards(problems)
    loader = PretrainLoader(stream, num_workers=num_workers, pin_memory=pin_memory)
    loader.stats.update(stream.stats)
    return loader
