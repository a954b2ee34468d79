"""Publishing a dataset: staged shards (the shard sink, with the band statistics and hashes),
the output folder check, and the swap that replaces the previous dataset only once the new one
is complete.

Shards are written to a staging folder (temp name, then rename) and moved into ``data/`` only
when the whole run succeeded; ``geofm_dataset.json`` is written last, so its presence marks a
complete dataset. A failed run leaves the output folder as it found it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._atomic import atomic_path, atomic_write_text
from .format import (
    DATASET_INFO_FILE,
    FRAME_DATETIMES_FIELD,
    LABEL_FIELD,
    MASK_FIELD,
    SHARD_FOOTER_METADATA,
    SHARD_SCHEMA,
    STAGING_DIR,
    VALID_MASK_FIELD,
    GeoDatasetInfo,
)

if TYPE_CHECKING:
    from .chips import _Chip

logger = logging.getLogger(__name__)
_SHARD_NAME = re.compile(r"^[\w.\-]+-\d{5}-of-\d{5}\.parquet$")


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


class _ShardSink:
    """Shard sink: kept chips -> Parquet shards per split in the staging folder (a shard is full
    at ``rows_per_shard`` chips, else at ``target_bytes`` image bytes), with the per-split band
    statistics and the validity counts of the dataset info."""

    def __init__(self, split_names: Sequence[str], staging: Path, *, target_bytes: int,
                 rows_per_shard: int | None = None, compression_level: int = 3,
                 labelled: bool = False, masked: bool = False,
                 time_series: bool = False, targeted: bool = False):  # fmt: skip
        self.staging, self.target_bytes = staging, target_bytes
        self.rows_per_shard, self.compression_level = rows_per_shard, compression_level
        schema = SHARD_SCHEMA.append(LABEL_FIELD) if labelled else SHARD_SCHEMA
        schema = schema.append(VALID_MASK_FIELD)
        schema = schema.append(FRAME_DATETIMES_FIELD) if time_series else schema
        schema = schema.append(MASK_FIELD) if masked else schema
        # float32 bytes per pixel, NaN = unknown (masks.TargetSource)
        self.schema = schema.append(pa.field("target", pa.binary())) if targeted else schema
        self.rows: dict[str, list[dict[str, Any]]] = {s: [] for s in split_names}
        self.nbytes = dict.fromkeys(split_names, 0)
        self.staged_image_bytes = 0  # uncompressed, of the staged shards: their compression
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
        self.staged_image_bytes += self.nbytes[split]
        self.rows[split], self.nbytes[split] = [], 0

    def bytes_so_far(self) -> tuple[int, int]:
        """(bytes staged, bytes the chips not yet written will take once compressed as the
        staged ones were)."""
        staged = sum(f["bytes"] for files in self.files.values() for f in files)
        ratio = staged / self.staged_image_bytes if self.staged_image_bytes else 1.0
        return staged, int(sum(self.nbytes.values()) * ratio)

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
    staging = output_dir / STAGING_DIR
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
            staging = out / STAGING_DIR
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
