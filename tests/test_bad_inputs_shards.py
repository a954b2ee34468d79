"""Damaged shards, one table row per case: found at start-up by the footer check (one small read
per shard), or by the page checksums when read; never trained on silently, never a hang."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.transform import from_origin

from geofm_hf.data import (
    BadInputError,
    TooManyErrorsError,
    decode_batch,
    load_geo_dataset,
    make_pretrain_dataloader,
    read_dataset_info,
    write_shards,
)
from geofm_hf.data.verify import check_shard_footers


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 single-chip shards of 2 x 64 x 64 uint16, written by the real writer."""
    root = tmp_path_factory.mktemp("shards")
    inp = root / "in"
    inp.mkdir()
    for i in range(8):
        data = np.random.default_rng(i).integers(1, 4000, (2, 64, 64), dtype=np.uint16)
        with rasterio.open(inp / f"S{i}_20200101.tif", "w", driver="GTiff", width=64, height=64,
                           count=2, dtype="uint16", crs="EPSG:32633",
                           transform=from_origin(500000, 5600000, 10, 10)) as dst:  # fmt: skip
            dst.write(data)
    write_shards(inp, root / "ds", rows_per_shard=1)
    return root / "ds"


@pytest.fixture
def copy(dataset, tmp_path):
    shutil.copytree(dataset, tmp_path / "ds")
    return tmp_path / "ds"


SHARD = "data/train-00003-of-00008.parquet"


def _truncate(ds):
    path = ds / SHARD
    path.write_bytes(path.read_bytes()[:-100])


def _delete(ds):
    (ds / SHARD).unlink()


def _swap_in_other_rows(ds):
    table = pq.read_table(ds / "data" / "train-00000-of-00008.parquet")
    pq.write_table(pa.concat_tables([table, table]), ds / SHARD)


def _change_a_column_type(ds):
    table = pq.read_table(ds / SHARD)
    table = table.set_column(table.schema.get_field_index("gsd_m"), "gsd_m",
                             table.column("gsd_m").cast(pa.float32()))  # fmt: skip
    pq.write_table(table, ds / SHARD)


def _garbage_footer(ds):
    data = bytearray((ds / SHARD).read_bytes())
    data[-8:] = b"XXXXXXXX"
    (ds / SHARD).write_bytes(bytes(data))


def _same_size_rewrite_without_checksums(ds):
    table = pq.read_table(ds / SHARD).replace_schema_metadata(None)
    pq.write_table(table, ds / SHARD, compression="zstd")


FOOTER_CASES = {
    # damage -> words the start-up error must contain
    "truncated": (_truncate, ["bytes", "truncated"]),
    "missing": (_delete, ["missing", "cannot be skipped"]),
    "other_rows": (_swap_in_other_rows, ["holds 2 rows", "lists 1"]),
    "column_type_changed": (_change_a_column_type, ["gsd_m", "float"]),
    "garbage_footer": (_garbage_footer, ["footer cannot be read"]),
    "rewritten_without_checksums": (_same_size_rewrite_without_checksums, []),
}


@pytest.mark.parametrize("name", sorted(FOOTER_CASES))
def test_start_up_check_names_the_bad_shard_before_any_batch(name, copy):
    damage, words = FOOTER_CASES[name]
    damage(copy)
    with pytest.raises(BadInputError) as err:
        make_pretrain_dataloader(copy, batch_size=1)  # no batch read yet
    message = str(err.value)
    assert SHARD in message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("name", sorted(set(FOOTER_CASES) - {"missing"}))
def test_start_up_check_under_skip_counts_from_the_start(name, copy):
    FOOTER_CASES[name][0](copy)
    loader = make_pretrain_dataloader(copy, batch_size=1, on_error="skip", max_error_fraction=0.2,
                                      return_chip_ids=True, augment=False)  # fmt: skip
    assert loader.stats["bad_shards"] == [3] and loader.stats["rows_lost_to_bad_shards"] == 1
    ids = [ids[0] for _, (_, ids) in zip(range(7), loader)]
    assert len(set(ids)) == 7 and not any(i.startswith("S3") for i in ids)


