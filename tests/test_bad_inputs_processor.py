"""Bad input to the image processor, one table row per case: each is a ``ValueError`` that says
what was expected and what was found (never a torch internal such as "stack expects each tensor
to be equal size" or "Dimension out of range")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geofm_hf import GeoViTMAEImageProcessor

BANDS = [f"B{i:02d}" for i in range(1, 14)]


def _processor(**kwargs):
    return GeoViTMAEImageProcessor(band_names=BANDS, image_mean=[1000.0] * 13,
                                   image_std=[500.0] * 13, size=32, **kwargs)  # fmt: skip


CASES = {
    # name: (input, words the message must contain)
    "empty_mapping": ({}, ["empty {band_name: array} mapping"]),
    "mapping_of_scalars": ({b: 1.0 for b in BANDS}, ["Band 'B01'", "found a scalar"]),
    "mapping_of_none": ({b: None for b in BANDS}, ["band 'B01'", "NoneType"]),
    "mapping_of_3d_volumes": ({b: np.zeros((1, 2, 8, 8)) for b in BANDS},
                              ["Band 'B01'", "(1, 2, 8, 8)"]),
    "zero_size_image": (np.zeros((13, 0, 0)), ["at least one", "(1, 13, 0, 0)"]),
    "zero_width_image": (np.zeros((13, 8, 0)), ["(1, 13, 8, 0)"]),
    "empty_batch": (np.zeros((0, 13, 8, 8)), ["at least one", "(0, 13, 8, 8)"]),
    "list_mixing_band_counts": ([np.zeros((13, 8, 8)), np.zeros((3, 8, 8))],
                                ["same bands", "[13, 3]"]),
    "list_mixing_band_counts_same_size": ([np.zeros((13, 8, 8)), np.zeros((12, 8, 8))],
                                          ["[13, 12]"]),
    "list_with_an_empty_image": ([np.zeros((13, 8, 8)), np.zeros((13, 0, 4))], ["(1, 13, 0, 4)"]),
    "none": (None, ["NoneType"]),
    "a_path_string": ("scene.tif", ["str", "read the raster first"]),
    "complex_array": (np.zeros((13, 8, 8), np.complex64), ["complex64"]),
    "complex_tensor": (torch.zeros(13, 8, 8, dtype=torch.complex64), ["real-valued", "complex64"]),
    "object_array": (np.array([None] * 13), ["dtype object"]),
    "one_dimensional": (np.zeros(13), ["(C, H, W)", "(13,)"]),
    "wrong_band_count": (np.zeros((12, 8, 8)), ["Expected 13 bands", "found 12"]),
    "missing_named_band": ({b: np.zeros((8, 8)) for b in BANDS[:-1]}, ["Missing bands", "B13"]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_processor_rejects_with_clear_error(name):
    images, words = CASES[name]
    with pytest.raises(ValueError) as err:
        _processor()(images)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_list_of_sizes_resized_when_asked_and_bands_agree():
    images = [np.ones((13, 8, 8)), np.ones((13, 16, 16))]
    out = _processor()(images, do_resize=True)
    assert tuple(out["pixel_values"].shape) == (2, 13, 32, 32)
    with pytest.raises(
        ValueError, match=r"different sizes \[\(8, 8\), \(16, 16\)\].*do_resize=True"
    ):
        _processor()(images)
