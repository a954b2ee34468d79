"""Bad input to ``geofm-make-shards`` and the shard format, one table row per case.

Each case is either *handled* (a correct dataset comes out, with a warning where the user should
know) or a *clear error*: exit code 2, a message naming the problem, and the output folder exactly
as it was before the run (nothing half-written, nothing of a previous dataset lost).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

from geofm_hf.data import cli, decode_batch, read_dataset_info, write_shards


def _tif(path, data, transform=None, *, crs="EPSG:32633", gcps=None):
    profile = dict(driver="GTiff", width=data.shape[-1], height=data.shape[-2],
                   count=data.shape[0], dtype=data.dtype, crs=crs,
                   transform=transform or from_origin(500000, 5600000, 10, 10))  # fmt: skip
    if gcps:
        profile.pop("transform")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if gcps:
            dst.gcps = (gcps, rasterio.crs.CRS.from_string(crs))


def _scenes(folder: Path, n: int, size: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        data = np.random.default_rng(i).integers(1, 4000, (2, size, size), dtype=np.uint16)
        _tif(folder / f"S{i:02d}_20200101.tif", data)
    return folder


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its hash: 'nothing changed' is equality of two trees."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _run(argv, capsys) -> tuple[int, str]:
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse rejects an argument at parse time
        code = exc.code
    return code, capsys.readouterr().err


# ----------------------------------------------------------------------------- setups
# Each returns (argv after the program name, what the output folder starts as).


def _existing_dataset(tmp_path):
    out = tmp_path / "out"
    write_shards(_scenes(tmp_path / "old", 3), out)
    return out


def case_overwrite_with_bad_inputs(tmp_path):
    out = _existing_dataset(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "scene.tif").write_bytes(b"")
    return [bad, "-o", out, "--overwrite"], out


def case_overwrite_with_missing_inputs(tmp_path):
    out = _existing_dataset(tmp_path)
    return [tmp_path / "nowhere", "-o", out, "--overwrite"], out


def case_overwrite_where_every_chip_is_dropped(tmp_path):
    out = _existing_dataset(tmp_path)
    folder = tmp_path / "zeros"
    folder.mkdir()
    profile_nodata = np.zeros((2, 64, 64), np.uint16)
    _tif(folder / "Z_20200101.tif", profile_nodata)
    with rasterio.open(folder / "Z_20200101.tif", "r+") as dst:
        dst.nodata = 0
    return [folder, "-o", out, "--overwrite"], out


def case_users_readme(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("# My notes\nnot a dataset card\n")
    return [_scenes(tmp_path / "in", 2), "-o", out], out


def case_edited_card_with_overwrite(tmp_path):
    out = _existing_dataset(tmp_path)
    with open(out / "README.md", "a") as fh:
        fh.write("\nMy own notes about this dataset.\n")
    return [_scenes(tmp_path / "in", 2), "-o", out, "--overwrite"], out


def case_existing_dataset_without_overwrite(tmp_path):
    out = _existing_dataset(tmp_path)
    return [_scenes(tmp_path / "in", 2), "-o", out], out


def case_rotated_geotransform(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    t = from_origin(500000, 5600000, 10, 10) @ Affine.rotation(20)
    _tif(folder / "R_20200101.tif", np.ones((2, 96, 96), np.uint16), t)
    return [folder, "-o", tmp_path / "out"], tmp_path / "out"


def case_skewed_geotransform(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    t = from_origin(500000, 5600000, 10, 10) @ Affine.shear(10, 0)
    _tif(folder / "K_20200101.tif", np.ones((2, 96, 96), np.uint16), t)
    return [folder, "-o", tmp_path / "out"], tmp_path / "out"


def case_gcp_only(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    gcps = [GroundControlPoint(r, c, 500000 + 10 * c, 5600000 - 10 * r)
            for r, c in ((0, 0), (0, 95), (95, 0), (95, 95))]  # fmt: skip
    # rasterio opens the file for writing before the GCPs are set, and warns that it has none.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        _tif(folder / "G_20200101.tif", np.ones((2, 96, 96), np.uint16), gcps=gcps)
    return [folder, "-o", tmp_path / "out"], tmp_path / "out"


def case_complex_raster(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    data = (np.ones((2, 64, 64)) + 1j * np.ones((2, 64, 64))).astype(np.complex64)
    _tif(folder / "C_20200101.tif", data)
    return [folder, "-o", tmp_path / "out"], tmp_path / "out"


def case_read_only_output(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: refuse the writes the way EACCES does
        real_mkdir = os.mkdir

        def mkdir(path, *args, **kwargs):
            if str(path).startswith(str(ro)):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
    else:
        ro.chmod(0o555)
    return [_scenes(tmp_path / "in", 2), "-o", ro], ro


def _args_case(*extra):
    def setup(tmp_path):
        return [_scenes(tmp_path / "in", 1), "-o", tmp_path / "out", *extra], tmp_path / "out"

    return setup


ERRORS = {
    # name: (setup, words the message must contain)
    "overwrite_with_bad_inputs": (case_overwrite_with_bad_inputs, ["zero-byte"]),
    "overwrite_with_missing_inputs": (case_overwrite_with_missing_inputs, ["nowhere"]),
    "overwrite_where_every_chip_is_dropped": (
        case_overwrite_where_every_chip_is_dropped, ["every chip was dropped"]),
    "users_readme": (case_users_readme, ["README.md", "not written by geofm-make-shards"]),
    "edited_card_with_overwrite": (case_edited_card_with_overwrite, ["README.md", "edited"]),
    "existing_dataset_without_overwrite": (
        case_existing_dataset_without_overwrite, ["already holds a dataset", "--overwrite"]),
    "rotated_geotransform": (case_rotated_geotransform, ["rotated or skewed", "b="]),
    "skewed_geotransform": (case_skewed_geotransform, ["rotated or skewed"]),
    "gcp_only": (case_gcp_only, ["ground control points"]),
    "complex_raster": (case_complex_raster, ["complex64", "complex"]),
    "read_only_output": (case_read_only_output, ["cannot write", "Permission denied"]),
    "max_error_fraction_7": (_args_case("--max-error-fraction", "7"), ["--max-error-fraction"]),
    "max_error_fraction_negative": (
        _args_case("--max-error-fraction", "-0.1"), ["--max-error-fraction"]),
    "max_error_fraction_nan": (_args_case("--max-error-fraction", "nan"), ["--max-error-fraction"]),
    "max_nodata_fraction_2": (_args_case("--max-nodata-fraction", "2"), ["--max-nodata-fraction"]),
    "stride_0": (_args_case("--stride", "0"), ["--stride", "found 0"]),
    "chip_size_0": (_args_case("--chip-size", "0"), ["--chip-size"]),
    "chip_size_text": (_args_case("--chip-size", "big"), ["--chip-size", "'big'"]),
    "rows_per_shard_0": (_args_case("--rows-per-shard", "0"), ["--rows-per-shard"]),
    "target_shard_mb_0": (_args_case("--target-shard-mb", "0"), ["--target-shard-mb"]),
    "resolution_negative": (_args_case("--resolution", "-10"), ["--resolution"]),
    "compression_level_99": (_args_case("--compression-level", "99"), ["--compression-level"]),
    "unknown_sensor": (_args_case("--sensor", "sentinel2-l9z"), ["unknown sensor"]),
    "unknown_sensor_over_a_dataset": (
        lambda tmp_path: ([_scenes(tmp_path / "in", 1), "-o", _existing_dataset(tmp_path),
                           "--overwrite", "--sensor", "nope"], tmp_path / "out"),
        ["unknown sensor"]),
    "unknown_resampling": (_args_case("--resampling", "cubicish"), ["cubicish"]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_clear_error_exit_2_nothing_written(name, tmp_path, capsys, monkeypatch):
    setup, words = ERRORS[name]
    if "monkeypatch" in setup.__code__.co_varnames[: setup.__code__.co_argcount]:
        argv, out = setup(tmp_path, monkeypatch)
    else:
        argv, out = setup(tmp_path)
    before = _tree(out)
    existed = out.exists()
    code, err = _run(argv, capsys)
    assert code == 2, err
    for word in words:
        assert word in err, (word, err)
    assert _tree(out) == before  # nothing half-written, nothing of the old dataset lost
    assert out.exists() == existed
    assert not (out / ".geofm_staging").exists()
    if "geofm_dataset.json" in before:  # the previous dataset still reads back whole
        info = read_dataset_info(out)
        assert sum(info.num_samples.values()) == len(pq.read_table(out / "data"))


# ----------------------------------------------------------------------------- handled


def test_overwrite_replaces_only_when_complete(tmp_path, capsys):
    out = _existing_dataset(tmp_path)  # 3 chips
    code, err = _run([_scenes(tmp_path / "new", 5), "-o", out, "--overwrite"], capsys)
    assert code == 0, err
    assert read_dataset_info(out).num_samples == {"train": 5}
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    assert len(pq.read_table(out / "data")) == 5
    assert not (out / ".geofm_staging").exists()
    # Our own unedited card is replaced without complaint.
    code, err = _run([_scenes(tmp_path / "new", 5), "-o", out, "--overwrite"], capsys)
    assert code == 0, err


def test_staging_left_by_a_killed_run_is_named_and_removed(tmp_path, caplog):
    out = tmp_path / "out"
    (out / ".geofm_staging").mkdir(parents=True)
    (out / ".geofm_staging" / "train-00000.parquet").write_bytes(b"PAR1 half a shard")
    with caplog.at_level(logging.WARNING, logger="geofm_hf.data.writer"):
        summary = write_shards(_scenes(tmp_path / "in", 2), out)
    assert summary.num_samples == {"train": 2}
    assert any(".geofm_staging" in r.getMessage() and "unfinished" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert not (out / ".geofm_staging").exists()


def test_failed_run_removes_its_staging_and_the_folder_it_created(tmp_path):
    bad = tmp_path / "bad"
    _scenes(bad, 1)
    (bad / "T_20200101.tif").write_bytes(b"")
    out = tmp_path / "deep" / "out"
    with pytest.raises(ValueError, match="zero-byte"):
        write_shards(bad, out)
    assert not out.exists()


def test_one_chip_wide_raster_warns_about_the_empty_split(tmp_path, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    _tif(folder / "N_20200101.tif", np.ones((2, 256, 64), np.uint16))
    with caplog.at_level(logging.WARNING, logger="geofm_hf.data.writer"):
        summary = write_shards(folder, tmp_path / "out", split={"train": 0.8, "validation": 0.2})
    assert summary.num_samples == {"train": 4, "validation": 0}
    (message,) = [r.getMessage() for r in caplog.records if "no chips" in r.getMessage()]
    assert "validation" in message and "chip column" in message


def test_south_up_raster_is_flipped_north_up(tmp_path):
    data = np.random.default_rng(3).integers(1, 4000, (2, 64, 64), dtype=np.uint16)
    _tif(tmp_path / "north_20200101.tif", data)
    south_up = Affine(10, 0, 500000, 0, 10, 5600000 - 640)  # first row is the southernmost
    _tif(tmp_path / "south_20200101.tif", data[:, ::-1].copy(), south_up)
    a = write_shards([tmp_path / "north_20200101.tif"], tmp_path / "a")
    b = write_shards([tmp_path / "south_20200101.tif"], tmp_path / "b")
    assert a.num_samples == b.num_samples == {"train": 1}
    chip_a = decode_batch(pq.read_table(tmp_path / "a" / "data"))
    chip_b = decode_batch(pq.read_table(tmp_path / "b" / "data"))
    np.testing.assert_array_equal(chip_a, chip_b)
    np.testing.assert_array_equal(chip_a[0], data)


def test_shards_carry_page_checksums_and_hashes(tmp_path):
    out = tmp_path / "out"
    write_shards(_scenes(tmp_path / "in", 3), out, rows_per_shard=2)
    info = json.loads((out / "geofm_dataset.json").read_text())
    for entry in info["shards"]["train"]:
        path = out / entry["file"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["bytes"] == path.stat().st_size
        assert pq.read_metadata(path).metadata[b"geofm.page_checksums"] == b"crc32"
    assert info["readme_sha256"] == hashlib.sha256((out / "README.md").read_bytes()).hexdigest()


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_pixels_are_invalid_in_the_statistics_and_counted(value, tmp_path):
    data = np.random.default_rng(4).uniform(1000, 3000, (2, 64, 128)).astype(np.float32)
    data[0, 10, 10] = value  # one pixel of the first chip
    folder = tmp_path / "in"
    folder.mkdir()
    _tif(folder / "F_20200101.tif", data)
    summary = write_shards(folder, tmp_path / "out", max_nodata_fraction=0.01)
    assert summary.num_samples == {"train": 2}  # 1/4096 invalid: the chip is kept
    info = read_dataset_info(tmp_path / "out")
    assert np.isfinite(info.mean).all() and np.isfinite(info.std).all()
    valid = data[0][np.isfinite(data[0])]
    np.testing.assert_allclose(info.mean[0], valid.mean(), rtol=1e-6)
    assert info.extra["validity"]["non_finite_values"] == 1
    # Above max_nodata_fraction the chip is dropped and counted under "nan".
    summary = write_shards(folder, tmp_path / "strict")
    assert summary.num_samples == {"train": 1} and summary.skipped["by_reason"] == {"nan": 1}
