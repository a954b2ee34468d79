"""A ``geofm_dataset.json`` that contradicts itself or its shards, one table row per case: refused
with one line naming the file and the field, before any batch is read (issue 25, class 6). On old
main each of these datasets was read and trained on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geofm_hf._errors import UserInputError
from geofm_hf.data import make_pretrain_dataloader, read_dataset_info, write_shards

INFO = "geofm_dataset.json"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """3 shards of two 2-band 32 x 32 chips each (bands B04, B08), written by the real writer."""
    root = tmp_path_factory.mktemp("manifest")
    inp = root / "in"
    inp.mkdir()
    for i in range(3):
        data = np.random.default_rng(i).integers(1, 4000, (2, 32, 64), dtype=np.uint16)
        with rasterio.open(inp / f"S{i}_20200101.tif", "w", driver="GTiff", width=64, height=32,
                           count=2, dtype="uint16", crs="EPSG:32633",
                           transform=from_origin(500000, 5600000, 10, 10)) as dst:  # fmt: skip
            dst.write(data)
            dst.descriptions = ("B04", "B08")
    write_shards(inp, root / "ds", chip_size=32, rows_per_shard=2, sensor="sentinel2-l2a")
    return root / "ds"


def _listed_twice(info, ds):
    info["shards"]["train"].append(dict(info["shards"]["train"][0]))
    info["num_samples"]["train"] += info["shards"]["train"][0]["num_rows"]


def _listed_twice_spelled_differently(info, ds):
    entry = dict(info["shards"]["train"][1])
    entry["file"] = "./" + entry["file"]
    info["shards"]["train"].append(entry)
    info["num_samples"]["train"] += entry["num_rows"]


def _copied_under_another_name(info, ds):
    first = info["shards"]["train"][0]
    shutil.copy(ds / first["file"], ds / "data" / "train-copy.parquet")
    info["shards"]["train"].append({**first, "file": "data/train-copy.parquet"})
    info["num_samples"]["train"] += first["num_rows"]


def _num_samples_not_the_shards_sum(info, ds):
    info["num_samples"]["train"] += 5


def _std_nan(info, ds):
    info["std"][1] = float("nan")


def _std_infinite(info, ds):
    info["std"][0] = float("inf")


def _mean_missing_a_value(info, ds):
    info["mean"][0] = None


def _split_stats_one_band_short(info, ds):
    info["stats_by_split"]["train"]["std"] = info["stats_by_split"]["train"]["std"][:1]


def _std_zero(info, ds):
    info["std"][0] = 0.0


def _std_negative(info, ds):
    info["std"][1] = -3.0


def _one_band_fewer_than_the_shards(info, ds):
    for key in ("band_names", "mean", "std", "wavelengths_um", "gsd_m", "bandwidths_um"):
        info[key] = info[key][:1]
    for stats in info["stats_by_split"].values():
        for key in ("mean", "std", "valid_pixels"):
            stats[key] = stats[key][:1]


def _band_names_swapped(info, ds):
    info["band_names"] = info["band_names"][::-1]


def _band_names_of_another_sensor(info, ds):
    info["band_names"] = ["red", "nir"]


# (case, what reads it, words the one-line message must hold)
CASES = [
    (_listed_twice, "info", "shards.train lists data/train-00000-of-00003.parquet twice"),
    (_listed_twice_spelled_differently, "info", "lists data/train-00001-of-00003.parquet twice"),
    (_copied_under_another_name, "info", "with one sha256"),
    (_num_samples_not_the_shards_sum, "info", "num_samples.train is 11, but the 3 shards"),
    (_std_nan, "info", "std holds non-finite normalisation statistics for band(s) ['B08']"),
    (_std_infinite, "info", "std holds non-finite normalisation statistics for band(s) ['B04']"),
    (_mean_missing_a_value, "info", "mean holds non-finite"),
    (_split_stats_one_band_short, "info", "stats_by_split.train.std holds 1 values for the 2"),
    (_std_zero, "loader", "std is not positive for band(s) ['B04']"),
    (_std_negative, "loader", "std is not positive for band(s) ['B08']"),
    (_one_band_fewer_than_the_shards, "loader", "holds chips of bands ['B04', 'B08']"),
    (_band_names_swapped, "loader", "band_names (the order of its mean and std) lists ['B08'"),
    (_band_names_of_another_sensor, "loader", "lists ['red', 'nir']"),
]


@pytest.mark.parametrize("case, reader, words", CASES, ids=[c[0].__name__[1:] for c in CASES])
def test_contradicting_manifest_is_refused_naming_file_and_field(dataset, tmp_path, case, reader,
                                                                 words):  # fmt: skip
    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    info = json.loads((ds / INFO).read_text())
    case(info, ds)
    (ds / INFO).write_text(json.dumps(info))
    with pytest.raises(UserInputError) as caught:
        if reader == "info":
            read_dataset_info(ds)
        else:
            make_pretrain_dataloader(ds, batch_size=2)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{ds}" in message and INFO in message, message
    assert words in message, message


def test_the_untouched_dataset_reads_and_streams(dataset):
    """The cases above differ from a sound dataset only by the change each makes."""
    info = read_dataset_info(dataset)
    assert info.band_names == ["B04", "B08"] and info.num_samples == {"train": 6}
    batch = next(iter(make_pretrain_dataloader(dataset, batch_size=2)))
    assert batch.shape == (2, 2, 32, 32)


def test_pretraining_entry_point_exits_2_with_one_line(dataset, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    info = json.loads((ds / INFO).read_text())
    _listed_twice(info, ds)
    (ds / INFO).write_text(json.dumps(info))
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(root / "recipes" / "pretrain.py"), "--dataset_name_or_path", str(ds),
         "--output_dir", str(tmp_path / "run"), "--max_steps", "1"],
        capture_output=True, text=True, cwd=root,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "twice" in lines[0] and f"{ds}/{INFO}" in lines[0], proc.stderr
