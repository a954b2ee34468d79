"""Shard writer: rasters (files, folders, globs; one file per band or multi-band) -> Parquet.

Pipeline per scene: open every band, build the common grid (intersection of the band extents
at the target GSD), read one strip of ``chip_size`` rows per band through a ``WarpedVRT`` onto
that grid (a large raster is never read whole), cut chips, drop chips with too much nodata,
update streaming per-band statistics and append to the split's shard buffer. Shards are written
to a staging folder (temp name, then rename) and moved into ``data/`` only when the whole run
succeeded; ``geofm_dataset.json`` is written last, so its presence marks a complete dataset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import glob
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from affine import Affine

from .._atomic import atomic_path, atomic_write_text
from ..bands import (
    SENSORS,
    AmbiguousSensorError,
    band_bandwidths,
    band_gsd,
    band_wavelengths,
    canonical_band_name,
    get_sensor_bands,
    identify_sensor,
    qa_invalid,
    resolve_sensor,
    sensor_fill_values,
)
from .format import (
    DATASET_INFO_FILE,
    FRAME_DATETIMES_FIELD,
    LABEL_FIELD,
    MASK_FIELD,
    SHARD_FOOTER_METADATA,
    SHARD_SCHEMA,
    VALID_MASK_FIELD,
    BadInputError,
    GeoDatasetInfo,
    TooManyErrorsError,
)

__all__ = ["ChipMeta", "WriteSummary", "write_shards"]

logger = logging.getLogger(__name__)

_STAGING = ".geofm_staging"
_RASTER_EXTENSIONS = {
    ".tif", ".tiff", ".jp2", ".j2k", ".vrt", ".img", ".nc", ".hdf", ".h5", ".grd", ".bil",
    ".dat", ".png", ".jpg", ".jpeg", ".ecw", ".sid", ".asc",
}  # fmt: skip
# T33UUU_20170216T102101_B8A, LC08_..._B5, scene-B02: a scene prefix and a band suffix.
_BAND_FILE = re.compile(r"^(?P<scene>.+?)[_\-.](?P<band>B\d{1,2}A?)$", re.IGNORECASE)
# Cloud/QA mask files of a scene: LE07..._fmask.tif, T33UUU_..._SCL_20m.jp2, LC08_..._QA_PIXEL.TIF.
_QA_FILE = re.compile(
    r"^(?P<scene>.+?)[_\-.](?P<qa>fmask|scl|qa_pixel)(?:_\d{2}m)?$", re.IGNORECASE
)
_QA_NAMES = {"fmask": "fmask", "scl": "scl", "qa_pixel": "qa_pixel"}
# Sentinel-2 processing baseline in a SAFE product name (..._N0400_...) or its metadata XML.
_S2_BASELINE = re.compile(r"_N(\d{2})(\d{2})_")
_S2_BASELINE_XML = re.compile(r"<PROCESSING_BASELINE>\s*(\d{2})\.(\d{2})\s*<")
_S2_OFFSET_XML = re.compile(
    r"<(?:RADIO|BOA)_ADD_OFFSET\s+band_id=\"(\d+)\"\s*>\s*(-?\d+(?:\.\d+)?)\s*<"
)
_EARTH_RADIUS_M = 6371008.8  # mean Earth radius (IUGG)
_DATETIME = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(?!\d)")
_DATE = re.compile(r"(?<!\d)(20\d{2}|19\d{2})(\d{2})(\d{2})(?!\d)")
# Pre-Collection Landsat scene ids (LE70350322008118EDC00): sensor, path, row, year, day of year.
_LANDSAT_SCENE_ID = re.compile(r"(?<![A-Za-z0-9])L[CTEOM]0?[4-9]\d{6}(\d{4})(\d{3})[A-Z]{3}\d{2}")
_SHARD_NAME = re.compile(r"^[\w.\-]+-\d{5}-of-\d{5}\.parquet$")


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
class WriteSummary:
    """What a :func:`write_shards` run produced."""

    output_dir: str
    num_samples: dict[str, int]
    num_shards: dict[str, int]
    skipped: dict[str, Any]
    band_names: list[str]
    mean: list[float]
    std: list[float]
    bytes_read: int
    seconds: float
    skipped_items: list[dict[str, str]] = field(default_factory=list)

    @property
    def read_mb_per_s(self) -> float:
        """Raster bytes decoded (at the target grid) per second of wall time."""
        return self.bytes_read / 1e6 / max(self.seconds, 1e-9)


@dataclass
class _Scene:
    scene_id: str
    source: str
    band_files: dict[str, str]  # band name -> path (per-band files)
    multiband: str | None = None  # path of one multi-band file
    datetime: str | None = None
    masks: dict[str, str] = field(default_factory=dict)  # QA kind -> path (fmask, scl ...)


class _Stats:
    """Per-band count/mean/M2 in float64, merged with Chan's parallel update (stable)."""

    def __init__(self, n_bands: int):
        self.count = np.zeros(n_bands, np.float64)
        self.mean = np.zeros(n_bands, np.float64)
        self.m2 = np.zeros(n_bands, np.float64)

    def update(self, chip: np.ndarray, valid: np.ndarray) -> None:
        x = chip.reshape(chip.shape[0], -1).astype(np.float64)
        v = valid.reshape(valid.shape[0], -1)
        n = v.sum(axis=1).astype(np.float64)
        if not n.any():
            return
        safe = np.maximum(n, 1)
        xm = np.where(v, x, 0.0)
        mean = xm.sum(axis=1) / safe
        m2 = (np.where(v, x - mean[:, None], 0.0) ** 2).sum(axis=1)
        total = self.count + n
        delta = mean - self.mean
        ratio = np.divide(n, total, out=np.zeros_like(n), where=total > 0)
        self.mean = self.mean + delta * ratio
        self.m2 = self.m2 + m2 + delta**2 * self.count * ratio
        self.count = total

    def result(self) -> tuple[list[float], list[float]]:
        std = np.sqrt(np.divide(self.m2, self.count, out=np.zeros_like(self.m2),
                                where=self.count > 0))  # fmt: skip
        return self.mean.tolist(), std.tolist()


