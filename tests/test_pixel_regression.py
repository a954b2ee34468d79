"""Pixel-wise regression (issue 26 item 6): the segmentation model with
``problem_type="regression"``, continuous targets in shards (``geofm-make-shards --targets``),
``recipes/segment.py --task regression`` and the float32 map of ``geofm-segment``.

The target is the NDVI of the bundled Sentinel-2 crop, (B08 - B04) / (B08 + B04), a real
continuous field, with a block of nodata to stand for unknown pixels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from inference_helpers import ORIGIN, PREFIX, S2_BANDS, make_model, write_crop

from geofm_hf import GeoViTMAEConfig, GeoViTMAEForSemanticSegmentation
from geofm_hf.configuration_geofm import GeoViTMAEInputError
from geofm_hf.data import write_shards
from geofm_hf.segmentation import regression_metrics

ROOT = Path(__file__).resolve().parents[1]
NODATA = -9999.0


def _regression_config(**kw):
    kw = {"num_labels": 1, **kw}
    return GeoViTMAEConfig(hidden_size=48, num_hidden_layers=4, num_attention_heads=3,
                           intermediate_size=96, patch_size=8, image_size=32, band_names=S2_BANDS,
                           problem_type="regression", segmentation_hidden_size=16, **kw)  # fmt: skip


def test_regression_loss_is_mse_over_known_pixels_and_survives_auto_loading(tmp_path):
    from transformers import AutoModelForSemanticSegmentation

    torch.manual_seed(0)
    model = GeoViTMAEForSemanticSegmentation(_regression_config()).eval()
    pixels = torch.randn(2, 13, 32, 32)
    targets = torch.full((2, 32, 32), float("nan"))
    targets[0, 3, 4], targets[1, 10, 20], targets[1, 0, 0] = 0.5, -0.25, 2.0
    out = model(pixels, labels=targets)
    assert out.logits.shape == (2, 1, 32, 32)
    picked = torch.stack([out.logits[0, 0, 3, 4], out.logits[1, 0, 10, 20], out.logits[1, 0, 0, 0]])
    torch.testing.assert_close(out.loss, ((picked - torch.tensor([0.5, -0.25, 2.0])) ** 2).mean())
    out.loss.backward()  # NaN targets must not leak NaN gradients
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # A batch with no known pixel has loss 0, not NaN.
    assert model(pixels, labels=torch.full((2, 32, 32), float("nan"))).loss.item() == 0.0
    model.save_pretrained(tmp_path)
    again = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert again.config.problem_type == "regression"
    with torch.no_grad():
        torch.testing.assert_close(again(pixels, labels=targets).loss, out.loss)


def test_regression_needs_one_output_and_per_pixel_targets():
    model = GeoViTMAEForSemanticSegmentation(_regression_config())
    with pytest.raises(GeoViTMAEInputError, match=r"shape \(2, 32, 32\)"):
        model(torch.randn(2, 13, 32, 32), labels=torch.zeros(2, 16, 16))
    three = GeoViTMAEForSemanticSegmentation(_regression_config(num_labels=3))
    with pytest.raises(GeoViTMAEInputError, match="num_labels=1"):
        three(torch.randn(1, 13, 32, 32), labels=torch.zeros(1, 32, 32))


def test_regression_metrics_by_hand_with_chip_bootstrap():
    ref = np.array([[[1.0, 2.0], [np.nan, 3.0]], [[4.0, np.nan], [5.0, 6.0]]])
    pred = np.array([[[1.5, 2.0], [9.0, 2.0]], [[4.0, 0.0], [5.5, 6.0]]])
    out = regression_metrics(pred, ref, resamples=500)
    err = np.array([0.5, 0.0, -1.0, 0.0, 0.5, 0.0])  # the six known pixels
    known = np.array([1, 2, 3, 4, 5, 6.0])
    assert out["num_pixels"] == 6
    assert out["rmse"] == pytest.approx(np.sqrt((err**2).mean()))
    assert out["mae"] == pytest.approx(np.abs(err).mean())
    assert out["r2"] == pytest.approx(1 - (err**2).sum() / ((known - known.mean()) ** 2).sum())
    for name in ("rmse", "mae", "r2"):
        lo, hi = out[f"{name}_ci"]
        assert lo <= out[name] <= hi or np.isclose(lo, out[name]) or np.isclose(hi, out[name])
    with pytest.raises(ValueError, match="at least one known"):
        regression_metrics(pred, np.full_like(ref, np.nan))


def _ndvi_target(scene: Path, path: Path) -> np.ndarray:
    """NDVI of the crop on its own 10 m grid, a 16 x 40 px block of nodata at rows 40.., cols
    100..; returns the array written."""
    with rasterio.open(scene / f"{PREFIX}_B04.tif") as red, \
            rasterio.open(scene / f"{PREFIX}_B08.tif") as nir:  # fmt: skip
        r, n = red.read(1).astype(np.float32), nir.read(1).astype(np.float32)
        profile = dict(driver="GTiff", width=red.width, height=red.height, count=1,
                       dtype="float32", crs=red.crs, transform=red.transform, nodata=NODATA)  # fmt: skip
    ndvi = ((n - r) / np.maximum(n + r, 1.0)).astype(np.float32)
    ndvi[40:56, 100:140] = NODATA
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(ndvi, 1)
    return ndvi


@pytest.fixture(scope="module")
def ndvi_shards(tmp_path_factory):
    from geofm_hf.data.cli import main as make_shards

    base = tmp_path_factory.mktemp("ndvi")
    crop = write_crop(base / "scene")
    ndvi = _ndvi_target(crop, base / "ndvi.tif")
    assert make_shards([str(crop), "-o", str(base / "shards"), "--chip-size", "32", "--split",
                        "train=0.7,test=0.3", "--targets", str(base / "ndvi.tif")]) == 0  # fmt: skip
    return base, ndvi


def test_targets_are_float32_per_chip_with_nan_where_unknown(ndvi_shards):
    import pyarrow.parquet as pq

    base, ndvi = ndvi_shards
    info = json.loads((base / "shards" / "geofm_dataset.json").read_text())
    assert info["regression_target"]["column"] == "target"
    assert info["regression_target"]["dtype"] == "float32"
    assert info["regression_target"]["nodata"] == "NaN"
    seen_nan = False
    for split in ("train", "test"):
        table = pq.read_table(base / "shards" / "data" / f"{split}-00000-of-00001.parquet")
        for chip_id, raw in zip(table.column("chip_id").to_pylist(),
                                table.column("target").to_pylist()):  # fmt: skip
            r, c = int(chip_id.split("_r")[1][:5]), int(chip_id.split("_c")[1][:5])
            got = np.frombuffer(raw, np.float32).reshape(32, 32)
            want = ndvi[r : r + 32, c : c + 32]
            # Same grid: bilinear resampling is the identity; nodata becomes NaN.
            np.testing.assert_array_equal(np.isnan(got), want == NODATA)
            np.testing.assert_allclose(got[want != NODATA], want[want != NODATA], atol=1e-6)
            seen_nan |= bool(np.isnan(got).any())
    assert seen_nan


def test_targets_on_another_grid_are_resampled_bilinear(tmp_path):
    import pyarrow.parquet as pq
    from affine import Affine

    crop = write_crop(tmp_path / "scene")
    # A linear ramp on a 20 m grid offset by 100 m: bilinear keeps a linear field exact (away
    # from the raster's edge), so each 10 m pixel gets the ramp at its own centre.
    cols, rows = 140, 90
    transform = Affine(20, 0, ORIGIN[0] - 100, 0, -20, ORIGIN[1] + 100)
    xs = ORIGIN[0] - 100 + (np.arange(cols) + 0.5) * 20
    ramp = np.broadcast_to((xs - ORIGIN[0]) / 1000, (rows, cols)).astype(np.float32)
    with rasterio.open(tmp_path / "ramp.tif", "w", driver="GTiff", width=cols, height=rows,
                       count=1, dtype="float32", crs="EPSG:32633", transform=transform) as dst:  # fmt: skip
        dst.write(ramp, 1)
    write_shards(crop, tmp_path / "shards", chip_size=32, target_raster=tmp_path / "ramp.tif")
    table = pq.read_table(tmp_path / "shards" / "data" / "train-00000-of-00001.parquet")
    for chip_id, raw in zip(
        table.column("chip_id").to_pylist(), table.column("target").to_pylist()
    ):
        c = int(chip_id.split("_c")[1][:5])
        got = np.frombuffer(raw, np.float32).reshape(32, 32)
        want = ((c + np.arange(32) + 0.5) * 10 / 1000)[None, :].repeat(32, 0)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_regression_recipe_learns_and_geofm_segment_writes_a_float_cog(ndvi_shards, tmp_path):
    """shards -> recipes/segment.py --task regression (6 epochs, tiny model) -> results.json
    with RMSE/MAE/R2 and their intervals, a falling loss -> geofm-segment: a float32 COG of
    NDVI predictions, NaN nodata."""
    from rio_cogeo.cogeo import cog_validate

    from geofm_hf.inference.segment import main as segment_main

    base, _ = ndvi_shards
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        import segment
    finally:
        sys.path.pop(0)
    model_dir = make_model(tmp_path / "base", image_size=32)
    out = tmp_path / "out"
    results = segment.main([
        "--task", "regression", "--model_name_or_path", str(model_dir),
        "--dataset_name_or_path", str(base / "shards"), "--output_dir", str(out),
        "--num_train_epochs", "6", "--per_device_train_batch_size", "4",
        "--learning_rate", "0.1", "--warmup_epochs", "1", "--segmentation_hidden_size", "16",
        "--layer_decay", "1.0", "--test_split", "train",
    ])  # fmt: skip
    saved = json.loads((out / "results.json").read_text())
    assert saved["task"] == "regression" and saved["rmse"] == pytest.approx(results["rmse"])
    for name in ("rmse", "mae", "r2"):
        lo, hi = saved[f"{name}_ci"]
        assert lo <= hi and np.isfinite([lo, hi]).all()
    assert 0 < saved["mae"] <= saved["rmse"]
    # It learns (scored on the chips it trained on, a CI-sized run): better than the training
    # mean everywhere, which its new head starts as.
    assert saved["rmse"] < saved["mean_target_rmse"] and saved["r2"] > 0
    assert saved["num_test"] > 0 and saved["num_pixels"] > 0
    losses = saved["train_loss_per_epoch"]
    assert losses[-1] < losses[0], losses
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "target"}

    pred = tmp_path / "ndvi_pred.tif"
    assert segment_main([str(out), str(base / "scene"), "-o", str(pred), "--stride", "16",
                         "--no-progress", "--dtype", "float32"]) == 0  # fmt: skip
    assert cog_validate(str(pred))[0]
    with rasterio.open(pred) as src, rasterio.open(base / "scene" / f"{PREFIX}_B02.tif") as ref:
        assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
        assert src.crs == ref.crs and (src.width, src.height) == (ref.width, ref.height)
        assert src.tags()["target"] == "target"
        values = src.read(1)
    assert np.isfinite(values).mean() > 0.9
    assert len(np.unique(values[np.isfinite(values)])) > 100  # a continuous map, not classes
    assert not pred.with_suffix(".png").exists()


def test_task_and_dataset_mismatches_exit_2_with_one_line(ndvi_shards, tmp_path, monkeypatch,
                                                          capsys):  # fmt: skip
    """A regression dataset given to the segmentation task, a dataset without targets given to
    the regression task, and an unknown task: one line naming what to do, exit 2."""
    from geofm_hf.training.arguments import run_recipe

    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        import segment
    finally:
        sys.path.pop(0)
    base, _ = ndvi_shards
    write_shards(base / "scene", tmp_path / "plain", chip_size=32)
    model = make_model(tmp_path / "m", image_size=32)
    capsys.readouterr()
    cases = [
        ("segmentation", base / "shards", "(its shards suit --task regression)"),
        ("regression", tmp_path / "plain", "geofm-make-shards --targets RASTER"),
        ("depth", base / "shards", "--task must be segmentation or regression"),
    ]
    for task, data, expected in cases:
        argv = ["segment.py", "--task", task, "--model_name_or_path", str(model),
                "--dataset_name_or_path", str(data), "--output_dir", str(tmp_path / task)]  # fmt: skip
        monkeypatch.setattr(sys, "argv", argv)
        assert run_recipe(segment.main) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
