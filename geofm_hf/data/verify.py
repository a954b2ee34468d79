"""Start-up check of a dataset's shards: one small read (the Parquet footer) per shard.

A truncated or replaced shard is then found before the first step, not when the stream first
reaches it (hours into a run). Each shard's size, row count and schema are compared with
``geofm_dataset.json``, and the first shard's band list (one more small read) with its
``band_names``; flipped bytes inside pages are caught later, when the page is read, by
the CRC32 page checksums the writer stores (the footer says so) and the reader verifies.
Across ranks the shards are split, so the whole check costs one footer read per shard in total,
not per rank.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from .format import SHARD_FOOTER_METADATA, SHARD_SCHEMA, GeoDatasetInfo, read_parquet_footer
from .hub_access import HubRangeFile

__all__ = ["check_shard_footers", "check_shard_footers_on_all_ranks"]


def _opener(name_or_path: str, revision: str | None):
    local = Path(name_or_path)
    if local.is_dir():
        return lambda rel: open(local / rel, "rb")
    from huggingface_hub import HfApi

    # Pinned to the commit the branch points at now: sizes and bytes then come from one
    # version, even when the repo moves (or a listing was cached) during the check. A run
    # passes the commit its main process resolved: no API request on any rank.
    if revision is not None and re.fullmatch(r"[0-9a-f]{40}", revision):
        commit = revision
    else:
        commit = HfApi().dataset_info(str(name_or_path), revision=revision).sha
    # The footer is read exactly (its length, then itself), as the stream does.
    return lambda rel: HubRangeFile(str(name_or_path), rel, commit)


def _band_problem(handle, meta, band_names: list[str]) -> str | None:
    """The first chip's band list against ``geofm_dataset.json``'s: statistics and band order
    that do not describe the pixels would normalise every chip with another band's numbers.
    One small column read (``band_names`` of the first row group)."""
    import pyarrow.parquet as pq

    if meta.num_rows == 0:
        return None
    table = pq.ParquetFile(handle, metadata=meta).read_row_group(0, columns=["band_names"])
    stored = table.column("band_names")[0].as_py()
    if stored != list(band_names):
        return (
            f"holds chips of bands {stored}, but geofm_dataset.json band_names (the order of its "
            f"mean and std) lists {list(band_names)}"
        )
    return None


def _check_one(handle, entry: dict[str, Any], full: bool = False,
               band_names: list[str] | None = None) -> tuple[str | None, bool]:  # fmt: skip
    """(problem or None, whether the problem is the dataset's and not this shard's)."""
    size = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    expected_bytes = entry.get("bytes")
    wrong_size = None
    if expected_bytes is not None and size != expected_bytes:
        wrong_size = f"has {size} bytes, {expected_bytes} were written (truncated or replaced)"
    try:
        # The stream's exact footer read: pyarrow's own opens fetch a speculative 64 KiB tail,
        # the whole of a small shard over HTTP.
        meta = read_parquet_footer(handle, size, lambda nbytes: None)
    except Exception as err:  # pyarrow raises assorted errors on a damaged footer
        return (
            wrong_size or f"its Parquet footer cannot be read ({type(err).__name__}: {err})",
            False,
        )
    if meta.num_rows != entry["num_rows"]:
        return f"holds {meta.num_rows} rows, geofm_dataset.json lists {entry['num_rows']}", False
    schema = meta.schema.to_arrow_schema()
    for field in SHARD_SCHEMA:
        if field.name not in schema.names:
            return f"lacks the column {field.name!r}", False
        if not schema.field(field.name).type.equals(field.type):
            found = schema.field(field.name).type
            return f"column {field.name!r} is {found}, expected {field.type}", False
    if wrong_size:
        return wrong_size, False
    if "sha256" in entry:  # written with page checksums: the footer must say so
        key = next(iter(SHARD_FOOTER_METADATA))
        if (meta.metadata or {}).get(key) != SHARD_FOOTER_METADATA[key]:
            return "its footer lacks the page-checksum flag the writer sets (replaced file?)", False
    if full and "sha256" in entry:
        handle.seek(0)
        digest = hashlib.sha256()
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        if digest.hexdigest() != entry["sha256"]:
            return "does not match the SHA-256 in geofm_dataset.json (corrupted or replaced)", False
    if band_names is not None:
        problem = _band_problem(handle, meta, band_names)
        return problem, problem is not None
    return None, False


def check_shard_footers(
    name_or_path: str | os.PathLike,
    info: GeoDatasetInfo,
    split: str,
    *,
    revision: str | None = None,
    indices: range | list[int] | None = None,
    full: bool = False,
) -> list[dict[str, Any]]:
    """Problems found in the footers of ``split``'s shards (``indices``: a subset), each
    ``{"shard": i, "file": ..., "problem": ..., "dataset": bool}``; empty when all are sound.
    ``dataset`` marks a contradiction of the whole manifest (the first shard's chips hold other
    bands than ``band_names``), which skipping that shard would not mend. ``full`` also
    reads every byte and compares the SHA-256 recorded in ``geofm_dataset.json`` (e.g. after
    copying a dataset). Datasets whose ``geofm_dataset.json`` lists no shards are not checked."""
    entries = info.shards.get(split) or []
    if not entries:
        return []
    open_shard = _opener(str(name_or_path), revision)
    problems = []
    for i in range(len(entries)) if indices is None else indices:
        entry = entries[i]
        # The first shard's chips stand for the dataset's band list: one more small read.
        bands = info.band_names if i == 0 else None
        try:
            with open_shard(entry["file"]) as handle:
                problem, of_dataset = _check_one(handle, entry, full, bands)
        except FileNotFoundError:
            problem, of_dataset = "is missing", False
        except OSError as err:
            problem, of_dataset = f"cannot be read ({err})", False
        if problem is not None:
            # ``dataset``: the manifest contradicts the chips; no shard can be skipped for that.
            problems.append({"shard": i, "file": entry["file"], "problem": problem,
                             "dataset": of_dataset})  # fmt: skip
    return problems


def check_shard_footers_on_all_ranks(
    name_or_path: str | os.PathLike,
    info: GeoDatasetInfo,
    split: str,
    *,
    revision: str | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> list[dict[str, Any]]:
    """Collective when ``world_size`` > 1 and a ``torch.distributed`` group is up: rank r
    checks shards r, r + world_size, ...; every rank gets every problem."""
    import torch.distributed as dist

    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        # No process group to share the work with: this process checks every shard.
        return check_shard_footers(name_or_path, info, split, revision=revision)
    n = len(info.shards.get(split) or [])
    mine = check_shard_footers(name_or_path, info, split, revision=revision,
                               indices=range(rank, n, world_size))  # fmt: skip

    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, mine)
    return sorted((p for part in gathered for p in part), key=lambda p: p["shard"])
