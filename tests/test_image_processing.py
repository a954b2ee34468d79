"""Image processor: band reordering by name, normalisation, nodata, resizing, errors."""

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor

import geofm_hf  # noqa: F401  (registers the Auto classes)
from geofm_hf import GeoViTMAEConfig, GeoViTMAEImageProcessor

BANDS = ["B02", "B03", "B04", "B08"]
MEAN = [1000.0, 1100.0, 1200.0, 2500.0]
STD = [100.0, 110.0, 120.0, 250.0]


def processor(**kwargs) -> GeoViTMAEImageProcessor:
    fields = {"band_names": BANDS, "image_mean": MEAN, "image_std": STD}
    fields.update(kwargs)
    return GeoViTMAEImageProcessor(**fields)


def raster(channels=4, size=8, seed=0) -> np.ndarray:
    # Pixels drawn around the statistics: inputs far from them are warned about (a test of its own).
    mean, std = (np.array(v[:channels])[:, None, None] for v in (MEAN, STD))
    pixels = np.random.default_rng(seed).normal(mean, std, (channels, size, size))
    return pixels.clip(0, 65535).astype(np.uint16)


def expected_normalised(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float32) - np.array(MEAN, np.float32)[:, None, None]) / np.array(
        STD, np.float32
    )[:, None, None]


def test_normalises_per_band():
    image = raster()
    out = processor()(image).pixel_values
    assert out.shape == (1, 4, 8, 8) and out.dtype == torch.float32
    np.testing.assert_allclose(out[0].numpy(), expected_normalised(image), rtol=1e-6)


def test_reorders_named_array_bands():
    image = raster()
    shuffled_names = ["B08", "B02", "B04", "B03"]
    shuffled = image[[3, 0, 2, 1]]
    out = processor()(shuffled, band_names=shuffled_names).pixel_values
    np.testing.assert_allclose(out[0].numpy(), expected_normalised(image), rtol=1e-6)


def test_mapping_input_is_ordered_by_name_and_extra_bands_are_dropped():
    image = raster()
    mapping = {
        "B11": np.zeros((8, 8)),
        **{b: image[i] for i, b in reversed(list(enumerate(BANDS)))},
    }
    out = processor()(mapping).pixel_values
    np.testing.assert_allclose(out[0].numpy(), expected_normalised(image), rtol=1e-6)


def test_missing_band_is_an_error_naming_it_never_zero_filled():
    image = raster(3)
    with pytest.raises(ValueError, match=r"Missing bands \['B08'\].*never zero-filled"):
        processor()(image, band_names=["B02", "B03", "B04"])
    with pytest.raises(ValueError, match=r"Expected 4 bands \(B02, B03, B04, B08\), found 3"):
        processor()(image)
    with pytest.raises(ValueError, match="Got 2 band names for an input with 3 channels"):
        processor()(image, band_names=["B02", "B03"])


def test_nodata_and_nan_are_filled_with_the_band_mean_and_masked():
    image = raster().astype(np.float32)
    image[0, 0, 0] = np.nan
    image[2, 1, 1] = 0  # nodata value
    out = processor(nodata=0)(image)
    assert out.pixel_values[0, 0, 0, 0] == 0.0 and out.pixel_values[0, 2, 1, 1] == 0.0
    mask = out.pixel_mask[0]  # 1 = valid (transformers' pixel_mask convention)
    assert not mask[0, 0] and not mask[1, 1] and (~mask).sum() == 2
    with pytest.raises(ValueError, match="2 nodata/NaN/inf values found"):
        processor(nodata=0, nodata_policy="error")(image)


def test_resize_and_crop():
    image = raster(size=16)
    out = processor(size=8, crop_size=6)(image).pixel_values
    assert out.shape == (1, 4, 6, 6)
    batch = np.stack([raster(size=16, seed=s) for s in range(3)])
    # Upsampling, like shrinking, only when asked for (issue 25.3).
    assert processor(size=32, do_resize=True)(batch).pixel_values.shape == (3, 4, 32, 32)
    with pytest.raises(ValueError, match="16x16 px; the model takes 32x32"):
        processor(size=32)(batch)


