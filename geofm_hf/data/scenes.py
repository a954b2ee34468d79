"""Scene discovery: input rasters (files, folders, globs) -> scenes (band files, QA masks, date).

One scene reader for every door: ``geofm-make-shards`` (:mod:`geofm_hf.data.writer`) and every
inference tool (:mod:`geofm_hf.inference.scenes`) find, group and open rasters through here, so a
folder is read the same way whether it is cut into shards or embedded.
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .format import STAGING_DIR, BadInputError

__all__ = ["Scene", "find_scenes", "open_raster"]

logger = logging.getLogger(__name__)

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


_DATETIME = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})(?!\d)")


_DATE = re.compile(r"(?<!\d)(20\d{2}|19\d{2})(\d{2})(\d{2})(?!\d)")


# Pre-Collection Landsat scene ids (LE70350322008118EDC00): sensor, path, row, year, day of year.
_LANDSAT_SCENE_ID = re.compile(r"(?<![A-Za-z0-9])L[CTEOM]0?[4-9]\d{6}(\d{4})(\d{3})[A-Z]{3}\d{2}")


@dataclass
class Scene:
    scene_id: str
    source: str
    band_files: dict[str, str]  # band name -> path (per-band files)
    multiband: str | None = None  # path of one multi-band file
    datetime: str | None = None
    masks: dict[str, str] = field(default_factory=dict)  # QA kind -> path (fmask, scl ...)

    @property
    def paths(self) -> list[str]:
        """The raster files that hold the scene's bands: its multi-band file, or one per band."""
        return [self.multiband] if self.multiband else list(self.band_files.values())


def find_scenes(inputs, band_files=None, filename_pattern=None) -> list[Scene]:
    """The scenes of ``inputs`` (files, folders, globs) and ``band_files``: per-band files grouped
    by scene prefix (or ``filename_pattern``), QA masks joined to their scene, dates from names.
    Reads no pixels; an input that yields no scene is an error."""
    files, not_read = _expand_inputs(inputs) if inputs else ([], [])
    scenes = _group_scenes(files, band_files, filename_pattern)
    if not_read:  # every file given or found is read, or named here: none dropped unsaid
        logger.warning(
            "%s. Raster extensions read (any case): %s", _not_read_message(not_read),
            " ".join(sorted(_RASTER_EXTENSIONS)),
        )  # fmt: skip
    if not scenes:
        raise FileNotFoundError(f"no input rasters found in {inputs!r}")
    return scenes


def open_raster(path: str):
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


# Files beside a raster that GDAL reads with it (statistics, overviews, masks, georeferencing,
# headers): never inputs of their own.
_SIDECARS = {
    ".ovr": "overviews", ".msk": "mask", ".aux": "metadata", ".rrd": "overviews",
    ".tfw": "world file", ".tifw": "world file", ".jgw": "world file", ".j2w": "world file",
    ".wld": "world file", ".prj": "projection", ".hdr": "header",
}  # fmt: skip


def _is_sidecar(path: Path) -> bool:
    return path.name.lower().endswith(".aux.xml") or path.suffix.lower() in _SIDECARS


def _why_not_read(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".aux.xml"):
        return "GDAL sidecar (.aux.xml metadata of a raster)"
    if path.suffix.lower() in _SIDECARS:
        return f"GDAL sidecar ({path.suffix} {_SIDECARS[path.suffix.lower()]} of a raster)"
    if path.is_dir():
        return "a folder matched by a glob (name the folder itself to search it)"
    if name.startswith("."):
        return "hidden file"
    return f"not a raster extension ({path.suffix or 'no extension'})"


def _not_read_message(ignored: list[Path], shown: int = 5) -> str:
    listed = "; ".join(f"{p.name} ({_why_not_read(p)})" for p in ignored[:shown])
    more = f"; and {len(ignored) - shown} more" if len(ignored) > shown else ""
    return f"{len(ignored)} file(s) not read: {listed}{more}"


def _folder_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(raster files, other files) under ``folder``, recursively, outside staging folders."""
    rasters, others = [], []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or STAGING_DIR in p.parts:
            continue
        (rasters if p.suffix.lower() in _RASTER_EXTENSIONS else others).append(p)
    return rasters, others


def _expand_inputs(inputs) -> tuple[list[Path], list[Path]]:
    """(raster files to read, files and folders the inputs name or hold that are not read)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    not_read: list[Path] = []
    for item in inputs:
        text = str(item)
        if any(c in text for c in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            if not matches:
                raise FileNotFoundError(f"glob {text!r} matched no files")
            files.extend(m for m in matches if m.is_file() and not _is_sidecar(m))
            # A recursive glob matches the files of its folders too: only its own are named.
            not_read.extend(m for m in matches
                            if _is_sidecar(m) or (m.is_dir() and "**" not in text))  # fmt: skip
        elif Path(text).is_dir():
            found, others = _folder_files(Path(text))
            if not found:
                held = f"; it holds {_not_read_message(others)}" if others else ", no file at all"
                raise FileNotFoundError(
                    f"folder {text} holds no raster files (extensions, any case: "
                    f"{' '.join(sorted(_RASTER_EXTENSIONS))}){held}"
                )
            files.extend(found)
            not_read.extend(others)
        elif Path(text).is_file():
            files.append(Path(text))
        else:
            raise FileNotFoundError(f"input {text!r} is not a file, folder or matching glob")
    # Absolute, not resolved: a symlink's own name (LC08_..._SR_B4.tif) is what names its band
    # and sensor, whatever the file it points to is called.
    absolute = list(dict.fromkeys(Path(os.path.abspath(p)) for p in files))
    read = set(absolute)  # a file another input names is read, whatever a folder left out
    skipped = dict.fromkeys(Path(os.path.abspath(p)) for p in not_read)
    return absolute, [p for p in skipped if p not in read]


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


def _group_scenes(files: list[Path], band_files, filename_pattern=None) -> list[Scene]:
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
        out.append(Scene(prefix, source, bands, datetime=_datetime_from_name(prefix),
                          masks=masks.pop((parent, prefix), {})))  # fmt: skip
    for path in singles:
        source = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
        out.append(Scene(path.stem, source, {}, multiband=str(path),
                          datetime=_datetime_from_name(path.stem)))  # fmt: skip
    if band_files:
        groups = [band_files] if isinstance(band_files, Mapping) else list(band_files)
        for group in groups:
            paths, qa_paths = {}, {}
            for k, v in group.items():
                target = qa_paths if str(k).lower() in _QA_NAMES else paths
                target[_QA_NAMES.get(str(k).lower(), _band_key(str(k)))] = os.path.abspath(v)
            if not paths:
                raise ValueError(f"band_files group {dict(group)} names no band, only masks")
            first = Path(next(iter(paths.values())))
            out.append(Scene(first.stem, f"{first.parent.name}/{first.stem}", paths,
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


def _check_unnamed_singles(scenes: list[Scene], band_names) -> None:
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
            src = open_raster(scene.multiband)
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
