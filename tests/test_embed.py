"""geofm-embed / geofm_hf.embed on a real Sentinel-2 crop: GeoParquet, COG, resume, bad files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from affine import Affine
from inference_helpers import (
    CROP_H,
    CROP_W,
    ORIGIN,
    PREFIX,
    embeddings_of,
    make_model,
    window_bounds,
    write_crop,
)

import geofm_hf
from geofm_hf.data.format import BadInputError, TooManyErrorsError


@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    return write_crop(tmp_path_factory.mktemp("crop") / "scene")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model") / "m")


@pytest.fixture(scope="module")
def parquet(crop, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("emb") / "emb.parquet"
    summary = geofm_hf.embed(model, crop, out, stride=48, progress=False, dtype="float32")
    return out, summary


def test_geoparquet_geometry_is_each_window_and_crs_round_trips(parquet, model):
    import geopandas as gpd
    from pyproj import CRS

    out, summary = parquet
    frame = gpd.read_parquet(out)
    # Windows every 48 px over 240 x 144 px, the last ones padded past the edge.
    rows, cols = [0, 48, 96], [0, 48, 96, 144, 192]
    assert summary.num_windows == len(frame) == len(rows) * len(cols)
    assert CRS.from_user_input(frame.crs).to_epsg() == 32633
    for geom, r, c, valid in zip(frame.geometry, frame.row, frame.col, frame.valid_fraction):
        assert geom.bounds == pytest.approx(window_bounds(r, c, 64))
        expected = (min(64, CROP_H - r) * min(64, CROP_W - c)) / 64**2
        assert valid == pytest.approx(expected)
    assert sorted(zip(frame.row, frame.col)) == [(r, c) for r in rows for c in cols]
    meta = json.loads(pq.read_schema(out).metadata[b"geo"])
    assert meta["version"] == "1.1.0" and meta["columns"]["geometry"]["encoding"] == "WKB"
    assert CRS.from_json_dict(meta["columns"]["geometry"]["crs"]).to_epsg() == 32633
    table = pq.read_table(out)
    assert table.schema.field("embedding").type.list_size == 48
    assert set(table.column("model_id").to_pylist()) == {str(model)}
    assert set(table.column("model_revision").to_pylist()) == {None}  # a local export: no commit
    assert str(table.column("datetime")[0].as_py()) == "2017-02-16 10:21:01"
    assert set(table.column("source").to_pylist()) == {f"scene/{PREFIX}"}


def test_geoparquet_reads_in_duckdb_spatial(parquet):
    duckdb = pytest.importorskip("duckdb")
    ext = pytest.importorskip("duckdb_extension_spatial")
    out, _ = parquet
    con = duckdb.connect()
    path = os.path.join(os.path.dirname(ext.__file__), "extensions")
    found = [
        os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith("extension")
    ]
    con.execute(f"INSTALL '{found[0]}'")
    con.execute("LOAD spatial")
    rows = con.execute(
        f"SELECT row, col, ST_XMin(geometry), ST_YMax(geometry), ST_Area(geometry) "
        f"FROM '{out}' ORDER BY row, col"
    ).fetchall()
    assert len(rows) == 15
    for r, c, xmin, ymax, area in rows:
        assert (xmin, ymax) == pytest.approx((ORIGIN[0] + 10 * c, ORIGIN[1] - 10 * r))
        assert area == pytest.approx(640.0 * 640.0)


def test_embeddings_match_the_model_on_the_same_window(parquet, model, crop):
    """The stored vector is the model's cls token of exactly that window (band order by name)."""
    import torch

    from geofm_hf import GeoViTMAEImageProcessor, GeoViTMAEModel

    out, _ = parquet
    table = pq.read_table(out)
    i = next(k for k, (r, c) in enumerate(zip(table.column("row").to_pylist(),
                                           table.column("col").to_pylist())) if (r, c) == (48, 96))  # fmt: skip
    bands = []
    for band in GeoViTMAEModel.from_pretrained(model).config.band_names:
        with rasterio.open(crop / f"{PREFIX}_{band}.tif") as src:
            f = round(src.res[0] / 10)
            full = np.repeat(np.repeat(src.read(1), f, axis=0), f, axis=1)  # nearest to 10 m
        bands.append(full[48:112, 96:160])
    processor = GeoViTMAEImageProcessor.from_pretrained(model)
    net = GeoViTMAEModel.from_pretrained(model).eval()
    with torch.no_grad():
        ref = net(**processor(np.stack(bands).astype(np.float32), return_tensors="pt"))
    np.testing.assert_allclose(embeddings_of(table)[i], ref.last_hidden_state[0, 0], atol=1e-4)


def test_search_returns_nearest_windows_by_cosine(parquet):
    out, _ = parquet
    table = pq.read_table(out)
    emb = embeddings_of(table)
    hits = geofm_hf.search(out, 3, k=4)
    cos = emb @ emb[3] / (np.linalg.norm(emb, axis=1) * np.linalg.norm(emb[3]))
    cos[3] = -np.inf
    assert hits.column("index").to_pylist() == list(np.argsort(-cos)[:4])
    np.testing.assert_allclose(hits.column("similarity").to_numpy(), np.sort(cos)[::-1][:4],
                               rtol=1e-5)  # fmt: skip
    assert "geometry" in hits.column_names and "embedding" not in hits.column_names


