"""Elastic resume: a run saved at one world size (worker count, batch size) resumes at another.
The rest of the saved epoch is re-split over the new readers, so across the save/resume boundary
every chip of the epoch is read once (but for a counted tail); model and optimiser state reshard
through torch.distributed.checkpoint."""

from __future__ import annotations

import json

import pytest

from geofm_hf.data import make_pretrain_dataloader, sample_dataset_path

SAMPLE = sample_dataset_path()
TOTAL = 216  # the sample dataset: 4 train shards of 54 chips


def _loaders(world, batch_size, num_workers=0):
    return [
        make_pretrain_dataloader(
            SAMPLE,
            batch_size=batch_size,
            seed=9,
            rank=rank,
            world_size=world,
            num_workers=num_workers,
            crop_size=56,
            return_chip_ids=True,
        )
        for rank in range(world)
    ]


def _read(loaders, batches):
    """Chip ids the ranks read in ``batches`` steps, and rank 0's state after them (JSON)."""
    ids = []
    for loader in loaders:
        it = iter(loader)
        for _ in range(batches):
            ids.extend(next(it)[1])
    return ids, json.loads(json.dumps(loaders[0].state_dict()))


def _rest_of_epoch(loaders, state):
    """Resume every rank from ``state`` and read until the saved epoch ends."""
    for loader in loaders:
        loader.load_state_dict(state)
    remainder = loaders[0].stream.remainder
    ids, after = _read(loaders, remainder.batches_per_epoch)
    return ids, after, remainder.dropped


@pytest.mark.parametrize("before,after,k", [
    ((4, 2, 0), (2, 4, 0), 5),    # a node lost: 4 ranks x 2 -> 2 ranks x 4
    ((2, 4, 0), (4, 2, 0), 9),    # and back: 2 x 4 -> 4 x 2
    ((2, 3, 2), (3, 2, 0), 7),    # workers and ranks change, workers mid round-robin (7 % 2)
])  # fmt: skip
def test_each_chip_of_the_epoch_is_read_once_across_a_resize(before, after, k):
    first, state = _read(_loaders(*before), k)
    assert state["cursor"] == {"seed": 9, "epoch": 0, "samples_consumed": len(first)}
    rest, end, dropped = _rest_of_epoch(_loaders(*after), state)
    seen = first + rest
    assert len(seen) == len(set(seen))  # nothing read twice
    assert len(seen) + dropped == TOTAL  # nothing skipped but the counted tail
    assert dropped < after[0] * max(after[2], 1) * after[1]
    assert end["cursor"] == {"seed": 9, "epoch": 1, "samples_consumed": 0}


def test_a_second_resize_in_the_same_epoch_and_the_next_epoch():
    # 4 -> 2 -> 3 ranks inside epoch 0; epoch 1 then follows the 3-rank layout whole.
    first, state = _read(_loaders(4, 2), 6)
    loaders = _loaders(2, 4)
    for loader in loaders:
        loader.load_state_dict(state)
    second, state = _read(loaders, 4)
    assert len(state["history"]) == 1 and state["start_epoch"] == 0
    loaders = _loaders(3, 3)
    for loader in loaders:
        loader.load_state_dict(state)
    remainder = loaders[0].stream.remainder
    assert len(remainder.left) == TOTAL - len(first) - len(second)
    third, _ = _read(loaders, remainder.batches_per_epoch)
    seen = first + second + third
    assert len(seen) == len(set(seen)) and len(seen) + remainder.dropped == TOTAL
    assert _read(loaders, 0)[1]["cursor"] == {"seed": 9, "epoch": 1, "samples_consumed": 0}
    # The next epoch is the 3-rank layout's own: what a run started at 3 ranks reads then.
    loaders[0].load_state_dict({**_read(loaders, 0)[1]})
    fresh = _loaders(3, 3)[0]
    fresh.load_state_dict({**fresh.state_dict(), "start_epoch": 1})
    assert _read([loaders[0]], 3)[0] == _read([fresh], 3)[0]


def test_same_settings_resume_keeps_the_remainder():
    # After a resize, a resume at the new settings reads exactly what the resized run would.
    _, state = _read(_loaders(4, 2), 3)
    loaders = _loaders(2, 4)
    for loader in loaders:
        loader.load_state_dict(state)
    reference, _ = _read(loaders, 6)
    loaders = _loaders(2, 4)
    for loader in loaders:
        loader.load_state_dict(state)
    head, mid = _read(loaders, 2)
    again = _loaders(2, 4)
    for loader in again:
        loader.load_state_dict(mid)
    tail, _ = _read(again, 4)
    assert head[:8] + tail[:16] == reference[:24]  # rank 0
    assert head[8:] + tail[16:] == reference[24:]  # rank 1
