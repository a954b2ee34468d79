"""Shared by the interop tests: the skip outside the interop venv, a tiny export, tiny chips.

These tests run inside the venv of ``scripts/interop_venv.sh`` (TerraTorch, timm and a torch
that their torchvision loads with). Elsewhere they skip, saying so.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import geofm_hf
from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining

SAMPLE = Path(geofm_hf.__file__).parent / "sample_data" / "s2_osm_landuse"
S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
# The same 13 Sentinel-2 bands under TerraTorch's HLSBands names, in the same order.
S2_TERRATORCH = ["COASTAL_AEROSOL", "BLUE", "GREEN", "RED", "RED_EDGE_1", "RED_EDGE_2",
                 "RED_EDGE_3", "NIR_BROAD", "NIR_NARROW", "WATER_VAPOR", "CIRRUS", "SWIR_1",
                 "SWIR_2"]  # fmt: skip


def require(name: str):
    """The module ``name``, or a module-level skip that says where these tests run."""
    try:
        return importlib.import_module(name)
    except Exception as error:  # a torchvision built for another torch raises RuntimeError
        pytest.skip(
            f"{name} does not import here ({type(error).__name__}: {error}); the interop tests "
            "run in the venv of scripts/interop_venv.sh: "
            "`bash scripts/interop_venv.sh && .venv-interop/bin/python -m pytest tests/interop`",
            allow_module_level=True,
        )


def statistics() -> tuple[list[float], list[float]]:
    """Per-band mean and std of the bundled sample (raw Sentinel-2 L1C digital numbers)."""
    meta = json.loads((SAMPLE / "geofm_dataset.json").read_text())
    return [float(m) for m in meta["mean"]], [float(s) for s in meta["std"]]


def tiny_export(path: Path, seed: int = 0, **overrides) -> Path:
    """A `tiny` preset pretraining export on the sample's 16 x 16 Sentinel-2 chips."""
    mean, std = statistics()
    fields = dict(
        band_names=S2,
        image_mean=mean,
        image_std=std,
        image_size=16,
        patch_size=4,
        layer_norm_eps=1e-6,
    )
    config = GeoViTMAEConfig.from_preset("tiny", **{**fields, **overrides})
    torch.manual_seed(seed)
    GeoViTMAEForPreTraining(config).save_pretrained(path)
    return path


def sample_chips(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` training chips ``(N, 13, 16, 16)`` uint16 and their class labels."""
    table = pq.read_table(next((SAMPLE / "data").glob("train-*.parquet"))).slice(0, count)
    rows = table.to_pylist()
    images = np.stack(
        [np.frombuffer(r["image"], r["dtype"]).reshape(r["shape"]) for r in rows]
    )  # (N, C, H, W)
    return images, np.array([r["label"] for r in rows])


def ndvi(images: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` NDVI from B08 (NIR) and B04 (red): a per-pixel target the chips carry."""
    nir, red = images[:, S2.index("B08")].astype("float32"), images[:, S2.index("B04")]
    return (nir - red) / (nir + red + 1.0)


def write_tif(path: Path, array: np.ndarray) -> None:
    import rasterio
    from rasterio.transform import from_origin

    array = array if array.ndim == 3 else array[None]
    profile = dict(driver="GTiff", width=array.shape[-1], height=array.shape[-2],
                   count=array.shape[0], dtype=array.dtype,
                   transform=from_origin(0, array.shape[-2], 1, 1))  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as out:
        out.write(array)
