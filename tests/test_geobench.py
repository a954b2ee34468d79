"""GEO-Bench task folders (tests/fixtures/geobench/, written by geobench 1.0.0's own writer): the
reader, the probe and segment recipes on them with GEO-Bench's IQM, and the user errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from geofm_hf.classification.geobench import geobench_aggregate, interquartile_mean
from geofm_hf.data.geobench import GeoBenchError, read_geobench_split, read_geobench_task

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "geobench"
EUROSAT = FIXTURES / "m-eurosat-tiny"
CASHEW = FIXTURES / "m-cashew-tiny"
S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
FAST = ["--num_train_epochs", "5", "--warmup_epochs", "1", "--per_device_train_batch_size", "8",
        "--sweep", "false", "--protocol", "linear", "--update_model_card", "false"]  # fmt: skip


def _recipe(name: str):
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def _model(folder: Path, bands=S2) -> Path:
    """A tiny random model on Sentinel-2 ``bands`` (8 px, patch 4), saved with save_pretrained."""
    from geofm_hf import GeoViTMAEConfig, GeoViTMAEImageProcessor, GeoViTMAEModel

    torch.manual_seed(0)
    config = GeoViTMAEConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        patch_size=4, image_size=8, band_names=list(bands), image_mean=[1500.0] * len(bands),
        image_std=[800.0] * len(bands),
    )  # fmt: skip
    GeoViTMAEModel(config).save_pretrained(folder)
    GeoViTMAEImageProcessor.from_model_config(config).save_pretrained(folder)
    return folder


def test_reader_returns_bands_labels_and_partition_sizes():
    partition = json.loads((EUROSAT / "default_partition.json").read_text())
    sizes = {"train": 10, "valid": 1, "test": 4}
    for split, size in sizes.items():
        read = read_geobench_split(EUROSAT, split)
        assert read.images.shape == (size, 13, 8, 8) and read.images.dtype == np.int16
        assert read.sample_names == partition[split]
    train = read_geobench_split(EUROSAT, "train")
    assert train.labels.tolist() == list(range(10))  # written as one sample a class
    task = train.task
    assert task.label_type == "classification" and task.num_classes == 10
    assert task.geobench_band_names[8] == "08A - Vegetation Red Edge"
    assert task.band_names == S2 and task.sensor == "sentinel2-l1c"
    assert task.wavelengths_um[3] == pytest.approx(0.665) and task.wavelengths_um[8] == 0.865
    stats = json.loads((EUROSAT / "band_stats.json").read_text())
    assert task.mean[0] == pytest.approx(stats["01 - Coastal aerosol"]["mean"])
    # The pixels are those geobench wrote: band 4 of the first training sample, read with h5py.
    import h5py

    with h5py.File(EUROSAT / f"{partition['train'][0]}.hdf5", "r") as fp:
        assert np.array_equal(train.images[0, 3], np.asarray(fp["04 - Red"]))

    seg = read_geobench_split(CASHEW, "train")
    assert seg.images.shape == (5, 13, 8, 8) and seg.labels.shape == (5, 8, 8)
    assert seg.task.label_type == "segmentation" and seg.task.num_classes == 3
    assert set(np.unique(seg.labels)) == {0, 1, 2}
    assert len(read_geobench_split(CASHEW, "test")) == 2


def test_reader_refuses_a_task_without_partition_or_with_an_unknown_band(tmp_path):
    task = shutil.copytree(EUROSAT, tmp_path / "m-eurosat-tiny")
    (task / "default_partition.json").unlink()
    with pytest.raises(GeoBenchError, match=r"default_partition\.json"):
        read_geobench_task(task)
    # A Sentinel-2 task read as Landsat 8: band 05 is at 0.705 um there, B5 at 0.865 um.
    with pytest.raises(GeoBenchError, match=r"0\.705 um"):
        read_geobench_task(EUROSAT, sensor="landsat8-oli")


def test_iqm_and_normalised_score(tmp_path):
    assert interquartile_mean([0.1, 0.5, 0.6, 0.9]) == pytest.approx(0.55)
    assert interquartile_mean([0.2, 0.4]) == pytest.approx(0.3)
    raw = geobench_aggregate(EUROSAT, "top1", [0.5, 0.6, 0.7, 0.8], resamples=200)
    assert raw["iqm"] == pytest.approx(0.65) and raw["normalized_iqm"] is None
    assert raw["iqm_ci95"][0] <= raw["iqm"] <= raw["iqm_ci95"][1]
    assert "normalizer.json" in raw["normalizer"]
    bench = tmp_path / "classification_v1.0"
    bench.mkdir()
    (bench / "normalizer.json").write_text(json.dumps({"m-eurosat-tiny": [0.5, 1.0]}))
    norm = geobench_aggregate(bench / "m-eurosat-tiny", "top1", [0.6, 0.8], resamples=200)
    assert norm["normalized_per_seed"] == pytest.approx([0.2, 0.6])
    assert norm["normalized_iqm"] == pytest.approx(0.4)


def test_probe_recipe_on_a_geobench_classification_task(tmp_path):
    linear_probe = _recipe("linear_probe")
    model = _model(tmp_path / "model")
    results = linear_probe.main([
        "--model_name_or_path", str(model), "--geobench_task", str(EUROSAT),
        "--output_dir", str(tmp_path / "run"), "--seeds", "3", *FAST,
    ])  # fmt: skip
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["num_train"] == 10 and saved["num_test"] == 4
    assert saved["bands_used"] == S2
    gb = saved["geobench"]
    assert gb["task"] == "m-eurosat-tiny" and gb["metric"] == "top1"
    assert gb["per_seed"] == pytest.approx(results["top1_per_seed"]) and len(gb["per_seed"]) == 3
    assert gb["iqm"] == pytest.approx(interquartile_mean(gb["per_seed"]))
    assert gb["iqm_ci95"][0] <= gb["iqm"] <= gb["iqm_ci95"][1]
    assert gb["normalized_iqm"] is None and "normalizer.json" in gb["normalizer"]


def test_segment_recipe_on_a_geobench_segmentation_task(tmp_path):
    segment = _recipe("segment")
    model = _model(tmp_path / "model")
    segment.main([
        "--model_name_or_path", str(model), "--geobench_task", str(CASHEW),
        "--output_dir", str(tmp_path / "run"), "--num_train_epochs", "2", "--warmup_epochs", "0",
        "--per_device_train_batch_size", "2", "--segmentation_hidden_size", "16",
    ])  # fmt: skip
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["label_names"] == ["0", "1", "2"] and saved["bands_used"] == S2
    gb = saved["geobench"]
    assert gb["metric"] == "mean_iou" and gb["per_seed"] == [pytest.approx(saved["mean_iou"])]
    assert gb["iqm"] == pytest.approx(saved["mean_iou"])


@pytest.mark.parametrize("case", ["no_partition", "band_the_model_lacks"])
def test_bad_geobench_task_exits_2_with_one_line(case, tmp_path):
    task, model = EUROSAT, tmp_path / "model"
    if case == "no_partition":
        task = shutil.copytree(EUROSAT, tmp_path / "m-eurosat-tiny")
        (task / "default_partition.json").unlink()
        _model(model)
        expected = "default_partition.json"
    else:  # a visible/NIR model: the task's SWIR bands have no model band
        _model(model, bands=["B02", "B03", "B04", "B08"])
        expected = "no model band"
    result = subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "linear_probe.py"), "--model_name_or_path",
         str(model), "--geobench_task", str(task), "--output_dir", str(tmp_path / "run"), *FAST],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]


def test_a_run_needs_a_dataset_or_a_geobench_task():
    from geofm_hf.classification import ProbeArguments
    from geofm_hf.training.arguments import ArgumentError

    with pytest.raises(ArgumentError, match="--geobench_task"):
        ProbeArguments(model_name_or_path="m", output_dir="o")
    args = ProbeArguments(model_name_or_path="m", output_dir="o", geobench_task=str(EUROSAT))
    assert args.dataset_name_or_path == str(EUROSAT)
