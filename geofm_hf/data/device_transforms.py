"""Normalise and augment uint16 batches on the accelerator instead of in the data workers.

With ``device_transforms`` on, a data worker only decodes and crops: it ships the raw uint16
crops (2 bytes per value, half of float32's host-to-device traffic) plus each sample's flips and
rotation (:class:`RawBatch`), and :func:`apply_device_transforms` does the flips, the rotation,
the float conversion and ``(x - mean) / std`` on the device, batched. The result is bit-identical
to the host path (flips and rotations are exact permutations of integers; the float arithmetic
is the same fp32 subtract and divide).

Default: on where the training device is a GPU (``resolve_device_transforms("auto", device)``);
off on CPU, where the "device" is the same cores as the workers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "RawBatch",
    "apply_device_transforms",
    "batch_to_device",
    "crop_uint16",
    "resolve_device_transforms",
]


class RawBatch(NamedTuple):
    """Cropped, not yet augmented or normalised batch.

    ``pixels``: ``(B, C, crop, crop)`` in the file's integer dtype (uint16 for Sentinel-2).
    ``ops``: ``(B, 3)`` int64 per sample: horizontal flip, vertical flip, rot90 count.
    """

    pixels: torch.Tensor
    ops: torch.Tensor

    def pin_memory(self) -> RawBatch:  # DataLoader(pin_memory=True) calls this
        return RawBatch(self.pixels.pin_memory(), self.ops.pin_memory())


def crop_uint16(sources, params: np.ndarray, crop: int) -> RawBatch:
    """Host side: copy each sample's crop window, nothing else (``params`` rows are
    ``(y, x, hflip, vflip, rot90_k)`` from :func:`geofm_hf.data.layout.augmentation_params`)."""
    first, _ = sources[0]
    raw = np.empty((len(sources), first.shape[1], crop, crop), dtype=first.dtype)
    for i, ((arr, j), (y, x)) in enumerate(zip(sources, params[:, :2])):
        raw[i] = arr[j, :, y : y + crop, x : x + crop]
    if raw.dtype == np.uint16:
        # torch has uint16 storage but few uint16 kernels; int32 would double the bytes, so ship
        # the same bits as int16 and reinterpret on the device.
        pixels = torch.from_numpy(raw.view(np.int16))
    else:
        pixels = torch.from_numpy(raw)
    return RawBatch(pixels, torch.from_numpy(np.ascontiguousarray(params[:, 2:5], dtype=np.int64)))


def _to_float(pixels: torch.Tensor, was_uint16: bool) -> torch.Tensor:
    if not was_uint16:
        return pixels.to(torch.float32)
    try:  # one pass where the backend converts uint16 directly
        return pixels.view(torch.uint16).to(torch.float32)
    except (RuntimeError, NotImplementedError):
        out = pixels.to(torch.float32)
        return torch.where(out < 0, out + 65536.0, out)  # int16 bits -> uint16 values


def apply_device_transforms(
    batch: RawBatch,
    device: torch.device | str,
    mean,
    std,
    *,
    uint16: bool = True,
) -> torch.Tensor:
    """Device side: ``(B, C, H, W)`` float32, flipped / rotated per sample, ``(x - mean) / std``.

    ``uint16``: the pixels are uint16 bits shipped as int16 (what :func:`crop_uint16` does for
    uint16 files). ``mean``/``std``: one value per band.
    """
    if not isinstance(batch, RawBatch):
        raise TypeError(
            f"apply_device_transforms expects a RawBatch from a loader built with "
            f"device_transforms=True; found {type(batch).__name__}."
        )
    device = torch.device(device)
    x = _to_float(batch.pixels.to(device, non_blocking=True), uint16)
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device)
    if mean_t.numel() != x.shape[1] or std_t.numel() != x.shape[1]:
        raise ValueError(
            f"images have {x.shape[1]} bands; mean/std have {mean_t.numel()}/{std_t.numel()}"
        )
    ops = batch.ops.tolist()  # B x 3 small ints: group samples by their (hflip, vflip, k)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, op in enumerate(ops):
        groups.setdefault(tuple(op), []).append(i)
    if len(groups) > 1 or (groups and next(iter(groups)) != (0, 0, 0)):
        out = torch.empty_like(x)
        for (hflip, vflip, k), rows in groups.items():
            idx = torch.tensor(rows, device=device)
            part = x.index_select(0, idx)
            if hflip:
                part = part.flip(3)
            if vflip:
                part = part.flip(2)
            if k % 4:
                part = torch.rot90(part, k, dims=(2, 3))
            out.index_copy_(0, idx, part.contiguous())
        x = out
    return (x - mean_t[None, :, None, None]) / std_t[None, :, None, None]


def resolve_device_transforms(option: str | bool, device: torch.device | str) -> bool:
    """``"auto"``: on for GPU devices, off on CPU; ``"true"`` / ``"false"`` (or bools) force."""
    if isinstance(option, bool):
        return option
    value = str(option).lower()
    if value == "auto":
        return torch.device(device).type != "cpu"
    if value in ("true", "false"):
        return value == "true"
    raise ValueError(f"device_transforms must be auto, true or false: found {option!r}.")


def batch_to_device(batch, device: torch.device | str, loader) -> torch.Tensor:
    """The recipe's hook: move a loader's batch to ``device``, finishing a :class:`RawBatch`
    there with the stream's own mean/std; plain tensors are just moved."""
    if isinstance(batch, RawBatch):
        stream = loader.stream
        return apply_device_transforms(batch, device, stream.mean, stream.std)
    return batch.to(device, non_blocking=True)