class _ErrorPolicy:
    def __init__(self, on_error: str, max_error_fraction: float, total_items: int):
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise'; got {on_error!r}")
        if not 0.0 <= max_error_fraction <= 1.0:
            raise ValueError(f"max_error_fraction must be in [0, 1]; got {max_error_fraction}")
        self.on_error = on_error
        self.max_error_fraction = max_error_fraction
        self.total_items = max(total_items, 1)
        self.errors = 0
        self.by_reason: Counter[str] = Counter()
        self.items: list[dict[str, str]] = []

    def record(self, err: BadInputError, item: str, *, is_error: bool = True) -> None:
        if is_error and self.on_error == "raise":
            raise err
        self.by_reason[err.reason] += 1
        if len(self.items) < 1000:  # the card lists the first ones; the counts are complete
            self.items.append({"item": item, "reason": err.reason, "message": str(err)})
        if not is_error:
            logger.debug("dropped %s: %s", item, err)
            return
        self.errors += 1
        logger.warning("skipped %s (%s): %s", item, err.reason, err)
        if self.errors > self.max_error_fraction * self.total_items:
            raise TooManyErrorsError(
                f"{self.errors} of {self.total_items} input items are bad (last: {item}: {err}); "
                f"max_error_fraction={self.max_error_fraction} allows at most "
                f"{int(self.max_error_fraction * self.total_items)}. Fix the inputs or raise "
                f"max_error_fraction. Reasons so far: {dict(self.by_reason)}"
            ) from err

    def summary(self) -> dict[str, Any]:
        return {"count": int(sum(self.by_reason.values())), "errors": self.errors,
                "by_reason": dict(sorted(self.by_reason.items()))}  # fmt: skip


