"""Time series of one footprint: the same tile over many dates, stacked into ``(T, C, H, W)`` chips.

Each chip carries what a time-series model takes besides pixels: each frame's validity mask
(nodata and the scene's cloud mask), ``temporal_coords`` (year, day of year) per frame,
``location_coords`` (latitude, longitude of the chip centre, from the raster CRS and transform)
and the band wavelengths. Frames are sorted by date; a frame whose invalid fraction inside a chip
exceeds ``max_invalid_fraction`` is skipped for that chip, and the skips are counted, never silent.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geofm_hf import bands as band_tables

__all__ = [
    "Frame",
    "TimeSeriesChip",
    "TimeSeriesSummary",
    "chip_center_latlon",
    "frames_from_scene_folders",
    "stack_time_series",
]

# Landsat scene ids (LE70350322008118EDC00): sensor, path, row, year, day of year.
_LANDSAT_SCENE = re.compile(r"L[CTEOM]0?[4-9](\d{3})(\d{3})(\d{4})(\d{3})")


@dataclass(frozen=True)
class Frame:
    """One date of a footprint: one single-band GeoTIFF per band, and an optional QA mask.

    ``mask_kind`` is a :data:`geofm_hf.bands.QA_MASKS` key (``"fmask"``, ``"scl"`` ...).
    """

    date: dt.date
    band_paths: tuple[Path, ...]
    mask_path: Path | None = None
    mask_kind: str | None = None
    sensor: str | None = None


@dataclass
class TimeSeriesChip:
    """``num_frames`` dates of one window, ready for a ``num_frames > 1`` model.

    Attributes:
        pixel_values: ``(T, C, H, W)`` float32 in the file's units; invalid pixels are NaN.
        pixel_mask: ``(T, H, W)`` bool, True where every band is valid and the QA mask is clear.
        temporal_coords: ``(T, 2)`` float32 (year, day of year).
        location_coords: ``(2,)`` float32 (latitude, longitude) of the chip centre, degrees.
        wavelengths: ``(C,)`` float32 centre wavelengths (um), the mean over the frames' sensors.
        dates: the frames' dates; sensors: each frame's sensor; window: (row, col) offset.
    """

    pixel_values: np.ndarray
    pixel_mask: np.ndarray
    temporal_coords: np.ndarray
    location_coords: np.ndarray
    wavelengths: np.ndarray | None
    dates: list[dt.date]
    sensors: list[str | None]
    window: tuple[int, int]


@dataclass
class TimeSeriesSummary:
    """What :func:`stack_time_series` built and skipped, so nothing is dropped silently."""

    chips: int = 0
    frames_read: int = 0
    frames_skipped_invalid: int = 0  # (frame, window) pairs over max_invalid_fraction
    frames_left_over: int = 0  # usable frames too few to fill a last series, per window
    pixels_cropped: int = 0  # tile edge pixels outside whole chips
    details: list[str] = field(default_factory=list)


def chip_center_latlon(crs, transform, row: int, col: int, height: int, width: int):
    """Latitude and longitude (degrees, WGS84) of the centre of a pixel window."""
    from rasterio.warp import transform as warp

    x, y = transform @ (col + width / 2.0, row + height / 2.0)
    lon, lat = warp(crs, "EPSG:4326", [x], [y])
    return float(lat[0]), float(lon[0])


def _scene_date(name: str) -> dt.date | None:
    m = _LANDSAT_SCENE.search(name)
    if m:
        year, doy = int(m.group(3)), int(m.group(4))
        return dt.date(year, 1, 1) + dt.timedelta(days=doy - 1)
    m = re.search(r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})(?!\d)", name)
    if m:
        try:
            return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            return None
    return None


def frames_from_scene_folders(
    root: str | Path,
    band_suffixes: Sequence[str],
    mask_suffix: str | None = None,
    mask_kind: str | None = None,
) -> list[Frame]:
    """One :class:`Frame` per ``<scene>/<scene>_<suffix>.tif`` folder under ``root``.

    The date (and, for Landsat, the sensor) comes from the scene id; a folder without a
    recognisable date or without one of the bands is an error naming it.
    """
    frames = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        scene = folder.name
        date = _scene_date(scene)
        if date is None:
            raise ValueError(
                f"No date in scene name {scene!r}: expected a Landsat scene id "
                "(LE70350322008118EDC00) or a YYYY-MM-DD / YYYYMMDD date in the folder name."
            )
        paths = tuple(folder / f"{scene}_{s}.tif" for s in band_suffixes)
        missing = [str(p) for p in paths if not p.is_file()]
        mask = folder / f"{scene}_{mask_suffix}.tif" if mask_suffix else None
        if mask is not None and not mask.is_file():
            missing.append(str(mask))
        if missing:
            raise FileNotFoundError(f"Scene {scene}: missing files {missing}.")
        try:
            sensor = band_tables.sensor_from_evidence([scene])
        except ValueError:
            sensor = None
        frames.append(Frame(date, paths, mask, mask_kind if mask else None, sensor))
    return frames


def _read_frame(frame: Frame, band_names: Sequence[str] | None):
    """``(C, H, W)`` float32 (NaN invalid), validity ``(H, W)``, wavelengths, CRS, transform."""
    import rasterio

    arrays, crs, transform = [], None, None
    for path in frame.band_paths:
        with rasterio.open(path) as src:
            data = src.read(1).astype(np.float32)
            if src.nodata is not None:
                data[data == src.nodata] = np.nan
            if crs is None:
                crs, transform, shape = src.crs, src.transform, data.shape
            elif (src.crs, src.transform, data.shape) != (crs, transform, shape):
                raise ValueError(
                    f"{path}: bands of one frame must share one grid; found {src.crs} "
                    f"{src.transform} {data.shape}, expected {crs} {transform} {shape}."
                )
            arrays.append(data)
    pixels = np.stack(arrays)  # (C, H, W)
    valid = np.isfinite(pixels).all(axis=0)
    if frame.mask_path is not None:
        with rasterio.open(frame.mask_path) as src:
            qa = src.read(1)
        valid &= ~band_tables.qa_invalid(frame.mask_kind, qa)
    wavelengths = None
    if band_names is not None and frame.sensor is not None:
        wavelengths = band_tables.band_wavelengths(list(band_names), frame.sensor)
    return pixels, valid, wavelengths, crs, transform


def stack_time_series(
    frames: Sequence[Frame],
    num_frames: int,
    chip_size: int,
    band_names: Sequence[str] | None = None,
    max_invalid_fraction: float = 0.5,
) -> tuple[list[TimeSeriesChip], TimeSeriesSummary]:
    """Stack the frames of one footprint into ``(num_frames, C, chip_size, chip_size)`` chips.

    Frames are sorted by date. For each ``chip_size`` window of the tile, frames whose invalid
    fraction there exceeds ``max_invalid_fraction`` are skipped; the remaining ones are taken
    ``num_frames`` at a time, in date order, one chip each. ``band_names`` (the files' band
    names, e.g. ``["B3", "B4", "B5"]``) give the chip wavelengths from each frame's sensor table.
    """
    if num_frames < 1 or chip_size < 1:
        raise ValueError(
            f"num_frames and chip_size must be positive: found {num_frames}, {chip_size}."
        )
    if not 0.0 <= max_invalid_fraction <= 1.0:
        raise ValueError(f"max_invalid_fraction must be in [0, 1]: found {max_invalid_fraction}.")
    frames = sorted(frames, key=lambda f: f.date)
    summary = TimeSeriesSummary()
    read = []
    grid = None
    for frame in frames:
        pixels, valid, wavelengths, crs, transform = _read_frame(frame, band_names)
        if grid is None:
            grid = (crs, transform, pixels.shape)
        elif (crs, transform, pixels.shape) != grid:
            raise ValueError(
                f"Frame of {frame.date} is not on the footprint's grid: found {crs} {transform} "
                f"{pixels.shape}, expected {grid}. Reproject the series onto one grid first."
            )
        read.append((frame, pixels, valid, wavelengths))
    summary.frames_read = len(read)
    if not read:
        return [], summary
    crs, transform, (_, height, width) = grid
    rows, cols = height // chip_size, width // chip_size
    summary.pixels_cropped = height * width - rows * cols * chip_size**2
    if rows == 0 or cols == 0:
        raise ValueError(
            f"chip_size {chip_size} is larger than the {height}x{width} footprint: use a "
            "smaller chip_size."
        )
    chips = []
    for r in range(rows):
        for c in range(cols):
            y, x = r * chip_size, c * chip_size
            window = (slice(y, y + chip_size), slice(x, x + chip_size))
            usable = []
            for frame, pixels, valid, wavelengths in read:
                invalid = 1.0 - float(valid[window].mean())
                if invalid > max_invalid_fraction:
                    summary.frames_skipped_invalid += 1
                    continue
                usable.append((frame, pixels[(slice(None), *window)], valid[window], wavelengths))
            whole = len(usable) // num_frames * num_frames
            summary.frames_left_over += len(usable) - whole
            lat, lon = chip_center_latlon(crs, transform, y, x, chip_size, chip_size)
            for start in range(0, whole, num_frames):
                group = usable[start : start + num_frames]
                known = [g[3] for g in group if g[3] is not None]
                chips.append(
                    TimeSeriesChip(
                        pixel_values=np.stack([g[1] for g in group]),
                        pixel_mask=np.stack([g[2] for g in group]),
                        temporal_coords=np.array(
                            [[g[0].date.year, g[0].date.timetuple().tm_yday] for g in group],
                            dtype=np.float32,
                        ),
                        location_coords=np.array([lat, lon], dtype=np.float32),
                        wavelengths=np.mean(known, axis=0).astype(np.float32) if known else None,
                        dates=[g[0].date for g in group],
                        sensors=[g[0].sensor for g in group],
                        window=(y, x),
                    )
                )
    summary.chips = len(chips)
    summary.details.append(
        f"{summary.chips} chips of {num_frames} frames from {summary.frames_read} frames; "
        f"{summary.frames_skipped_invalid} frame-windows over {max_invalid_fraction:.0%} invalid "
        f"skipped, {summary.frames_left_over} left over, {summary.pixels_cropped} edge pixels "
        "outside whole chips"
    )
    return chips, summary
