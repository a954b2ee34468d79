"""Image processor: band order by name, per-band normalisation, nodata handling, resize/crop.

The band contract (names, per-band mean/std) is stored in ``preprocessor_config.json`` next to the
weights, so a checkpoint always says which bands, in which order, normalised how. A band the model
needs but the input lacks is an error naming it: nothing is ever zero-filled silently.

This file is copied next to the weights by ``save_pretrained`` (remote code), so it must only
import ``numpy``, ``torch``, ``transformers`` and the standard library.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

# Red/green/blue under Sentinel-2's own spelling (B04/B03/B02), so a PIL RGB image matches a
# Sentinel-2 model by name. Not "B4": that is red on Landsat 8 but NIR on Landsat 5/7; other
# sensors are matched by wavelength (the config's wavelengths_um). Kept here rather than imported
# from geofm_hf.bands: this file must stand alone as remote code.
_RGB_ALIASES = {
    "red": ("red", "r", "b04"),
    "green": ("green", "g", "b03"),
    "blue": ("blue", "b", "b02"),
}
_PIL_BAND_NAMES = ["red", "green", "blue"]
# Centre wavelength and half-width (um) of generic colour names, for wavelength matching.
_COLOUR_WAVELENGTHS = {"red": (0.665, 0.05), "green": (0.56, 0.05), "blue": (0.49, 0.05),
                       "nir": (0.842, 0.075)}  # fmt: skip
# Inputs whose mean lies further than this many model standard deviations from the model's mean
# are almost surely on another scale or from another sensor (warned once per processor).
_FAR_Z = 3.0


def _same_band(a: str, b: str) -> bool:
    a, b = a.strip().lower(), b.strip().lower()
    if a == b:
        return True
    return any(a in group and b in group for group in _RGB_ALIASES.values())


def _is_pil(image: Any) -> bool:
    # Duck-typed so PIL stays optional: PIL images have .mode and .getbands().
    return hasattr(image, "getbands") and hasattr(image, "mode") and hasattr(image, "size")


def _pil_to_chw(image: Any) -> np.ndarray:
    """A PIL image -> ``(3, H, W)`` uint8 array in red, green, blue order."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))  # (H, W, 3) -> (3, H, W)


def _as_float_tensor(array: Any, what: str = "image") -> torch.Tensor:
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


def _table_lookup(names: Sequence[str], sensor: str | None):
    """Wavelengths (um), the finest GSD (m) and the bandwidths (um; ``None`` unless every band
    has one) of ``names`` from geofm_hf's sensor tables.

    ``(None, None, None)`` where the package is absent (remote code) or the sensor is unknown;
    the caller then needs ``wavelengths_um=`` / ``gsd=`` / ``bandwidths_um=``.
    """
    try:
        from geofm_hf import bands as tables
    except ImportError:
        return None, None, None
    try:
        wavelengths = tables.band_wavelengths(list(names), sensor)
        gsds = tables.band_gsd(list(names), sensor)
        widths = tables.band_bandwidths(list(names), sensor)
    except ValueError:
        if sensor is not None:
            raise
        return None, None, None
    known = [g for g in (gsds or []) if g]
    if widths is not None and any(w is None for w in widths):
        widths = None
    return wavelengths, (min(known) if known else None), widths


def year_and_day(value: Any) -> tuple[int, int]:
    """A date (``datetime.date`` or ISO text) -> (year, day of year, 1-366): the
    ``temporal_coords`` of one frame, for the processor and the pretraining stream alike."""
    import datetime as dt

    day = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
    return day.year, day.timetuple().tm_yday