def test_cog_has_scene_crs_stride_scaled_transform_and_is_valid(crop, model, parquet, tmp_path):
    from rio_cogeo.cogeo import cog_validate

    out = tmp_path / "emb.tif"
    summary = geofm_hf.embed(model, crop, out, stride=48, format="cog", progress=False,
                             dtype="float32")  # fmt: skip
    with rasterio.open(out) as cog:
        assert cog.crs.to_epsg() == 32633
        expected = Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1]) @ Affine.translation(8, 8)
        assert cog.transform.almost_equals(expected @ Affine.scale(48))
        assert (cog.width, cog.height, cog.count) == (5, 3, 48)
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and cog.profile["tiled"]
        data = cog.read()
    assert cog_validate(str(out))[0]
    # Pixel (i, j) holds the embedding of the window at (48 i, 48 j): same as the Parquet row.
    table = pq.read_table(parquet[0])
    emb = embeddings_of(table)
    for k, (r, c) in enumerate(zip(table.column("row").to_pylist(),
                                   table.column("col").to_pylist())):  # fmt: skip
        np.testing.assert_allclose(data[:, r // 48, c // 48], emb[k], atol=1e-5)
    assert summary.preview and summary.preview.endswith(".png")


def test_cog_pca_and_dense_patch_raster(crop, model, tmp_path):
    from rio_cogeo.cogeo import cog_validate

    out = tmp_path / "dense.tif"
    summary = geofm_hf.embed(model, crop, out, stride=32, pooling="patch", pca=3,
                             format="cog", progress=False, dtype="float32")  # fmt: skip
    with rasterio.open(out) as cog:
        # One pixel per 8 px patch over the padded extent (192 + 64, 96 + 64).
        assert (cog.width, cog.height, cog.count) == (256 // 8, 160 // 8, 3)
        assert cog.transform.almost_equals(Affine(80, 0, ORIGIN[0], 0, -80, ORIGIN[1]))
        assert cog.descriptions == ("pc1", "pc2", "pc3")
        pcs = cog.read().reshape(3, -1)
    assert cog_validate(str(out))[0]
    pcs = pcs[:, np.isfinite(pcs).all(0)]
    variances = pcs.var(axis=1)
    assert variances[0] >= variances[1] >= variances[2] > 0  # principal components, in order
    assert abs(np.corrcoef(pcs)[0, 1]) < 0.2  # uncorrelated
    assert os.path.getsize(summary.preview) > 0


def test_resume_after_kill_skips_finished_windows(crop, model, tmp_path):
    out = tmp_path / "emb.parquet"
    partial = tmp_path / "emb.parquet.partial"
    cmd = [sys.executable, "-m", "geofm_hf.inference.embed", str(model), str(crop), "-o",
           str(out), "--stride", "16", "--batch-size", "2", "--checkpoint-every", "2",
           "--dtype", "float32", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and len(list(partial.glob("s*-*.parquet"))) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    parts = list(partial.glob("s*-*.parquet"))
    assert len(parts) >= 3 and not out.exists()
    # Parts are written atomically: a kill mid-write leaves at most a *.tmp, never a torn part.
    assert all(pq.read_table(p).num_rows for p in parts)
    resumed = geofm_hf.embed(model, crop, out, stride=16, resume=True, progress=False,
                             dtype="float32")  # fmt: skip
    assert resumed.num_windows_resumed >= 6
    geofm_hf.embed(model, crop, tmp_path / "fresh.parquet", stride=16, progress=False,
                           dtype="float32")  # fmt: skip
    a, b = pq.read_table(out), pq.read_table(tmp_path / "fresh.parquet")
    key = lambda t: list(zip(t.column("row").to_pylist(), t.column("col").to_pylist()))  # noqa: E731
    assert sorted(key(a)) == sorted(key(b)) and len(set(key(a))) == a.num_rows
    order_a, order_b = np.lexsort(np.array(key(a)).T), np.lexsort(np.array(key(b)).T)
    np.testing.assert_allclose(embeddings_of(a)[order_a], embeddings_of(b)[order_b], atol=1e-5)
    assert not partial.exists()


def test_resume_refuses_other_settings(crop, model, tmp_path):
    out = tmp_path / "emb.parquet"
    (tmp_path / "emb.parquet.partial").mkdir()
    (tmp_path / "emb.parquet.partial" / "manifest.json").write_text(json.dumps({"stride": 8}))
    with pytest.raises(ValueError, match="other settings"):
        geofm_hf.embed(model, crop, out, stride=64, resume=True, progress=False)


# The corrupt file has no georeference either: rasterio says so before our error names it.
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_a_bad_file_is_skipped_and_counted(crop, model, tmp_path):
    bad = write_crop(tmp_path / "bad", corrupt_band="B03")
    out = tmp_path / "emb.parquet"
    with pytest.raises(BadInputError):
        geofm_hf.embed(model, [crop, bad], out, stride=64, progress=False)
    assert not out.exists()
    with pytest.raises(TooManyErrorsError):
        geofm_hf.embed(model, [crop, bad], out, stride=64, progress=False, on_error="skip")
    summary = geofm_hf.embed(model, [crop, bad], out, stride=64, progress=False,
                             on_error="skip", max_error_fraction=0.5)  # fmt: skip
    assert summary.skipped["errors"] == 1 and sum(summary.skipped["by_reason"].values()) == 1
    assert set(pq.read_table(out).column("source").to_pylist()) == {f"scene/{PREFIX}"}
    assert summary.num_windows == 4 * 3


def test_embed_rejects_unusable_settings(crop, model, tmp_path):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        geofm_hf.embed(model, crop, tmp_path / "a.tif", stride=12, pooling="patch",
                       format="cog")  # fmt: skip
    with pytest.raises(ValueError, match="--pca applies to --format cog"):
        geofm_hf.embed(model, crop, tmp_path / "a.parquet", pca=3)
    (tmp_path / "exists.parquet").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        geofm_hf.embed(model, crop, tmp_path / "exists.parquet")


def test_shard_dataset_input_uses_each_chip(model, tmp_path):
    from geofm_hf.data import write_shards

    crop = write_crop(tmp_path / "scene")
    write_shards(crop, tmp_path / "shards", chip_size=64)
    summary = geofm_hf.embed(model, tmp_path / "shards", tmp_path / "e.parquet", progress=False)
    table = pq.read_table(tmp_path / "e.parquet")
    assert summary.num_windows == table.num_rows == 3 * 2  # whole 64 px chips of 240 x 144
    assert min(table.column("valid_fraction").to_pylist()) == 1.0


def test_pipeline_feature_extraction_multispectral_and_rgb(model, tmp_path):
    import torch
    from PIL import Image
    from transformers import pipeline

    from geofm_hf import GeoViTMAEImageProcessor, GeoViTMAEModel, select_input_bands

    pipe = pipeline("image-feature-extraction", model=str(model), trust_remote_code=True)
    array = np.random.default_rng(0).uniform(0, 3000, (13, 64, 64)).astype(np.float32)
    feats = np.array(pipe(array))
    net = GeoViTMAEModel.from_pretrained(model).eval()
    proc = GeoViTMAEImageProcessor.from_pretrained(model)
    with torch.no_grad():
        ref = net(**proc(array, return_tensors="pt")).last_hidden_state.numpy()
    np.testing.assert_allclose(feats, ref, atol=1e-4)
    # An RGB model (bands selected by name) takes PIL images through the stock route.
    select_input_bands(net, ["B04", "B03", "B02"])
    rgb_dir = tmp_path / "rgb"
    net.save_pretrained(rgb_dir)
    GeoViTMAEImageProcessor.from_model_config(net.config).save_pretrained(rgb_dir)
    rgb = pipeline("image-feature-extraction", model=str(rgb_dir), trust_remote_code=True)
    image = Image.fromarray((np.random.default_rng(1).uniform(0, 255, (64, 64, 3))).astype("uint8"))
    assert np.array(rgb(image)).shape == (1, 1 + 64, 48)


@pytest.mark.parametrize("pooling", ["cls", "mean", "patch"])
def test_embeddings_own_their_memory(model, pooling):
    """Rows wait in memory until their part is written: a row that is a view of the batch's
    hidden state (the CLS slice) kept all of it alive, so memory grew with the scene."""
    import torch

    from geofm_hf.inference.encoder import WindowEncoder as _Encoder
    from geofm_hf.inference.scenes import load_model

    loaded = load_model(model)
    encoder = _Encoder(loaded, pooling, torch.device("cpu"), bf16=False)
    size, channels = loaded.image_size, len(loaded.band_names)
    out = encoder(np.random.default_rng(0).uniform(0, 3000, (3, channels, size, size)))
    owner = out.base if out.base is not None else out
    held = owner.untyped_storage().nbytes() if isinstance(owner, torch.Tensor) else owner.nbytes
    assert held == out.nbytes, (pooling, held, out.nbytes)


def test_windows_read_in_narrow_blocks_equal_full_width_reads(crop, model, monkeypatch):
    """Reads are bounded in width (scenes.MAX_BLOCK_COLS): the windows are the same pixels."""
    from geofm_hf.inference import scenes

    bands = scenes.model_band_set(scenes.load_model(model))

    def windows():
        (scene,), sensors = scenes.open_scenes([crop])
        grid = scenes.open_grid(scene, bands, sensors[scene.source])
        try:
            return [(r, c, pix.copy()) for r, c, pix in scenes.iter_windows(grid, 64, 48)]
        finally:
            grid.close()

    wide = windows()
    monkeypatch.setattr(scenes, "MAX_BLOCK_COLS", 100)  # 1 or 2 windows per block, edges padded
    narrow = windows()
    assert [(r, c) for r, c, _ in narrow] == [(r, c) for r, c, _ in wide]
    assert len({c for _, c, _ in wide}) > 3
    for (_, _, a), (_, _, b) in zip(wide, narrow):
        np.testing.assert_array_equal(a, b)