def test_batches_lists_and_numpy_output():
    images = [raster(seed=s) for s in range(2)]
    out = processor()(images, return_tensors="np").pixel_values
    assert isinstance(out, np.ndarray) and out.shape == (2, 4, 8, 8)


def test_bad_construction_is_explained():
    with pytest.raises(ValueError, match="needs image_mean and image_std"):
        GeoViTMAEImageProcessor(band_names=BANDS)
    with pytest.raises(ValueError, match="same length"):
        processor(image_mean=[0.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        processor(image_std=[1.0, 0.0, 1.0, 1.0])


def test_save_and_auto_load_keep_the_band_contract(tmp_path):
    config = GeoViTMAEConfig.from_preset("tiny", band_names=BANDS, image_mean=MEAN, image_std=STD)
    saved = GeoViTMAEImageProcessor.from_model_config(config)
    assert saved.size == 64
    saved.save_pretrained(tmp_path)
    config.save_pretrained(tmp_path)
    text = (tmp_path / "preprocessor_config.json").read_text()
    assert '"B08"' in text and "2500.0" in text and "auto_map" in text
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, GeoViTMAEImageProcessor)
    assert loaded.band_names == BANDS and loaded.image_mean == MEAN and loaded.image_std == STD
    image = raster(size=64)
    assert torch.equal(loaded(image).pixel_values, saved(image).pixel_values)


def test_time_series_frames_are_processed_as_single_images_are(tmp_path):
    config = GeoViTMAEConfig.from_preset("tiny", num_channels=4, band_names=BANDS, image_mean=MEAN,
                                         image_std=STD, image_size=8, patch_size=4, num_frames=3,
                                         temporal_encoding=True, location_encoding=True)  # fmt: skip
    series_processor = GeoViTMAEImageProcessor.from_model_config(config)
    series_processor.save_pretrained(tmp_path)
    series_processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert series_processor.num_frames == 3
    single = GeoViTMAEImageProcessor.from_model_config(config, num_frames=1)
    frames = np.stack([raster(seed=s) for s in range(3)]).astype(np.float32)
    frames[1, 2, :2] = np.nan
    reordered = frames[:, [3, 0, 1, 2]]  # named bands, another order: matched by name
    out = series_processor(reordered, band_names=["B08", "B02", "B03", "B04"],
                           dates=["2020-01-01", "2020-02-01", "2020-12-31"],
                           location=(46.5, 6.6))  # fmt: skip
    assert out["pixel_values"].shape == (1, 3, 4, 8, 8) and out["pixel_mask"].shape == (1, 3, 8, 8)
    for t in range(3):
        alone = single(frames[t])
        assert torch.equal(out["pixel_values"][0, t], alone["pixel_values"][0])
        assert torch.equal(out["pixel_mask"][0, t], alone["pixel_mask"][0])
    assert not out["pixel_mask"][0, 1, :2].any() and out["pixel_mask"][0, 0].all()
    assert out["temporal_coords"].tolist() == [[[2020, 1], [2020, 32], [2020, 366]]]
    assert out["location_coords"].tolist() == [[46.5, pytest.approx(6.6)]]
    from geofm_hf import GeoViTMAEModel

    model = GeoViTMAEModel(config).eval()
    assert model(**out).last_hidden_state.shape == (1, 1 + 3 * 4, config.hidden_size)
    batch = series_processor([frames, frames], dates=[["2020-01-01"] * 3, ["2021-01-01"] * 3])
    assert batch["pixel_values"].shape == (2, 3, 4, 8, 8)
    assert batch["temporal_coords"][:, 0, 0].tolist() == [2020, 2021]


def test_time_series_inputs_of_the_wrong_shape_are_explained():
    series_processor = processor(num_frames=3)
    with pytest.raises(ValueError, match=r"time series of 3 frames.*found shape \(4, 8, 8\)"):
        series_processor(raster())
    with pytest.raises(ValueError, match=r"found shape \(1, 2, 4, 8, 8\)"):
        series_processor(np.stack([raster(), raster()]))
    with pytest.raises(ValueError, match=r"dates must give 3 date\(s\) per sample"):
        series_processor(np.stack([raster()] * 3), dates=["2020-01-01"])
    with pytest.raises(ValueError, match="location must be"):
        series_processor(np.stack([raster()] * 3), location=[1.0, 2.0, 3.0])