class GeoViTMAEImageProcessor(BaseImageProcessor):
    r"""Prepares multispectral rasters for a :class:`GeoViTMAEModel`.

    Args:
        band_names (`list[str]`, *optional*): the band order the model expects. Inputs that name
            their bands are reordered to it; unnamed inputs must already be in this order.
        image_mean (`list[float]`, *optional*): per-band mean, in the raw units of the data
            (e.g. Sentinel-2 L1C digital numbers). Required with ``do_normalize``.
        image_std (`list[float]`, *optional*): per-band standard deviation, same units.
        do_normalize (`bool`, defaults to `True`): apply ``(x - mean) / std`` per band.
        size (`int`, *optional*): the side in pixels of the model's input (``crop_size`` when
            that is set). See "Sizes" below: only ``do_resize`` resamples to it.
        crop_size (`int`, *optional*): centre-crop larger images to ``crop_size x crop_size`` (at
            their own resolution; after resampling to ``size`` with ``do_resize``).
        resample (`str`, defaults to `"bilinear"`): ``"bilinear"``, ``"bicubic"`` or
            ``"nearest"`` (antialiased when shrinking, except nearest).
        nodata (`float`, *optional*): raw value marking missing pixels (besides NaN, always missing).
        nodata_policy (`str`, defaults to `"fill_mean"`): ``"fill_mean"`` replaces missing pixels
            (nodata, NaN, +-inf) by the band mean (0 after normalisation); ``"error"`` raises.
            ``pixel_mask`` ``(B, H, W)`` (1 = valid) is always returned and the models accept it.
        do_resize (`bool`, defaults to `False`): resample images of any other size to
            ``size x size`` (a non-square image is centre-cropped to a square first).
        pad (`bool`, defaults to `False`): pad images smaller than the model's input at the
            bottom and right edges (pixel coordinates keep their origin) with pixels marked
            invalid in ``pixel_mask`` (and 0, the normalised band mean, in ``pixel_values``).
        wavelengths_um (`list[float]`, *optional*): centre wavelength of each model band; inputs
            that give theirs (``wavelengths_um=`` at call time) are matched by wavelength.
            The processed ``wavelengths`` are returned for the model (wavelength models need
            them; conv models check them against their bands).
        return_gsd (`bool`, defaults to `False`): return ``gsd`` (metres per output pixel), for
            models with ``reference_gsd_m``; from ``gsd=`` at call time or the sensor's table.
        num_frames (`int`, defaults to 1): frames per sample of a time-series model: inputs are
            then ``(T, C, H, W)`` series (or batches of them), every frame processed alike.
        return_bandwidths (`bool`, defaults to `False`): return ``bandwidths`` (um) of the input
            bands, for wavelength models with ``wavelength_bandwidths``: ``bandwidths_um=`` at
            call time, or the sensor table's for named bands.

    Sizes are never changed silently, larger or smaller: with ``size`` set, an image whose side
    differs from the model's input (``crop_size`` or ``size``) is an error naming both sizes and
    the choices, unless it is asked for: ``do_resize=True`` resamples it (changing its ground
    sample distance, which ``gsd`` then reports), ``crop_size`` centre-crops a larger one,
    ``pad=True`` pads a smaller one with invalid pixels. A larger scene is best cut into tiles
    (a sliding window, or ``geofm_hf.data.write_shards(chip_size=...)``).
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        band_names: list[str] | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        do_normalize: bool = True,
        size: int | None = None,
        crop_size: int | None = None,
        resample: str = "bilinear",
        nodata: float | None = None,
        nodata_policy: str = "fill_mean",
        do_resize: bool = False,
        wavelengths_um: list[float] | None = None,
        return_gsd: bool = False,
        num_frames: int = 1,
        return_bandwidths: bool = False,
        pad: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pad = pad
        self.return_bandwidths = return_bandwidths
        self.return_gsd = return_gsd
        self.num_frames = int(num_frames)
        self.do_resize = do_resize
        self.wavelengths_um = [float(w) for w in wavelengths_um] if wavelengths_um else None
        self.band_names = list(band_names) if band_names is not None else None
        self.image_mean = [float(m) for m in image_mean] if image_mean is not None else None
        self.image_std = [float(s) for s in image_std] if image_std is not None else None
        self.do_normalize = do_normalize
        self.size = size
        self.crop_size = crop_size
        self.resample = resample
        self.nodata = nodata
        self.nodata_policy = nodata_policy
        self._validate()

    def _validate(self) -> None:
        if self.resample not in ("bilinear", "bicubic", "nearest"):
            raise ValueError(
                f"resample must be 'bilinear', 'bicubic' or 'nearest': found {self.resample!r}."
            )
        if self.nodata_policy not in ("fill_mean", "error"):
            raise ValueError(
                f"nodata_policy must be 'fill_mean' or 'error': found {self.nodata_policy!r}."
            )
        if self.do_normalize and (self.image_mean is None or self.image_std is None):
            raise ValueError(
                "do_normalize=True needs image_mean and image_std (one value per band): found "
                f"image_mean={self.image_mean}, image_std={self.image_std}."
            )
        lengths = {
            name: len(values)
            for name, values in (
                ("band_names", self.band_names),
                ("image_mean", self.image_mean),
                ("image_std", self.image_std),
                ("wavelengths_um", self.wavelengths_um),
            )
            if values is not None
        }
        if len(set(lengths.values())) > 1:
            raise ValueError(f"Per-band fields must have the same length: found {lengths}.")
        if self.image_std is not None and any(s <= 0 for s in self.image_std):
            raise ValueError(f"image_std must be positive for every band: found {self.image_std}.")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be a positive integer: found {self.num_frames}.")

    @classmethod
    def from_model_config(cls, config: Any, **kwargs: Any) -> GeoViTMAEImageProcessor:
        """The processor matching a :class:`GeoViTMAEConfig`'s band contract and image size."""
        fields = {
            "band_names": config.band_names,
            "image_mean": config.image_mean,
            "image_std": config.image_std,
            "size": config.image_size,
            "do_normalize": config.image_mean is not None,
            "wavelengths_um": getattr(config, "wavelengths_um", None),
            "return_gsd": getattr(config, "reference_gsd_m", None) is not None,
            "num_frames": getattr(config, "num_frames", 1),
            "return_bandwidths": getattr(config, "wavelength_bandwidths", False),
        }
        if getattr(config, "patch_embedding", "conv") == "wavelength":
            # A wavelength model takes any bands in any order: nothing to select or reorder, and
            # its pretraining statistics belong to its pretraining sensors, not to the input's.
            fields.update(band_names=None, wavelengths_um=None, image_mean=None, image_std=None)
            fields["do_normalize"] = False
        fields.update(kwargs)
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for key in [k for k in out if k.startswith("_")]:
            del out[key]  # run-time state (the one-time warning), not configuration
        return out

    def select_bands(self, band_names: Sequence[str], reference: Sequence[str] | None = None):
        """Narrow this processor, in place, to ``band_names`` (a subset of its bands, any order).

        :func:`geofm_hf.select_input_bands` calls it with the model so both follow one call.
        ``reference`` is the band order the per-band fields are in (default ``band_names``).
        """
        reference = list(reference or self.band_names or [])
        missing = [b for b in band_names if b not in reference]
        if missing:
            raise ValueError(
                f"Bands {missing} are not among the processor's bands {reference}: expected a "
                "subset of them."
            )
        index = [reference.index(b) for b in band_names]
        for field in ("image_mean", "image_std", "wavelengths_um"):
            values = getattr(self, field)
            if values is not None and len(values) == len(reference):
                setattr(self, field, [values[i] for i in index])
        self.band_names = list(band_names)
        self._validate()
        return self

    @property
    def num_channels(self) -> int | None:
        for values in (self.band_names, self.image_mean):
            if values is not None:
                return len(values)
        return None

    def _stack_bands(
        self,
        images: Any,
        band_names: Sequence[str] | None,
        channels_last: bool = False,
        resize: bool = False,
    ) -> tuple[torch.Tensor, list[str] | None]:
        """Any accepted input -> ``(B, C, H, W)`` float32 plus the input's band names."""
        pil = _is_pil(images) or (
            isinstance(images, (list, tuple)) and bool(images) and all(map(_is_pil, images))
        )
        if pil:
            # PIL images (what transformers pipelines pass) are RGB: name their bands so they are
            # matched to the model's bands by name, never by position.
            images = [_pil_to_chw(im) for im in (images if isinstance(images, (list, tuple))
                                                 else [images])]  # fmt: skip
            band_names = band_names if band_names is not None else _PIL_BAND_NAMES
        elif channels_last:
            arrays = images if isinstance(images, (list, tuple)) else [images]
            converted = []
            for im in arrays:
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
            images = converted
        if isinstance(images, Mapping):
            names = list(images)
            if not names:
                raise ValueError(
                    "Got an empty {band_name: array} mapping: expected one (H, W) or (B, H, W) "
                    "array per band."
                )
            arrays = [_as_float_tensor(images[n], f"band {n!r}") for n in names]
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
        if isinstance(images, (list, tuple)) and images and not np.isscalar(images[0]):
            tensors = [_as_float_tensor(im) for im in images]
            if {t.ndim for t in tensors} != {3}:
                raise ValueError(
                    "A list of images must hold (C, H, W) arrays: found shapes "
                    f"{[tuple(t.shape) for t in tensors]}."
                )
            for t in tensors:
                self._check_not_empty(t.unsqueeze(0))
            if len({t.shape[0] for t in tensors}) != 1:
                raise ValueError(
                    "The images of one list must have the same bands: found band counts "
                    f"{[t.shape[0] for t in tensors]}. Process images of different sensors "
                    "separately."
                )
            if len({tuple(t.shape) for t in tensors}) != 1:
                # Resampled each on its own before stacking, when asked for.
                if self.size is None or not resize:
                    raise ValueError(
                        "The images of one list have different sizes "
                        f"{[tuple(t.shape[-2:]) for t in tensors]}: sizes are never changed "
                        "silently. Pass do_resize=True (with a processor size) to resample each "
                        "to one size, or process each image alone."
                    )
                tensors = [self._resize(t.unsqueeze(0))[0] for t in tensors]
            stacked = torch.stack(tensors)
        else:
            stacked = _as_float_tensor(images)
            if stacked.ndim == 3:
                stacked = stacked.unsqueeze(0)
            if stacked.ndim != 4:
                raise ValueError(
                    "Expected an image of shape (C, H, W) or a batch (B, C, H, W), found shape "
                    f"{tuple(stacked.shape)}."
                )
        return stacked, (list(band_names) if band_names is not None else None)

    @staticmethod
    def _check_not_empty(pixels: torch.Tensor) -> None:
        batch, channels, height, width = pixels.shape
        if batch == 0 or channels == 0 or height == 0 or width == 0:
            raise ValueError(
                "Expected at least one image with at least one band and one pixel: found shape "
                f"(B, C, H, W) = {tuple(pixels.shape)}."
            )

    def _check_names_mean_the_models_bands(self, matched, names, sensor) -> None:
        """Bands matched by name must be the model's bands, not another sensor's band of the
        same name (Landsat 8 ``B4`` is red, Landsat 7's NIR). With the package installed, its
        one rule decides (``geofm_hf.bands``): the input's sensor (``sensor=``, or the one its
        band names identify together, as ``B02 .. B12`` do) gives each input band a wavelength
        that must be the model band's; a bare name no sensor pins down must mean one wavelength.
        Remote code without the package keeps matching by name."""
        try:
            from geofm_hf import bands as tables
        except ImportError:
            return
        if self.wavelengths_um is None:
            return
        try:
            known = tables.BandSet.of(names, sensor=sensor).wavelengths_um
        except ValueError:  # names outside the tables (aliases, custom bands): checked one by one
            known = None
        for b, i in enumerate(matched):
            if i is None:
                continue
            model_um = self.wavelengths_um[b]
            if known is not None:
                if abs(known[i] - model_um) > 0.05:
                    raise ValueError(
                        f"Input band {names[i]!r}{f' of {sensor}' if sensor else ''} is at "
                        f"{known[i]} um, but the model's {self.band_names[b]!r} is at {model_um} "
                        "um: the same name, another band. Pass the input's bands under the "
                        "model's names for the same wavelengths, or use a wavelength model."
                    )
                continue
            problem = tables.bare_name_problem(names[i], model_um)
            if problem is not None:
                raise ValueError(
                    f"Input band {names[i]!r} is matched to the model's by name alone, but {problem}: "
                    "pass sensor=... (or wavelengths_um=...) so that bands are compared by "
                    "wavelength."
                )

    def _order_bands(
        self,
        pixels: torch.Tensor,
        names: list[str] | None,
        wavelengths: Sequence[float] | None = None,
        sensor: str | None = None,
    ) -> torch.Tensor:
        channels = pixels.shape[1]
        if wavelengths is not None and len(wavelengths) != channels:
            raise ValueError(
                f"Got {len(wavelengths)} wavelengths for an input with {channels} channels."
            )
        if names is not None and len(names) != channels:
            raise ValueError(
                f"Got {len(names)} band names for an input with {channels} channels: {names}."
            )
        if self.band_names is None:
            expected = self.num_channels
            if expected is not None and channels != expected:
                raise ValueError(f"Expected {expected} bands, found {channels}.")
            return pixels
        if names is None:
            if channels != len(self.band_names):
                raise ValueError(
                    f"Expected {len(self.band_names)} bands ({', '.join(self.band_names)}), found "
                    f"{channels}. Pass band_names=[...] to select and reorder bands by name."
                )
            return pixels  # unnamed input: taken to be in the model's order already
        if wavelengths is None and self.wavelengths_um is not None:
            # Generic colour names (PIL input, RGB datasets) have a known wavelength.
            known = [_COLOUR_WAVELENGTHS.get(n.strip().lower()) for n in names]
            if all(known):
                wavelengths = [k[0] for k in known]
        matched = []
        for b, band in enumerate(self.band_names):
            if wavelengths is not None and self.wavelengths_um is not None:
                # Across sensors a band number means nothing (Landsat 7 B4 is NIR, Landsat 8 B4
                # red): nearest centre wavelength, within 0.05 um, decides.
                target = self.wavelengths_um[b]
                dist = [abs(w - target) for w in wavelengths]
                best = min(range(channels), key=dist.__getitem__)
                matched.append(best if dist[best] <= 0.05 else None)
                continue
            # Exact names first; Sentinel-2 RGB aliases (red = B04) only when no exact match.
            hits = [i for i, n in enumerate(names) if n == band]
            if not hits:
                hits = [i for i, n in enumerate(names) if _same_band(n, band)]
            matched.append(hits[0] if hits else None)
        if wavelengths is None:
            self._check_names_mean_the_models_bands(matched, names, sensor)
        missing = [b for b, i in zip(self.band_names, matched) if i is None]
        if missing:
            how = " at the same wavelength" if wavelengths is not None else ""
            raise ValueError(
                f"Missing bands {missing}: the model expects {self.band_names}, the input has "
                f"{names}{how}. Missing bands are never zero-filled; to run on fewer bands, "
                "restrict the model and this processor together with "
                "geofm_hf.select_input_bands(model, bands, processor=processor)."
            )
        if len(set(matched)) != len(matched):
            raise ValueError(
                f"Input bands {names} match the model's bands {self.band_names} ambiguously "
                f"({matched}); pass band_names/wavelengths_um that tell them apart."
            )
        return pixels.index_select(1, torch.tensor(matched))

    def _resize(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[-2:]
        if self.size is None or (height, width) == (self.size, self.size):
            return pixels
        if height != width:
            side = min(height, width)
            top, left = (height - side) // 2, (width - side) // 2
            pixels = pixels[..., top : top + side, left : left + side]
        mode = self.resample
        antialias = mode != "nearest" and pixels.shape[-1] > self.size
        kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": antialias}
        return F.interpolate(pixels, size=(self.size, self.size), mode=mode, **kwargs)

    def _target_side(self) -> int | None:
        """The side of what the model receives: ``crop_size``, else ``size``."""
        return self.crop_size if self.crop_size is not None else self.size

    def _check_size(self, height: int, width: int, resize: bool, pad: bool) -> None:
        """Refuses an image of another size than the model's input unless the change is asked
        for, naming the sizes and the choices (before any work, and before any warning)."""
        side = self._target_side()
        if side is None or (height, width) == (side, side):
            return
        if resize and self.size is not None:
            if self.crop_size is not None and self.crop_size > self.size:
                raise ValueError(
                    f"crop_size {self.crop_size} is larger than size {self.size}: expected a crop "
                    "inside the resized image."
                )
            return
        larger = height > side or width > side
        smaller = height < side or width < side
        if (not larger or self.crop_size is not None) and (not smaller or pad):
            return
        choices = []
        if larger and self.crop_size is None:
            choices.append(
                f"cut the scene into {side}x{side} tiles (a sliding window, or "
                f"geofm_hf.data.write_shards(chip_size={side})), or crop_size={side} (centre crop)"
            )
        if smaller and not pad:
            choices.append(
                f"pad=True (pad the bottom and right edges to {side}x{side} with pixels marked "
                "invalid in pixel_mask)"
            )
        if self.size is not None:
            choices.append(
                f"do_resize=True (resample to {self.size}x{self.size}, which changes the ground "
                "sample distance)"
            )
        raise ValueError(
            f"The image is {height}x{width} px; the model takes {side}x{side}. Sizes are never "
            "changed silently: " + "; or ".join(choices) + "."
        )

    def _crop_or_pad(
        self, pixels: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Centre-crops sides larger than the model's input and pads smaller ones (bottom and
        right; ``mask`` 1 = invalid there), as :meth:`_check_size` allowed."""
        side = self._target_side()
        if side is None:
            return pixels, mask
        height, width = pixels.shape[-2:]
        top, left = max(height - side, 0) // 2, max(width - side, 0) // 2
        pixels = pixels[..., top : top + side, left : left + side]
        mask = mask[..., top : top + side, left : left + side]
        below, right = side - pixels.shape[-2], side - pixels.shape[-1]
        if below or right:
            pixels = F.pad(pixels, (0, right, 0, below), value=0.0)  # 0 = the band mean
            mask = F.pad(mask, (0, right, 0, below), value=1.0)
        return pixels, mask

    def preprocess(
        self,
        images: Any,
        band_names: Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        input_data_format: str | None = None,
        wavelengths_um: Sequence[float] | None = None,
        do_resize: bool | None = None,
        sensor: str | None = None,
        gsd: float | None = None,
        dates: Any = None,
        location: Any = None,
        bandwidths_um: Sequence[float] | None = None,
        pad: bool | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Turn ``images`` into model inputs.

        Args:
            images: a ``(C, H, W)`` or ``(B, C, H, W)`` array/tensor, a list of ``(C, H, W)``
                arrays, a ``{band_name: array}`` mapping of ``(H, W)`` or ``(B, H, W)`` arrays, or
                PIL images (what ``transformers.pipeline`` passes): RGB, named ``red``, ``green``,
                ``blue`` and matched by name to the model's bands (``B04`` = red ...) or, when the
                processor knows its wavelengths, by wavelength.
            band_names: the input's band names, when ``images`` is an array; bands are then picked
                and ordered by name.
            return_tensors: ``"pt"`` (default) or ``"np"``.
            input_data_format: ``"channels_last"`` for ``(H, W, C)`` / ``(B, H, W, C)`` arrays
                (e.g. uint8 RGB from an image library); default ``"channels_first"``.
            wavelengths_um: the input bands' centre wavelengths (another sensor's data): bands
                are then matched to the model's by nearest wavelength, never by number.
            bandwidths_um: the input bands' full widths, returned as ``bandwidths`` for models
                that read them (default: the sensor table's, for named bands).
            do_resize: override the processor's ``do_resize`` for this call.
            pad: override the processor's ``pad`` for this call.
            sensor: the input's sensor (a ``geofm_hf.bands.SENSORS`` key), to look up the
                wavelengths and GSD of ``band_names`` when ``wavelengths_um`` is not given.
            gsd: the input's ground sample distance (metres per pixel); returned as ``gsd``,
                scaled by any resize.
            dates: each frame's acquisition date (``datetime.date`` or ISO text): one per frame of
                one sample, or one sequence per sample; returned as ``temporal_coords``
                ``(B, T, 2)`` (year, day of year) for models with ``temporal_encoding``.
            location: ``(latitude, longitude)`` in degrees, or one pair per sample; returned as
                ``location_coords`` ``(B, 2)`` for models with ``location_encoding``.

        A time-series processor (``num_frames`` T > 1) takes ``(T, C, H, W)``, ``(B, T, C, H, W)``
        or a list of ``(T, C, H, W)`` arrays and returns ``pixel_values`` ``(B, T, C, H, W)`` and
        ``pixel_mask`` ``(B, T, H, W)``, each frame processed as a single image would be.

        Returns:
            ``BatchFeature`` with ``pixel_values`` ``(B, C, H, W)`` float32 and ``pixel_mask``
            ``(B, H, W)`` (1 = valid; 0 where any band was nodata, NaN or +-inf, filled with the
            band mean). ``model(**inputs)`` passes the mask on. With known wavelengths also
            ``wavelengths`` ``(C,)`` (um, in the output band order), and ``gsd`` ``(B,)`` when
            ``gsd`` is given or ``return_gsd`` is set.
        """
        series = kwargs.pop("_series", None)
        if kwargs:
            raise ValueError(f"Unexpected arguments {sorted(kwargs)}.")
        if series is None and self.num_frames > 1:
            stacked = self._stack_series(images, input_data_format)
            batch, frames = stacked.shape[:2]
            flat = self.preprocess(
                stacked.flatten(0, 1), band_names=band_names, return_tensors="pt",
                wavelengths_um=wavelengths_um, do_resize=do_resize, sensor=sensor, gsd=gsd,
                bandwidths_um=bandwidths_um, pad=pad, _series=(batch, frames),
            )  # fmt: skip
            data = dict(flat)
            data["pixel_values"] = data["pixel_values"].unflatten(0, (batch, frames))
            data["pixel_mask"] = data["pixel_mask"].unflatten(0, (batch, frames))
            if "gsd" in data:
                data["gsd"] = data["gsd"][::frames]
            return self._with_metadata(data, dates, location, batch, frames, return_tensors)
        if input_data_format not in (None, "channels_first", "channels_last"):
            raise ValueError(
                "input_data_format must be 'channels_first' or 'channels_last': found "
                f"{input_data_format!r}."
            )
        resize = self.do_resize if do_resize is None else do_resize
        pad = self.pad if pad is None else pad
        pixels, names = self._stack_bands(
            images, band_names, channels_last=input_data_format == "channels_last", resize=resize
        )
        self._check_not_empty(pixels)
        height, width = pixels.shape[-2:]
        table = _table_lookup(names, sensor) if names is not None else (None, None, None)
        table_gsd = table[1]
        if wavelengths_um is None and self.band_names is None and names is not None:
            wavelengths_um = table[0]
        if bandwidths_um is None and wavelengths_um is not None and table[0] is not None:
            # Table widths only for the bands the table's wavelengths describe.
            given = np.asarray(wavelengths_um, float)
            same = given.shape == (len(table[0]),) and np.allclose(given, table[0], atol=1e-3)
            bandwidths_um = table[2] if same else None
        source_side = min(height, width)
        pixels = self._order_bands(pixels, names, wavelengths_um, sensor)
        # After the band contract (a missing band is the first thing to fix), before any work.
        self._check_size(height, width, resize, pad)

        invalid = ~torch.isfinite(pixels)
        if self.nodata is not None:
            invalid |= pixels == self.nodata
        data: dict[str, Any] = {}
        has_invalid = bool(invalid.any())
        if has_invalid:
            if self.nodata_policy == "error":
                raise ValueError(
                    f"{int(invalid.sum())} nodata/NaN/inf values found and nodata_policy='error'."
                )
            fill = (
                torch.tensor(self.image_mean).view(1, -1, 1, 1).expand_as(pixels)
                if self.image_mean is not None
                else torch.zeros_like(pixels)
            )
            pixels = torch.where(invalid, fill, pixels)
        if self.do_normalize:
            self._warn_if_far_from_statistics(pixels, invalid, names)
            mean = torch.tensor(self.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.tensor(self.image_std, dtype=torch.float32).view(1, -1, 1, 1)
            pixels = (pixels - mean) / std
        mask = invalid.any(dim=1, keepdim=True).float()  # (B, 1, H, W), 1 = invalid
        if resize and self.size is not None:
            pixels = self._resize(pixels)
            mask = self._resize(mask) if has_invalid else torch.zeros_like(pixels[:, :1])
        pixels, mask = self._crop_or_pad(pixels, mask)
        data["pixel_values"] = pixels.contiguous()
        # A resized pixel is valid only when every source pixel under it was.
        data["pixel_mask"] = (mask[:, 0] <= 0).contiguous()
        # The bands the model receives: the processor's own (in its order) once it reordered the
        # input to them, else the input's (a wavelength model takes them as they come).
        out_wavelengths = self.wavelengths_um if self.band_names is not None else wavelengths_um
        if out_wavelengths is not None:
            data["wavelengths"] = torch.tensor(out_wavelengths, dtype=torch.float32)
        if self.return_bandwidths and self.band_names is None:
            if bandwidths_um is None:
                warnings.warn(
                    "This model reads each band's bandwidth but none are known for the input "
                    f"bands {names}: it embeds them with unknown widths. Pass bandwidths_um=[...] "
                    "(micrometres) or sensor=... to look them up.",
                    UserWarning,
                    stacklevel=3,
                )
            else:
                data["bandwidths"] = torch.tensor(bandwidths_um, dtype=torch.float32)
        if gsd is None and self.return_gsd:
            gsd = table_gsd
            if gsd is None:
                raise ValueError(
                    "This model scales positions by ground sample distance: pass gsd=<metres per "
                    f"pixel> (or sensor=...) for the input bands {names}."
                )
        if gsd is not None:
            if not float(gsd) > 0:
                raise ValueError(f"gsd must be positive metres per pixel: found {gsd}.")
            # Resizing a side of S px to N px makes each output pixel S/N input pixels wide.
            resized = resize and self.size is not None and source_side != self.size
            scale = source_side / self.size if resized else 1.0
            data["gsd"] = torch.full((pixels.shape[0],), float(gsd) * scale)
        if series is not None:
            return BatchFeature(data=data)
        return self._with_metadata(data, dates, location, pixels.shape[0], 1, return_tensors)

    def _stack_series(self, images: Any, input_data_format: str | None) -> torch.Tensor:
        """A time-series input -> ``(B, T, C, H, W)`` float32."""
        frames = self.num_frames
        expected = (
            f"This processor's model takes time series of {frames} frames: (T, C, H, W), "
            f"(B, T, C, H, W) or a list of (T, C, H, W) arrays with T = {frames}"
        )
        if input_data_format == "channels_last" or isinstance(images, Mapping) or _is_pil(images):
            raise ValueError(f"{expected}, channels first.")
        if isinstance(images, (list, tuple)) and images and not np.isscalar(images[0]):
            tensors = [_as_float_tensor(im) for im in images]
            if {t.ndim for t in tensors} != {4} or len({tuple(t.shape) for t in tensors}) != 1:
                raise ValueError(f"{expected}: found shapes {[tuple(t.shape) for t in tensors]}.")
            stacked = torch.stack(tensors)
        else:
            stacked = _as_float_tensor(images)
            stacked = stacked.unsqueeze(0) if stacked.ndim == 4 else stacked
        if stacked.ndim != 5 or stacked.shape[1] != frames:
            raise ValueError(f"{expected}: found shape {tuple(stacked.shape)}.")
        return stacked

    @staticmethod
    def _with_metadata(data: dict, dates: Any, location: Any, batch: int, frames: int,
                       return_tensors: str | None) -> BatchFeature:  # fmt: skip
        """Adds ``temporal_coords`` / ``location_coords`` from ``dates`` / ``location``."""
        import datetime as dt

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
            data["temporal_coords"] = torch.tensor(coords, dtype=torch.float32).view(
                batch, frames, 2
            )
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

    def _warn_if_far_from_statistics(
        self, pixels: torch.Tensor, invalid: torch.Tensor, names: list[str] | None
    ) -> None:
        """Warn once when a band's mean is > 3 model standard deviations from the model's mean
        in a way natural variation does not explain: a factor of 5 or more, an 8-bit or 0-1
        range, the Sentinel-2 +1000 offset in every band, or bands off in opposite directions."""
        if getattr(self, "_stats_warned", False):
            return
        valid = (~invalid).float()
        count = valid.sum(dim=(0, 2, 3))
        if not bool((count > 0).all()):
            return
        means = (pixels * valid).sum(dim=(0, 2, 3)) / count
        model_mean = torch.tensor(self.image_mean)
        model_std = torch.tensor(self.image_std)
        z = (means - model_mean) / model_std
        far = [int(i) for i in torch.nonzero(z.abs() > _FAR_Z).flatten()]
        if not far:
            return
        peak = float(pixels.max())
        ratios = [
            float(means[i]) / float(model_mean[i]) if float(model_mean[i]) else 1.0
            for i in range(len(z))
        ]
        offset = (means - model_mean - 1000.0).abs() < 2 * model_std
        # One band far off one way while another is off the other way: what a swapped pair
        # looks like (a bright or dark scene moves every band the same way).
        opposite = bool(
            ((z > _FAR_Z).any() and (z < -0.5).any()) or ((z < -_FAR_Z).any() and (z > 0.5).any())
        )
        scaled = [i for i in far if ratios[i] > 5 or 0 < ratios[i] < 0.2]
        small_range = (peak <= 255.0 and bool((model_mean > 255.0).any())) or (
            peak <= 1.5 and bool((model_mean > 1.5).any())
        )
        if not (scaled or opposite or small_range or bool(offset.all())):
            # Every far band off the same way by less than a factor 5: a bright (cloud, snow)
            # or dark (water, shadow) scene of the right kind, not a contract error.
            return
        self._stats_warned = True
        bands = self.band_names or [f"channel {i}" for i in range(len(z))]
        lines = []
        for i in far:
            ratio = ratios[i]
            if peak <= 255.0 and float(model_mean[i]) > 255.0:
                cause = "8-bit input (uint8 0-255) against statistics of 16-bit digital numbers"
            elif peak <= 1.5 and float(model_mean[i]) > 1.5:
                cause = "reflectance in 0-1 against statistics of scaled integers (x10000)"
            elif bool(offset.all()):
                cause = "the Sentinel-2 baseline 04.00 offset (+1000) not removed"
            elif ratio > 5 or 0 < ratio < 0.2:
                cause = f"another scaling (input/model mean = {ratio:.3g})"
            else:
                cause = (
                    "bands off in opposite directions: a mislabelled or reordered band, another "
                    "sensor, or a surface unlike the pretraining data"
                )
            lines.append(
                f"band {bands[i]}: input mean {float(means[i]):.4g} is {float(z[i]):+.1f} model "
                f"std from the model's mean {float(model_mean[i]):.4g}; likely cause: {cause}"
            )
        warnings.warn(
            "Inputs far outside the model's statistics (|mean z| > 3), normalised anyway: "
            + "; ".join(lines)
            + ". Check the sensor, the scaling and the band order of the input.",
            UserWarning,
            stacklevel=4,
        )

    def __call__(self, images: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)


__all__ = ["GeoViTMAEImageProcessor"]