def test_missing_shard_is_an_error_even_under_skip(copy):
    _delete(copy)
    with pytest.raises(BadInputError, match="cannot be skipped"):
        make_pretrain_dataloader(copy, batch_size=1, on_error="skip", max_error_fraction=0.5)


def test_full_check_compares_the_recorded_hash(copy):
    path = copy / SHARD
    data = bytearray(path.read_bytes())
    data[200] ^= 0x01  # inside a page: the footer is intact
    path.write_bytes(bytes(data))
    info = read_dataset_info(copy)
    assert check_shard_footers(copy, info, "train") == []
    (problem,) = check_shard_footers(copy, info, "train", full=True)
    assert problem["shard"] == 3 and "SHA-256" in problem["problem"]


def test_single_byte_flips_never_read_back_silently(dataset, tmp_path):
    """Every byte position class of a shard (page headers, page data, footer): a flip is caught
    by the footer check or by the page checksums on read; none yields altered pixels."""
    info = read_dataset_info(dataset)
    original = decode_batch(pq.read_table(dataset / SHARD))
    size = (dataset / SHARD).stat().st_size
    outcomes = {"footer_check": 0, "read_error": 0, "unchanged": 0, "silently_altered": 0}
    for pos in np.linspace(4, size - 9, 40).astype(int):
        ds = tmp_path / f"flip{pos}"
        shutil.copytree(dataset, ds)
        data = bytearray((ds / SHARD).read_bytes())
        data[pos] ^= 0xFF
        (ds / SHARD).write_bytes(bytes(data))
        if check_shard_footers(ds, info, "train", indices=[3]):
            outcomes["footer_check"] += 1
            continue
        stream = load_geo_dataset(ds, split="train").with_format("arrow")
        try:
            table = pa.concat_tables(list(stream.shard(8, 3).iter(batch_size=64)))
            same = np.array_equal(decode_batch(table), original)
        except Exception:
            outcomes["read_error"] += 1
            continue
        outcomes["unchanged" if same else "silently_altered"] += 1
    assert outcomes["silently_altered"] == 0, outcomes
    assert outcomes["read_error"] > 10, outcomes  # the page checksums did the work


def _all_shards_bad(ds):
    for path in (ds / "data").glob("*.parquet"):
        _garbage_footer_at(path)


def _garbage_footer_at(path):
    data = bytearray(path.read_bytes())
    data[-8:] = b"XXXXXXXX"
    path.write_bytes(bytes(data))


def _iterate_with_deadline(loader, n, seconds=60):
    outcome = {}

    def run():
        try:
            outcome["batches"] = sum(1 for _, _ in zip(range(n), loader))
        except Exception as err:
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the loader still spins after {seconds} s"
    return outcome


@pytest.mark.parametrize("check_shards", [True, False])
def test_no_batch_producible_stops_with_a_clear_error(copy, check_shards):
    _all_shards_bad(copy)
    loader = make_pretrain_dataloader(copy, batch_size=1, on_error="skip", max_error_fraction=1.0,
                                      check_shards=check_shards)  # fmt: skip
    outcome = _iterate_with_deadline(loader, 5)
    assert isinstance(outcome.get("error"), TooManyErrorsError), outcome
    assert "no batch can be produced" in str(outcome["error"])


def test_row_mode_with_some_bad_shards_still_yields(copy):
    # 3 readers over 8 shards -> rows interleaved; two bad shards leave partial batches.
    for name in ("train-00001-of-00008.parquet", "train-00006-of-00008.parquet"):
        _garbage_footer_at(copy / "data" / name)
    loader = make_pretrain_dataloader(copy, batch_size=2, on_error="skip", max_error_fraction=0.5,
                                      world_size=3, rank=0)  # fmt: skip
    outcome = _iterate_with_deadline(loader, 4)
    assert outcome == {"batches": 4}
    assert loader.stats["bad_shards"] == [1, 6]


def test_geofm_dataset_json_lists_size_and_hash(dataset):
    entries = json.loads((dataset / "geofm_dataset.json").read_text())["shards"]["train"]
    assert all(Path(dataset / e["file"]).stat().st_size == e["bytes"] for e in entries)
    assert all(len(e["sha256"]) == 64 for e in entries)
