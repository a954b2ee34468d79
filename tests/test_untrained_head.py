"""A pretraining export is not a segmentation model (issue 25 item 4): geofm-segment refuses a
model whose head was not in the export (initialised at random), naming what is missing and what
to run, before reading any scene."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geofm_hf import (
    GeoViTMAEConfig,
    GeoViTMAEForPreTraining,
    GeoViTMAEForSemanticSegmentation,
    GeoViTMAEImageProcessor,
    GeoViTMAEModel,
)
from geofm_hf.data.format import BadInputError
from geofm_hf.inference.scenes import load_model

BANDS = ["B02", "B03", "B04"]


def _config(**kw):
    return GeoViTMAEConfig.from_preset("tiny", num_channels=3, band_names=BANDS,
                                       image_mean=[0.0] * 3, image_std=[1.0] * 3, **kw)  # fmt: skip


@pytest.fixture
def pretraining_export(tmp_path):
    folder = tmp_path / "pretrained"
    config = _config()
    GeoViTMAEForPreTraining(config).save_pretrained(folder)
    GeoViTMAEImageProcessor.from_model_config(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("cls", [GeoViTMAEForSemanticSegmentation])
def test_a_head_model_from_a_pretraining_export_is_refused(cls, pretraining_export):
    with pytest.raises(BadInputError, match=r"without the GeoViTMAEForSemanticSegmentation head"):
        load_model(pretraining_export, cls=cls)


def test_the_encoder_of_a_pretraining_export_still_loads(pretraining_export):
    assert load_model(pretraining_export, cls=GeoViTMAEModel).band_names == BANDS


def test_a_trained_head_loads(tmp_path):
    folder = tmp_path / "segmenter"
    config = _config(num_labels=3)
    GeoViTMAEForSemanticSegmentation(config).save_pretrained(folder)
    GeoViTMAEImageProcessor.from_model_config(config).save_pretrained(folder)
    assert load_model(folder, cls=GeoViTMAEForSemanticSegmentation).band_names == BANDS


def test_geofm_segment_says_what_is_missing_and_what_to_run(pretraining_export, tmp_path):
    scene = tmp_path / "scene.tif"
    profile = dict(driver="GTiff", width=64, height=64, count=3, dtype="uint16",
                   crs="EPSG:32633", transform=from_origin(500000, 5600000, 10, 10))  # fmt: skip
    with rasterio.open(scene, "w", **profile) as dst:
        dst.write(np.ones((3, 64, 64), dtype=np.uint16))
        for i, band in enumerate(BANDS, 1):
            dst.set_band_description(i, band)
    out = tmp_path / "map.tif"
    result = subprocess.run(
        [sys.executable, "-m", "geofm_hf.inference.segment", str(pretraining_export),
         str(scene), "-o", str(out), "--sensor", "sentinel2-l1c"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "GeoViTMAEForPreTraining export without the GeoViTMAEForSemanticSegmentation head" in (
        result.stderr
    )
    assert "recipes/segment.py" in result.stderr and not out.exists()
