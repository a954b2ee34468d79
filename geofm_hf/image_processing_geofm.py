"""Image processor: band order by name, per-band normalisation, nodata handling, resize/crop.

The band contract (names, per-band mean/std) is stored in ``preprocessor_config.json`` next to the
weights, so a checkpoint always says which bands, in which order, normalised how. A band the model
needs but the input lacks is an error naming it: nothing is ever zero-filled silently.

This file is copied next to the weights by ``save_pretrained`` (remote code), with the two it
imports relatively (transformers copies and loads those too): ``image_processing_geofm_inputs.py``
(input forms, time series, dates) and ``image_processing_geofm_bands.py`` (band matching,
statistics). All three must only import ``numpy``, ``torch``, ``transformers`` and the standard
library.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from .image_processing_geofm_bands import far_from_statistics, order_bands, table_lookup
from .image_processing_geofm_inputs import (
    check_not_empty,
    stack_bands,
    stack_series,
    with_metadata,
)
from .image_processing_geofm_inputs import (
    year_and_day as year_and_day,  # re-exported: data/format.py imports it from here
)

# The processor's remote code: this file and those it imports relatively, all of which
# save_pretrained copies next to the weights (transformers follows the relative imports).
PROCESSOR_CODE_FILES = (
    "image_processing_geofm.py",
    "image_processing_geofm_bands.py",
    "image_processing_geofm_inputs.py",
)


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
            stacked = stack_series(images, input_data_format, self.num_frames)
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
            return with_metadata(data, dates, location, batch, frames, return_tensors)
        if input_data_format not in (None, "channels_first", "channels_last"):
            raise ValueError(
                "input_data_format must be 'channels_first' or 'channels_last': found "
                f"{input_data_format!r}."
            )
        resize = self.do_resize if do_resize is None else do_resize
        pad = self.pad if pad is None else pad
        pixels, names = stack_bands(
            images,
            band_names,
            channels_last=input_data_format == "channels_last",
            resize_each=self._resize if resize and self.size is not None else None,
        )
        check_not_empty(pixels)
        height, width = pixels.shape[-2:]
        table = table_lookup(names, sensor) if names is not None else (None, None, None)
        table_gsd = table[1]
        if wavelengths_um is None and self.band_names is None and names is not None:
            wavelengths_um = table[0]
        if bandwidths_um is None and wavelengths_um is not None and table[0] is not None:
            # Table widths only for the bands the table's wavelengths describe.
            given = np.asarray(wavelengths_um, float)
            same = given.shape == (len(table[0]),) and np.allclose(given, table[0], atol=1e-3)
            bandwidths_um = table[2] if same else None
        source_side = min(height, width)
        pixels = order_bands(
            pixels,
            names,
            wavelengths_um,
            sensor,
            self.band_names,
            self.wavelengths_um,
            self.num_channels,
        )
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
            self._warn_if_far_from_statistics(pixels, invalid)
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
        return with_metadata(data, dates, location, pixels.shape[0], 1, return_tensors)

    def _warn_if_far_from_statistics(self, pixels: torch.Tensor, invalid: torch.Tensor) -> None:
        """Warn once per processor when the input's values look like another scale or sensor
        than the model's statistics (see ``far_from_statistics``)."""
        if getattr(self, "_stats_warned", False):
            return
        message = far_from_statistics(
            pixels, invalid, self.image_mean, self.image_std, self.band_names
        )
        if message is not None:
            self._stats_warned = True
            warnings.warn(message, UserWarning, stacklevel=4)

    def __call__(self, images: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)


__all__ = ["GeoViTMAEImageProcessor"]
