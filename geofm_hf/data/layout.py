"""Reader layout and augmentation: which rows each reader (rank x worker) takes in an epoch, and
how each sample is cropped and flipped. Both are pure functions of (seed, epoch, sample index), so a
resumed stream needs no RNG state and reads exactly what an uninterrupted one would have read."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["augmentation_params"]

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


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
    """Which rows each reader (rank x worker) takes in an epoch; pure metadata, no I/O.

    An epoch is one sequence: the shards in a seeded shuffled order, each shard's rows in storage
    order. Reader ``g`` of ``R`` takes the contiguous stretch ``[g * n, (g + 1) * n)`` of that
    sequence, ``n = total // R``, split inside shards at its two ends. So every reader gets the
    same count every epoch, readers are disjoint and together cover all but ``total % R`` samples
    (the sequence's tail, a different part every epoch), and a reader opens at most
    ``ceil(shards / R) + 1`` shards when all shards but one hold the same row count (what
    geofm-make-shards writes; shorter shards lead the sequence). Inside a stretch, each
    shard's piece is shuffled on its own, so a reader needs only the Parquet row groups under
    its pieces and holds at most two pieces at a time.
    """

    def __init__(self, counts: list[int], seed: int, world_size: int, num_workers: int,
                 batch_size: int, drop_last: bool):  # fmt: skip
        self.counts = [int(c) for c in counts]
        self.offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.total = int(self.offsets[-1])
        self.seed = seed
        self.num_readers = world_size * max(num_workers, 1)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.mode = "stretch"
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
        # Shards shorter than the longest (the writer's last one) lead the sequence: a short
        # shard in the middle could make one stretch span one shard more than the bound.
        order = self._rng(epoch, 0).permutation(len(self.counts))
        counts = np.asarray(self.counts)[order]
        return np.concatenate([order[counts < counts.max()], order[counts == counts.max()]])

    def reader_pieces(self, epoch: int, reader: int) -> list[tuple[int, int, int]]:
        """``reader``'s stretch of ``epoch`` as (shard, first_row, stop_row), in reading order."""
        order = self.shard_order(epoch)
        ends = np.cumsum(np.asarray(self.counts, dtype=np.int64)[order])
        lo = reader * self.samples_per_reader
        hi = lo + self.samples_per_reader
        pieces = []
        # First shard whose end is past lo, up to the shard holding position hi - 1.
        for k in range(int(np.searchsorted(ends, lo, side="right")), len(order)):
            begin = int(ends[k]) - self.counts[order[k]]
            if begin >= hi:
                break
            a, b = max(lo, begin) - begin, min(hi, int(ends[k])) - begin
            if b > a:
                pieces.append((int(order[k]), a, b))
        return pieces

    def piece_rows(self, epoch: int, piece: tuple[int, int, int]) -> np.ndarray:
        shard, a, b = piece
        return a + self._rng(epoch, 1, shard, a).permutation(b - a)

    def dropped_per_epoch(self) -> dict[str, int]:
        """Samples per epoch not seen (all readers): to keep readers in step, and by drop_last."""
        balance = self.total - self.samples_per_reader * self.num_readers
        last = (self.samples_per_reader % self.batch_size) if self.drop_last else 0
        return {"to_balance_readers": int(balance), "by_drop_last": int(last * self.num_readers)}

    def reader_positions(self, epoch: int, reader: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard, row) arrays of ``reader``'s samples in epoch order (length samples_per_reader)."""
        pieces = self.reader_pieces(epoch, reader)
        shards = np.concatenate([np.full(b - a, s, dtype=np.int64) for s, a, b in pieces])
        rows = np.concatenate([self.piece_rows(epoch, p) for p in pieces]).astype(np.int64)
        return shards, rows

    def sequence(self, epoch: int) -> np.ndarray:
        """The epoch's samples as global sample indices (``offsets[shard] + row``), in sequence
        order: the order every re-split of the epoch's remainder deals from."""
        return np.concatenate(
            [
                self.offsets[s] + np.arange(self.counts[s], dtype=np.int64)
                for s in self.shard_order(epoch)
            ]
        )

    def reader_samples(self, epoch: int, reader: int) -> np.ndarray:
        """``reader``'s samples of ``epoch`` as global sample indices, in reading order."""
        shards, rows = self.reader_positions(epoch, reader)
        return self.offsets[shards] + rows


def reader_counts(batches: int, num_workers: int) -> list[int]:
    """Batches each logical worker of a rank produced when the rank consumed ``batches``: the
    DataLoader takes them round-robin from worker 0, so the first ``batches % nw`` have one more."""
    nw = max(num_workers, 1)
    return [(batches - w + nw - 1) // nw if batches > w else 0 for w in range(nw)]


class _Remainder:
    """The rest of one epoch, dealt over the readers of a run resumed at another world size (or
    worker count, or batch size) in the middle of it.

    ``history`` lists the runs that read this epoch before, oldest first, each as the layout
    settings it ran with (``world_size``, ``num_workers``, ``batch_size``, ``drop_last``) and
    ``batches_consumed``, the batches each of its ranks took of this epoch. The first ran on the
    epoch's own :class:`_Layout`, each later one on the remainder left by those before it, so
    the samples already consumed are computed, not stored. What is left, in the epoch's sequence
    order, is cut into one contiguous stretch per new reader (``len // readers`` each; the tail
    is dropped and counted) and each stretch is shuffled on its own: no sample of the epoch is
    read twice or skipped beyond that counted tail.
    """

    def __init__(self, layout: _Layout, epoch: int, history: list[dict]):
        self.epoch = epoch
        self.layout = layout
        left = _Layout(layout.counts, layout.seed, **_settings(history[0])).sequence(epoch)
        for index, run in enumerate(history):
            readers = _deal(layout.counts, layout.seed, epoch, left, history[:index], run)
            counts = reader_counts(int(run["batches_consumed"]), run["num_workers"])
            taken = [
                samples[: counts[r % len(counts)] * run["batch_size"]]
                for r, samples in enumerate(readers)
            ]
            left = left[~np.isin(left, np.concatenate(taken))]
        self.left = left
        self.samples_per_reader = len(left) // layout.num_readers
        if layout.drop_last:
            self.batches_per_epoch = self.samples_per_reader // layout.batch_size
        else:
            self.batches_per_epoch = math.ceil(self.samples_per_reader / layout.batch_size)
        used = self.samples_per_reader
        if layout.drop_last:
            used = self.batches_per_epoch * layout.batch_size
        self.dropped = len(left) - used * layout.num_readers
        self.part = len(history)

    def reader_samples(self, reader: int) -> np.ndarray:
        """``reader``'s samples of the rest of the epoch as global sample indices, in order."""
        layout = self.layout
        return _stretch(layout.seed, self.epoch, self.part, self.left, layout.num_readers, reader)

    def reader_positions(self, reader: int) -> tuple[np.ndarray, np.ndarray]:
        samples = self.reader_samples(reader)
        shards = np.searchsorted(self.layout.offsets, samples, side="right") - 1
        return shards.astype(np.int64), samples - self.layout.offsets[shards]

    def reader_pieces(self, reader: int) -> list[tuple[int, int, int]]:
        # One piece a shard spanning the reader's rows there: a superset of the row groups needed.
        shards, rows = self.reader_positions(reader)
        return [
            (int(s), int(rows[shards == s].min()), int(rows[shards == s].max()) + 1)
            for s in np.unique(shards)
        ]


def _settings(run: dict) -> dict:
    return {k: run[k] for k in ("world_size", "num_workers", "batch_size", "drop_last")}


def _stretch(seed: int, epoch: int, part: int, left: np.ndarray, readers: int, reader: int):
    # One generator a reader: a rank builds its own readers' stretches, not every rank's.
    n = len(left) // readers
    rng = np.random.Generator(np.random.PCG64([seed, epoch, 2, part, reader]))
    return left[reader * n : (reader + 1) * n][rng.permutation(n)]


def _deal(counts, seed, epoch, left, before, run) -> list[np.ndarray]:
    """Every reader's samples of ``epoch`` for ``run``: the epoch's own layout for the first run
    of the epoch, the remainder's stretches for a later one."""
    layout = _Layout(counts, seed, **_settings(run))
    if not before:
        return [layout.reader_samples(epoch, r) for r in range(layout.num_readers)]
    return [_stretch(seed, epoch, len(before), left, layout.num_readers, r)
            for r in range(layout.num_readers)]  # fmt: skip


def epoch_of(batches: int, layout: _Layout, start_epoch: int, remainder) -> tuple[int, int]:
    """(epoch, batch in it) of a reader that produced ``batches`` since the start of
    ``start_epoch`` (of its ``remainder`` when one is given)."""
    if remainder is None:
        epoch, batch = divmod(batches, layout.batches_per_epoch)
        return start_epoch + epoch, batch
    if batches < remainder.batches_per_epoch:
        return start_epoch, batches
    epoch, batch = divmod(batches - remainder.batches_per_epoch, layout.batches_per_epoch)
    return start_epoch + 1 + epoch, batch
