"""The image processor's inputs: every accepted form of an image, a batch or a time series as
one float32 tensor, and the per-sample metadata (dates, location) as model inputs.

Part of the image processor's remote code: ``image_processing_geofm.py`` imports it relatively,
so ``processor.save_pretrained`` copies it next to the weights and ``trust_remote_code=True``
loads it. It must only import ``numpy``, ``torch``, ``transformers`` and the standard library.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers.image_processing_utils import BatchFeature

# The band names of a PIL image (always converted to RGB), matched to the model's by name.
PIL_BAND_NAMES = ["red", "green", "blue"]


def is_pil(image: Any) -> bool:
    # Duck-typed so PIL stays optional: PIL images have .mode and .getbands().
    return hasattr(image, "getbands") and hasattr(image, "mode") and hasattr(image, "size")


def pil_to_chw(image: Any) -> np.ndarray:
    """A PIL image -> ``(3, H, W)`` uint8 array in red, green, blue order."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))  # (H, W, 3) -> (3, H, W)


def as_float_tensor(array: Any, what: str = "image") -> torch.Tensor:
    """A real numeric array or tensor -> float32 tensor; anything else (a path, text, complex
    values) is an error saying what was expected."""
    if isinstance(array, torch.Tensor):
        if array.is_complex():
            raise ValueError(f"Expected a real-valued {what}, found a {array.dtype} tensor.")
        return array.detach().to(torch.float32)
    if array is None or isinstance(array, (str, bytes)) or hasattr(array, "__fspath__"):
        hint = " (a path: read the raster first, e.g. with rasterio)" if array is not None else ""
        raise ValueError(
            f"Expected a numeric array for the {what}, found {type(array).__name__}{hint}."
        )
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"Expected a numeric {what} array, found dtype {array.dtype}.")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def check_not_empty(pixels: torch.Tensor) -> None:
    batch, channels, height, width = pixels.shape
    if batch == 0 or channels == 0 or height == 0 or width == 0:
        raise ValueError(
            "Expected at least one image with at least one band and one pixel: found shape "
            f"(B, C, H, W) = {tuple(pixels.shape)}."
        )


def _channels_last_to_first(images: Any) -> list[np.ndarray]:
    """``(H, W)``, ``(H, W, C)`` or ``(B, H, W, C)`` arrays (or a list of them) -> a list of
    ``(C, H, W)`` arrays."""
    converted = []
    for im in images if isinstance(images, (list, tuple)) else [images]:
        im = np.asarray(im)
        if im.ndim == 2:
            im = im[:, :, None]
        if im.ndim == 3:
            converted.append(im.transpose(2, 0, 1))
        elif im.ndim == 4:
            converted.extend(im.transpose(0, 3, 1, 2))
        else:
            raise ValueError(
                "channels_last input must be (H, W), (H, W, C) or (B, H, W, C): found "
                f"shape {im.shape}."
            )
    return converted


def _stack_mapping(images: Mapping) -> tuple[torch.Tensor, list[str]]:
    """A ``{band_name: (H, W) or (B, H, W) array}`` mapping -> ``(B, C, H, W)`` and its names."""
    names = list(images)
    if not names:
        raise ValueError(
            "Got an empty {band_name: array} mapping: expected one (H, W) or (B, H, W) "
            "array per band."
        )
    arrays = [as_float_tensor(images[n], f"band {n!r}") for n in names]
    for n, a in zip(names, arrays):
        if a.ndim not in (2, 3) or np.ndim(images[n]) == 0:
            found = "a scalar" if np.ndim(images[n]) == 0 else f"shape {tuple(a.shape)}"
            raise ValueError(
                f"Band {n!r} of a {{band_name: array}} input must be (H, W) or (B, H, W): "
                f"found {found}."
            )
    shapes = {tuple(a.shape) for a in arrays}
    if len(shapes) != 1:
        raise ValueError(
            "Every band of a {band_name: array} input must have the same shape: found "
            + ", ".join(f"{n}={tuple(a.shape)}" for n, a in zip(names, arrays))
        )
    stacked = torch.stack(arrays, dim=-3)  # (C, H, W) or (B, C, H, W)
    return (stacked if stacked.ndim == 4 else stacked.unsqueeze(0)), names


def _stack_list(
    images: Sequence[Any], resize_each: Callable[[torch.Tensor], torch.Tensor] | None
) -> torch.Tensor:
    """A list of ``(C, H, W)`` arrays -> ``(B, C, H, W)``; images of different sizes only with
    ``resize_each`` (``(1, C, H, W)`` -> the processor's size)."""
    tensors = [as_float_tensor(im) for im in images]
    if {t.ndim for t in tensors} != {3}:
        raise ValueError(
            "A list of images must hold (C, H, W) arrays: found shapes "
            f"{[tuple(t.shape) for t in tensors]}."
        )
    for t in tensors:
        check_not_empty(t.unsqueeze(0))
    if len({t.shape[0] for t in tensors}) != 1:
        raise ValueError(
            "The images of one list must have the same bands: found band counts "
            f"{[t.shape[0] for t in tensors]}. Process images of different sensors "
            "separately."
        )
    if len({tuple(t.shape) for t in tensors}) != 1:
        # Resampled each on its own before stacking, when asked for.
        if resize_each is None:
            raise ValueError(
                "The images of one list have different sizes "
                f"{[tuple(t.shape[-2:]) for t in tensors]}: sizes are never changed "
                "silently. Pass do_resize=True (with a processor size) to resample each "
                "to one size, or process each image alone."
            )
        tensors = [resize_each(t.unsqueeze(0))[0] for t in tensors]
    return torch.stack(tensors)


