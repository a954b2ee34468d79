"""Issue 23 item 12: no blocking host-to-device copy in a training step.

A GPU step queues its kernels while the next micro-batch's copies run; one blocking ``.to``
(pixels, validity mask, dates, places) or a mask noise drawn on the host and copied makes the
host wait each micro-batch. CPU-only here, so the copies go to the ``meta`` device (a real
device change with no memory) and every ``Tensor.to`` the step's input path makes is recorded.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from geofm_hf import GeoViTMAEConfig
from geofm_hf.data.device_transforms import RawBatch
from geofm_hf.training.inputs import loader_settings, mask_noise
from geofm_hf.training.loop import model_inputs


class _RecordCopies(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.copies: list[tuple[str, bool]] = []
        self.draws: list[dict] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to:
            target = kwargs.get("device", args[1] if len(args) > 1 else None)
            if isinstance(target, torch.Tensor):
                target = target.device
            if isinstance(target, (str, torch.device)) and torch.device(target) != args[0].device:
                self.copies.append((str(torch.device(target)), bool(kwargs.get("non_blocking"))))
        if func is torch.rand:
            self.draws.append(kwargs)
        return func(*args, **kwargs)


def _config():
    return GeoViTMAEConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, decoder_hidden_size=32,
        decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
        decoder_intermediate_size=64, num_frames=2, temporal_encoding=True,
        location_encoding=True,
    )  # fmt: skip


def _stream_batch():
    mask = torch.ones(4, 2, 32, 32, dtype=torch.bool)
    mask[0, 0, :4] = False  # some invalid pixels: the mask itself travels
    return {
        "pixel_values": torch.randn(4, 3, 2, 32, 32),
        "pixel_mask": mask,
        "temporal_coords": torch.tensor([[2020.0, 10.0], [2020.0, 200.0]]).expand(4, 2, 2),
        "location_coords": torch.tensor([[45.0, 7.0]]).expand(4, 2),
    }


def test_every_copy_of_a_stream_batch_to_the_device_is_non_blocking():
    with _RecordCopies() as mode:
        inputs = model_inputs(_stream_batch(), _config(), torch.device("meta"), loader=None)
    moved = {k for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.is_meta}
    assert moved == {"pixel_values", "pixel_mask", "temporal_coords", "location_coords"}
    assert len(mode.copies) == 4
    blocking = [target for target, non_blocking in mode.copies if not non_blocking]
    assert not blocking, f"{len(blocking)} blocking copies to {blocking}"


def test_device_transforms_copy_the_raw_uint16_batch_without_blocking():
    class _Loader:  # what batch_to_device reads from a device-transform loader
        class stream:
            mean, std = [100.0, 200.0, 300.0], [10.0, 20.0, 30.0]

    raw = RawBatch(torch.randint(0, 3000, (2, 3, 32, 32), dtype=torch.int16),
                   torch.zeros(2, 3, dtype=torch.int64))  # fmt: skip
    batch = {"pixel_values": raw, "pixel_mask": torch.ones(2, 32, 32, dtype=torch.bool)}
    config = _config()
    config.num_frames, config.temporal_encoding, config.location_encoding = 1, False, False
    with _RecordCopies() as mode:
        inputs = model_inputs(batch, config, torch.device("meta"), _Loader)
    assert inputs["pixel_values"].is_meta and inputs["pixel_mask"] is None  # all valid: no copy
    assert mode.copies and all(non_blocking for _, non_blocking in mode.copies), mode.copies


def test_mask_noise_is_drawn_on_the_device_by_its_own_generator():
    with _RecordCopies() as mode:
        noise = mask_noise(3, 5, 0, 1, (4, 16), device="cpu")
    assert mode.copies == []  # drawn where it is used, never copied
    (draw,) = mode.draws
    assert draw["device"] == "cpu" and draw["generator"].device == torch.device("cpu")
    # Exact on resume: a function of (seed, step, micro-batch, rank) only.
    assert torch.equal(noise, mask_noise(3, 5, 0, 1, (4, 16), device="cpu"))
    assert not torch.equal(noise, mask_noise(3, 5, 0, 2, (4, 16), device="cpu"))


def test_loaders_pin_memory_on_gpus_only():
    assert loader_settings("cuda", None) == (4, True)
    assert loader_settings("cpu", None) == (0, False)
    assert loader_settings("cuda", 2) == (2, True)
