"""The pretraining loader: a :class:`~geofm_hf.data.stream.GeoPretrainStream` in a ``DataLoader``,
with exact resume (``state_dict()`` / ``load_state_dict()``), built by
:func:`make_pretrain_dataloader`."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from .format import BadInputError
from .hub_access import DatasetSource
from .layout import _Layout, _Remainder, epoch_of, reader_counts
from .stream import GeoPretrainStream

__all__ = ["DataLoaderTimeoutError", "PretrainLoader", "make_pretrain_dataloader"]

logger = logging.getLogger(__name__)

# 2: contiguous stretches per reader. A version-1 position means other samples under this
# layout, so it is refused rather than resumed into a different order.
_STATE_VERSION = 2


class DataLoaderTimeoutError(TimeoutError):
    """A data worker produced no batch within the loader's ``timeout_s``.

    A read that never returns (a Hub request or a file system that stops answering) would hold
    its rank, and every other rank waiting for it in the next collective, until the job's time
    limit. Raised instead, it ends this rank's process, and the launcher stops the job.
    """


class PretrainLoader:
    """Iterable of float32 batches with exact resume: ``state_dict()`` / ``load_state_dict()``.

    Wraps ``torch.utils.data.DataLoader(stream, batch_size=None)``. Infinite: iterate it for
    as many steps as the trainer needs. ``stats`` reports the layout and every dropped sample.
    """

    def __init__(self, stream: GeoPretrainStream, *, num_workers: int = 0,
                 pin_memory: bool = False, prefetch_factor: int | None = 2,
                 timeout_s: float = 600.0):  # fmt: skip
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds: found {timeout_s!r}")
        self.stream = stream
        self.num_workers = num_workers
        # Waits longer than this for a worker's batch raise DataLoaderTimeoutError (workers only:
        # in the main process a stalled read cannot be interrupted from the same thread).
        self.timeout_s = timeout_s
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor if num_workers > 0 else None
        self._consumed = 0
        self._history: list[dict[str, Any]] = []
        self.stats = stream.describe()
        if num_workers > 0:
            # Workers hold their own copies of the stream: what they skip is counted here.
            stream._shared_counts = torch.multiprocessing.Array("q", len(stream.counts) + 1)
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
        start = self.stream.start_batch = self._consumed
        if self.num_workers == 0:
            iterator = iter(self.stream)
        else:
            loader = torch.utils.data.DataLoader(
                self.stream, batch_size=None, num_workers=self.num_workers,
                pin_memory=self.pin_memory, prefetch_factor=self.prefetch_factor,
                persistent_workers=False, timeout=self.timeout_s,
            )  # fmt: skip
            iterator = iter(loader)
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except RuntimeError as err:
                # DataLoader's own words when `timeout` passes without a batch.
                if not str(err).startswith("DataLoader timed out"):
                    raise
                raise DataLoaderTimeoutError(self._timeout_message(start)) from err
            self._consumed += 1
            self.stats.update(self.stream.stats)  # bad shards met in this process, live
            if self.stream._shared_counts is not None:
                self._merge_worker_counts()
            self.stats["batches_consumed"] = self._consumed
            yield batch

    def _timeout_message(self, start: int) -> str:
        s = self.stream
        waited = self._consumed - start  # batches this iterator yielded: the next is missing
        worker, nw = waited % self.num_workers, self.num_workers
        # Which samples that worker was reading: the same arithmetic as GeoPretrainStream.__iter__
        # (worker w of a loader resumed after `start` batches plays logical worker (w+start)%nw).
        logical = (worker + start) % nw
        index = ((start - logical + nw - 1) // nw if start > logical else 0) + waited // nw
        epoch, batch = divmod(index, s.layout.batches_per_epoch)
        shards, _ = s.layout.reader_positions(epoch, s.rank * nw + logical)
        wanted = sorted({int(i) for i in shards[batch * s.batch_size : (batch + 1) * s.batch_size]})
        files = ", ".join(f"shard {i} ({s._files[i]})" for i in wanted)
        return (
            f"rank {s.rank}: data worker {worker} produced no batch in {self.timeout_s:g} s "
            f"(--dataloader_timeout_s) while reading {files} of {s.name_or_path}:{s.split}. A "
            "stalled read (a Hub request or a file that stopped answering) ends the run rather "
            "than hang every rank: check that shard and the storage or Hub serving it, then rerun "
            "(training resumes from the last checkpoint), or raise --dataloader_timeout_s if "
            "reads are only slow."
        )

    def _merge_worker_counts(self) -> None:
        shared, counts = self.stream._shared_counts, self.stream.counts
        found = [i for i in range(len(counts)) if shared[i]]
        bad = sorted(set(self.stats.get("bad_shards", [])) | set(found))
        self.stats["bad_shards"] = bad
        self.stats["rows_lost_to_bad_shards"] = sum(counts[i] for i in bad)
        self.stats["batches_lost_to_bad_shards"] = self.stream.stats.get(
            "batches_lost_to_bad_shards", 0
        ) + int(shared[-1])

    def state_dict(self) -> dict[str, Any]:
        """JSON-able position of the stream: batches this rank consumed since ``start_epoch``
        began (or, after a resume at another world size, since that epoch's rest was re-split:
        ``history`` then lists the runs that read the epoch before), what fixes the order, and
        ``cursor``, the job's global position (samples of the epoch consumed by all ranks)."""
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
            "start_epoch": s.start_epoch,
            "history": list(self._history),
            "cursor": self._cursor(),
        }

    def _cursor(self) -> dict[str, int]:
        s = self.stream
        ends = [epoch_of(c, s.layout, s.start_epoch, s.remainder)
                for c in reader_counts(self._consumed, s.num_workers)]  # fmt: skip
        epoch = min(e for e, _ in ends)
        before = 0
        if s.remainder is not None and epoch == s.start_epoch:
            before = s.layout.total - len(s.remainder.left)
        per_reader = s.layout.samples_per_reader
        if s.remainder is not None and epoch == s.start_epoch:
            per_reader = s.remainder.samples_per_reader
        mine = sum(min(b * s.batch_size, per_reader) if e == epoch else per_reader for e, b in ends)
        return {"seed": s.seed, "epoch": epoch, "samples_consumed": before + mine * s.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``. The loader must be built with the same seed, split, shards and
        ``drop_last``; at another world size, worker count or batch size, the rest of the
        saved epoch is re-split over this loader's readers (each sample of the epoch is read
        once across the two runs), and later epochs follow this loader's own layout."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"cannot resume: the stream state has version {state.get('version')!r}, this "
                f"geofm_hf reads version {_STATE_VERSION} (the reader layout changed, so the "
                "saved position names other samples); resume with the geofm_hf that saved it, "
                "or start the data stream afresh"
            )
        mine = self.state_dict()
        keys = ("seed", "split", "drop_last", "shard_rows")
        diff = {k: (state.get(k), mine[k]) for k in keys if state.get(k) != mine[k]}
        if diff:
            raise ValueError(
                "cannot resume: the saved stream state differs from this loader in "
                + ", ".join(f"{k} (saved {a!r}, now {b!r})" for k, (a, b) in diff.items())
                + "; rebuild the loader with the saved settings"
            )
        s = self.stream
        start, history = int(state.get("start_epoch", 0)), list(state.get("history", []))
        consumed = int(state["batches_consumed"])
        settings = ("world_size", "num_workers", "batch_size")
        if any(state[k] != mine[k] for k in settings):
            start, history = _resplit(state, start, history, consumed)
            consumed = 0
        s.start_epoch = start
        s.remainder = _Remainder(s.layout, start, history) if history else None
        self._history = history
        self._consumed = consumed


