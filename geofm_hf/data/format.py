"""The shard format: Parquet schema, ``geofm_dataset.json`` and image decoding.

One row of a shard is one chip. ``image`` holds the raw C-order array bytes (``shape``,
``dtype``) so a batch decodes with one ``np.frombuffer``; a column of encoded GeoTIFF bytes
(another producer's dataset) is detected by its magic bytes and decoded with rasterio.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import struct
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .._atomic import atomic_write_text
from .._errors import BadInputError, InputNotFoundError, NotAFolderError, TooManyErrorsError

__all__ = [
    "DATASET_INFO_FILE",
    "FORMAT_VERSION",
    "FRAME_DATETIMES_FIELD",
    "SHARD_FOOTER_METADATA",
    "SHARD_SCHEMA",
    "STAGING_DIR",
    "VALID_MASK_FIELD",
    "BadInputError",
    "GeoDatasetInfo",
    "TooManyErrorsError",
    "chip_metadata",
    "dataset_location",
    "decode_batch",
    "decode_image",
    "decode_valid_masks",
    "read_dataset_info",
]

FORMAT_VERSION = 1
DATASET_INFO_FILE = "geofm_dataset.json"
# A run writes its shards here first; its presence marks an unfinished run, never a dataset.
STAGING_DIR = ".geofm_staging"

SHARD_SCHEMA = pa.schema(
    [
        ("image", pa.binary()),
        ("shape", pa.list_(pa.int32())),
        ("dtype", pa.string()),
        ("band_names", pa.list_(pa.string())),
        ("crs", pa.string()),
        ("transform", pa.list_(pa.float64())),
        ("bounds", pa.list_(pa.float64())),
        ("source", pa.string()),
        ("datetime", pa.string()),
        ("gsd_m", pa.float64()),
        ("chip_id", pa.string()),
    ]
)
LABEL_FIELD = pa.field("label", pa.int64())
# Segmentation shards: the chip's class mask, uint8 (H, W) C-order bytes; 255 = unlabelled.
MASK_FIELD = pa.field("mask", pa.binary())
# Per-chip validity: np.packbits of the (H, W) bool mask, 1 = valid pixel (every band has a
# value, not nodata/fill, not NaN/inf, not flagged by a cloud/QA mask). Absent in older shards.
VALID_MASK_FIELD = pa.field("valid_mask", pa.binary())
# Time-series shards (``num_frames`` > 1 in the dataset info): each chip is ``(T, C, H, W)``,
# ``valid_mask`` packs ``(T, H, W)``, and each frame's ISO date is listed here, in date order.
FRAME_DATETIMES_FIELD = pa.field("frame_datetimes", pa.list_(pa.string()))
# Key-value metadata in every shard's footer: its pages carry CRC32 checksums.
SHARD_FOOTER_METADATA = {b"geofm.page_checksums": b"crc32"}

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


@dataclass
class GeoDatasetInfo:
    """Contents of ``geofm_dataset.json`` (see docs/data.md for each field)."""

    band_names: list[str]
    dtype: str
    chip_size: int
    num_samples: dict[str, int]
    mean: list[float]
    std: list[float]
    format_version: int = FORMAT_VERSION
    wavelengths_um: list[float] | None = None
    gsd_m: list[float | None] | None = None
    # Full width of each band (um), from the sensor table; None where the table has none.
    bandwidths_um: list[float | None] | None = None
    sensor: str | None = None
    sources: list[str] = field(default_factory=list)
    skipped: dict[str, Any] = field(default_factory=lambda: {"count": 0, "by_reason": {}})
    label_names: list[str] | None = None
    shards: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    stats_by_split: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # Frames per chip: 1 for single-date chips (C, H, W); T for time series (T, C, H, W).
    num_frames: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; ``label_names`` (and ``bandwidths_um``) are omitted when unknown."""
        out = asdict(self)
        for key in ("label_names", "bandwidths_um"):
            if out[key] is None:
                del out[key]
        out.update(out.pop("extra"))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = DATASET_INFO_FILE) -> GeoDatasetInfo:
        """Build from a parsed ``geofm_dataset.json`` (``source``: its path, for messages);
        unknown keys go to ``extra``. A manifest that contradicts itself (a shard listed twice,
        statistics that are not one finite value per band, sample counts that are not the sum
        of the shards') is refused here, before any reader trusts it."""
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise BadInputError(
                "bad_dataset_info",
                f"{source}: format_version {version!r} is not supported; expected "
                f"{FORMAT_VERSION}. Upgrade geofm_hf or rewrite the shards.",
            )
        names = {f.name for f in fields(cls)}
        missing = [
            k
            for k in ("band_names", "dtype", "chip_size", "num_samples", "mean", "std")
            if k not in data
        ]
        if missing:
            raise BadInputError(
                "bad_dataset_info",
                f"{source} lacks required keys {missing}: not a dataset written by "
                "geofm-make-shards (or a damaged one); write it again",
            )
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        info = cls(**known)
        info.extra.update(extra)
        if not (len(info.mean) == len(info.std) == len(info.band_names)):
            raise BadInputError(
                "bad_dataset_info",
                f"{source}: mean ({len(info.mean)}), std ({len(info.std)}) and "
                f"band_names ({len(info.band_names)}) must have the same length",
            )
        _check_manifest(info, source)
        return info

    def band_widths(self) -> list[float] | None:
        """Every band's full width (um): stored, else from the sensor table (datasets written
        before ``bandwidths_um`` was); ``None`` unless every band has one."""
        widths = self.bandwidths_um
        if widths is None and self.sensor:
            from ..bands import band_bandwidths

            try:  # a mixed-sensor dataset ("landsat5-tm+landsat7-etm"): its first sensor's
                widths = band_bandwidths(self.band_names, self.sensor.split("+")[0])
            except (KeyError, ValueError):
                widths = None
        if widths is None or any(w is None for w in widths):
            return None
        return [float(w) for w in widths]

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temp name, then rename)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")


