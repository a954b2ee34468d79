"""Every geofm_hf export as a TerraTorch backbone: ``backbone: geofm_hf`` in a TerraTorch config.

TerraTorch 1.2.11 discovers no plugins through entry points. It builds backbones from its
registry (``terratorch.registry.BACKBONE_REGISTRY``) and its CLI imports extra modules that
register more from ``custom_modules_path`` (a config key, or ``TERRATORCH_CUSTOM_MODULE_PATH``).
So ``backbone: geofm_hf`` is available

* in Python after :func:`register` (idempotent), and
* under ``terratorch fit|validate|test|predict`` with ``custom_modules_path:`` set to
  :func:`plugin_path` (``python -m geofm_hf.interop.terratorch`` prints it), whose import calls
  :func:`register`.

The backbone takes ``model_name_or_path`` (a local export or a Hub id), ``revision`` and
``bands`` (TerraTorch's ``HLSBands`` names, our band names, or any name the sensor tables know),
matched to the model's bands by name, then by wavelength. A band the model needs but ``bands``
lacks is an error (never zero-filled); ``band_subset=True`` instead runs on the weights of the
given bands only (:func:`geofm_hf.select_input_bands`). ``forward`` returns the tokens of each
layer, ``(B, 1 + L, D)`` with the class token first, as TerraTorch's Prithvi ViT does, so its
necks (``SelectIndices``, ``ReshapeTokensToImage``) and decoders (``UperNetDecoder``,
``UNetDecoder``, ``FCNDecoder``) take them unchanged.

A time-series model (``num_frames`` T > 1) takes TerraTorch's ``(B, C, T, H, W)`` with
``temporal_coords`` ``(B, T, 2)`` and ``location_coords`` ``(B, 2)`` (extra batch keys, which
TerraTorch's tasks pass to ``model(x, **rest)``), as TerraTorch's Prithvi does: tokens
``(B, 1 + T' * L, D)`` (``T'`` = T / tubelet_size) and maps ``(B, T' * D, h, w)``
(``ReshapeTokensToImage`` with ``effective_time_dim: T'``).

This module imports without TerraTorch: only :func:`register` imports it.
"""

from __future__ import annotations

import contextlib
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import bands as tables
from ..modeling_geofm import GeoViTMAEModel, select_input_bands

# TerraTorch's band enums (HLSBands, OpticalBands) name bands by colour; their wavelengths are
# Sentinel-2's (thermal: Landsat 8 TIRS), read from geofm_hf's tables by STAC common name.
_TERRATORCH_COMMON_NAMES = {
    "COASTAL_AEROSOL": "coastal",
    "BLUE": "blue",
    "GREEN": "green",
    "RED": "red",
    "RED_EDGE_1": "rededge1",
    "RED_EDGE_2": "rededge2",
    "RED_EDGE_3": "rededge3",
    "NIR_BROAD": "nir",
    "NIR_NARROW": "nir08",
    "WATER_VAPOR": "water_vapor",
    "CIRRUS": "cirrus",
    "SWIR_1": "swir16",
    "SWIR_2": "swir22",
    "THERMAL_INFRARED_1": "lwir11",
    "THERMAL_INFRARED_2": "lwir12",
}


def _band_name(band: Any) -> str:
    return str(band.value if isinstance(band, Enum) else band).strip()


def _table_bands(names: list[str]) -> list[tables.Band | None]:
    """The table entries (wavelength, bandwidth) of band names, ``None`` where unknown.

    TerraTorch's colour names first; the other names are looked up in the sensor that all of
    them together identify (``B11`` alone is Sentinel-2 SWIR or Landsat 8 thermal).
    """
    out: list[tables.Band | None] = []
    for name in names:
        common = _TERRATORCH_COMMON_NAMES.get(name.upper())
        found = None
        if common is not None:
            for sensor in ("sentinel2-l1c", "landsat8-oli"):
                found = found or next(
                    (b for b in tables.get_sensor_bands(sensor) if b.common_name == common), None
                )
        out.append(found)
    rest = [n for n, b in zip(names, out) if b is None]
    sensor = tables.detect_sensor(rest) if rest else None
    if sensor is None:
        return out
    table = {b.name: b for b in tables.get_sensor_bands(sensor)}
    for i, (name, band) in enumerate(zip(names, out)):
        if band is None:
            with contextlib.suppress(ValueError, KeyError):  # not a band of that sensor
                out[i] = table[tables.canonical_band_name(name, sensor)]
    return out


