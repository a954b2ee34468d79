"""Elastic resume: a run saved at one world size (worker count, batch size) resumes at another.
The rest of the saved epoch is re-split over the new readers, so across the save/resume boundary
every chip of the epoch is read once (but for a counted tail); model and optimiser state reshard
through torch.distributed.checkpoint."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from pretrain_utils import CPU_FSDP_CONFIG, metrics, pretrain
from safetensors.torch import load_file
from test_data_mixing import RGBN, rgbn_dataset

from geofm_hf.data import make_pretrain_dataloader, read_dataset_info, sample_dataset_path
from geofm_hf.data.mixing import MixedPretrainLoader

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


# -- the recipe: FSDP2 on CPU, saved at one world size, resumed at another -------------------

_RUN = ("--save_steps", "2", "--warmup_steps", "1", "--bf16", "false",
        "--plot_reconstructions", "false")  # fmt: skip


def _run(out, world, *extra, check=True):
    per_device = str(8 // world)  # the global batch stays 8
    return pretrain(out, *_RUN, "--per_device_train_batch_size", per_device, *extra,
                    config=CPU_FSDP_CONFIG, launch_args=("--num_processes", str(world)),
                    check=check)  # fmt: skip


@pytest.mark.parametrize("saved_at,resumed_at", [(4, 2), (2, 4)])
def test_fsdp2_resume_at_another_world_size_loads_the_saved_weights(tmp_path, saved_at, resumed_at):
    out = tmp_path / "run"
    _run(out, saved_at, "--max_steps", "4")
    saved = load_file(out / "final" / "model.safetensors")
    shutil.move(out / "final", tmp_path / "saved")
    # Resumed at the saved step: the export is the weights as loaded, resharded by DCP.
    resumed = _run(out, resumed_at, "--max_steps", "4")
    assert f"world_size {saved_at} -> {resumed_at}" in resumed.stdout, resumed.stdout[-3000:]
    loaded = load_file(out / "final" / "model.safetensors")
    assert saved.keys() == loaded.keys()
    for key in saved:
        assert torch.equal(saved[key], loaded[key]), key
    # Training goes on from there (optimiser state resharded too), the card says what changed.
    more = _run(out, resumed_at, "--max_steps", "6")
    assert "resumed from" in more.stdout
    steps = [r for r in metrics(out) if "loss" in r]
    assert steps[-1]["step"] == 6 and all(np.isfinite(r["loss"]) for r in steps)
    card = (out / "final" / "README.md").read_text()
    assert f"world_size {saved_at!r} -> {resumed_at!r}" in card


def test_global_batch_change_is_refused_unless_allowed(tmp_path):
    out = tmp_path / "run"
    _run(out, 2, "--max_steps", "2")
    refused = pretrain(out, *_RUN, "--max_steps", "4", "--per_device_train_batch_size", "2",
                       config=CPU_FSDP_CONFIG, check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "global batch" in refused.stderr and "--allow_global_batch_change" in refused.stderr


def test_a_mixture_resumes_at_another_world_size(tmp_path):
    rgbn_dataset(tmp_path / "rgbn")

    def mixture(rank, world):
        loaders = {
            "s2": make_pretrain_dataloader(SAMPLE, batch_size=8 // world, seed=1, rank=rank,
                                           world_size=world, return_chip_ids=True),
            "rgbn": make_pretrain_dataloader(tmp_path / "rgbn", batch_size=8 // world, seed=2,
                                             rank=rank, world_size=world, mean=[1500.0] * 4,
                                             std=[900.0] * 4, return_chip_ids=True),
        }  # fmt: skip
        wavelengths = {"s2": read_dataset_info(SAMPLE).wavelengths_um, "rgbn": RGBN}
        return MixedPretrainLoader(loaders, wavelengths, {"s2": 1.0, "rgbn": 1.0}, seed=3)

    seen = {"s2": [], "rgbn": []}
    for rank in range(2):
        mixed = mixture(rank, 2)
        it = iter(mixed)
        for _ in range(5):
            batch = next(it)
            seen[batch["dataset"]].extend(batch["pixel_values"][1])
    state = json.loads(json.dumps(mixed.state_dict()))
    resumed = mixture(0, 1)
    resumed.load_state_dict(state)
    for name, loader in resumed.loaders.items():
        cursor = loader.state_dict()["cursor"]
        assert cursor["samples_consumed"] == len(seen[name]) > 0
        rest, it = [], iter(loader)
        for _ in range(loader.stream.remainder.batches_per_epoch):
            rest.extend(next(it)[1])
        assert len(rest) == len(set(rest)) and not set(rest) & set(seen[name])
        assert (
            len(rest) + len(seen[name]) + loader.stream.remainder.dropped
            == loader.stream.layout.total
        )
