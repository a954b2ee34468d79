"""Normalisation and augmentation moved to the device: same batches as the host path."""

from __future__ import annotations

import itertools

import pytest
import torch

from geofm_hf.data import make_pretrain_dataloader, read_dataset_info, sample_dataset_path
from geofm_hf.data.device_transforms import (
    RawBatch,
    apply_device_transforms,
    resolve_device_transforms,
)

SAMPLE = sample_dataset_path()


@pytest.mark.parametrize("crop", [64, 48])
def test_device_path_equals_host_path_bit_for_bit(crop):
    info = read_dataset_info(SAMPLE)
    host = make_pretrain_dataloader(SAMPLE, batch_size=8, seed=3, crop_size=crop)
    raw = make_pretrain_dataloader(
        SAMPLE, batch_size=8, seed=3, crop_size=crop, device_transforms=True
    )
    seen_ops = set()
    for expected, batch in itertools.islice(zip(host, raw), 6):
        assert isinstance(batch, RawBatch)
        assert batch.pixels.element_size() == 2  # half the bytes of float32 to the device
        assert batch.pixels.shape == expected.shape
        seen_ops.update(map(tuple, batch.ops.tolist()))
        got = apply_device_transforms(batch, "cpu", info.mean, info.std)
        assert got.dtype == torch.float32
        assert torch.equal(got, expected)
    assert len(seen_ops) > 4  # flips and rotations really were exercised


def test_device_path_keeps_uint16_values_above_32767():
    pixels = torch.tensor([[[[0, 40000], [65535, 1]]]], dtype=torch.int32)
    batch = RawBatch(pixels.to(torch.int16), torch.zeros(1, 3, dtype=torch.int64))
    got = apply_device_transforms(batch, "cpu", [0.0], [1.0])
    assert got.flatten().tolist() == [0.0, 40000.0, 65535.0, 1.0]


def test_bad_inputs_are_refused():
    with pytest.raises(TypeError, match="RawBatch"):
        apply_device_transforms(torch.zeros(1, 1, 2, 2), "cpu", [0.0], [1.0])
    batch = RawBatch(
        torch.zeros(1, 2, 2, 2, dtype=torch.int16), torch.zeros(1, 3, dtype=torch.int64)
    )
    with pytest.raises(ValueError, match="2 bands"):
        apply_device_transforms(batch, "cpu", [0.0], [1.0])
    with pytest.raises(ValueError, match="auto, true or false"):
        resolve_device_transforms("maybe", "cpu")


def test_default_is_on_for_gpus_only():
    assert resolve_device_transforms("auto", "cuda") is True
    assert resolve_device_transforms("auto", "cpu") is False
    assert resolve_device_transforms("true", "cpu") is True


def test_recipe_trains_identically_with_device_transforms(tmp_path):
    import json

    from pretrain_utils import pretrain

    losses = {}
    for option in ("false", "true"):
        out = tmp_path / option
        pretrain(
            out,
            "--max_steps", "2",
            "--save_steps", "100",
            "--plot_reconstructions", "false",
            "--bf16", "false",
            "--device_transforms", option,
        )  # fmt: skip
        lines = (out / "metrics.jsonl").read_text().splitlines()
        losses[option] = [json.loads(line)["loss"] for line in lines if '"loss"' in line]
    assert len(losses["true"]) == 2
    assert losses["true"] == losses["false"]