def _model_bands(config) -> list[tables.Band]:
    names = config.band_names or [f"band {i}" for i in range(config.num_channels)]
    wavelengths = config.wavelengths_um or [None] * len(names)
    out = []
    for name, wavelength, known in zip(names, wavelengths, _table_bands(names)):
        width = known.bandwidth_um if known is not None else None
        if wavelength is None and known is not None:
            wavelength = known.wavelength_um
        out.append(tables.Band(name, None, wavelength, None, width))
    return out


def _match(requested: list[str], model: list[tables.Band]) -> list[int | None]:
    """For each requested band, the index of the model band it is: same name (any case), else
    the same wavelength (nearest centre within the wider half-bandwidth)."""
    lowered = [b.name.lower() for b in model]
    out: list[int | None] = []
    for name, band in zip(requested, _table_bands(requested)):
        if name.lower() in lowered:
            out.append(lowered.index(name.lower()))
        elif band is None:
            out.append(None)
        else:
            out.append(tables.match_bands_by_wavelength(model, [band])[0])
    return out


class GeoFMTerraTorchBackbone(nn.Module):
    """A :class:`GeoViTMAEModel` that answers TerraTorch's backbone protocol.

    ``forward(x)`` takes ``(B, C, H, W)`` in ``bands`` order (normalised as the model expects:
    :attr:`image_mean` / :attr:`image_std` are its statistics in that order, for the
    datamodule's ``means`` / ``stds``) and returns ``[(B, 1 + L, D)]`` per ``out_indices``
    layer; the last layer is after the final LayerNorm (our ``last_hidden_state``).
    ``out_channels`` is ``[D] * len(out_indices)``. A time-series model takes
    ``(B, C, T, H, W)`` and returns ``(B, 1 + T' * L, D)``; ``out_channels`` is then
    ``[T' * D] * len(out_indices)``, the channels of its maps.
    """

    def __init__(
        self,
        model: GeoViTMAEModel,
        bands: list[Any] | None = None,
        out_indices: list[int] | None = None,
        band_subset: bool = False,
        gsd: float | None = None,
    ) -> None:
        super().__init__()
        config = model.config
        layers = config.num_hidden_layers
        self.out_indices = list(range(layers)) if out_indices is None else list(out_indices)
        bad = [i for i in self.out_indices if not -layers <= i < layers]
        if bad:
            raise ValueError(
                f"out_indices {bad} are not layers of this {layers}-layer encoder: expected "
                f"indices in [{-layers}, {layers - 1}]."
            )
        mean, std = config.image_mean, config.image_std  # before a band subset narrows them
        wavelengths, order, index = self._bind_bands(model, bands, band_subset)
        self.model = model
        self.register_buffer("wavelengths", wavelengths, persistent=False)
        self.register_buffer("input_order", order, persistent=False)
        self.gsd = gsd
        # Prithvi's name: the tubelets a series becomes, stacked along channels in the maps.
        self.effective_time_dim = config.num_frames // config.tubelet_size
        self.out_channels = [config.hidden_size * self.effective_time_dim] * len(self.out_indices)
        # TerraTorch's factory pads inputs to a multiple of the first `patch_size` it finds.
        self.patch_size = config.patch_size
        # The model's statistics in the order of `bands`, for the datamodule's means/stds.
        self.image_mean, self.image_std = (
            (None, None)
            if mean is None or std is None or (index is not None and None in index)
            else (list(mean), list(std))
            if index is None
            else ([mean[i] for i in index], [std[i] for i in index])
        )
        self._grid: tuple[int, int] | None = None

    @staticmethod
    def _bind_bands(model, bands, band_subset) -> tuple[Any, Any, list[int | None] | None]:
        """Maps ``bands`` onto the model's (narrowing a conv model under ``band_subset``).

        Returns the wavelengths a wavelength model needs, for a conv model the input channel to
        take for each of its bands (``None`` when the input is in its order), and the model band
        of each of ``bands`` (``None`` without ``bands``).
        """
        config = model.config
        names = [_band_name(b) for b in bands] if bands is not None else None
        if config.patch_embedding == "wavelength":
            names = names or config.band_names
            if not names:
                raise ValueError(
                    "A wavelength model embeds any bands, but needs to know which: pass bands= "
                    "(backbone_bands: [...] in a TerraTorch config)."
                )
            known = _model_bands(config)
            index = _match(names, known)
            looked_up = _table_bands(names)
            waves = [
                known[i].wavelength_um if i is not None else getattr(band, "wavelength_um", None)
                for i, band in zip(index, looked_up)
            ]
            unknown = [n for n, w in zip(names, waves) if w is None]
            if unknown:
                raise ValueError(
                    f"Bands {unknown} have no known wavelength: expected TerraTorch band names "
                    f"({', '.join(_TERRATORCH_COMMON_NAMES)}) or sensor band names (B04, ...)."
                )
            return torch.tensor(waves, dtype=torch.float32), None, index
        if names is None:
            return None, None, None  # the input comes in the model's own band order
        if not config.band_names and not config.wavelengths_um:
            raise ValueError(
                "This model's config has no band_names or wavelengths_um, so bands= cannot be "
                "matched to its input channels: drop bands= and feed its own band order."
            )
        model_bands = _model_bands(config)
        index = _match(names, model_bands)
        foreign = [n for n, i in zip(names, index) if i is None]
        if foreign:
            raise ValueError(
                f"Bands {foreign} match none of the model's bands "
                f"{[b.name for b in model_bands]} by name or wavelength: this conv model has no "
                "kernel for them. Drop them from bands (and from the dataset's output_bands)."
            )
        if len(set(index)) != len(index):
            raise ValueError(
                f"Bands {names} name some of the model's bands twice ({index}): expected each "
                "model band at most once."
            )
        missing = [b.name for i, b in enumerate(model_bands) if i not in index]
        if missing and not band_subset:
            raise ValueError(
                f"Missing bands {missing}: the model expects {[b.name for b in model_bands]}, "
                f"bands= gives {names}. Missing bands are never zero-filled; to run on the "
                "given bands only (the model's own kernels for them), pass band_subset=True "
                "(backbone_band_subset: true)."
            )
        kept = sorted(index)
        if missing:
            select_input_bands(model, [config.band_names[k] for k in kept])
        # The input is gathered into the model's band order (rather than the kernels permuted)
        # so features equal the model's on the same bands bit for bit.
        order = [index.index(k) for k in kept]
        return None, (None if order == list(range(len(order))) else torch.tensor(order)), index

    def forward(
        self,
        x: torch.Tensor,
        temporal_coords: torch.Tensor | None = None,
        location_coords: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> list[torch.Tensor]:
        """``(B, C, H, W)`` (a series: ``(B, C, T, H, W)``) -> per-layer tokens
        ``[(B, 1 + T' * H/p * W/p, D)]``, ``T'`` = T / tubelet_size."""
        frames = self.model.config.num_frames
        if frames == 1 and x.ndim == 5 and x.shape[2] == 1:
            x = x[:, :, 0]  # TerraTorch's (B, C, T=1, H, W) layout for single images
        elif frames > 1 and (x.ndim != 5 or x.shape[2] != frames):
            found = f"{x.shape[2]} frames in" if x.ndim == 5 else "input of"
            raise ValueError(
                f"This model takes time series of num_frames={frames} frames as (B, C, T, H, W) "
                f"(TerraTorch's layout): found {found} shape {tuple(x.shape)}. Feed series of "
                f"{frames} frames (the datamodule's frame count), or use a model with that "
                "num_frames."
            )
        if self.input_order is not None:
            x = x.index_select(1, self.input_order)
        if frames > 1:
            x = x.transpose(1, 2)  # ours is (B, T, C, H, W)
        config = self.model.config
        height, width = x.shape[-2:]
        self._grid = (height // config.patch_size, width // config.patch_size)
        out = self.model(
            pixel_values=x,
            wavelengths=self.wavelengths,
            gsd=self.gsd,
            temporal_coords=temporal_coords,
            location_coords=location_coords,
            interpolate_pos_encoding=(height, width) != (config.image_size, config.image_size),
            output_hidden_states=True,
        )
        layers = list(out.hidden_states[1:])  # hidden_states[0] is the embedding output
        layers[-1] = out.last_hidden_state
        return [layers[i] for i in self.out_indices]

    def prepare_features_for_image_model(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Tokens -> ``(B, T' * D, H/p, W/p)`` maps, TerraTorch's neck when a config names none.

        As Prithvi's ``(t h w) e -> (t e) h w``: channels ``[k * D, (k + 1) * D)`` are tubelet
        ``k`` (our tokens are ordered tubelet, row, column).
        """
        height, width = self._grid
        frames = self.effective_time_dim
        return [
            f[:, 1:]
            .reshape(f.shape[0], frames, height, width, f.shape[-1])
            .permute(0, 1, 4, 2, 3)
            .reshape(f.shape[0], frames * f.shape[-1], height, width)
            for f in features
        ]


def load_backbone(
    model_name_or_path: str | Path,
    revision: str | None = None,
    bands: list[Any] | None = None,
    out_indices: list[int] | None = None,
    band_subset: bool = False,
    pretrained: bool = True,
    gsd: float | None = None,
    **from_pretrained_kwargs: Any,
) -> GeoFMTerraTorchBackbone:
    """A geofm_hf export (folder or Hub id at ``revision``) as a TerraTorch backbone.

    ``pretrained=False`` builds the same architecture with fresh weights (config only).
    Other keyword arguments go to ``from_pretrained`` (``token``, ``cache_dir``, ...).
    """
    if pretrained:
        model = GeoViTMAEModel.from_pretrained(
            model_name_or_path, revision=revision, **from_pretrained_kwargs
        )
    else:
        from ..configuration_geofm import GeoViTMAEConfig

        config = GeoViTMAEConfig.from_pretrained(
            model_name_or_path, revision=revision, **from_pretrained_kwargs
        )
        model = GeoViTMAEModel(config)
    return GeoFMTerraTorchBackbone(model, bands, out_indices, band_subset, gsd)


def geofm_hf(model_name_or_path: str, **kwargs: Any) -> GeoFMTerraTorchBackbone:
    """TerraTorch's registry entry (its key is this function's name): see :func:`load_backbone`."""
    return load_backbone(model_name_or_path, **kwargs)


def register() -> None:
    """Registers ``geofm_hf`` in TerraTorch's backbone registry (imports TerraTorch)."""
    from terratorch.registry import TERRATORCH_BACKBONE_REGISTRY

    if "geofm_hf" not in TERRATORCH_BACKBONE_REGISTRY:
        TERRATORCH_BACKBONE_REGISTRY.register(geofm_hf)


def plugin_path() -> Path:
    """The folder to give TerraTorch as ``custom_modules_path`` (its import calls register())."""
    return Path(__file__).resolve().parent / "terratorch_plugin" / "geofm_hf_terratorch"


__all__ = ["GeoFMTerraTorchBackbone", "geofm_hf", "load_backbone", "plugin_path", "register"]

if __name__ == "__main__":
    print(plugin_path())
