"""Every export carries the feature-extraction pipeline (issue 24.4): the pretraining export
(streamed, as ``recipes/pretrain.py`` writes it), the classification and segmentation exports
(``save_pretrained``, as their recipes write them) and the converter's export all answer
``pipeline("image-feature-extraction", model=EXPORT, trust_remote_code=True)`` for multiband
arrays and ``{band: array}`` mappings. Before, only ``save_pretrained`` exports did: the
pretraining export fell back to the stock pipeline ("Incorrect format used for image")."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import pipeline

from geofm_hf import (
    GeoViTMAEConfig,
    GeoViTMAEForImageClassification,
    GeoViTMAEForPreTraining,
    GeoViTMAEForSemanticSegmentation,
    GeoViTMAEImageProcessor,
    GeoViTMAEModel,
)
from geofm_hf.image_processing_geofm import PROCESSOR_CODE_FILES
from geofm_hf.modeling_geofm import MODEL_CODE_FILES

BANDS = ["B02", "B03", "B04", "B08"]
MEAN, STD = [1000.0, 1100.0, 1200.0, 2500.0], [500.0, 500.0, 600.0, 900.0]


def _config() -> GeoViTMAEConfig:
    return GeoViTMAEConfig.from_preset("tiny", band_names=BANDS, image_mean=MEAN, image_std=STD)


def _pretraining_streamed(folder):
    from geofm_hf.training.distributed import save_pretrained_streaming

    model = GeoViTMAEForPreTraining(_config())
    save_pretrained_streaming(model, folder, write=True)  # what training/export.py calls
    return model


def _pretraining_saved(folder):
    model = GeoViTMAEForPreTraining(_config())
    model.save_pretrained(folder)
    return model


def _classification(folder):
    config = _config()
    config.num_labels = 3
    model = GeoViTMAEForImageClassification(config)
    model.save_pretrained(folder, safe_serialization=True)  # what recipes/finetune.py calls
    return model


def _segmentation(folder):
    config = _config()
    config.num_labels = 3
    model = GeoViTMAEForSemanticSegmentation(config)
    model.save_pretrained(folder, safe_serialization=True)  # what recipes/segment.py calls
    return model


def _converted(folder):
    from geofm_hf.convert.api import export

    model = GeoViTMAEModel(_config())
    export(model, folder, record={"source": "test"})  # writes its own processor
    return model


EXPORTS = {
    "pretraining_streamed": _pretraining_streamed,
    "pretraining_save_pretrained": _pretraining_saved,
    "classification": _classification,
    "segmentation": _segmentation,
    "converted": _converted,
}


def _chip(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 4000, (4, 64, 64)).astype(np.uint16)


INPUTS = {
    # name: (pipeline input, the same bands as a (C, H, W) array in the model's order)
    "uint16_chip": (lambda: _chip(), lambda: _chip()),
    "float_tensor": (lambda: torch.from_numpy(_chip(1).astype(np.float32)), lambda: _chip(1)),
    "band_dict_reordered": (
        lambda: {b: _chip(2)[i] for i, b in reversed(list(enumerate(BANDS)))},
        lambda: _chip(2),
    ),
}


@pytest.fixture(scope="module", params=sorted(EXPORTS))
def export(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param) / "export"
    torch.manual_seed(0)
    model = EXPORTS[request.param](folder)
    if not (folder / "preprocessor_config.json").exists():
        GeoViTMAEImageProcessor.from_model_config(model.config).save_pretrained(folder)
    return request.param, folder


def test_every_export_names_the_pipeline_and_carries_its_code(export):
    name, folder = export
    config = json.loads((folder / "config.json").read_text())
    assert (folder / "pipeline_geofm.py").is_file(), name
    impl = config["custom_pipelines"]["image-feature-extraction"]["impl"]
    assert impl == "pipeline_geofm.GeoViTMAEFeatureExtractionPipeline", name
    assert config["auto_map"]["AutoModel"] == "modeling_geofm.GeoViTMAEModel", name
    for file in MODEL_CODE_FILES + PROCESSOR_CODE_FILES:
        assert (folder / file).is_file(), (name, file)


@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_feature_extraction_pipeline_on_multiband_inputs(export, kind, tmp_path, monkeypatch):
    name, folder = export
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    pipe = pipeline("image-feature-extraction", model=str(folder), trust_remote_code=True)
    # The pipeline class came from the export's own file, not from an installed package.
    assert type(pipe).__name__ == "GeoViTMAEFeatureExtractionPipeline", name
    make_input, reference = INPUTS[kind]
    features = np.asarray(pipe(make_input()))
    encoder = GeoViTMAEModel.from_pretrained(folder).eval()
    processor = GeoViTMAEImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        expected = encoder(**processor(reference())).last_hidden_state.numpy()
    assert features.shape == (1, 1 + 64, 192), (name, kind)
    np.testing.assert_allclose(features, expected, atol=1e-4)