def _check_manifest(info: GeoDatasetInfo, source: str) -> None:
    """Refuse what a reader would otherwise train on quietly: a shard listed twice (its chips
    would be read twice an epoch), statistics that cannot normalise every band, and sample counts
    that disagree with the shard list. Reads nothing but the parsed manifest."""

    def refuse(field_name: str, found: str) -> None:
        raise BadInputError(
            "bad_dataset_info",
            f"{source}: {field_name} {found}; rewrite the dataset with geofm-make-shards "
            "(or correct that field)",
        )

    bands = len(info.band_names)
    for key in ("mean", "std"):
        values = getattr(info, key)
        bad = [i for i, v in enumerate(values) if not _is_finite_number(v)]
        if bad:
            names = [info.band_names[i] for i in bad[:5]]
            found = f"holds non-finite normalisation statistics for band(s) {names}"
            refuse(key, f"{found}: {[values[i] for i in bad[:5]]}")
    for split, stats in (info.stats_by_split or {}).items():
        for key in ("mean", "std"):
            values = (stats or {}).get(key)
            if values is not None and len(values) != bands:
                found = f"holds {len(values)} values for the {bands} bands of band_names"
                refuse(f"stats_by_split.{split}.{key}", found)
    seen_files: dict[str, str] = {}
    seen_hashes: dict[str, str] = {}
    for split, entries in (info.shards or {}).items():
        for entry in entries or []:
            name = posixpath.normpath(str(entry.get("file")))
            if name in seen_files:
                where = "" if seen_files[name] == split else f" (also in shards.{seen_files[name]})"
                refuse(f"shards.{split}", f"lists {name} twice{where}: its chips would be read "
                       "twice an epoch")  # fmt: skip
            seen_files[name] = split
            digest = entry.get("sha256")
            if digest is not None and digest in seen_hashes:
                refuse(f"shards.{split}", f"lists {name} and {seen_hashes[digest]} with one "
                       f"sha256 ({digest[:12]}...): the same shard twice")  # fmt: skip
            if digest is not None:
                seen_hashes[digest] = name
        counted = info.num_samples.get(split)
        total = sum(int(e.get("num_rows", 0)) for e in entries or [])
        if entries and counted is not None and int(counted) != total:
            found = f"is {counted}, but the {len(entries)} shards listed hold {total} rows"
            refuse(f"num_samples.{split}", found)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def dataset_location(name_or_path: str | os.PathLike) -> str:
    """``"local"`` for an existing folder, ``"hub"`` for a Hub dataset repo id; anything else is a
    clear error at once (not a ~30 s wait for the Hub to say a mistyped path does not exist).

    Path-like (absolute, starting with ``.`` or ``~``, with a backslash or more than one ``/``)
    and missing: ``FileNotFoundError``. A bare name that is no folder here, or an ``org/name``
    the Hub would reject: ``ValueError`` naming both readings.
    """
    text = os.fspath(name_or_path)
    local = Path(text).expanduser()
    if local.is_dir():
        return "local"
    if local.exists():
        raise NotAFolderError(
            "not_a_dataset",
            f"{text} is a file; expected a dataset folder written by geofm-make-shards "
            "(holding geofm_dataset.json and data/*.parquet) or a Hub dataset repo id",
        )
    path_like = (
        isinstance(name_or_path, os.PathLike)
        or text.startswith((".", "~", "/"))
        or "\\" in text
        or (os.sep != "/" and os.sep in text)
        or text.count("/") > 1
        or text.endswith("/")
    )
    if path_like:
        raise InputNotFoundError(
            "missing_dataset",
            f"dataset folder {text} does not exist (resolved to {local.absolute()}); "
            "check the path, or pass a Hub dataset repo id as org/name",
        )
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    problem = None
    if "/" not in text:
        problem = "has no org/ part"
    else:
        try:
            validate_repo_id(text)
        except HFValidationError as err:
            problem = str(err)
    if problem:
        raise BadInputError(
            "not_a_dataset",
            f"{text!r} is neither an existing folder (no {local.absolute()}) nor a Hub dataset "
            f"repo id of the form org/name ({problem}); fix the path or the repo id",
        )
    return "hub"


