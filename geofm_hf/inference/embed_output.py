"""What ``geofm-embed`` writes: embeddings in parts of <= ``part_rows`` windows under
``OUT.partial/`` (each written atomically: whole or absent, which is what ``--resume`` relies
on), then assembled into one GeoParquet 1.1 file (:func:`assemble_parquet`; the COG is
:mod:`geofm_hf.inference.cog`'s)."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._atomic import atomic_path, is_disk_full
from .._errors import DiskFullError
from ..data.format import BadInputError
from .encoder import WindowEncoder
from .geoparquet import BBOX_TYPE, bbox_polygons_wkb, geo_metadata

__all__ = ["PartWriter", "Tally", "assemble_parquet", "done_windows", "open_staging"]

logger = logging.getLogger(__name__)

_MANIFEST = "manifest.json"


def _part_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("source", pa.string()), ("row", pa.int32()), ("col", pa.int32()),
        ("datetime", pa.string()), ("valid_fraction", pa.float32()),
        ("xmin", pa.float64()), ("ymin", pa.float64()), ("xmax", pa.float64()),
        ("ymax", pa.float64()), ("embedding", pa.list_(pa.float32(), dim)),
    ])  # fmt: skip


def open_staging(output: Path, manifest: dict[str, Any], resume: bool) -> Path:
    """``OUT.partial/``: the run's parts. Resumed only when written with the same settings
    (``manifest``); otherwise a leftover one is removed and a new one started."""
    staging = output.with_name(output.name + ".partial")
    if staging.exists() and resume:
        found = json.loads((staging / _MANIFEST).read_text())
        if found != manifest:
            diff = {k: (found.get(k), v) for k, v in manifest.items() if found.get(k) != v}
            raise ValueError(
                f"--resume: {staging} was written with other settings (found, now): {diff}. "
                "Rerun with the original settings, or without --resume to start again."
            )
    else:
        if staging.exists():
            logger.warning("%s holds an unfinished run; starting again (pass --resume to "
                           "continue it)", staging)  # fmt: skip
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        (staging / _MANIFEST).write_text(json.dumps(manifest, indent=1))
    return staging


class PartWriter:
    """Windows -> embeddings in batches -> part files of <= ``part_rows`` rows in ``staging``
    (written atomically: a part is whole or absent, which is what ``--resume`` relies on)."""

    def __init__(self, encoder: WindowEncoder, staging: Path, part_dim: int, batch_size: int,
                 part_rows: int, bar) -> None:  # fmt: skip
        self.encoder, self.staging, self.part_dim = encoder, staging, part_dim
        self.batch_size, self.part_rows, self.bar = batch_size, part_rows, bar
        self.schema = _part_schema(part_dim)

    def write(self, items, scene_idx: int, first_part: int) -> tuple[int, int]:
        """Embed ``(meta, bounds, pixels)`` items of scene ``scene_idx``, parts numbered from
        ``first_part``; returns (windows, empty windows). A window with no valid pixel is
        counted, not embedded."""
        buf_meta, buf_pix, buf_coords, rows = [], [], [], []
        part, written, n_empty = first_part, 0, 0

        def flush_batch():
            coords = {k: np.stack([c[k] for c in buf_coords]) for k in buf_coords[0]}
            emb = self.encoder(np.stack(buf_pix), coords)
            for meta, vec in zip(buf_meta, emb):
                rows.append((*meta, vec.reshape(-1)))
            buf_meta.clear()
            buf_pix.clear()
            buf_coords.clear()

        def flush_part():
            nonlocal part
            if not rows:
                return
            self._write_part(rows, scene_idx, part)
            part += 1
            rows.clear()

        for meta, bounds, pixels, *coords in items:
            # Valid: finite in every band (and every frame of a series).
            valid = float(np.isfinite(pixels).reshape(-1, *pixels.shape[-2:]).all(axis=0).mean())
            self.bar.update(1)  # empty windows too: the plan counts every window
            if valid == 0.0:
                n_empty += 1
                continue
            buf_meta.append((*meta, valid, *bounds))
            buf_pix.append(pixels)
            buf_coords.append(coords[0] if coords else {})
            written += 1
            if len(buf_pix) == self.batch_size:
                flush_batch()
                if len(rows) >= self.part_rows:
                    flush_part()
        if buf_pix:
            flush_batch()
        flush_part()
        return written, n_empty

    def _write_part(self, rows: list[tuple], scene_idx: int, part: int) -> None:
        cols = list(zip(*rows))
        arrays = [pa.array(c, type=t) for c, t in zip(cols[:-1], self.schema.types[:-1])]
        flat = np.stack(cols[-1]).astype(np.float32).reshape(-1)
        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(flat), self.part_dim))
        with atomic_path(self.staging / f"s{scene_idx:05d}-{part:06d}.parquet") as tmp:
            pq.write_table(pa.Table.from_arrays(arrays, schema=self.schema), tmp)


@dataclass
class Tally:
    """What the scenes gave: windows embedded now and before (resumed), empty windows, per
    scene counts, the output CRS and (rasters) each scene's grid for the COG."""

    windows: int = 0
    resumed: int = 0
    empty: int = 0
    per_scene: dict[str, int] = field(default_factory=dict)
    crs: Any = None
    grids: dict[int, dict[str, Any]] = field(default_factory=dict)
    bands: dict[str, dict[str, Any]] = field(default_factory=dict)


