"""Chip extraction, single date: one scene read strip by strip on the dataset's grid -> kept chips.

Per scene: open every band, check that the scene matches the dataset (bands, sensor, grid step,
dtype), build the common grid (:func:`~geofm_hf.data.grid.target_grid`), read one strip of
``chip_size`` rows per band through a ``WarpedVRT`` (a large raster is never read whole), mark
invalid pixels (nodata, fill, NaN, QA masks), cut chips and drop those with too much nodata.
Time series stack these chips (:mod:`geofm_hf.data.time_series`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from affine import Affine

from ..bands import SENSORS, band_wavelengths, qa_invalid, sensor_fill_values
from .band_resolution import _s2_offset, resolve_band_names
from .error_policy import ErrorPolicy
from .format import BadInputError
from .grid import gsd_metres, target_grid
from .scenes import Scene, open_raster

__all__ = ["ChipMeta"]


@dataclass(frozen=True)
class ChipMeta:
    """What a ``labels`` callable sees about a chip."""

    chip_id: str
    source: str
    crs: str
    bounds: tuple[float, float, float, float]
    transform: tuple[float, ...]
    row: int
    col: int


@dataclass
class _ChipSpec:
    """How chips are cut and kept (the matching :func:`write_shards` arguments)."""

    chip_size: int
    stride: int
    max_nodata_fraction: float = 0.0
    bands: Sequence[str] | None = None
    band_names: Sequence[str] | None = None
    resolution: float | None = None
    resampling: str = "nearest"
    nodata: float | None = None
    qa_masks: bool = True
    split: str | Mapping[str, float] = "train"
    labels: Callable[[ChipMeta], int | None] | None = None
    label_names: Sequence[str] | None = None
    masks: Any = None  # a masks.MaskSource: per-pixel class labels
    targets: Any = None  # a masks.TargetSource: per-pixel continuous targets


@dataclass
class _DatasetState:
    """What the first scene fixes for the whole dataset (bands, sensor, grid step, dtype), which
    every later scene must match, and the running tallies of the dataset info."""

    bands: list[str] | None = None
    sensor: str | None = None
    res: float | None = None
    gsd_m: float | None = None
    dtype: np.dtype | None = None
    sensors: Counter[str] = field(default_factory=Counter)
    offset_scenes: int = 0
    bytes_read: int = 0
    # Pixels of each class in the kept chips' masks (index IGNORE_INDEX: unlabelled).
    mask_pixels: Counter[int] = field(default_factory=Counter)
    # A progress.Progress told of every strip's chips, kept or dropped: a sparse raster whose
    # chips are all dropped still shows it is moving.
    progress: Any = None


@dataclass
class _Chip:
    """One kept chip: its Parquet row, and what the statistics and validity counts need."""

    split: str
    row: dict[str, Any]
    pixels: np.ndarray  # (bands, size, size); a time series' frames stacked along rows
    band_valid: np.ndarray  # (bands, size, size) bool, same layout
    counts: dict[str, int]


def _split_of(split, col_index: int, n_cols: int) -> str:
    if isinstance(split, str):
        return split
    # Spatially disjoint blocks: consecutive ranges of chip columns (west to east).
    position = (col_index + 0.5) / max(n_cols, 1)
    acc = 0.0
    items = list(split.items())
    for name, fraction in items:
        acc += fraction
        if position < acc:
            return name
    return items[-1][0]


def _scene_chips(scene: Scene, scene_sensor: str | None, spec: _ChipSpec,
                 state: _DatasetState, policy: ErrorPolicy) -> Iterator[_Chip]:  # fmt: skip
    """Chip generator: the kept chips of one scene, read strip by strip on the dataset's grid.

    A scene unlike the dataset raises :class:`BadInputError` before its first chip; dropped
    chips (nodata, unlabelled) are recorded in ``policy``. Opens and closes its own files.
    """
    from rasterio.enums import Resampling
    from rasterio.transform import array_bounds
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import Window

    chip_size, stride = spec.chip_size, spec.stride
    srcs = []
    try:
        for path in scene.paths:
            srcs.append(open_raster(path))
        selected = resolve_band_names(scene, srcs, spec.bands, scene_sensor, spec.band_names)
        names = [n for n, _, _ in selected]
        if state.bands is None:
            state.bands = names
            state.sensor = scene_sensor
        elif names != state.bands:
            reason = "band_count_mismatch" if len(names) != len(state.bands) else (
                "band_name_mismatch")  # fmt: skip
            raise BadInputError(
                reason,
                f"scene {scene.source} has bands {names}; the dataset has {state.bands} "
                "(pass bands=[...] to select a common subset)",
            )
        if scene_sensor != state.sensor:
            mine = band_wavelengths(names, scene_sensor) if scene_sensor else None
            theirs = band_wavelengths(names, state.sensor) if state.sensor else None
            tables = [SENSORS[s] for s in (scene_sensor, state.sensor) if s]
            widths = [max(b.bandwidth_um or 0 for t in tables for b in t if b.name == n)
                      for n in names]  # fmt: skip
            if (
                mine is None
                or theirs is None
                or any(abs(a - b) > w / 2 for a, b, w in zip(mine, theirs, widths))
            ):
                raise BadInputError(
                    "sensor_mismatch",
                    f"scene {scene.source} is {scene_sensor or 'of unknown sensor'}, the "
                    f"dataset {state.sensor or 'of unknown sensor'}: bands {names} have "
                    f"other wavelengths ({mine} vs {theirs} um); write them separately",
                )
        state.sensors[scene_sensor or "unknown"] += 1
        crs, transform, width, height, res = target_grid([s for _, s, _ in selected],
                                                          spec.resolution)  # fmt: skip
        if state.res is None:
            state.res = res
        elif abs(res - state.res) > 1e-9:
            raise BadInputError(
                "resolution_mismatch",
                f"scene {scene.source} has GSD {res}, the dataset {state.res}; "
                "pass resolution= to resample every scene to one grid",
            )
        dtypes = [np.dtype(s.dtypes[i - 1]) for _, s, i in selected]
        scene_dtype = np.result_type(*dtypes)
        if scene_dtype.kind == "c":
            raise BadInputError(
                "complex_dtype",
                f"scene {scene.source} is {scene_dtype} (complex, e.g. SAR SLC); chips hold "
                "real values. Convert it first (amplitude, intensity or real/imaginary bands)",
            )
        if state.dtype is None:
            state.dtype = scene_dtype
        elif scene_dtype != state.dtype:
            raise BadInputError(
                "dtype_mismatch", f"scene {scene.source} is {scene_dtype}, dataset {state.dtype}"
            )
        out_dtype = state.dtype
        fills = sensor_fill_values(scene_sensor)
        nodatas = []
        for _, s, i in selected:
            values = {float(v) for v in (s.nodatavals[i - 1], spec.nodata, *fills)
                      if v is not None and not np.isnan(v)}  # fmt: skip
            nodatas.append(sorted(values))
        offsets = None
        if scene_sensor and scene_sensor.startswith("sentinel2"):
            offsets = _s2_offset(scene)
        if offsets:
            order = [b.name for b in SENSORS["sentinel2-l1c"]]
            band_offsets = np.array(
                [offsets.get(order.index(n), -1000.0) for n in names], dtype=np.float64
            )
            state.offset_scenes += 1
        qa_srcs = []
        if spec.qa_masks:
            for kind, path in sorted(scene.masks.items()):
                if kind == "fmask" and scene_sensor and scene_sensor.startswith("hls"):
                    kind = "hls_fmask"
                qa_srcs.append((kind, open_raster(path)))
                srcs.append(qa_srcs[-1][1])
        if width < chip_size or height < chip_size:
            raise BadInputError(
                "too_small",
                f"scene {scene.source} is {width}x{height} px at {res} m; chips need "
                f"{chip_size}x{chip_size}",
            )
        vrts = [
            WarpedVRT(s, crs=crs, transform=transform, width=width, height=height,
                      resampling=Resampling[spec.resampling])
            for _, s, _ in selected
        ]  # fmt: skip
        qa_vrts = [
            (kind, WarpedVRT(q, crs=crs, transform=transform, width=width, height=height,
                             resampling=Resampling.nearest))
            for kind, q in qa_srcs
        ]  # fmt: skip
        bottom = transform.f - height * res
        gsd_m = gsd_metres(crs, res, transform.f, bottom)
        if state.gsd_m is None:
            state.gsd_m = gsd_m
        crs_text = crs.to_string() if crs.to_epsg() is None else f"EPSG:{crs.to_epsg()}"
        scene_mask = spec.masks.open_scene(crs, transform, width, height) if spec.masks else None
        scene_target = (spec.targets.open_scene(crs, transform, width, height)
                        if spec.targets else None)  # fmt: skip
        n_cols = (width - chip_size) // stride + 1
        n_rows = (height - chip_size) // stride + 1
        try:
            for r in range(n_rows):
                y0 = r * stride
                window = Window(0, y0, width, chip_size)
                strip = np.empty((len(vrts), chip_size, width), dtype=out_dtype)
                for b, ((_, _, bidx), vrt) in enumerate(zip(selected, vrts)):
                    try:
                        strip[b] = vrt.read(bidx, window=window)
                    except Exception as err:
                        raise BadInputError(
                            "unreadable_band",
                            f"band {state.bands[b]} of scene {scene.source} failed to "
                            f"read at rows {y0}..{y0 + chip_size}: {err}",
                        ) from err
                state.bytes_read += strip.nbytes
                if state.progress is not None:
                    state.progress.update(n_cols)
                mask_strip = (scene_mask.read_strip(y0, chip_size)
                              if scene_mask is not None else None)  # fmt: skip
                target_strip = (scene_target.read_strip(y0, chip_size)
                                if scene_target is not None else None)  # fmt: skip
                band_invalid = np.zeros(strip.shape, dtype=bool)
                non_finite = np.zeros(strip.shape, dtype=bool)
                if np.issubdtype(out_dtype, np.floating):
                    non_finite = ~np.isfinite(strip)
                    band_invalid |= non_finite
                for b, values in enumerate(nodatas):
                    for nd in values:
                        band_invalid[b] |= strip[b] == nd
                qa_invalid_px = np.zeros((chip_size, width), dtype=bool)
                for kind, qvrt in qa_vrts:
                    qa_invalid_px |= qa_invalid(kind, qvrt.read(1, window=window))
                band_invalid |= qa_invalid_px[None]
                invalid = band_invalid.any(axis=0)
                if offsets:
                    # Baseline >= 04.00 scenes onto the pre-2022 scale (DN + offset, >= 0):
                    # one dataset, one scale. Invalid pixels keep their raw value.
                    shifted = np.maximum(strip + band_offsets[:, None, None], 0)
                    strip = np.where(band_invalid, strip, shifted).astype(out_dtype)
                for c in range(n_cols):
                    x0 = c * stride
                    cols = slice(x0, x0 + chip_size)
                    chip = np.ascontiguousarray(strip[:, :, cols])
                    chip_id = f"{scene.scene_id}_r{y0:05d}_c{x0:05d}"
                    frac = float(invalid[:, cols].mean())
                    if frac > spec.max_nodata_fraction:
                        has_nan = bool(non_finite[:, :, cols].any())
                        cloudy = bool(qa_invalid_px[:, cols].any())
                        reason = "nan" if has_nan else ("qa_mask" if cloudy and not bool(
                            invalid[:, cols][~qa_invalid_px[:, cols]].any()
                        ) else "nodata")  # fmt: skip
                        policy.record(
                            BadInputError(reason, f"{frac:.1%} of pixels are nodata/NaN "
                                          f"(max_nodata_fraction={spec.max_nodata_fraction})"),
                            chip_id, is_error=False,
                        )  # fmt: skip
                        continue
                    chip_transform = transform @ Affine.translation(x0, y0)
                    left, bottom, right, top = array_bounds(chip_size, chip_size, chip_transform)
                    label = None
                    if spec.labels is not None:
                        label = spec.labels(ChipMeta(chip_id, scene.source, crs_text,
                                                     (left, bottom, right, top),
                                                     tuple(chip_transform)[:6], y0, x0))  # fmt: skip
                        if label is None:
                            policy.record(BadInputError("unlabelled", "no label"), chip_id,
                                          is_error=False)  # fmt: skip
                            continue
                        if not 0 <= int(label) < len(spec.label_names):
                            raise BadInputError(
                                "bad_labels",
                                f"labels() returned {label} for {chip_id}; expected 0.."
                                f"{len(spec.label_names) - 1}",
                            )
                    chip_invalid = invalid[:, cols]
                    extra_cols = {}
                    if mask_strip is not None:
                        chip_mask = np.ascontiguousarray(mask_strip[:, cols])
                        extra_cols["mask"] = chip_mask.tobytes()  # tallied where kept
                    if target_strip is not None:
                        extra_cols["target"] = np.ascontiguousarray(target_strip[:, cols]).tobytes()
                    yield _Chip(
                        split=_split_of(spec.split, c, n_cols),
                        row={
                            **extra_cols,
                            "image": chip.tobytes(),
                            "shape": list(chip.shape),
                            "dtype": out_dtype.name,
                            "band_names": state.bands,
                            "crs": crs_text,
                            "transform": list(tuple(chip_transform)[:6]),
                            "bounds": [left, bottom, right, top],
                            "source": scene.source,
                            "datetime": scene.datetime,
                            "gsd_m": gsd_m,
                            "chip_id": chip_id,
                            "label": None if label is None else int(label),
                            "valid_mask": np.packbits(~chip_invalid).tobytes(),
                        },
                        pixels=chip,
                        band_valid=~band_invalid[:, :, cols],
                        counts={
                            "pixels": chip_invalid.size,
                            "invalid_pixels": int(chip_invalid.sum()),
                            "non_finite_values": int(non_finite[:, :, cols].sum()),
                            "qa_masked_pixels": int(qa_invalid_px[:, cols].sum()),
                        },
                    )
        finally:
            for vrt in vrts:
                vrt.close()
            for _, qvrt in qa_vrts:
                qvrt.close()
            if scene_mask is not None:
                scene_mask.close()
            if scene_target is not None:
                scene_target.close()
    finally:
        for src in srcs:
            src.close()