def read_dataset_info(
    name_or_path: str | os.PathLike, revision: str | None = None
) -> GeoDatasetInfo:
    """Read ``geofm_dataset.json`` from a local folder or a Hub dataset repo id.

    A path that exists locally is read directly; anything else is treated as a repo id and
    fetched with ``huggingface_hub.hf_hub_download(repo_type="dataset")``.
    """
    local = Path(name_or_path).expanduser()
    if dataset_location(name_or_path) == "local":
        path = local / DATASET_INFO_FILE
        if not path.is_file():
            raise InputNotFoundError(
                "not_a_dataset",
                f"{local} has no {DATASET_INFO_FILE}; expected a folder written by "
                "geofm-make-shards (or pass mean/std explicitly)",
            )
    else:
        from huggingface_hub import hf_hub_download

        path = Path(
            hf_hub_download(
                str(name_or_path), DATASET_INFO_FILE, repo_type="dataset", revision=revision
            )
        )
    with open(path) as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as err:
            raise BadInputError("bad_dataset_info", f"{path} is not valid JSON: {err}") from err
    where = str(path) if dataset_location(name_or_path) == "local" else (
        f"{name_or_path}/{DATASET_INFO_FILE}")  # fmt: skip
    return GeoDatasetInfo.from_dict(data, source=where)


def is_geotiff_bytes(buf: bytes | memoryview) -> bool:
    """True when ``buf`` starts with a TIFF/BigTIFF magic number."""
    return bytes(buf[:4]) in _TIFF_MAGIC


def _decode_geotiff(buf: bytes) -> np.ndarray:
    from rasterio.io import MemoryFile

    with MemoryFile(bytes(buf)) as mem, mem.open() as src:
        return src.read()


def decode_image(row: dict[str, Any]) -> np.ndarray:
    """Decode one row (a dict with ``image`` and, for raw bytes, ``shape`` and ``dtype``).

    Returns a (C, H, W) array in the stored dtype (no int64 promotion). GeoTIFF-encoded
    images are recognised by their magic bytes.
    """
    buf = row["image"]
    if isinstance(buf, dict):  # datasets Image()/binary features may wrap bytes
        buf = buf.get("bytes")
    if buf is None:
        raise BadInputError("missing_image", "row has no image bytes")
    if is_geotiff_bytes(buf):
        return _decode_geotiff(buf)
    shape = row.get("shape")
    dtype = row.get("dtype")
    if shape is None or dtype is None:
        raise BadInputError(
            "bad_row",
            "raw image bytes need 'shape' and 'dtype' columns (or GeoTIFF-encoded bytes); "
            f"found columns {sorted(row)}",
        )
    arr = np.frombuffer(buf, dtype=np.dtype(dtype))
    expected = int(np.prod(shape))
    if arr.size != expected:
        raise BadInputError(
            "bad_row",
            f"image has {arr.size} {dtype} values but shape {list(shape)} needs {expected}",
        )
    return arr.reshape([int(s) for s in shape])


