"""Bad input to the models themselves (no processor), one table row per case (issue 25.6, 25.10).

Each is a ``GeoViTMAEInputError`` (a ``ValueError`` defined in the remote-code config file) that
says what was expected, what was found and what to do, raised before any module runs: never a
torch internal ("Input type (double) and bias type (float)", "expected scalar type Long") and
never a silent change (NaN spread through the features, 0.5 labels cast to class 0).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geofm_hf import (
    GeoViTMAEConfig,
    GeoViTMAEForImageClassification,
    GeoViTMAEForPreTraining,
    GeoViTMAEForSemanticSegmentation,
    GeoViTMAEModel,
)
from geofm_hf.configuration_geofm import GeoViTMAEInputError

BANDS = ["B02", "B03", "B04", "B08"]


def _config(**overrides) -> GeoViTMAEConfig:
    fields = {"band_names": BANDS, "image_mean": [1.0] * 4, "image_std": [1.0] * 4}
    return GeoViTMAEConfig.from_preset("tiny", **{**fields, **overrides})


def _pixels(*shape, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*(shape or (2, 4, 64, 64)), generator=torch.Generator().manual_seed(0)).to(
        dtype
    )


def _with(value, index) -> torch.Tensor:
    pixels = _pixels()
    pixels[index] = value
    return pixels


MODELS = {
    "encoder": lambda: GeoViTMAEModel(_config()),
    "pretraining": lambda: GeoViTMAEForPreTraining(_config()),
    "classifier": lambda: GeoViTMAEForImageClassification(_config(num_labels=3)),
    "multi_label": lambda: GeoViTMAEForImageClassification(
        _config(num_labels=3, problem_type="multi_label_classification")
    ),
    "segmenter": lambda: GeoViTMAEForSemanticSegmentation(_config(num_labels=3)),
    "wavelength": lambda: GeoViTMAEModel(
        _config(patch_embedding="wavelength", wavelength_embed_dim=32)
    ),
}

CASES = {
    # name: (model, inputs, words the message must contain)
    "int16_counts": ("encoder", {"pixel_values": _pixels(dtype=torch.int16)},
                     ["float32, bfloat16 or float16", "found int16", "GeoViTMAEImageProcessor",
                      ".float() and normalise"]),
    "uint8_rgb": ("classifier", {"pixel_values": _pixels(dtype=torch.uint8)}, ["found uint8"]),
    "float64": ("encoder", {"pixel_values": _pixels(dtype=torch.float64)},
                ["found float64", "Call .float()"]),
    "bool_mask_as_pixels": ("pretraining", {"pixel_values": _pixels() > 0}, ["found bool"]),
    "numpy_array": ("encoder", {"pixel_values": _pixels().numpy()},
                    ["torch.Tensor", "found ndarray", "torch.from_numpy"]),
    "no_batch_dimension": ("encoder", {"pixel_values": _pixels(4, 64, 64)},
                           ["(4, 64, 64)", "unsqueeze(0)"]),
    "zero_channels": ("encoder", {"pixel_values": _pixels(1, 0, 64, 64)},
                      ["at least one band", "(1, 0, 64, 64)"]),
    "empty_batch": ("segmenter", {"pixel_values": _pixels(0, 4, 64, 64)},
                    ["at least one image", "(0, 4, 64, 64)"]),
    "wrong_band_count": ("classifier", {"pixel_values": _pixels(2, 3, 64, 64)},
                         ["Expected 4 input bands (B02, B03, B04, B08), found 3"]),
    "size_not_divisible_by_patch": ("encoder", {"pixel_values": _pixels(1, 4, 60, 60)},
                                    ["patch size 8", "60x60", "64x64"]),
    "nan_pixels": ("encoder", {"pixel_values": _with(float("nan"), (0, 1, slice(0, 2), 0))},
                   ["2 non-finite values", "B03 (2)", "pixel_mask", "GeoViTMAEImageProcessor"]),
    "inf_in_two_bands": ("classifier",
                         {"pixel_values": _with(float("inf"), (slice(None), slice(2, 4), 0, 0))},
                         ["4 non-finite values", "B04 (2), B08 (2)"]),
    "nan_in_pretraining_eval": ("pretraining", {"pixel_values": _with(float("nan"), (1, 0))},
                                ["4096 non-finite values", "B02 (4096)"]),
    "nan_in_segmentation": ("segmenter", {"pixel_values": _with(float("-inf"), (0, 3, 5, 5))},
                            ["1 non-finite values", "B08 (1)"]),
    "pixel_mask_wrong_shape": ("encoder", {"pixel_values": _pixels(),
                                           "pixel_mask": torch.ones(2, 1, 64, 64)},
                               ["pixel_mask must be", "(2, 64, 64)", "(2, 1, 64, 64)"]),
    "wavelengths_wrong_length": ("wavelength", {"pixel_values": _pixels(),
                                                "wavelengths": [0.49, 0.56, 0.665]},
                                 ["wavelengths must have shape (C,) = (4,)", "(3,)"]),
    "wavelengths_missing": ("wavelength", {"pixel_values": _pixels()}, ["pass wavelengths="]),
    "fractional_labels": ("classifier", {"pixel_values": _pixels(),
                                         "labels": torch.tensor([0.5, 1.0])},
                          ["fractional values such as [0.5]", "integer class indices"]),
    "soft_labels_single_label_model": (
        "classifier", {"pixel_values": _pixels(), "labels": torch.tensor([[0.7, 0.2, 0.1]] * 2)},
        ["shape (2,)", "(2, 3)", "class indices", "multi_label_classification"]),
    "bool_labels": ("classifier", {"pixel_values": _pixels(), "labels": torch.tensor([True, False])},
                    ["dtype torch.bool"]),
    "multi_label_targets_as_indices": ("multi_label", {"pixel_values": _pixels(),
                                                       "labels": torch.tensor([0, 2])},
                                       ["multi_label_classification", "(2, 3)", "found (2,)"]),
    "fractional_segmentation_labels": (
        "segmenter", {"pixel_values": _pixels(), "labels": torch.full((2, 64, 64), 1.5)},
        ["one class index per pixel", "fractional values such as [1.5"]),
    "segmentation_labels_with_channel": (
        "segmenter", {"pixel_values": _pixels(), "labels": torch.zeros(2, 1, 64, 64, dtype=torch.long)},
        ["(2, 64, 64)", "found shape (2, 1, 64, 64)"]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_rejects_with_clear_error_before_any_compute(name):
    kind, inputs, words = CASES[name]
    torch.manual_seed(0)
    model = MODELS[kind]().eval()
    ran = []
    for module in model.modules():
        if not list(module.children()):  # every leaf: a projection, a norm, a linear
            module.register_forward_pre_hook(lambda *_: ran.append(1))
    with pytest.raises(GeoViTMAEInputError) as err:
        model(**inputs)
    message = str(err.value)
    for word in words:
        assert word in message, (word, message)
    assert "\n" not in message, message
    assert not ran, f"{len(ran)} modules ran before the error"


def test_the_error_is_a_value_error_and_lives_in_the_remote_code_files():
    import geofm_hf.modeling_geofm as modeling

    assert issubclass(GeoViTMAEInputError, ValueError)
    assert modeling.GeoViTMAEInputError is GeoViTMAEInputError


# What a pixel_mask does with non-finite values: they count as invalid, like masked pixels.
MASKED = {
    # name: (where the NaN goes, where the mask says invalid)
    "nan_under_masked_pixels": ((0, 1, slice(0, 8), slice(0, 8)), (0, slice(0, 8), slice(0, 8))),
    "nan_under_pixels_the_mask_calls_valid": ((1, 2, 3, 4), (0, 0, 0)),
    "inf_in_every_band_of_one_pixel": ((0, slice(None), 9, 9), (1, 5, 5)),
}


@pytest.mark.parametrize("name", sorted(MASKED))
@pytest.mark.parametrize("kind", ["encoder", "pretraining"])
def test_non_finite_pixels_under_a_pixel_mask_are_masked(name, kind):
    where, invalid = MASKED[name]
    torch.manual_seed(0)
    model = MODELS[kind]().eval()
    pixels = _pixels()
    mask = torch.ones(2, 64, 64, dtype=torch.bool)
    mask[invalid] = False
    poisoned = pixels.clone()
    poisoned[where] = float("nan") if "nan" in name else float("inf")
    # The reference: the same pixels marked invalid in the mask and finite underneath.
    reference_mask = mask & torch.isfinite(poisoned).all(dim=1)
    extra = {"noise": torch.rand(2, 64, generator=torch.Generator().manual_seed(1))}
    if kind == "encoder":
        extra = {}
    with torch.no_grad():
        got = model(poisoned, pixel_mask=mask, **extra)
        want = model(pixels, pixel_mask=reference_mask, **extra)
    out = got.pooler_output if kind == "encoder" else got.loss
    ref = want.pooler_output if kind == "encoder" else want.loss
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref)


LABELS = {
    # name: (model, labels, equivalent integer labels or None for multi-label targets)
    "integer_valued_floats": ("classifier", torch.tensor([2.0, 0.0]), torch.tensor([2, 0])),
    "int32_indices": ("classifier", torch.tensor([1, 2], dtype=torch.int32), torch.tensor([1, 2])),
    "numpy_indices": ("classifier", np.array([0, 1]), torch.tensor([0, 1])),
    "segmentation_float_indices_with_ignore": (
        "segmenter", torch.full((2, 64, 64), 255.0).index_fill_(1, torch.tensor([0]), 1.0),
        torch.full((2, 64, 64), 255).index_fill_(1, torch.tensor([0]), 1)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(LABELS))
def test_labels_that_are_class_indices_are_taken_as_they_are(name):
    kind, labels, indices = LABELS[name]
    torch.manual_seed(0)
    model = MODELS[kind]().eval()
    pixels = _pixels()
    with torch.no_grad():
        got = model(pixels, labels=labels).loss
        want = model(pixels, labels=indices).loss
    torch.testing.assert_close(got, want)


def test_multi_label_soft_targets_are_taken():
    torch.manual_seed(0)
    model = MODELS["multi_label"]().eval()
    targets = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 1.0]])
    with torch.no_grad():
        out = model(_pixels(), labels=targets)
    want = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets)
    torch.testing.assert_close(out.loss, want)


def test_training_steps_take_the_unchecked_path():
    # A training step must not wait on the device to test for NaN (a host sync per step):
    # without a pixel_mask the non-finite test is skipped there and the loss shows the NaN.
    torch.manual_seed(0)
    model = MODELS["pretraining"]().train()
    out = model(_with(float("nan"), (0, 0, 0, 0)))
    assert not torch.isfinite(out.loss)