def _expand_inputs(inputs) -> list[Path]:
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        text = str(item)
        if any(c in text for c in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise FileNotFoundError(f"glob {text!r} matched no files")
            files.extend(Path(m) for m in matches if Path(m).is_file())
        elif Path(text).is_dir():
            found = sorted(
                p for p in Path(text).rglob("*")
                if p.is_file() and p.suffix.lower() in _RASTER_EXTENSIONS
                and _STAGING not in p.parts
            )  # fmt: skip
            if not found:
                raise FileNotFoundError(
                    f"folder {text} holds no raster files (extensions {sorted(_RASTER_EXTENSIONS)})"
                )
            files.extend(found)
        elif Path(text).is_file():
            files.append(Path(text))
        else:
            raise FileNotFoundError(f"input {text!r} is not a file, folder or matching glob")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    return unique


def _datetime_from_name(name: str) -> str | None:
    m = _DATETIME.search(name)
    if m:
        y, mo, d, h, mi, s = m.groups()
        return f"{y}-{mo}-{d}T{h}:{mi}:{s}"
    m = _LANDSAT_SCENE_ID.search(name)
    if m and 1 <= int(m.group(2)) <= 366:
        day = datetime.date(int(m.group(1)), 1, 1) + datetime.timedelta(days=int(m.group(2)) - 1)
        return day.isoformat()
    m = _DATE.search(name)
    if m:
        y, mo, d = m.groups()
        if 1 <= int(mo) <= 12 and 1 <= int(d) <= 31:
            return f"{y}-{mo}-{d}"
    return None


def _band_key(band: str) -> str:
    if re.fullmatch(r"[Bb]\d{1,2}[Aa]?", band):
        band = band.upper()
        return f"B{int(band[1:-1])}A" if band.endswith("A") else band
    return band


def _group_scenes(files: list[Path], band_files, filename_pattern=None) -> list[_Scene]:
    """Group files into scenes: ``<scene>_B<n>`` names, ``filename_pattern`` or ``band_files``.

    With ``filename_pattern`` (a regex with a named ``band`` group, optionally ``scene``) every
    file must match; files that do not are an error listing them. QA/cloud-mask files
    (``_fmask``, ``_SCL``, ``_QA_PIXEL``) join the scene of the same prefix.
    """
    pattern = None
    if filename_pattern is not None:
        pattern = re.compile(filename_pattern) if isinstance(filename_pattern, str) else (
            filename_pattern)  # fmt: skip
        if "band" not in pattern.groupindex:
            raise ValueError(
                f"filename_pattern {pattern.pattern!r} has no named group 'band'; expected e.g. "
                r"'(?P<scene>.+)_(?P<band>\d+)\.tif$'"
            )
    scenes: dict[tuple[str, str], dict[str, str]] = {}
    masks: dict[tuple[str, str], dict[str, str]] = {}
    singles: list[Path] = []
    unmatched: list[str] = []
    for path in files:
        qa = _QA_FILE.match(path.stem)
        if qa:
            key = (str(path.parent), qa.group("scene"))
            masks.setdefault(key, {})[_QA_NAMES[qa.group("qa").lower()]] = str(path)
            continue
        if pattern is not None:
            m = pattern.search(path.name)
            if m is None or m.group("band") is None:
                unmatched.append(str(path))
                continue
            if "scene" in pattern.groupindex and m.group("scene"):
                prefix = m.group("scene")
            else:
                prefix = (path.name[: m.start("band")] + path.name[m.end("band") :]).rstrip("_-.")
            key, band = (str(path.parent), prefix), _band_key(m.group("band"))
        else:
            m = _BAND_FILE.match(path.stem)
            if not m:
                singles.append(path)
                continue
            key, band = (str(path.parent), m.group("scene")), _band_key(m.group("band"))
        scenes.setdefault(key, {})
        if band in scenes[key]:
            raise ValueError(
                f"two files for band {band} of scene {key[1]}: {scenes[key][band]} and {path}; "
                "expected one file per band (check --filename-pattern)"
            )
        scenes[key][band] = str(path)
    if unmatched:
        raise ValueError(
            f"{len(unmatched)} files do not match filename_pattern {pattern.pattern!r} (expected "
            f"a match with a 'band' group): {unmatched[:20]}"
        )
    out = []
    for (parent, prefix), bands in sorted(scenes.items()):
        source = f"{Path(parent).name}/{prefix}" if Path(parent).name else prefix
        out.append(_Scene(prefix, source, bands, datetime=_datetime_from_name(prefix),
                          masks=masks.pop((parent, prefix), {})))  # fmt: skip
    for path in singles:
        source = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
        out.append(_Scene(path.stem, source, {}, multiband=str(path),
                          datetime=_datetime_from_name(path.stem)))  # fmt: skip
    if band_files:
        groups = [band_files] if isinstance(band_files, Mapping) else list(band_files)
        for group in groups:
            paths, qa_paths = {}, {}
            for k, v in group.items():
                target = qa_paths if str(k).lower() in _QA_NAMES else paths
                target[_QA_NAMES.get(str(k).lower(), _band_key(str(k)))] = str(Path(v).resolve())
            if not paths:
                raise ValueError(f"band_files group {dict(group)} names no band, only masks")
            first = Path(next(iter(paths.values())))
            out.append(_Scene(first.stem, f"{first.parent.name}/{first.stem}", paths,
                              datetime=_datetime_from_name(first.stem), masks=qa_paths))  # fmt: skip
    if masks:
        orphans = sorted(p for group in masks.values() for p in group.values())
        raise ValueError(
            f"QA/cloud-mask files without a scene of the same prefix: {orphans[:20]}; expected "
            "<scene>_fmask/_SCL/_QA_PIXEL next to that scene's band files"
        )
    seen: Counter[str] = Counter()
    for scene in out:
        seen[scene.scene_id] += 1
        if seen[scene.scene_id] > 1:  # same stem in two folders: keep chip ids unique
            digest = hashlib.sha1(scene.source.encode()).hexdigest()[:6]
            scene.scene_id = f"{scene.scene_id}-{digest}"
    return out


def _check_unnamed_singles(scenes: list[_Scene], band_names) -> None:
    """One-band files with no band name cannot become a dataset band: list them, stop.

    Before this check, ``ls7_2000_10.tif .. ls7_2000_50.tif`` became five one-band "scenes"
    named ``B1`` (blue, green, red ... mixed). Files that fail to open are left to the main loop.
    """
    if band_names:
        return
    unnamed = []
    for scene in scenes:
        if scene.multiband is None:
            continue
        try:
            src = _open(scene.multiband)
        except BadInputError:
            continue
        with src:
            if src.count == 1 and not src.descriptions[0]:
                unnamed.append(scene.multiband)
    if unnamed:
        raise ValueError(
            f"{len(unnamed)} single-band files whose band is not named (no band description, no "
            f"<scene>_B<n> in the file name): {unnamed[:20]}. Expected per-band files grouped "
            "by --filename-pattern '(?P<scene>.+)_(?P<band>\\d+)' / --band-files NAME=PATH ... "
            "(filename_pattern=, band_files=), or one band named with --band-names NAME."
        )


def _scene_evidence(scene: _Scene, srcs) -> list[str]:
    """File names, folder names and metadata tags: what may name the sensor."""
    texts = [scene.scene_id, scene.source]
    paths = [scene.multiband] if scene.multiband else list(scene.band_files.values())
    for p in paths:
        texts.extend(Path(p).parts[-4:])
    for src in srcs:
        with contextlib.suppress(Exception):
            texts.extend(str(v) for v in src.tags().values())
    return texts


def _s2_offset(scene: _Scene) -> dict[int, float] | None:
    """Radiometric offset of a Sentinel-2 product of processing baseline >= 04.00.

    From the product metadata XML (``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``: RADIO_ADD_OFFSET /
    BOA_ADD_OFFSET per band id) when it sits above the band files, else from the baseline in
    the SAFE name (``_N0400_``: -1000 for every band, as ESA specifies). ``None`` before 04.00
    or when nothing states the baseline.
    """
    paths = [scene.multiband] if scene.multiband else list(scene.band_files.values())
    first = Path(paths[0])
    for parent in list(first.parents)[:6]:
        for xml in sorted(parent.glob("MTD_MSIL*.xml")):
            text = xml.read_text(errors="replace")
            m = _S2_BASELINE_XML.search(text)
            if m and int(m.group(1)) * 100 + int(m.group(2)) >= 400:
                offsets = {int(b): float(v) for b, v in _S2_OFFSET_XML.findall(text)}
                return offsets or dict.fromkeys(range(13), -1000.0)
            if m:
                return None
    for part in first.parts:
        m = _S2_BASELINE.search(part)
        if m and part.startswith("S2"):
            if int(m.group(1)) * 100 + int(m.group(2)) >= 400:
                return dict.fromkeys(range(13), -1000.0)
            return None
    return None


def _gsd_metres(crs, res: float, top: float, bottom: float) -> float:
    """Pixel size in metres whatever the CRS (degrees: at the grid's central latitude)."""
    if crs.is_geographic:
        lat = np.deg2rad((top + bottom) / 2)
        metres_per_degree = np.pi / 180 * _EARTH_RADIUS_M
        # Geometric mean of the east-west and north-south pixel sizes.
        return float(res * metres_per_degree * np.sqrt(max(np.cos(lat), 1e-12)))
    try:
        factor = crs.linear_units_factor[1]
    except Exception:
        factor = 1.0
    return float(res * factor)


def _open(path: str):
    import rasterio
    from rasterio.errors import RasterioIOError

    if not os.path.exists(path):
        raise BadInputError("missing_file", f"{path} does not exist")
    if os.path.getsize(path) == 0:
        raise BadInputError("empty_file", f"{path} is a zero-byte file; expected a raster")
    try:
        return rasterio.open(path)
    except RasterioIOError as err:
        text = str(err)
        if "not recognized as" in text or "not a supported file format" in text:
            raise BadInputError(
                "not_a_raster", f"{path} is not a raster GDAL can read: {text}"
            ) from err
        raise BadInputError("corrupt_file", f"{path} could not be opened: {text}") from err
    except Exception as err:  # GDAL drivers raise assorted errors on damaged headers
        raise BadInputError("corrupt_file", f"{path} could not be opened: {err}") from err


def _available_bands(scene: _Scene, src_list, band_names, sensor):
    """(default order, {name: (dataset, band index)}, named) of ``scene``'s bands.

    Per-band files are named by their file (or ``band_files`` key); a multi-band file by its
    band descriptions, else by ``band_names`` (``--band-names``), else ``B1..Bn`` placeholders
    (``named`` False: placeholders are positions, never evidence of a sensor).
    """
    if scene.multiband is None:
        available = {}
        for name, src in zip(scene.band_files, src_list):
            if src.count != 1:
                raise BadInputError(
                    "band_count_mismatch",
                    f"{src.name} holds {src.count} bands; a per-band file must hold exactly 1",
                )
            available[name] = (src, 1)
        named = True
    else:
        src = src_list[0]
        descriptions = list(src.descriptions)
        named = all(descriptions) and len(set(descriptions)) == len(descriptions)
        if band_names is not None:
            if len(band_names) != src.count:
                raise BadInputError(
                    "band_count_mismatch",
                    f"band_names (--band-names) gives {len(band_names)} names {list(band_names)} "
                    f"but {src.name} holds {src.count} bands; expected one name per band",
                )
            if named and descriptions != list(band_names):
                raise BadInputError(
                    "band_name_mismatch",
                    f"{src.name} names its bands {descriptions}; band_names gives "
                    f"{list(band_names)}. band_names only names unnamed bands: drop it, or "
                    "use bands= (--bands) to select and reorder",
                )
            names, named = list(band_names), True
        elif named:
            names = descriptions
        else:
            names = [f"B{i}" for i in range(1, src.count + 1)]
        available = {n: (src, i + 1) for i, n in enumerate(names)}
    if sensor is not None and not named:
        raise BadInputError(
            "unnamed_bands",
            f"{scene.multiband} has {len(available)} bands without names (no band descriptions); "
            f"the {sensor} table cannot be applied by position. Name them in file order with "
            "band_names=[...] (--band-names B3,B4,B5)",
        )
    if sensor is None or not named:
        order = list(available) if scene.multiband else sorted(available)
        return order, available, named
    canon = {}
    for key, value in available.items():
        try:
            canon[canonical_band_name(key, sensor)] = value
        except ValueError:
            raise BadInputError(
                "band_name_mismatch",
                f"scene {scene.source}: band {key!r} is not a {sensor} band; expected one of "
                f"{[b.name for b in get_sensor_bands(sensor)]}",
            ) from None
    if scene.multiband:
        order = list(canon)
    else:
        order = [b.name for b in get_sensor_bands(sensor) if b.name in canon]
    return order, canon, named


def _resolve_band_names(scene: _Scene, src_list, bands, sensor, band_names=None):
    """Return (band_name, dataset, band_index) in output order for ``scene``.

    ``bands`` only selects and reorders by name (or alias): the pixels follow the names.
    """
    order, available, named = _available_bands(scene, src_list, band_names, sensor)
    if bands is None:
        return [(n, *available[n]) for n in order]
    wanted = []
    for name in bands:
        key = name
        if key not in available and sensor is not None:
            try:
                key = canonical_band_name(name, sensor)
            except ValueError:
                key = name
        if key not in available:
            unnamed = scene.multiband is not None and not named
            raise BadInputError(
                "band_name_mismatch",
                f"scene {scene.source} has no band {name!r}; it has {list(available)}"
                + (
                    " (placeholders: the file names no bands; bands= only selects, name them "
                    "with band_names=[...] / --band-names)"
                    if unnamed
                    else ""
                )
                + (
                    ""
                    if sensor or unnamed
                    else " (no sensor identified: aliases like 'red' need one)"
                ),
            )
        wanted.append((key, *available[key]))
    if len({w[0] for w in wanted}) != len(wanted):
        raise ValueError(f"bands {list(bands)} name a band twice ({[w[0] for w in wanted]})")
    return wanted


def _identify_scene_sensors(
    scenes: list[_Scene], sensor, band_names, bands, on_error: str
) -> dict[str, str | None]:
    """Sensor of every scene (``sensor`` or evidence) and a check of the band selection.

    Runs before the output folder is touched, so an ambiguous sensor, or (under
    ``on_error="raise"``) a band selection a scene cannot satisfy, writes nothing.
    """
    out: dict[str, str | None] = {}
    for scene in scenes:
        paths = [scene.multiband] if scene.multiband else list(scene.band_files.values())
        srcs = []
        try:
            for path in paths:
                srcs.append(_open(path))
            if sensor is not None:
                out[scene.source] = sensor
            else:
                _, available, named = _available_bands(scene, srcs, band_names, None)
                names = list(available) if named else []
                try:
                    out[scene.source] = identify_sensor(names, _scene_evidence(scene, []))
                except AmbiguousSensorError:
                    out[scene.source] = identify_sensor(names, _scene_evidence(scene, srcs))
            _resolve_band_names(scene, srcs, bands, out[scene.source], band_names)
        except BadInputError:
            out.setdefault(scene.source, None)
            if on_error == "raise":
                raise
        finally:
            for src in srcs:
                src.close()
    return out


def _target_grid(band_srcs, resolution):
    """Intersection of the band extents on a grid of GSD ``resolution`` (finest by default)."""
    crs = band_srcs[0].crs
    for src in band_srcs:
        if src.crs != crs:
            raise BadInputError(
                "crs_mismatch", f"{src.name} is in {src.crs}, other bands of the scene in {crs}"
            )
        if src.crs is None or src.transform.is_identity:
            gcps, _ = src.gcps
            if gcps:
                raise BadInputError(
                    "gcp_only",
                    f"{src.name} is georeferenced by {len(gcps)} ground control points, not a "
                    "geotransform; warp it to a north-up grid first (gdalwarp -t_srs EPSG:...)",
                )
            raise BadInputError("no_georeference", f"{src.name} has no CRS/geotransform")
        if not src.transform.is_rectilinear:
            # Warping a rotated grid north-up fills the corners; those fill pixels would be
            # stored (and counted in the statistics) as real data.
            t = src.transform
            raise BadInputError(
                "rotated_geotransform",
                f"{src.name} has a rotated or skewed geotransform (rotation terms b={t.b:g}, "
                f"d={t.d:g}); warp it to a north-up grid first (gdalwarp -t_srs EPSG:... "
                "-dstnodata ...) so the fill is marked nodata",
            )
    res = (
        float(resolution)
        if resolution
        else min(min(abs(s.res[0]), abs(s.res[1])) for s in band_srcs)
    )
    # min/max: a south-up (positive y step) or east-to-west grid has bottom > top in .bounds;
    # the WarpedVRT below brings it north-up.
    boxes = [(min(b.left, b.right), min(b.bottom, b.top), max(b.left, b.right),
              max(b.bottom, b.top)) for b in (s.bounds for s in band_srcs)]  # fmt: skip
    left = max(b[0] for b in boxes)
    right = min(b[2] for b in boxes)
    bottom = max(b[1] for b in boxes)
    top = min(b[3] for b in boxes)
    width = int(np.floor((right - left) / res + 1e-6))
    height = int(np.floor((top - bottom) / res + 1e-6))
    if width <= 0 or height <= 0:
        raise BadInputError("no_overlap", "the bands of the scene do not overlap")
    return crs, Affine(res, 0.0, left, 0.0, -res, top), width, height, res


def _write_parquet_atomic(table: pa.Table, path: Path, compression_level: int = 3) -> None:
    # Row groups of ~64 chips keep streaming reads granular without bloating the footer. A CRC
    # per page lets every reader detect a flipped byte (zstd alone misses most); the footer
    # says so, for the start-up check.
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), **SHARD_FOOTER_METADATA}
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", compression_level=compression_level,
                       row_group_size=64, write_page_checksum=True)  # fmt: skip


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _our_shards(output_dir: Path) -> list[Path]:
    data = output_dir / "data"
    return sorted(p for p in data.glob("*.parquet") if _SHARD_NAME.match(p.name)) if (
        data.is_dir()) else []  # fmt: skip


