"""Sizes are never changed silently, larger or smaller (issue 25.3): the processor refused a
larger image but upsampled a smaller one (and marked every pixel valid). One rule both ways now:
an image of another size than the model's input is refused with both sizes and the choices, or
changed as asked: ``do_resize`` resamples, ``crop_size`` centre-crops at the image's own
resolution, ``pad`` pads with pixels marked invalid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geofm_hf import GeoViTMAEImageProcessor

BANDS = ["B02", "B03", "B04", "B08"]
MEAN, STD = [1000.0, 1100.0, 1200.0, 2500.0], [500.0, 500.0, 600.0, 900.0]


def _processor(**kwargs) -> GeoViTMAEImageProcessor:
    fields = {"band_names": BANDS, "image_mean": MEAN, "image_std": STD, "size": 32}
    return GeoViTMAEImageProcessor(**{**fields, **kwargs})


def _image(height: int, width: int, batch: int | None = None) -> np.ndarray:
    shape = (4, height, width) if batch is None else (batch, 4, height, width)
    return np.random.default_rng(height * 100 + width).uniform(0, 4000, shape).astype(np.float32)


def _normalised(image: np.ndarray) -> torch.Tensor:
    mean, std = np.array(MEAN)[:, None, None], np.array(STD)[:, None, None]
    return torch.from_numpy(((image - mean) / std).astype(np.float32))


REFUSED = {
    # name: (processor fields, (H, W), call arguments, words in the message, words not in it)
    "smaller_square": ({}, (16, 16), {},
                       ["16x16 px", "takes 32x32", "pad=True", "do_resize=True (resample to 32x32"],
                       ["tiles"]),
    "larger_square": ({}, (48, 48), {}, ["48x48 px", "tiles", "crop_size=32", "do_resize=True"],
                      ["pad=True"]),
    "smaller_on_one_side": ({}, (32, 24), {}, ["32x24 px", "pad=True"], ["tiles"]),
    "larger_one_way_smaller_the_other": ({}, (40, 24), {}, ["40x24 px", "tiles", "pad=True"], []),
    "pad_cannot_shrink": ({}, (48, 48), {"pad": True}, ["tiles", "do_resize=True"], ["pad=True"]),
    "crop_cannot_grow": ({"crop_size": 32}, (24, 24), {}, ["24x24 px", "pad=True"],
                         ["crop_size=32"]),
    "chip_processor_smaller_than_its_crop": (
        {"size": 64, "crop_size": 32}, (16, 16), {},
        ["16x16 px", "takes 32x32", "pad=True", "do_resize=True (resample to 64x64"], []),
    "call_overrides_processor_pad": ({"pad": True}, (16, 16), {"pad": False}, ["pad=True"], []),
    "call_overrides_processor_resize": ({"do_resize": True}, (16, 16), {"do_resize": False},
                                        ["do_resize=True"], []),
    "batch_smaller": ({}, (8, 8), {"batch": 3}, ["8x8 px", "takes 32x32"], []),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_other_sizes_are_refused_with_the_sizes_and_the_choices(name):
    fields, (height, width), call, words, absent = REFUSED[name]
    call = dict(call)
    image = _image(height, width, call.pop("batch", None))
    with pytest.raises(ValueError) as err:
        _processor(**fields)(image, **call)
    message = str(err.value)
    assert "never changed silently" in message, message
    for word in words:
        assert word in message, (word, message)
    for word in absent:
        assert word not in message, (word, message)


ACCEPTED = {
    # name: (processor fields, (H, W), call arguments, the expected pixel_values as a function of
    #        the normalised input, the valid region (rows, cols) of the output)
    "exact_size": ({}, (32, 32), {}, lambda x: x, (32, 32)),
    "padded_square": ({}, (16, 16), {"pad": True}, lambda x: x, (16, 16)),
    "padded_one_side": ({"pad": True}, (32, 24), {}, lambda x: x, (32, 24)),
    "cropped_at_own_resolution": ({"crop_size": 32}, (48, 48), {}, lambda x: x[:, 8:40, 8:40],
                                  (32, 32)),
    "chip_processor_on_its_chip": ({"size": 64, "crop_size": 32}, (64, 64), {},
                                   lambda x: x[:, 16:48, 16:48], (32, 32)),
    # Before: resampled up to 64 px first, then cropped: a 4/3 zoom the caller never asked for.
    "chip_processor_on_a_smaller_chip": ({"size": 64, "crop_size": 32}, (48, 48), {},
                                         lambda x: x[:, 8:40, 8:40], (32, 32)),
    "cropped_one_way_padded_the_other": ({"crop_size": 32, "pad": True}, (40, 24), {},
                                         lambda x: x[:, 4:36, :], (32, 24)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_sizes_change_only_as_asked(name):
    fields, (height, width), call, expected, (rows, cols) = ACCEPTED[name]
    image = _image(height, width)
    out = _processor(**fields)(image, **call)
    pixels, mask = out["pixel_values"][0], out["pixel_mask"][0]
    side = fields.get("crop_size", fields.get("size", 32))
    assert pixels.shape == (4, side, side) and mask.shape == (side, side)
    want = expected(_normalised(image))
    torch.testing.assert_close(pixels[:, :rows, :cols], want, atol=1e-5, rtol=1e-5)
    # Padding is invalid and holds 0 (the band mean); everything else is valid.
    assert mask[:rows, :cols].all() and int(mask.sum()) == rows * cols
    assert (pixels[:, rows:, :] == 0).all() and (pixels[:, :, cols:] == 0).all()


def test_resize_when_asked_both_ways_and_gsd_follows():
    processor = _processor()
    for side, scale in ((16, 0.5), (64, 2.0)):
        out = processor(_image(side, side), do_resize=True, gsd=10.0)
        assert out["pixel_values"].shape == (1, 4, 32, 32) and out["pixel_mask"].all()
        assert out["gsd"].item() == pytest.approx(10.0 * scale)
    # Padding and cropping keep the ground sample distance.
    assert processor(_image(16, 16), pad=True, gsd=10.0)["gsd"].item() == 10.0


def test_padded_nodata_stays_invalid_and_the_model_takes_the_mask():
    from geofm_hf import GeoViTMAEConfig, GeoViTMAEModel

    image = _image(16, 16)
    image[2, 3, 4] = np.nan
    out = _processor(pad=True)(image)
    mask = out["pixel_mask"][0]
    assert not mask[3, 4] and int(mask.sum()) == 16 * 16 - 1
    config = GeoViTMAEConfig.from_preset("tiny", band_names=BANDS, image_mean=MEAN, image_std=STD,
                                         image_size=32)  # fmt: skip
    with torch.no_grad():
        pooled = GeoViTMAEModel(config).eval()(**out).pooler_output
    assert torch.isfinite(pooled).all()


def test_the_rule_is_in_the_processor_docstring():
    doc = GeoViTMAEImageProcessor.__doc__
    for word in ("never changed silently", "do_resize", "crop_size", "pad"):
        assert word in doc, word