def decode_batch(
    table: pa.Table | pa.RecordBatch, indices: np.ndarray | None = None, *, _view: bool = False
) -> np.ndarray:
    """Decode rows ``indices`` (default all) of an Arrow table into one (N, C, H, W) array.

    Fast path: when every stored image has the same byte length the binary column's value
    buffer is viewed as one array and only the requested rows are copied. GeoTIFF bytes and
    ragged rows fall back to :func:`decode_image` per row (all rows must share a shape).
    """
    column = table.column("image")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    n = len(column)
    if indices is None:
        indices = np.arange(n)
    indices = np.asarray(indices, dtype=np.int64)
    if n == 0 or len(indices) == 0:
        raise ValueError("decode_batch needs at least one row")
    if _view and (column.type != pa.binary() and column.type != pa.large_binary()):
        raise BadInputError("bad_row", f"image column must be binary; found {column.type}")
    if column.type == pa.large_binary():
        offset_dtype = np.int64
    elif column.type == pa.binary():
        offset_dtype = np.int32
    else:
        raise BadInputError("bad_row", f"image column must be binary; found {column.type}")
    if column.null_count:
        raise BadInputError("missing_image", f"{column.null_count} rows have a null image")
    _, offsets_buf, data_buf = column.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=offset_dtype)[column.offset : column.offset + n + 1]
    lengths = np.diff(offsets)
    first = bytes(memoryview(data_buf)[offsets[0] : offsets[0] + 4])
    names = table.schema.names
    if (
        not is_geotiff_bytes(first)
        and "shape" in names
        and "dtype" in names
        and (lengths.min() == lengths.max())
    ):
        shape = table.column("shape")[int(indices[0])].as_py()
        dtype = np.dtype(table.column("dtype")[int(indices[0])].as_py())
        nbytes = int(lengths[0])
        if int(np.prod(shape)) * dtype.itemsize != nbytes:
            raise BadInputError(
                "bad_row", f"image bytes ({nbytes}) do not match shape {shape} and dtype {dtype}"
            )
        flat = np.frombuffer(data_buf, dtype=np.uint8, count=nbytes * n, offset=int(offsets[0]))
        if _view:  # zero-copy view of every row (read-only; lives as long as the table)
            return flat.view(dtype).reshape(n, *shape)
        return flat.reshape(n, nbytes)[indices].view(dtype).reshape(len(indices), *shape)
    if _view:
        raise BadInputError("not_viewable", "rows are GeoTIFF-encoded or ragged")
    rows = [
        decode_image(
            {
                "image": column[int(i)].as_py(),
                "shape": table.column("shape")[int(i)].as_py() if "shape" in names else None,
                "dtype": table.column("dtype")[int(i)].as_py() if "dtype" in names else None,
            }
        )
        for i in indices
    ]
    shapes = {r.shape for r in rows}
    if len(shapes) != 1:
        raise BadInputError("shape_mismatch", f"rows of one batch have different shapes {shapes}")
    return np.stack(rows)


def decode_valid_masks(
    table: pa.Table | pa.RecordBatch, indices: np.ndarray, *shape: int
) -> np.ndarray | None:
    """``(N, *shape)`` bool validity masks of rows ``indices`` (``shape`` is ``(H, W)``, or
    ``(T, H, W)`` for time series), or ``None`` when the shard has none."""
    if "valid_mask" not in table.schema.names:
        return None
    column = table.column("valid_mask")
    n = int(np.prod(shape))
    out = np.empty((len(indices), *shape), dtype=bool)
    for k, i in enumerate(np.asarray(indices, dtype=np.int64)):
        buf = column[int(i)].as_py()
        if buf is None:
            out[k] = True
            continue
        packed = np.frombuffer(buf, dtype=np.uint8)
        if packed.size != (n + 7) // 8:
            raise BadInputError(
                "bad_row",
                f"valid_mask holds {packed.size} bytes; a {list(shape)} mask needs {(n + 7) // 8}",
            )
        out[k] = np.unpackbits(packed, count=n).reshape(shape).astype(bool)
    return out