def _resplit(state: dict[str, Any], start: int, history: list, consumed: int):
    """(start epoch, history) that continue ``state``'s epoch at other settings: the epoch its
    readers were in, and the runs that consumed part of it (the saved one last)."""
    run = {k: state[k] for k in ("world_size", "num_workers", "batch_size", "drop_last")}
    layout = _Layout(state["shard_rows"], state["seed"], **run)
    remainder = _Remainder(layout, start, history) if history else None
    counts = reader_counts(consumed, run["num_workers"])
    ends = [epoch_of(c, layout, start, remainder) for c in counts]
    if len({e for e, _ in ends}) > 1:
        raise ValueError(
            f"cannot resume at another world size, worker count or batch size: the checkpoint "
            f"was saved while the data workers straddled the end of epoch {ends[-1][0]} "
            f"(worker batches {counts}); resume at the saved settings (world_size "
            f"{run['world_size']}, num_workers {run['num_workers']}, batch_size "
            f"{run['batch_size']}) until the next checkpoint, then change them"
        )
    epoch, batch = ends[0]
    # Batches each rank took of `epoch` alone: every worker is `offset` batches past its start.
    offset = counts[0] - batch
    in_epoch = consumed - offset * max(run["num_workers"], 1)
    earlier = history if (remainder is not None and epoch == start) else []
    if in_epoch == 0 and not earlier:
        return epoch, []
    return epoch, [*earlier, {**run, "batches_consumed": in_epoch}]


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
    device_transforms: bool = False,
    return_masks: bool = False,
    check_shards: bool = True,
    num_frames: int | None = None,
    return_metadata: bool = False,
    source: DatasetSource | None = None,
    timeout_s: float = 600.0,
) -> PretrainLoader:
    """Build the MAE pretraining loader for a Hub repo id or local folder.

    Yields float32 tensors (B, C, crop, crop) normalised as ``(x - mean) / std`` per band
    (mean/std default to ``geofm_dataset.json``) and, with ``augment``, randomly cropped,
    flipped and rotated by multiples of 90 degrees as a function of (seed, epoch, sample).
    ``return_chip_ids=True`` yields ``(tensor, chip_ids)`` (for tests/debugging).
    ``device_transforms=True`` yields :class:`~geofm_hf.data.device_transforms.RawBatch` (uint16
    crops + flips) instead; finish it on the device with ``apply_device_transforms``.
    ``return_masks=True`` yields ``{"pixel_values", "pixel_mask"}`` dicts: ``pixel_mask``
    ``(B, crop, crop)`` bool, True where the pixel is valid (stored ``valid_mask``: nodata,
    fill, cloud/QA; and NaN/inf), augmented with the pixels; pass it to the model so the
    loss ignores invalid pixels. Invalid pixels are 0 (the band mean) in ``pixel_values``.
    Time-series datasets (``num_frames`` T in ``geofm_dataset.json``) yield ``(B, T, C, crop,
    crop)`` pixels and ``(B, T, crop, crop)`` masks; ``num_frames`` T' < T keeps the T' frames
    with the fewest invalid pixels in each crop, in date order.
    ``return_metadata=True`` adds ``temporal_coords`` ``(B, T', 2)`` (year, day of year of each
    frame) and ``location_coords`` ``(B, 2)`` (latitude, longitude of the chip centre) from the
    shards' ``datetime`` / ``frame_datetimes``, ``crs`` and ``transform``; NaN where unknown.
    ``source`` (:func:`~geofm_hf.data.stream.resolve_source`, resolved once on one process and
    broadcast) replaces this reader's own Hub requests for the commit, metadata and shard list.
    ``check_shards`` reads every shard's footer first (split across ranks; collective when
    ``world_size`` > 1): a bad shard is an error at once, or skipped and counted under
    ``on_error="skip"``. With ``num_workers`` > 0, a worker that yields no batch in
    ``timeout_s`` seconds (a stalled read) raises :class:`DataLoaderTimeoutError` naming the
    rank and the shards it was reading, instead of hanging the job.
    """
    stream = GeoPretrainStream(
        name_or_path, split=split, batch_size=batch_size, seed=seed, rank=rank,
        world_size=world_size, num_workers=num_workers, crop_size=crop_size, mean=mean, std=std,
        augment=augment, revision=revision, drop_last=drop_last, on_error=on_error,
        max_error_fraction=max_error_fraction, return_chip_ids=return_chip_ids,
        device_transforms=device_transforms,
        return_masks=return_masks, num_frames=num_frames, return_metadata=return_metadata,
        source=source,
    )  # fmt: skip
    if check_shards and stream.info is not None:
        from .verify import check_shard_footers_on_all_ranks

        problems = check_shard_footers_on_all_ranks(
            name_or_path,
            stream.info,
            split,
            revision=stream.source.commit or revision,
            rank=rank,
            world_size=world_size,
        )
        contradicted = [p for p in problems if p.get("dataset")]
        if contradicted:  # no shard to skip: the statistics would misnormalise every chip
            p = contradicted[0]
            raise BadInputError(
                "band_mismatch",
                f"{name_or_path}/geofm_dataset.json: shard {p['file']} {p['problem']}; "
                "rewrite the dataset with geofm-make-shards",
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
    loader = PretrainLoader(
        stream, num_workers=num_workers, pin_memory=pin_memory, timeout_s=timeout_s
    )
    loader.stats.update(stream.stats)
    return loader
