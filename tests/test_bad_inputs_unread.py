"""Nothing dropped without a word (issue 25, class 12a and c): every file the writer (and the
inference tools, which discover scenes through the same reader) is given or finds in a folder is
read, or named and counted in one warning line with the reason; and the bundled sample carries the
page checksums and shard hashes every dataset the writer makes carries."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.transform import from_origin

from geofm_hf.data import cli, read_dataset_info, sample_dataset_path, write_shards
from geofm_hf.data.format import SHARD_FOOTER_METADATA
from geofm_hf.data.verify import check_shard_footers


def _tif(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(1, 4000, (2, 32, 32), dtype=np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=2, dtype="uint16",
                       crs="EPSG:32633", transform=from_origin(500000, 5600000, 10, 10)) as dst:  # fmt: skip
        dst.write(data)
        dst.descriptions = ("B04", "B08")
    return path


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- setups
# Each builds inputs under ``root`` and returns (inputs, chips expected, words of the warning).


def _gdal_sidecars_beside_a_scene(root):
    _tif(root / "in" / "S1_20200101.tif")
    for name in ("S1_20200101.tif.aux.xml", "S1_20200101.tif.ovr", "S1_20200101.tif.msk"):
        _touch(root / "in" / name)
    return (
        [root / "in"],
        1,
        [
            "3 file(s) not read",
            "S1_20200101.tif.aux.xml (GDAL sidecar (.aux.xml metadata of a raster))",
            "S1_20200101.tif.ovr (GDAL sidecar (.ovr overviews of a raster))",
            "S1_20200101.tif.msk (GDAL sidecar (.msk mask of a raster))",
        ],
    )


def _notes_and_metadata_in_a_subfolder(root):
    _tif(root / "in" / "a" / "S1_20200101.tif")
    _touch(root / "in" / "a" / "README.txt")
    _touch(root / "in" / "b" / "MTD_TL.xml")
    _touch(root / "in" / "b" / "LICENSE")
    return (
        [root / "in"],
        1,
        [
            "3 file(s) not read",
            "README.txt (not a raster extension (.txt))",
            "MTD_TL.xml (not a raster extension (.xml))",
            "LICENSE (not a raster extension (no extension))",
        ],
    )


def _seven_strays_are_counted_and_five_named(root):
    _tif(root / "in" / "S1_20200101.tif")
    for i in range(7):
        _touch(root / "in" / f"note{i}.txt")
    return [root / "in"], 1, ["7 file(s) not read", "note4.txt", "; and 2 more"]


def _hidden_file(root):
    _tif(root / "in" / "S1_20200101.tif")
    _touch(root / "in" / ".DS_Store")
    return [root / "in"], 1, ["1 file(s) not read: .DS_Store (hidden file)"]


def _glob_over_sidecars(root):
    _tif(root / "in" / "S1_20200101.tif")
    _touch(root / "in" / "S1_20200101.tif.aux.xml", "<PAMDataset/>")
    return [f"{root / 'in'}/*"], 1, ["1 file(s) not read: S1_20200101.tif.aux.xml (GDAL sidecar"]


def _glob_over_a_folder(root):
    _tif(root / "in" / "S1_20200101.tif")
    _tif(root / "in" / "more" / "S2_20200101.tif", seed=1)
    return [f"{root / 'in'}/*"], 1, ["1 file(s) not read: more (a folder matched by a glob"]


CASES = [
    _gdal_sidecars_beside_a_scene,
    _notes_and_metadata_in_a_subfolder,
    _seven_strays_are_counted_and_five_named,
    _hidden_file,
    _glob_over_sidecars,
    _glob_over_a_folder,
]


@pytest.mark.parametrize("setup", CASES, ids=[c.__name__[1:] for c in CASES])
def test_files_not_read_are_named_in_one_line(setup, tmp_path, caplog):
    inputs, chips, words = setup(tmp_path)
    with caplog.at_level(logging.WARNING, logger="geofm_hf.data.scenes"):
        summary = write_shards(inputs, tmp_path / "out", chip_size=32)
    assert summary.num_samples == {"train": chips}
    lines = [r.getMessage() for r in caplog.records if "not read" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "\n" not in lines[0]
    for word in words:
        assert word in lines[0], lines[0]


def test_a_folder_of_no_rasters_names_what_it_holds(tmp_path, capsys):
    _touch(tmp_path / "in" / "scene.TXT")
    _touch(tmp_path / "in" / "scene.tif.aux.xml")
    code = cli.main([str(tmp_path / "in"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "holds no raster files" in err and "2 file(s) not read" in err
    assert "scene.TXT (not a raster extension (.TXT))" in err and "scene.tif.aux.xml" in err


def test_raster_extensions_are_read_in_any_case(tmp_path, caplog):
    """Control: upper- and mixed-case extensions are read (no warning), as before."""
    _tif(tmp_path / "in" / "S1_20200101.TIF")
    _tif(tmp_path / "in" / "S2_20200101.Tiff", seed=1)
    with caplog.at_level(logging.WARNING, logger="geofm_hf.data.scenes"):
        summary = write_shards(tmp_path / "in", tmp_path / "out", chip_size=32)
    assert summary.num_samples == {"train": 2}
    assert not [r for r in caplog.records if "not read" in r.getMessage()]


# ------------------------------------------------------------------ the bundled sample (12c)


def test_bundled_sample_carries_page_checksums_and_matching_shard_hashes():
    sample = Path(sample_dataset_path())
    info = read_dataset_info(sample)
    key, value = next(iter(SHARD_FOOTER_METADATA.items()))
    for split, entries in info.shards.items():
        assert entries, split
        for entry in entries:
            path = sample / entry["file"]
            assert pq.read_metadata(path).metadata.get(key) == value, entry["file"]
            assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), entry
            assert entry["bytes"] == path.stat().st_size, entry
        assert not check_shard_footers(sample, info, split, full=True)
    raw = json.loads((sample / "geofm_dataset.json").read_text())
    card = (sample / "README.md").read_text()
    assert raw["readme_sha256"] == hashlib.sha256(card.encode()).hexdigest()