METADATA_COLUMNS = ("datetime", "frame_datetimes", "crs", "transform", "shape")


def _year_and_day(text: str | None) -> tuple[float, float]:
    """The processor's (year, day of year), so training and inference encode dates alike;
    NaN (unknown) for a chip without a readable date."""
    from ..image_processing_geofm import year_and_day

    if not text:
        return math.nan, math.nan
    try:
        return year_and_day(text)
    except ValueError:
        return math.nan, math.nan


def chip_metadata(
    table: pa.Table | pa.RecordBatch, indices: np.ndarray, frames: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each row's ``temporal_coords`` ``(frames, 2)`` (year, day of year) and
    ``location_coords`` ``(2,)`` (latitude, longitude of the chip centre, degrees, WGS84).

    Dates come from ``frame_datetimes`` (time series) or ``datetime``; the centre from ``crs``,
    ``transform`` and ``shape``. What a row lacks (no date in the file names, no CRS) is NaN,
    which the model reads as "unknown" (the encoding is left out for that sample).
    """
    from rasterio.warp import transform as warp

    names = set(table.schema.names)
    indices = [int(i) for i in np.asarray(indices, dtype=np.int64)]

    def column(name):
        return table.column(name) if name in names else None

    series, single = column("frame_datetimes"), column("datetime")
    times = []
    for i in indices:
        dates = series[i].as_py() if series is not None else None
        if dates is None:
            dates = [single[i].as_py() if single is not None else None] * frames
        if len(dates) != frames:
            raise BadInputError(
                "bad_row", f"frame_datetimes lists {len(dates)} dates for {frames} frames"
            )
        times.append(np.array([_year_and_day(d) for d in dates], dtype=np.float32))
    places = [np.full(2, np.nan, dtype=np.float32) for _ in indices]
    crs_col, affine_col, shape_col = column("crs"), column("transform"), column("shape")
    if crs_col is not None and affine_col is not None and shape_col is not None:
        by_crs: dict[str, list[tuple[int, float, float]]] = {}
        for k, i in enumerate(indices):
            crs, affine, shape = crs_col[i].as_py(), affine_col[i].as_py(), shape_col[i].as_py()
            if not crs or not affine or len(affine) < 6 or not shape:
                continue
            a, b, c, d, e, f = affine[:6]
            col, row = shape[-1] / 2.0, shape[-2] / 2.0
            by_crs.setdefault(crs, []).append((k, a * col + b * row + c, d * col + e * row + f))
        for crs, points in by_crs.items():
            lon, lat = warp(crs, "EPSG:4326", [p[1] for p in points], [p[2] for p in points])
            for (k, _, _), y, x in zip(points, lat, lon):
                places[k] = np.array([y, x], dtype=np.float32)
    return times, places


def read_parquet_footer(fh, size: int, count):
    """A Parquet file's metadata, read exactly: its last 8 bytes (footer length and magic), then
    the footer. pyarrow alone reads a speculative 64 KiB tail per open: more than a small shard
    and, at scale, than the footer of most shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if size < 12:
        raise BadInputError("bad_shard", f"{size} bytes is too short for a Parquet file")
    fh.seek(size - 8)
    tail = fh.read(8)
    count(len(tail))
    if tail[-4:] != b"PAR1":
        raise BadInputError("bad_shard", "not a Parquet file (no PAR1 magic at its end)")
    length = struct.unpack("<i", tail[:4])[0]
    if not 0 < length <= size - 12:
        raise BadInputError("bad_shard", f"footer length {length} does not fit a {size}-byte file")
    fh.seek(size - 8 - length)
    footer = fh.read(length)
    count(len(footer))
    return pq.read_metadata(pa.BufferReader(b"PAR1" + footer + tail))