def stack_bands(
    images: Any,
    band_names: Sequence[str] | None,
    channels_last: bool = False,
    resize_each: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[str] | None]:
    """Any accepted input -> ``(B, C, H, W)`` float32 plus the input's band names.

    ``resize_each`` (the processor's resize, when resizing is asked for) lets a list of images
    of different sizes be stacked.
    """
    pil = is_pil(images) or (
        isinstance(images, (list, tuple)) and bool(images) and all(map(is_pil, images))
    )
    if pil:
        # PIL images (what transformers pipelines pass) are RGB: name their bands so they are
        # matched to the model's bands by name, never by position.
        images = [pil_to_chw(im) for im in (images if isinstance(images, (list, tuple))
                                            else [images])]  # fmt: skip
        band_names = band_names if band_names is not None else PIL_BAND_NAMES
    elif channels_last:
        images = _channels_last_to_first(images)
    if isinstance(images, Mapping):
        return _stack_mapping(images)
    if isinstance(images, (list, tuple)) and images and not np.isscalar(images[0]):
        stacked = _stack_list(images, resize_each)
    else:
        stacked = as_float_tensor(images)
        if stacked.ndim == 3:
            stacked = stacked.unsqueeze(0)
        if stacked.ndim != 4:
            raise ValueError(
                "Expected an image of shape (C, H, W) or a batch (B, C, H, W), found shape "
                f"{tuple(stacked.shape)}."
            )
    return stacked, (list(band_names) if band_names is not None else None)


def stack_series(images: Any, input_data_format: str | None, frames: int) -> torch.Tensor:
    """A time-series input of ``frames`` frames -> ``(B, T, C, H, W)`` float32."""
    expected = (
        f"This processor's model takes time series of {frames} frames: (T, C, H, W), "
        f"(B, T, C, H, W) or a list of (T, C, H, W) arrays with T = {frames}"
    )
    if input_data_format == "channels_last" or isinstance(images, Mapping) or is_pil(images):
        raise ValueError(f"{expected}, channels first.")
    if isinstance(images, (list, tuple)) and images and not np.isscalar(images[0]):
        tensors = [as_float_tensor(im) for im in images]
        if {t.ndim for t in tensors} != {4} or len({tuple(t.shape) for t in tensors}) != 1:
            raise ValueError(f"{expected}: found shapes {[tuple(t.shape) for t in tensors]}.")
        stacked = torch.stack(tensors)
    else:
        stacked = as_float_tensor(images)
        stacked = stacked.unsqueeze(0) if stacked.ndim == 4 else stacked
    if stacked.ndim != 5 or stacked.shape[1] != frames:
        raise ValueError(f"{expected}: found shape {tuple(stacked.shape)}.")
    return stacked


def year_and_day(value: Any) -> tuple[int, int]:
    """A date (``datetime.date`` or ISO text) -> (year, day of year, 1-366): the
    ``temporal_coords`` of one frame, for the processor and the pretraining stream alike."""
    day = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
    return day.year, day.timetuple().tm_yday


def with_metadata(data: dict, dates: Any, location: Any, batch: int, frames: int,
                  return_tensors: str | None) -> BatchFeature:  # fmt: skip
    """Adds ``temporal_coords`` / ``location_coords`` from ``dates`` / ``location`` and converts
    to ``return_tensors``."""
    if dates is not None:
        items = [dates] if isinstance(dates, (str, dt.date)) else list(dates)
        if items and not isinstance(items[0], (str, dt.date)):
            rows = [list(d) for d in items]  # one sequence per sample
        elif len(items) == batch * frames and frames == 1:
            rows = [[d] for d in items]  # one date per single-frame sample
        else:
            rows = [items]
        if len(rows) == 1 and batch > 1:
            rows = rows * batch
        if len(rows) != batch or any(len(r) != frames for r in rows):
            raise ValueError(
                f"dates must give {frames} date(s) per sample for {batch} sample(s): found "
                f"{[len(r) for r in rows]} for {len(rows)}."
            )
        coords = [year_and_day(d) for row in rows for d in row]
        data["temporal_coords"] = torch.tensor(coords, dtype=torch.float32).view(batch, frames, 2)
    if location is not None:
        value = torch.as_tensor(location, dtype=torch.float32)
        value = value.expand(batch, 2) if value.shape == (2,) else value
        if value.shape != (batch, 2):
            raise ValueError(
                f"location must be (latitude, longitude) or one pair per sample ({batch}): "
                f"found shape {tuple(value.shape)}."
            )
        data["location_coords"] = value.clone()
    if return_tensors == "np":
        data = {k: v.numpy() for k, v in data.items()}
    elif return_tensors not in ("pt", None):
        raise ValueError(f"return_tensors must be 'pt' or 'np': found {return_tensors!r}.")
    return BatchFeature(data=data)