def _prepare_output(output_dir: Path, overwrite: bool) -> None:
    """Refuse what must not be replaced; delete nothing of a finished dataset (an overwrite
    replaces it in :func:`_publish`, once the new one is complete)."""
    info = output_dir / DATASET_INFO_FILE
    staging = output_dir / _STAGING
    readme = output_dir / "README.md"
    if info.exists() and not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds a dataset ({DATASET_INFO_FILE}); pass overwrite=True "
            "(--overwrite) to replace it or choose another output folder"
        )
    if _our_shards(output_dir) and not info.exists() and not staging.exists():
        raise FileExistsError(
            f"{output_dir}/data holds parquet files not written by an unfinished geofm run; "
            "refusing to delete them. Choose an empty output folder."
        )
    if readme.exists():
        recorded = None
        if info.exists():
            try:
                recorded = json.loads(info.read_text()).get("readme_sha256", "legacy")
            except (OSError, ValueError):
                recorded = None
        # Datasets written before the card's hash was recorded ("legacy") had our card.
        if recorded != "legacy" and (recorded is None or _sha256(readme) != recorded):
            why = ("was edited after geofm-make-shards wrote it" if info.exists()
                   else "was not written by geofm-make-shards")  # fmt: skip
            raise FileExistsError(
                f"{readme} {why}; the dataset card would replace it. Move it elsewhere (or "
                "delete it) and run again, or choose another output folder"
            )
    if staging.exists():
        logger.warning(
            "%s was left by an unfinished run (killed before it could clean up); removing it",
            staging,
        )
        shutil.rmtree(staging)
    for name in ("README.md", DATASET_INFO_FILE):  # temporary files of a killed run
        for leftover in output_dir.glob(f"{name}*.tmp"):
            leftover.unlink()
    staging.mkdir(parents=True)