def done_windows(staging: Path, idx: int) -> set[tuple[str, int, int]]:
    """``(source, row, col)`` of the windows already in scene ``idx``'s parts."""
    done: set[tuple[str, int, int]] = set()
    for part in sorted(staging.glob(f"s{idx:05d}-*.parquet")):
        t = pq.read_table(part, columns=["source", "row", "col"])
        done.update(zip(*(t.column(k).to_pylist() for k in ("source", "row", "col"))))
    return done


def _parse_datetime(values: list[str | None]) -> pa.Array:
    out = []
    for v in values:
        out.append(None if not v else np.datetime64(v, "s").astype("int64"))
    return pa.array(out, type=pa.int64()).cast(pa.timestamp("s"))


def assemble_parquet(staging: Path, output: Path, crs, dim: int, g: int, loaded, pooling: str,
                      meta: dict) -> None:  # fmt: skip
    """Parts -> one GeoParquet 1.1 file, streamed part by part (bounded memory)."""
    parts = sorted(staging.glob("s*-*.parquet"))
    schema = pa.schema([
        ("geometry", pa.binary()), ("bbox", BBOX_TYPE),
        ("embedding", pa.list_(pa.float32(), dim)), ("source", pa.string()),
        ("row", pa.int32()), ("col", pa.int32()), ("datetime", pa.timestamp("s")),
        ("valid_fraction", pa.float32()), ("model_id", pa.string()),
        ("model_revision", pa.string()),
    ])  # fmt: skip
    # The geo metadata (with the overall bbox) goes in the schema the writer starts with, so
    # every reader (Arrow schema or Parquet footer) sees it: a first pass reads only the bounds.
    bbox = [np.inf, np.inf, -np.inf, -np.inf]
    for part in parts:
        b = pq.read_table(part, columns=["xmin", "ymin", "xmax", "ymax"])
        if b.num_rows:
            bbox = [min(bbox[0], pc.min(b["xmin"]).as_py()), min(bbox[1], pc.min(b["ymin"]).as_py()),
                    max(bbox[2], pc.max(b["xmax"]).as_py()), max(bbox[3], pc.max(b["ymax"]).as_py())]  # fmt: skip
    if not parts or not np.isfinite(bbox).all():
        raise BadInputError("no_output", "no window held any valid pixel; nothing to write")
    schema = schema.with_metadata(
        {"geo": geo_metadata(crs, bbox), "geofm_embed": json.dumps(meta).encode()}
    )
    with atomic_path(output) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for part in parts:
            t = pq.read_table(part)
            n = t.num_rows
            x0, y0, x1, y1 = (t.column(k).to_numpy() for k in ("xmin", "ymin", "xmax", "ymax"))
            row, col = t.column("row").to_numpy(), t.column("col").to_numpy()
            emb = t.column("embedding").combine_chunks().values.to_numpy(zero_copy_only=False)
            valid = t.column("valid_fraction").to_numpy()
            sources = t.column("source").to_pylist()
            dts = t.column("datetime").to_pylist()
            if pooling == "patch":
                # One row per patch: (n, D, g, g) -> (n * g * g, D); patch (i, j) of a window at
                # (row, col) covers pixels row + i*p .. and col + j*p ..
                p = loaded.patch_size
                emb = emb.reshape(n, dim, g, g).transpose(0, 2, 3, 1).reshape(-1, dim)
                ii, jj = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
                ii, jj = ii.reshape(-1), jj.reshape(-1)
                sx = (x1 - x0) / g
                sy = (y1 - y0) / g
                x0n = (x0[:, None] + jj[None] * sx[:, None]).reshape(-1)
                y1n = (y1[:, None] - ii[None] * sy[:, None]).reshape(-1)
                x0, x1 = x0n, x0n + np.repeat(sx, g * g)
                y1, y0 = y1n, y1n - np.repeat(sy, g * g)
                row = (row[:, None] + ii[None] * p).reshape(-1)
                col = (col[:, None] + jj[None] * p).reshape(-1)
                valid = np.repeat(valid, g * g)
                sources = [s for s in sources for _ in range(g * g)]
                dts = [d for d in dts for _ in range(g * g)]
                n = n * g * g
            table = pa.Table.from_arrays(
                [
                    bbox_polygons_wkb(x0, y0, x1, y1),
                    pa.StructArray.from_arrays(
                        [pa.array(v, pa.float64()) for v in (x0, y0, x1, y1)],
                        fields=list(BBOX_TYPE),
                    ),
                    pa.FixedSizeListArray.from_arrays(
                        pa.array(emb.astype(np.float32).reshape(-1)), dim
                    ),
                    pa.array(sources, pa.string()),
                    pa.array(row, pa.int32()),
                    pa.array(col, pa.int32()),
                    _parse_datetime(dts),
                    pa.array(valid, pa.float32()),
                    pa.array([meta["model_id"]] * n, pa.string()),
                    pa.array([meta["model_revision"]] * n, pa.string()),
                ],
                schema=schema,
            )
            writer.write_table(table, row_group_size=8192)


@contextlib.contextmanager
def disk_full_names(output: Path, staging: Path) -> Iterator[None]:
    """A full disk met in the block as one :class:`DiskFullError` naming ``output``, saying
    whether finished parts are kept for ``--resume`` (they are whole: written atomically)."""
    try:
        yield
    except Exception as err:
        if not is_disk_full(err, output):
            raise
        for scratch in staging.glob("*.tif"):  # rasters of the assembly: remade from the parts
            scratch.unlink()
        kept = None
        if any(staging.glob("s*-*.parquet")):
            kept = f"the finished parts in {staging} are kept: run again with --resume to go on"
        raise DiskFullError(output, kept=kept) from err
