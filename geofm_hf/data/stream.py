"""Streaming readers: ``datasets`` IterableDataset access and the MAE pretraining stream.

``load_geo_dataset`` (:mod:`~geofm_hf.data.hub_access`) is the single entry point for a Hub repo
id and a local folder (``datasets.load_dataset(..., streaming=True)``). ``GeoPretrainStream`` reads
the same files for pretraining: each (rank, DataLoader worker) takes a contiguous stretch of the epoch's shuffled
shard sequence (see :mod:`~geofm_hf.data.layout`), opens only the shards under it, reads only their
Parquet row groups under it (exact HTTP range requests through ``huggingface_hub.HfFileSystem``, the
filesystem ``datasets`` streams with, at one pinned commit), produces whole batches, and orders,
augments and drops samples as pure functions of (seed, epoch, sample index), so a loader
restored from ``state_dict()`` yields exactly the batches an uninterrupted run would have yielded.

Why the split is ours rather than ``datasets.distributed.split_dataset_by_node`` or torchdata's
``StatefulDataLoader`` (checked against ``datasets`` 5.2's source): for a streamed dataset,
``split_dataset_by_node`` either gives each node whole shards (``"shards"``, and ``"auto"`` when the
shard count is a multiple of ``world_size``), round-robin, so node counts differ by up to a shard
(ranks fall out of step), and ``"shards"`` refuses fewer shards than nodes; or (``"auto"``
otherwise, ``"examples"``) every node reads every shard and keeps one example in ``world_size``,
which multiplies the I/O by the rank count. ``_Layout`` instead gives each (rank, worker) reader one
contiguous stretch of the epoch's shuffled shard sequence, cut inside shards: every reader gets the
same count every epoch, opens at most ``ceil(shards / readers) + 1`` shards (for shards as
geofm-make-shards writes them) and reads only the Parquet row groups under its stretch.
``StatefulDataLoader`` only saves what the dataset's own ``state_dict()`` holds (a streamed
``IterableDataset``: shard and row offset, with its shuffle buffer not restored) or else replays and
discards the samples already seen. Here the position is one integer (batches consumed) and every
batch is a pure function of (seed, epoch, reader), so resume is exact, independent of worker timing,
and re-reads only the shard pieces it was in the middle of. The samples every reader consumed are
therefore computable too: a run resumed at another world size (or worker count, or batch size)
deals the rest of the saved epoch over its own readers (``layout._Remainder``), and no sample of
the epoch is read twice or skipped but for a counted tail.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from .device_transforms import crop_uint16
from .format import (
    METADATA_COLUMNS,
    BadInputError,
    GeoDatasetInfo,
    TooManyErrorsError,
    chip_metadata,
    dataset_location,
    decode_batch,
    decode_valid_masks,
    read_dataset_info,
    read_parquet_footer,
)
from .hub_access import (
    DatasetSource,
    _CountingFile,
    _file_size,
    _hub_commit,
    _is_transient,
    open_shard,
)
from .layout import _Layout, augmentation_params, epoch_of

__all__ = ["GeoPretrainStream"]

logger = logging.getLogger(__name__)

try:
    from huggingface_hub.errors import EntryNotFoundError
except ImportError:  # pragma: no cover - older huggingface_hub
    from huggingface_hub.utils import EntryNotFoundError


class GeoPretrainStream(torch.utils.data.IterableDataset):
    """Infinite stream of normalised, augmented float32 batches (B, C, crop, crop).

    Yields whole batches (use ``DataLoader(batch_size=None)``;
    :func:`~geofm_hf.data.loader.make_pretrain_dataloader` does this). ``start_batch`` is the number of batches this rank already consumed; with
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
        device_transforms: bool = False,
        return_masks: bool = False,
        num_frames: int | None = None,
        return_metadata: bool = False,
        source: DatasetSource | None = None,
    ):
        super().__init__()
        # Yield device_transforms.RawBatch (uint16 crops + flips) for the device to finish.
        self.device_transforms = device_transforms
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
        self.return_metadata = return_metadata
        self.start_batch = 0
        # Where start_batch counts from: the start of epoch ``start_epoch``, or with ``remainder``
        # (a :class:`~geofm_hf.data.layout._Remainder`, set by a resume at another world size)
        # the start of that epoch's rest, re-split over this run's readers.
        self.start_epoch = 0
        self.remainder = None
        self.cache_mb = cache_mb
        self.stats: dict[str, Any] = {}
        self._meta: dict[int, Any] = {}
        self._groups: OrderedDict[tuple[int, int], Any] = OrderedDict()
        self._bad_shards: set[int] = set()
        # Set by PretrainLoader when DataLoader workers read: their counts reach the main
        # process through this shared array (one flag per shard, then the batches lost).
        self._shared_counts = None
        if source is None:
            source = self._resolve(name_or_path, revision, info, mean, std)
        else:  # resolved once for the job (rank 0): no Hub request here
            self._check_split(source.info)
        # One commit for the metadata and every shard, on every rank.
        self._commit = source.commit
        info = source.info
        self.info = info
        self.chip_size = info.chip_size if info else None
        self._files = list(source.files)
        self.counts = list(source.counts)
        self.source = source
        self.mean = np.asarray(mean if mean is not None else info.mean, dtype=np.float32)
        self.std = np.asarray(std if std is not None else info.std, dtype=np.float32)
        if self.mean.shape != self.std.shape or (
            info is not None and len(self.mean) != len(info.band_names)
        ):
            raise ValueError(
                f"mean ({self.mean.shape}) and std ({self.std.shape}) must have one value per "
                f"band ({len(info.band_names) if info else '?'} bands)"
            )
        if not (self.std > 0).all():  # NaN fails too
            if std is None:  # the dataset's own statistics
                bad = [info.band_names[i] for i in np.flatnonzero(~(self.std > 0))]
                raise BadInputError(
                    "bad_dataset_info",
                    f"{self.name_or_path}/geofm_dataset.json: std is not positive for band(s) "
                    f"{bad} ({self.std.tolist()}), so they cannot be normalised; rewrite the "
                    "dataset, or pass mean/std explicitly",
                )
            raise ValueError(f"std must be positive for every band; got {self.std.tolist()}")
        self.crop_size = crop_size or self.chip_size
        stored = info.num_frames if info is not None else 1
        if num_frames is not None and not 1 <= num_frames <= stored:
            raise ValueError(
                f"num_frames={num_frames} but the chips of {self.name_or_path} hold {stored} "
                f"frame(s) each; pick at most {stored}, or write the dataset with more frames "
                "per chip (geofm-make-shards --num-frames)"
            )
        # Frames fed per chip: the clearest num_frames of the stored ones, in date order.
        self.num_frames = num_frames or stored
        if self.chip_size is not None and self.crop_size > self.chip_size:
            raise ValueError(f"crop_size {self.crop_size} exceeds the chip size {self.chip_size}")
        self.layout = _Layout(
            self.counts, self.seed, world_size, num_workers, batch_size, drop_last
        )

    def __getstate__(self):
        # DataLoader workers start with empty caches: each reads only its own row groups.
        state = dict(self.__dict__)
        state["_meta"], state["_groups"] = {}, OrderedDict()
        return state

    def _check_split(self, info) -> None:
        if info is not None and self.split not in info.num_samples:
            raise ValueError(
                f"split {self.split!r} not in {self.name_or_path}; it has {sorted(info.num_samples)}"
            )

    def _resolve(self, name_or_path, revision, info, mean, std) -> DatasetSource:
        """The commit, ``geofm_dataset.json``, shard files and row counts (Hub requests)."""
        local = dataset_location(name_or_path) == "local"
        self._commit = None if local else _hub_commit(self.name_or_path, revision)
        if info is None:
            try:
                info = read_dataset_info(name_or_path, revision=self._commit)
            except (FileNotFoundError, EntryNotFoundError):
                if mean is None or std is None:
                    raise
                info = None
        self.info = info
        self._check_split(info)
        self._files = self._data_files()
        self.counts = None
        if info is not None and self.split in info.shards:
            counts = [int(s["num_rows"]) for s in info.shards[self.split]]
        else:  # no geofm_dataset.json: each shard's footer says how many rows it holds
            counts = []
            for i, path in enumerate(self._files):
                try:
                    counts.append(self._footer(i)[0].num_rows)
                except Exception as err:
                    raise BadInputError(
                        "bad_shard", f"{path}: cannot read its Parquet footer: {err}"
                    ) from err
        return DatasetSource(self._commit, info, tuple(self._files), tuple(counts))

    # -- reading ---------------------------------------------------------------------------
    def _columns(self, schema_names: list[str]) -> list[str]:
        wanted = ["image", "shape", "dtype", "valid_mask"]
        wanted += ["chip_id"] if self.return_chip_ids else []
        wanted += [c for c in METADATA_COLUMNS if c not in wanted] if self.return_metadata else []
        return [c for c in wanted if c in schema_names]

    def _open(self, shard: int):
        return open_shard(self._files[shard])

    def _footer(self, shard: int):
        """(Parquet metadata, first row of each row group + total) of one shard, read once."""
        if shard not in self._meta:
            with self._open(shard) as fh:
                meta = read_parquet_footer(fh, _file_size(fh), self._count_read)
            starts = np.zeros(meta.num_row_groups + 1, dtype=np.int64)
            for g in range(meta.num_row_groups):
                starts[g + 1] = starts[g] + meta.row_group(g).num_rows
            if self.counts is not None and meta.num_rows != self.counts[shard]:
                raise BadInputError(
                    "bad_shard", f"expected {self.counts[shard]} rows, found {meta.num_rows}"
                )
            self._meta[shard] = (meta, starts)
        return self._meta[shard]

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

    def _count_read(self, nbytes: int) -> None:
        self.stats["bytes_read"] = self.stats.get("bytes_read", 0) + nbytes

    def _data_files(self) -> list[str]:
        # Local folder: real paths. Hub: hf:// URLs at the commit pinned in __init__, so every
        # rank reads the same version even if the repo moves during the run.
        if self.info is not None and self.split in self.info.shards:
            names = [s["file"] for s in self.info.shards[self.split]]
            if self._commit is None:
                return [os.path.join(self.name_or_path, n) for n in names]
            return [f"hf://datasets/{self.name_or_path}@{self._commit}/{n}" for n in names]
        # No geofm_dataset.json: the files ``datasets`` would stream, in its order.
        import datasets

        builder = datasets.load_dataset_builder(
            self.name_or_path, revision=self._commit or self.revision
        )
        files = (builder.config.data_files or {}).get(self.split)
        if not files:
            raise ValueError(
                f"split {self.split!r} not in {self.name_or_path}; it has "
                f"{sorted(builder.config.data_files or {})}"
            )
        return [str(f) for f in files]

    def _load_piece(self, shard: int, first: int, stop: int, keep: set) -> bool:
        """Bring the row groups under rows [first, stop) of ``shard`` into the cache; False when
        the shard is unreadable and skipped (``on_error="skip"``)."""
        if shard in self._bad_shards:
            return False
        try:
            self._read_row_groups(shard, first, stop, keep)
            return True
        except Exception as err:
            if _is_transient(err):
                # The HTTP client already retried this request with backoff. An outage is not a
                # bad shard: skipping it would drop good data silently, so the run stops here
                # and resumes exactly from its last checkpoint.
                raise ConnectionError(
                    f"shard {shard} of {self.name_or_path}:{self.split} "
                    f"({self._files[shard]}) could not be fetched after retries: {err}; nothing "
                    "was skipped for it. Rerun when the server answers: the run resumes from "
                    "its last checkpoint"
                ) from err
            error = err
        message = f"shard {shard} of {self.name_or_path}:{self.split} is unreadable: {error}"
        if self.on_error == "raise":
            raise BadInputError("bad_shard", message) from error
        self._bad_shards.add(shard)
        self.stats["bad_shards"] = sorted(self._bad_shards)
        self.stats["rows_lost_to_bad_shards"] = sum(self.counts[s] for s in self._bad_shards)
        if self._shared_counts is not None:
            self._shared_counts[shard] = 1
        logger.warning("skipping %s", message)
        if len(self._bad_shards) > self.max_error_fraction * len(self.counts):
            raise TooManyErrorsError(
                f"{len(self._bad_shards)} of {len(self.counts)} shards are unreadable "
                f"({sorted(self._bad_shards)}); max_error_fraction={self.max_error_fraction}"
            ) from error
        return False

    def _read_row_groups(self, shard: int, first: int, stop: int, keep: set) -> None:
        import pyarrow.parquet as pq

        meta, starts = self._footer(shard)
        g0 = int(np.searchsorted(starts, first, side="right")) - 1
        g1 = int(np.searchsorted(starts, stop, side="left"))
        missing = [g for g in range(g0, g1) if (shard, g) not in self._groups]
        if not missing:
            return
        self._evict(keep)
        with self._open(shard) as fh:
            counted = _CountingFile(fh, _file_size(fh), self._count_read)
            # CRC checksums of the pages (written by geofm-make-shards) catch corrupt bytes.
            pf = pq.ParquetFile(
                counted, metadata=meta, pre_buffer=True, page_checksum_verification=True
            )
            table = pf.read_row_groups(
                missing,
                columns=self._columns(meta.schema.to_arrow_schema().names),
                use_threads=False,
            )
        self.stats["row_groups_read"] = self.stats.get("row_groups_read", 0) + len(missing)
        at = 0
        for g in missing:
            n = int(starts[g + 1] - starts[g])
            # One chunk per column, so decode_batch can view the image bytes without copying.
            part = table.slice(at, n).combine_chunks()
            at += n
            try:
                arr = decode_batch(part, _view=True)
            except BadInputError as err:
                if err.reason != "not_viewable":
                    raise
                arr = None  # GeoTIFF bytes or ragged rows: decoded row by row in _make_batch
            self._groups[(shard, g)] = (part, arr)

    def _evict(self, keep: set) -> None:
        # Keep decoded row groups up to cache_mb (never those the current batch needs): small
        # datasets are then read once per worker, not once per epoch.
        budget = self.cache_mb * 1e6
        size = sum(t.nbytes for t, _ in self._groups.values())
        for key in list(self._groups):
            if size <= budget:
                break
            if key[0] in keep:
                continue
            size -= self._groups.pop(key)[0].nbytes

    # -- batches ---------------------------------------------------------------------------
    def _make_batch(self, epoch: int, shards: np.ndarray, rows: np.ndarray, pieces: dict):
        keep = np.ones(len(rows), dtype=bool)
        sources: list[tuple[Any, int] | None] = [None] * len(rows)
        chip_ids: list[str | None] = [None] * len(rows)
        masks: list[np.ndarray | None] = [None] * len(rows)
        times: list[np.ndarray | None] = [None] * len(rows)
        places: list[np.ndarray | None] = [None] * len(rows)
        batch_shards = {int(s) for s in np.unique(shards)}
        for shard in sorted(batch_shards):
            sel = np.flatnonzero(shards == shard)
            if not self._load_piece(shard, *pieces[shard][1:], keep=batch_shards):
                keep[sel] = False
                continue
            starts = self._meta[shard][1]
            groups = np.searchsorted(starts, rows[sel], side="right") - 1
            for g in np.unique(groups):
                table, arr = self._groups[(shard, int(g))]
                self._groups.move_to_end((shard, int(g)))
                here = sel[groups == g]
                local = rows[here] - starts[g]
                if arr is None:
                    arr = decode_batch(table, local)
                    positions = range(len(local))
                else:
                    positions = local
                for i, r in zip(here, positions):
                    sources[i] = (arr, int(r))
                # (H, W), or (T, H, W) for time series
                valid = decode_valid_masks(table, local, *arr.shape[1:-3], *arr.shape[-2:])
                if valid is not None:
                    # An all-valid mask (most chips: the writer stores one for every chip) is no
                    # mask, so such batches can still take the device-transform path.
                    for j, i in enumerate(here):
                        masks[i] = None if valid[j].all() else valid[j]
                if self.return_chip_ids:
                    column = table.column("chip_id")
                    for i, r in zip(here, local):
                        chip_ids[i] = column[int(r)].as_py()
                if self.return_metadata:
                    frames = int(np.prod(arr.shape[1:-3]))
                    for i, t, x in zip(here, *chip_metadata(table, local, frames)):
                        times[i], places[i] = t, x
        if not keep.any():
            return None
        positions = np.flatnonzero(keep)
        sample_index = self.layout.offsets[shards[positions]] + rows[positions]
        batch, valid, picked = self._transform(
            [sources[i] for i in positions], epoch, sample_index, [masks[i] for i in positions]
        )
        kept_ids = [chip_ids[i] for i in positions]
        if self.return_masks or self.return_metadata:
            out = {"pixel_values": batch, "pixel_mask": valid}
            if self.return_metadata:
                temporal = np.stack([times[i] for i in positions])  # (B, T stored, 2)
                if picked is not None:
                    temporal = np.take_along_axis(temporal, picked[:, :, None], axis=1)
                out["temporal_coords"] = torch.from_numpy(temporal)
                out["location_coords"] = torch.from_numpy(np.stack([places[i] for i in positions]))
            if self.return_chip_ids:
                out["chip_ids"] = kept_ids
            return out
        if self.return_chip_ids:
            return batch, kept_ids
        return batch

    def _transform(self, sources, epoch: int, sample_index: np.ndarray, masks=None):
        """Crop/flip/rotate and normalise; returns pixels, validity and the frames picked.

        Chips are ``(C, H, W)`` -> pixels ``(B, C, crop, crop)``, validity ``(B, crop, crop)``;
        time series ``(T, C, H, W)`` -> ``(B, T', C, crop, crop)`` and ``(B, T', crop, crop)``
        (or the single-frame shapes for T' = 1),
        every frame cropped and flipped alike. With ``num_frames`` T' < T the T' frames with
        the fewest invalid pixels in the crop are kept, in date order; their indices ``(B, T')``
        are the third value (``None`` when every frame is kept). Invalid pixels (stored mask,
        NaN/inf) are set to 0 after normalisation (the band mean), never fed as raw fill
        values; the validity says which they are.
        """
        first, j = sources[0]
        lead = first.shape[1:-3]  # () for chips, (T,) for time series
        frames = int(np.prod(lead))
        c, h, w = first.shape[-3:]
        if len(self.mean) != c:
            raise BadInputError(
                "band_mismatch",
                f"{self.name_or_path}:{self.split}: the chips have {c} bands, the mean/std used "
                f"to normalise them have {len(self.mean)} (geofm_dataset.json band_names lists "
                f"{len(self.info.band_names) if self.info else '?'}); rewrite the dataset",
            )
        n = len(sources)
        crop = self.crop_size or h
        raw = np.empty((n, frames * c, crop, crop), dtype=first.dtype)
        valid = np.ones((n, frames, crop, crop), dtype=bool)
        if self.augment:
            params = augmentation_params(self.seed, epoch, sample_index, min(h, w), crop)
        else:
            params = np.zeros((n, 5), dtype=np.int64)
            params[:, 0], params[:, 1] = (h - crop) // 2, (w - crop) // 2
        if (
            self.device_transforms
            and not lead
            and not np.issubdtype(first.dtype, np.floating)
            and (masks is None or all(m is None for m in masks))
        ):
            # Integer chips without stored masks: every pixel is valid, the device finishes
            # them. Batches that carry masks take the host path below (batch_to_device takes
            # both), so invalid pixels are never fed raw.
            return crop_uint16(sources, params, crop), torch.from_numpy(valid[:, 0]), None
        for i, ((arr, j), (y, x, hflip, vflip, k)) in enumerate(zip(sources, params)):
            view = arr[j].reshape(frames * c, h, w)[:, y : y + crop, x : x + crop]
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
                mview = masks[i].reshape(frames, h, w)[:, y : y + crop, x : x + crop]
                if hflip:
                    mview = mview[:, :, ::-1]
                if vflip:
                    mview = mview[:, ::-1, :]
                if k:
                    mview = np.rot90(mview, k, axes=(1, 2))
                valid[i] = mview.swapaxes(1, 2) if k % 2 else mview
        odd = np.flatnonzero(params[:, 4] % 2 == 1)
        if len(odd):
            raw[odd] = raw[odd].swapaxes(2, 3)
            valid[odd] = valid[odd].swapaxes(2, 3)
        out = raw.astype(np.float32).reshape(n, frames, c, crop, crop)
        out -= self.mean[None, None, :, None, None]
        out /= self.std[None, None, :, None, None]
        if np.issubdtype(raw.dtype, np.floating):
            valid &= np.isfinite(out).all(axis=2)
        picked = None
        if self.num_frames < frames:
            clouded = (~valid).mean(axis=(2, 3))  # (B, T) invalid fraction in the crop
            picked = np.sort(np.argsort(clouded, axis=1, kind="stable")[:, : self.num_frames], 1)
            rows = np.arange(n)[:, None]
            out, valid = out[rows, picked], valid[rows, picked]
        if not valid.all():
            out *= valid[:, :, None]  # 0 = the band mean; NaN/inf never reach the model
            out[~np.isfinite(out)] = 0.0
        if not lead or self.num_frames == 1:  # one frame: (B, C, H, W), as a 1-frame model takes
            return torch.from_numpy(out[:, 0]), torch.from_numpy(valid[:, 0]), picked
        return torch.from_numpy(np.ascontiguousarray(out)), torch.from_numpy(valid), picked

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
        epoch, batch_in_epoch = self.epoch_of(skip)
        self.stats.update(self.describe())
        empty_epochs = 0
        while True:
            per_epoch = self.layout.batches_per_epoch
            if self.remainder is not None and epoch == self.start_epoch:
                per_epoch = self.remainder.batches_per_epoch
                pieces = {p[0]: p for p in self.remainder.reader_pieces(reader)}
                shards, rows = self.remainder.reader_positions(reader)
            else:
                pieces = {p[0]: p for p in self.layout.reader_pieces(epoch, reader)}
                shards, rows = self.layout.reader_positions(epoch, reader)
            self.stats["epoch"] = epoch
            whole_epoch, produced = batch_in_epoch == 0, 0
            for b in range(batch_in_epoch, per_epoch):
                sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
                batch = self._make_batch(epoch, shards[sl], rows[sl], pieces)
                if batch is None:
                    self.stats["batches_lost_to_bad_shards"] = (
                        self.stats.get("batches_lost_to_bad_shards", 0) + 1
                    )
                    if self._shared_counts is not None:
                        with self._shared_counts.get_lock():
                            self._shared_counts[-1] += 1
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

    def epoch_of(self, batches: int) -> tuple[int, int]:
        """(epoch, batch in it) of a reader that produced ``batches`` since ``start_epoch``."""
        return epoch_of(batches, self.layout, self.start_epoch, self.remainder)

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


def resolve_source(
    name_or_path: str | os.PathLike,
    split: str = "train",
    revision: str | None = None,
    *,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> DatasetSource:
    """Resolve a dataset once (commit, ``geofm_dataset.json``, shards, row counts) for
    ``make_pretrain_dataloader(..., source=)`` on every rank: call it on one process and
    broadcast the result."""
    return GeoPretrainStream(
        name_or_path, split=split, batch_size=1, revision=revision, mean=mean, std=std
    ).source