def _publish(output_dir: Path, staging: Path, moves: list[tuple[Path, str]], card: str,
             info: GeoDatasetInfo) -> None:  # fmt: skip
    """Replace the previous dataset (if any) by the complete new one: a few renames."""
    previous = staging / "previous"
    previous.mkdir()
    old_info = output_dir / DATASET_INFO_FILE
    if old_info.exists():  # first: from here on the folder is never taken for a finished dataset
        os.replace(old_info, previous / DATASET_INFO_FILE)
    for path in _our_shards(output_dir):
        os.replace(path, previous / path.name)
    (output_dir / "data").mkdir(exist_ok=True)
    for src, final in moves:
        os.replace(src, output_dir / final)
    atomic_write_text(output_dir / "README.md", card)
    info.save(output_dir / DATASET_INFO_FILE)  # last: its presence marks a finished dataset
    shutil.rmtree(staging, ignore_errors=True)


def _clean_up_on_failure(write):
    """A failed run removes its staging folder (and the output folder it created), so it leaves
    the output folder as it found it; the previous dataset is replaced only on success."""

    @functools.wraps(write)
    def wrapper(inputs, output_dir, **kwargs):
        out = Path(output_dir)
        existed = out.exists()
        try:
            return write(inputs, output_dir, **kwargs)
        except BaseException as err:
            staging = out / _STAGING
            previous = staging / "previous"
            if previous.is_dir() and any(previous.iterdir()):
                # Failed while swapping datasets: the old one's files are there; keep them.
                err.add_note(
                    f"the run failed while replacing the previous dataset, whose files are now "
                    f"in {previous}; move them back to {out} (geofm_dataset.json to the top, "
                    "*.parquet to data/) or run again"
                )
                raise
            try:
                if staging.exists():
                    shutil.rmtree(staging)
                if not existed and out.is_dir() and not any(out.iterdir()):
                    out.rmdir()
            except OSError as cleanup_err:
                err.add_note(
                    f"{staging} (partial output of this failed run) could not be removed: "
                    f"{cleanup_err}; delete it by hand"
                )
            raise

    return wrapper


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


# ------------------------------------------------------------------------- scene discovery


def _discover_scenes(inputs, band_files=None, filename_pattern=None, band_names=None,
                     bands=None, sensor=None, on_error="raise"):  # fmt: skip
    """Scene discovery: the input rasters grouped into scenes (band files, QA masks, date) and
    the sensor of each, with the band selection checked. Reads headers only; writes nothing.
    Returns ``(scenes, {scene.source: sensor or None})``."""
    files = _expand_inputs(inputs) if inputs else []
    scenes = _group_scenes(files, band_files, filename_pattern)
    if not scenes:
        raise FileNotFoundError(f"no input rasters found in {inputs!r}")
    _check_unnamed_singles(scenes, band_names)
    return scenes, _identify_scene_sensors(scenes, sensor, band_names, bands, on_error)


# --------------------------------------------------------------------------- chip generator


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


@dataclass
class _Chip:
    """One kept chip: its Parquet row, and what the statistics and validity counts need."""

    split: str
    row: dict[str, Any]
    pixels: np.ndarray  # (bands, size, size); a time series' frames stacked along rows
    band_valid: np.ndarray  # (bands, size, size) bool, same layout
    counts: dict[str, int]


