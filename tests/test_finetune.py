"""Fine-tuning end to end on the bundled chips (Accelerate), an RGB fine-tune that
transformers.pipeline("image-classification") runs on PIL images, and the helpers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from classification_helpers import LABELLED, rgb_png_folder, tiny_export
from huggingface_hub import ModelCard

from geofm_hf import GeoViTMAEConfig, GeoViTMAEForImageClassification, GeoViTMAEImageProcessor
from geofm_hf.classification import mixup_cutmix, param_groups_layer_decay

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import finetune

FAST = ["--num_train_epochs", "2", "--warmup_epochs", "1", "--per_device_train_batch_size", "64",
        "--learning_rate", "4e-3"]  # fmt: skip


def test_finetune_on_bundled_chips_saves_a_loadable_classifier(tmp_path):
    export = tiny_export(tmp_path / "export")
    out = tmp_path / "ft"
    results = finetune.main([
        "--model_name_or_path", str(export), "--dataset_name_or_path", LABELLED,
        "--output_dir", str(out), "--mixup_alpha", "0.2", "--cutmix_alpha", "1.0", *FAST,
        "--seeds", "2",
    ])  # fmt: skip
    assert results["num_train"] == 394 and results["num_test"] == 169
    assert results["steps"] == 2 * (394 // 64)
    matrix = np.array(results["confusion_matrix"])
    # Two seeds: per-seed values, their mean and std, the bootstrap interval of the mean.
    per_seed = results["protocols"]["fine-tune"]["top1_per_seed"]
    assert results["seeds"] == [0, 1] and len(per_seed) == 2
    assert results["top1"] == pytest.approx(np.mean(per_seed))
    assert results["top1_ci95"][0] < results["top1"] < results["top1_ci95"][1]
    assert per_seed[0] == pytest.approx(np.trace(matrix) / matrix.sum())  # the saved model's
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "farm", "1": "forest", "2": "meadow", "3": "residential",
                                  "4": "water"}  # fmt: skip
    model = GeoViTMAEForImageClassification.from_pretrained(out).eval()
    processor = GeoViTMAEImageProcessor.from_pretrained(out)
    from geofm_hf.classification import load_classification_split

    test = load_classification_split(LABELLED, "test")
    with torch.no_grad():
        logits = model(processor(test.images.astype(np.float32),
                                 band_names=test.band_names)["pixel_values"]).logits  # fmt: skip
    # The saved model is the evaluated one: its predictions give the recorded confusion matrix.
    again = np.zeros_like(matrix)
    np.add.at(again, (test.labels, logits.argmax(1).numpy()), 1)
    np.testing.assert_array_equal(again, matrix)
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "image-classification"
    assert "model-index" in card.data.to_dict()


def test_rgb_finetune_runs_in_transformers_pipeline(tmp_path):
    from PIL import Image
    from transformers import pipeline

    root = rgb_png_folder(tmp_path / "rgb")
    export = tiny_export(tmp_path / "export")  # 13 Sentinel-2 bands
    out = tmp_path / "ft-rgb"
    # 8-bit PNGs against a Sentinel-2 model's 16-bit statistics: the recipe, the pipeline and
    # the processor each say so (and normalise anyway, as asked).
    with pytest.warns(UserWarning, match=r"8-bit input \(uint8 0-255\) against statistics"):
        results = finetune.main([
            "--model_name_or_path", str(export), "--dataset_name_or_path", str(root),
            "--output_dir", str(out), *FAST,
        ])  # fmt: skip
        assert results["bands_used"] == ["B04", "B03", "B02"] and results["band_subset"]
        assert json.loads((out / "preprocessor_config.json").read_text())["band_names"] == [
            "B04", "B03", "B02"]  # fmt: skip
        classify = pipeline("image-classification", model=str(out))
        image = Image.open(next((root / "test" / "water").glob("*.png")))
        predictions = classify(image, top_k=5)
        assert {p["label"] for p in predictions} == {
            "farm",
            "forest",
            "meadow",
            "residential",
            "water",
        }
        assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-5)
        # The pipeline's PIL path gives the same logits as the arrays the recipe evaluated.
        model = GeoViTMAEForImageClassification.from_pretrained(out).eval()
        processor = GeoViTMAEImageProcessor.from_pretrained(out)
        chw = np.asarray(image).transpose(2, 0, 1)
        with torch.no_grad():
            a = model(processor(image)["pixel_values"]).logits
            b = model(processor(chw, band_names=["red", "green", "blue"])["pixel_values"]).logits
            c = model(
                processor(
                    np.asarray(image),
                    input_data_format="channels_last",
                    band_names=["red", "green", "blue"],
                )["pixel_values"]
            ).logits
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)


def test_layer_decay_groups_follow_depth():
    config = GeoViTMAEConfig.from_preset("tiny", num_channels=3, num_labels=4)
    model = GeoViTMAEForImageClassification(config)
    groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.5)
    n = config.num_hidden_layers
    scale = {}
    for g in groups:
        for p in g["params"]:
            scale[id(p)] = (g["lr_scale"], g["weight_decay"])
    named = dict(model.named_parameters())
    assert scale[id(named["classifier.weight"])] == (1.0, 0.05)
    assert scale[id(named["classifier.bias"])] == (1.0, 0.0)
    assert scale[id(named["vit.embeddings.cls_token"])] == (0.5 ** (n + 1), 0.0)
    assert scale[id(named["vit.encoder.layers.0.mlp.fc1.weight"])] == (0.5**n, 0.05)
    assert scale[id(named[f"vit.encoder.layers.{n - 1}.mlp.fc1.weight"])][0] == 0.5
    assert sum(len(g["params"]) for g in groups) == len(named)
    with pytest.raises(ValueError, match="layer_decay must be in"):
        param_groups_layer_decay(model, layer_decay=0)


def test_mixup_cutmix_targets():
    torch.manual_seed(0)
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 2, 8, 8).clone()
    y = torch.tensor([0, 1, 2, 3])
    same, t = mixup_cutmix(x, y, 4, label_smoothing=0.1)
    assert same is x and torch.allclose(t.sum(1), torch.ones(4)) and t[0, 0] == pytest.approx(0.925)
    for kw in ({"mixup_alpha": 0.8}, {"cutmix_alpha": 1.0}):
        mixed, t = mixup_cutmix(x, y, 4, **kw)
        assert torch.allclose(t.sum(1), torch.ones(4))
        lam = t[0, 0].item()  # share of image 0 in mixed image 0 (partner: image 3)
        assert mixed[0].mean().item() == pytest.approx(lam * 0 + (1 - lam) * 3, abs=1e-5)