def _scene_chips(scene: _Scene, scene_sensor: str | None, spec: _ChipSpec,
                 state: _DatasetState, policy: _ErrorPolicy) -> Iterator[_Chip]:  # fmt: skip
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
        paths = [scene.multiband] if scene.multiband else list(scene.band_files.values())
        for path in paths:
            srcs.append(_open(path))
        selected = _resolve_band_names(scene, srcs, spec.bands, scene_sensor, spec.band_names)
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
        crs, transform, width, height, res = _target_grid([s for _, s, _ in selected],
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
                qa_srcs.append((kind, _open(path)))
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
        gsd_m = _gsd_metres(crs, res, transform.f, bottom)
        if state.gsd_m is None:
            state.gsd_m = gsd_m
        crs_text = crs.to_string() if crs.to_epsg() is None else f"EPSG:{crs.to_epsg()}"
        scene_mask = spec.masks.open_scene(crs, transform, width, height) if spec.masks else None
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
                mask_strip = (scene_mask.read_strip(y0, chip_size)
                              if scene_mask is not None else None)  # fmt: skip
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
                            raise ValueError(
                                f"labels() returned {label} for {chip_id}; expected 0.."
                                f"{len(spec.label_names) - 1}"
                            )
                    chip_invalid = invalid[:, cols]
                    extra_cols = {} if mask_strip is None else {
                        "mask": np.ascontiguousarray(mask_strip[:, cols]).tobytes()}  # fmt: skip
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
    finally:
        for src in srcs:
            src.close()


# ------------------------------------------------------------------------- time-series chips


def _footprint(scene: _Scene) -> tuple:
    """The grid of a scene's first raster: scenes sharing it are dates of one footprint."""
    with contextlib.closing(_open(scene.multiband or next(iter(scene.band_files.values())))) as src:
        return (src.crs.to_string() if src.crs else None, tuple(src.transform)[:6],
                src.width, src.height)  # fmt: skip


def _time_series_chips(scenes: list[_Scene], scene_sensors: dict[str, str | None],
                       spec: _ChipSpec, state: _DatasetState, policy: _ErrorPolicy,
                       num_frames: int, sources: list[str]) -> Iterator[_Chip]:  # fmt: skip
    """Chips of ``num_frames`` dates of one window: ``(T, C, H, W)``, frames in date order.

    Scenes on one grid are the dates of one footprint; their chip generators run in lockstep
    (one strip of each date in memory, all of its files open at once). Per window, a frame
    over ``spec.max_nodata_fraction`` invalid is skipped (``frame_invalid``) and frames short
    of a whole series are left over (``frames_left_over``); both are counted, never silent.
    """
    footprints: dict[tuple, list[_Scene]] = defaultdict(list)
    for scene in scenes:
        if scene.datetime is None:
            policy.record(
                BadInputError(
                    "no_date",
                    f"scene {scene.source}: no date in its name; a time series needs "
                    "each frame's date (YYYYMMDD, YYYY-MM-DD or a Landsat scene id)",
                ),
                scene.source,
            )
            continue
        try:
            footprints[_footprint(scene)].append(scene)
        except BadInputError as err:
            policy.record(err, scene.source)
    every_chip = dataclasses.replace(spec, max_nodata_fraction=1.0)  # windows stay aligned
    for members in footprints.values():
        members.sort(key=lambda m: (m.datetime, m.source))
        try:
            yield from _footprint_series(members, scene_sensors, every_chip, spec, state, policy,
                                         num_frames)  # fmt: skip
        except BadInputError as err:  # this footprint only (raised again under on_error=raise)
            policy.record(err, members[0].source)
            continue
        sources.extend(m.source for m in members)


def _footprint_series(members: list[_Scene], scene_sensors: dict[str, str | None],
                      every_chip: _ChipSpec, spec: _ChipSpec, state: _DatasetState,
                      policy: _ErrorPolicy, num_frames: int) -> Iterator[_Chip]:  # fmt: skip
    """The series of one footprint's dates (``members``, sorted by date)."""
    dates = [m.datetime for m in members]
    if len(set(dates)) != len(dates):
        twice = sorted({d for d in dates if dates.count(d) > 1})
        raise BadInputError(
            "duplicate_date",
            f"footprint of {members[0].source} has several scenes dated "
            f"{twice}; a time series takes one scene per date. Remove or mosaic them first",
        )
    gens = [_scene_chips(m, scene_sensors.get(m.source), every_chip, state, policy)
            for m in members]  # fmt: skip
    try:
        for frames in itertools.zip_longest(*gens):
            if any(f is None for f in frames):
                raise BadInputError(
                    "window_mismatch",
                    f"the dates of the footprint of "
                    f"{members[0].source} gave different numbers of chips",
                )
            if len({tuple(f.row["transform"]) for f in frames}) != 1:
                raise BadInputError(
                    "window_mismatch",
                    f"the dates of the footprint of {members[0].source} are not on one grid",
                )
            usable = []
            for f in frames:
                fraction = f.counts["invalid_pixels"] / f.counts["pixels"]
                if fraction > spec.max_nodata_fraction:
                    policy.record(BadInputError(
                        "frame_invalid", f"{fraction:.1%} of pixels invalid (max_nodata_"
                        f"fraction={spec.max_nodata_fraction})"), f.row["chip_id"],
                        is_error=False)  # fmt: skip
                else:
                    usable.append(f)
            whole = len(usable) // num_frames * num_frames
            for f in usable[whole:]:
                policy.record(BadInputError(
                    "frames_left_over", f"{len(usable)} usable frames of this window; "
                    f"series take {num_frames}"), f.row["chip_id"], is_error=False)  # fmt: skip
            for first in range(0, whole, num_frames):
                yield _stack_frames(usable[first : first + num_frames])
    finally:
        for gen in gens:
            gen.close()


def _stack_frames(group: list[_Chip]) -> _Chip:
    first = group[0]
    pixels = np.stack([f.pixels for f in group])  # (T, C, H, W)
    band_valid = np.stack([f.band_valid for f in group])
    return _Chip(
        split=first.split,
        row={
            **first.row,
            "image": pixels.tobytes(),
            "shape": list(pixels.shape),
            "chip_id": f"{first.row['chip_id']}_T{len(group)}",
            "frame_datetimes": [f.row["datetime"] for f in group],
            "valid_mask": np.packbits(band_valid.all(axis=1)).tobytes(),
        },
        # The statistics are per band over every frame: frames stacked along the rows.
        pixels=np.concatenate([f.pixels for f in group], axis=1),
        band_valid=np.concatenate([f.band_valid for f in group], axis=1),
        counts={k: sum(f.counts[k] for f in group) for k in first.counts},
    )


# ------------------------------------------------------------------------------- shard sink


class _ShardSink:
    """Shard sink: kept chips -> Parquet shards per split in the staging folder (a shard is full
    at ``rows_per_shard`` chips, else at ``target_bytes`` image bytes), with the per-split band
    statistics and the validity counts of the dataset info."""

    def __init__(self, split_names: Sequence[str], staging: Path, *, target_bytes: int,
                 rows_per_shard: int | None = None, compression_level: int = 3,
                 labelled: bool = False, masked: bool = False,
                 time_series: bool = False):  # fmt: skip
        self.staging, self.target_bytes = staging, target_bytes
        self.rows_per_shard, self.compression_level = rows_per_shard, compression_level
        schema = SHARD_SCHEMA.append(LABEL_FIELD) if labelled else SHARD_SCHEMA
        schema = schema.append(VALID_MASK_FIELD)
        schema = schema.append(FRAME_DATETIMES_FIELD) if time_series else schema
        self.schema = schema.append(MASK_FIELD) if masked else schema
        self.rows: dict[str, list[dict[str, Any]]] = {s: [] for s in split_names}
        self.nbytes = dict.fromkeys(split_names, 0)
        self.files: dict[str, list[dict[str, Any]]] = {s: [] for s in split_names}  # staged
        self.stats: dict[str, _Stats] = {}
        self.validity: Counter[str] = Counter()

    def add(self, chip: _Chip) -> None:
        self.validity.update(chip.counts)
        self.stats.setdefault(chip.split, _Stats(len(chip.pixels))).update(
            chip.pixels, chip.band_valid
        )
        rows = self.rows[chip.split]
        rows.append(chip.row)
        self.nbytes[chip.split] += len(chip.row["image"])
        if (len(rows) >= self.rows_per_shard if self.rows_per_shard
                else self.nbytes[chip.split] >= self.target_bytes):  # fmt: skip
            self._flush(chip.split)

    def _flush(self, split: str) -> None:
        rows = self.rows[split]
        if not rows:
            return
        table = pa.Table.from_pydict({n: [r[n] for r in rows] for n in self.schema.names},
                                     schema=self.schema)  # fmt: skip
        staged = self.staging / f"{split}-{len(self.files[split]):05d}.parquet"
        _write_parquet_atomic(table, staged, self.compression_level)
        self.files[split].append({"staged": staged.name, "num_rows": table.num_rows,
                                  "bytes": staged.stat().st_size, "sha256": _sha256(staged)})  # fmt: skip
        self.rows[split], self.nbytes[split] = [], 0

    def close(self) -> dict[str, int]:
        """Write what is buffered; returns the chip count of each split."""
        for split in self.rows:
            self._flush(split)
        return {s: sum(f["num_rows"] for f in files) for s, files in self.files.items()}

    def shards(self) -> tuple[dict[str, list[dict[str, Any]]], list[tuple[Path, str]]]:
        """The dataset info's shard entries (final names, hashes) and the renames to them."""
        shards: dict[str, list[dict[str, Any]]] = {}
        moves: list[tuple[Path, str]] = []
        for split_name, files in self.files.items():
            shards[split_name] = []
            for i, entry in enumerate(files):
                final = f"data/{split_name}-{i:05d}-of-{len(files):05d}.parquet"
                moves.append((self.staging / entry["staged"], final))
                shards[split_name].append({"file": final, "num_rows": entry["num_rows"],
                                           "bytes": entry["bytes"], "sha256": entry["sha256"]})  # fmt: skip
        return shards, moves

    def stats_by_split(self) -> dict[str, dict[str, list[float]]]:
        out = {}
        for split_name in self.rows:
            if split_name in self.stats:
                mean, std = self.stats[split_name].result()
                out[split_name] = {"mean": mean, "std": std,
                                   "valid_pixels": self.stats[split_name].count.tolist()}  # fmt: skip
        return out


@_clean_up_on_failure
def write_shards(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    chip_size: int = 64,
    stride: int | None = None,
    bands: Sequence[str] | None = None,
    band_names: Sequence[str] | None = None,
    band_files: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
    filename_pattern: str | re.Pattern | None = None,
    resolution: float | None = None,
    resampling: str = "nearest",
    nodata: float | None = None,
    max_nodata_fraction: float = 0.0,
    target_shard_mb: float = 128.0,
    rows_per_shard: int | None = None,
    compression_level: int = 3,
    split: str | Mapping[str, float] = "train",
    on_error: str = "raise",
    max_error_fraction: float = 0.05,
    labels: Callable[[ChipMeta], int | None] | None = None,
    label_names: Sequence[str] | None = None,
    sensor: str | None = None,
    qa_masks: bool = True,
    overwrite: bool = False,
    dataset_name: str | None = None,
    license: str = "other",
    card_notes: str | None = None,
    label_raster: str | os.PathLike | None = None,
    label_vector: str | os.PathLike | None = None,
    label_field: str | None = None,
    mask_label_names: Sequence[str] | None = None,
    num_frames: int | None = None,
) -> WriteSummary:
    r"""Cut rasters into chips and write a Hub-ready Parquet dataset to ``output_dir``.

    Args:
        inputs: files, folders (searched recursively for raster extensions) or globs. Files
            named ``<scene>_B02.jp2`` etc. are grouped into one scene per prefix and stacked;
            ``<scene>_fmask`` / ``_SCL`` / ``_QA_PIXEL`` files are that scene's cloud/QA mask.
            A one-band file whose band has no name is an error (group it, or name it).
        chip_size, stride: chip edge and step in target-grid pixels (stride defaults to
            chip_size).
        bands: names (or aliases) to select and reorder; default all bands in the sensor's
            canonical order. The pixels always follow the names.
        band_names: names for the bands of multi-band files that carry no band descriptions
            (``--band-names``); one per band, in file order.
        band_files: explicit ``{band: path}`` mapping(s), one per scene.
        filename_pattern: regex with a named ``band`` group (and optionally ``scene``) that
            groups one-file-per-band inputs, e.g. ``r"(?P<scene>.+)_(?P<band>\d+)\.tif$"``;
            every file must match.
        resolution: target GSD in CRS units (default: the finest band of the scene).
        resampling: rasterio resampling name used to bring coarser/finer bands onto the grid.
        nodata: value treated as nodata in every band, besides each file's declared nodata and
            the sensor's known fill value (e.g. 0 for Sentinel-2 and Landsat Collection 2).
            NaN and +-inf are always invalid.
        max_nodata_fraction: chips with a larger fraction of invalid pixels (nodata, fill,
            NaN/inf, cloud/QA-flagged) are dropped (counted in the summary and card). Kept
            chips store their validity mask (``valid_mask``, 1 = valid) for the loss.
        target_shard_mb: uncompressed image bytes per shard (MB = 1e6 bytes).
        rows_per_shard: chips per shard instead (overrides ``target_shard_mb``).
        compression_level: zstd level of the Parquet files (3 is fast; 19 is ~35% smaller).
        split: one split name, or ``{"train": 0.8, "validation": 0.2}`` to assign spatially
            disjoint column blocks of each scene (west to east) to splits.
        on_error: ``"raise"`` stops at the first bad input; ``"skip"`` logs, counts and goes on.
        max_error_fraction: under ``"skip"``, stop with :class:`TooManyErrorsError` once more
            than this fraction of the input scenes is bad.
        labels, label_names: optional callable giving an integer label per chip (``None``
            drops the chip, counted as ``unlabelled``) and the class names.
        sensor: band table for names/wavelengths (``landsat7``, ``sentinel2-l2a`` ...). By
            default identified from evidence only: product/scene ids in the file names
            (``LE07_...``, ``S2A_MSIL2A_...``), metadata tags, or band names only one family
            of sensors spells; ambiguous names (``B1..B7``) are an error asking for it.
        qa_masks: apply the scenes' cloud/QA mask files (fmask, SCL, QA_PIXEL) to validity.
        overwrite: replace a finished dataset in ``output_dir``.
        dataset_name: title of the dataset card. license: its ``license:`` tag (SPDX id or
            ``other``). card_notes: markdown appended to the card (source, licence, citation).
        label_raster: a class raster (values = class index, nodata = unlabelled) on this or
            any grid, reprojected nearest-neighbour onto each scene's grid; or label_vector +
            label_field: polygons rasterised with the class named by that attribute (sorted
            distinct values, or ``mask_label_names``). Each chip then gets a ``mask`` column
            (uint8 bytes, 255 = unlabelled); the class names go to ``geofm_dataset.json``
            under ``mask_label_names``.
        num_frames: write time series: the scenes on one grid are the dates of one footprint,
            and each chip is ``(num_frames, C, H, W)``, its frames in date order (dates from
            the file names), with a ``(T, H, W)`` ``valid_mask`` and ``frame_datetimes``. A
            frame over ``max_nodata_fraction`` invalid in a window is skipped there; frames
            short of a whole series are left over; both are counted in ``skipped``.

    Returns:
        A :class:`WriteSummary`. The folder holds ``README.md``, ``geofm_dataset.json`` and
        ``data/<split>-NNNNN-of-MMMMM.parquet``.
    """
    from rasterio.enums import Resampling

    from .card import render_dataset_card

    start = time.perf_counter()
    stride = chip_size if stride is None else stride
    if chip_size <= 0 or stride <= 0:
        raise ValueError(f"chip_size and stride must be positive; got {chip_size}, {stride}")
    if not 0.0 <= max_nodata_fraction <= 1.0:
        raise ValueError(f"max_nodata_fraction must be in [0, 1]; got {max_nodata_fraction}")
    if not isinstance(split, str):
        total = sum(split.values())
        if not split or abs(total - 1.0) > 1e-6 or min(split.values()) <= 0:
            raise ValueError(f"split fractions must be positive and sum to 1; got {dict(split)}")
    if resampling not in Resampling.__members__:
        raise ValueError(f"unknown resampling {resampling!r}")
    if labels is not None and not label_names:
        raise ValueError("labels needs label_names (the class names, index = label)")
    if num_frames is not None:
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames must be a positive integer; got {num_frames!r}")
        if labels is not None or label_raster is not None or label_vector is not None:
            raise ValueError(
                "num_frames (time series) cannot be combined with labels: scene labels and "
                "masks are written for single-date chips only"
            )
    if sensor is not None:
        get_sensor_bands(sensor)  # an unknown sensor fails here, before any raster is read

    masks = None
    if label_raster is not None or label_vector is not None:
        from .masks import MaskSource

        masks = MaskSource(label_raster, label_vector, label_field,
                           list(mask_label_names) if mask_label_names else None)  # fmt: skip

    if bands is not None and isinstance(bands, str):
        raise ValueError(f"bands must be a list of names; got the string {bands!r}")
    sensor = resolve_sensor(sensor) if sensor else None
    output_dir = Path(output_dir)
    scenes, scene_sensors = _discover_scenes(inputs, band_files, filename_pattern, band_names,
                                             bands, sensor, on_error)  # fmt: skip
    output_dir.mkdir(parents=True, exist_ok=True)
    _prepare_output(output_dir, overwrite)
    staging = output_dir / _STAGING
    policy = _ErrorPolicy(on_error, max_error_fraction, len(scenes))
    split_names = [split] if isinstance(split, str) else list(split)
    sink = _ShardSink(split_names, staging, target_bytes=int(target_shard_mb * 1e6),
                      rows_per_shard=rows_per_shard, compression_level=compression_level,
                      labelled=labels is not None, masked=masks is not None,
                      time_series=num_frames is not None)  # fmt: skip
    spec = _ChipSpec(chip_size, stride, max_nodata_fraction, bands, band_names, resolution,
                     resampling, nodata, qa_masks, split, labels, label_names, masks)  # fmt: skip
    state = _DatasetState()
    sources: list[str] = []
    if num_frames is not None:
        with contextlib.closing(_time_series_chips(scenes, scene_sensors, spec, state, policy,
                                                   num_frames, sources)) as chips:  # fmt: skip
            for chip in chips:
                sink.add(chip)
    for scene in scenes if num_frames is None else ():
        try:
            with contextlib.closing(
                _scene_chips(scene, scene_sensors.get(scene.source), spec, state, policy)
            ) as chips:
                scene_chips = 0
                for chip in chips:
                    sink.add(chip)
                    scene_chips += 1
            sources.append(scene.source)
            logger.info("scene %s: %d chips", scene.source, scene_chips)
        except BadInputError as err:
            policy.record(err, scene.source)

    num_samples = sink.close()
    dataset_bands, dataset_sensor, sensors = state.bands, state.sensor, state.sensors
    if dataset_bands is None:
        raise TooManyErrorsError(
            f"no usable scene among {len(scenes)} inputs; skipped: {policy.summary()}"
        )
    if not any(num_samples.values()):
        raise ValueError(
            f"every chip was dropped (skipped: {policy.summary()}); check nodata, "
            "max_nodata_fraction and chip_size"
        )
    empty = [s for s, n in num_samples.items() if n == 0]
    if empty:
        logger.warning(
            "split(s) %s received no chips (%s): splits are blocks of chip columns, west to "
            "east, within each scene, and no scene was wide enough to reach them (one chip "
            "column feeds only the first split). Use wider scenes, a smaller chip size or "
            "stride, or one split name.", empty, num_samples,
        )  # fmt: skip

    # Finalise: staged shards get their final names (moved by _publish), hashes recorded.
    shards, moves = sink.shards()
    stats_by_split = sink.stats_by_split()
    # Normalisation statistics come from the training split (or the first non-empty split).
    stats_split = "train" if "train" in stats_by_split else next(iter(stats_by_split))
    info = GeoDatasetInfo(
        band_names=list(dataset_bands),
        dtype=state.dtype.name,
        chip_size=chip_size,
        num_samples=num_samples,
        mean=stats_by_split[stats_split]["mean"],
        std=stats_by_split[stats_split]["std"],
        wavelengths_um=band_wavelengths(dataset_bands, dataset_sensor) if dataset_sensor else None,
        gsd_m=band_gsd(dataset_bands, dataset_sensor) if dataset_sensor else None,
        bandwidths_um=band_bandwidths(dataset_bands, dataset_sensor) if dataset_sensor else None,
        sensor="+".join(sorted(sensors)) if dataset_sensor and len(sensors) > 1 else dataset_sensor,
        sources=sources,
        skipped=policy.summary(),
        label_names=list(label_names) if label_names else None,
        shards=shards,
        stats_by_split=stats_by_split,
        num_frames=num_frames or 1,
        extra={"stats_split": stats_split, "stride": stride, "target_gsd_m": state.gsd_m,
               "target_resolution_crs_units": state.res, "sensors": dict(sensors),
               "validity": {**dict(sink.validity), "nodata_given": nodata,
                            "sensor_fill_values": list(sensor_fill_values(dataset_sensor)),
                            "qa_masks": qa_masks},
               "radiometric_offset_scenes": state.offset_scenes,
               "resampling": resampling, "max_nodata_fraction": max_nodata_fraction,
               **({"mask_label_names": masks.names(), "mask_ignore_index": 255}
                  if masks is not None else {})},
    )  # fmt: skip
    card = render_dataset_card(info, name=dataset_name or output_dir.name,
                               skipped_items=policy.items, license=license,
                               notes=card_notes)  # fmt: skip
    info.extra["readme_sha256"] = hashlib.sha256(card.encode()).hexdigest()
    _publish(output_dir, staging, moves, card, info)
    summary = WriteSummary(
        output_dir=str(output_dir),
        num_samples=num_samples,
        num_shards={s: len(v) for s, v in shards.items()},
        skipped=policy.summary(),
        band_names=list(dataset_bands),
        mean=info.mean,
        std=info.std,
        bytes_read=state.bytes_read,
        seconds=time.perf_counter() - start,
        skipped_items=policy.items,
    )
    logger.info("wrote %s: %s samples, skipped %s", output_dir, num_samples, summary.skipped)
    return summary
