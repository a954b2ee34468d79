"""Embedding rasters: parts -> tiled GeoTIFF (windowed writes) -> Cloud-Optimised GeoTIFF.

Every step works a block of rows at a time, so a full Sentinel-2 tile's dense embedding never
sits in memory. PCA is exact: the mean and covariance of every embedding written are
accumulated in float64 while the parts are placed, then the components are projected blockwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from affine import Affine

from .._atomic import atomic_path
from .geometry import embedding_transform, window_origins

__all__ = ["assemble_cogs", "pca_components", "save_rgb_png", "write_cog"]

_BLOCK_ROWS = 256


class _Moments:
    """Streaming mean/covariance in float64."""

    def __init__(self, dim: int):
        self.n = 0
        self.sum = np.zeros(dim)
        self.outer = np.zeros((dim, dim))

    def update(self, x: np.ndarray) -> None:
        x = x.astype(np.float64)
        self.n += len(x)
        self.sum += x.sum(0)
        self.outer += x.T @ x

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.sum / max(self.n, 1)
        cov = self.outer / max(self.n, 1) - np.outer(mean, mean)
        return mean, cov


def pca_components(mean: np.ndarray, cov: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` principal axes ``(k, D)``, largest variance first, sign fixed so each
    axis's largest loading is positive (the same data always gives the same map)."""
    if not 1 <= k <= len(mean):
        raise ValueError(f"pca must be in 1..{len(mean)} (the embedding width): found {k}.")
    values, vectors = np.linalg.eigh(cov)
    comps = vectors[:, np.argsort(values)[::-1][:k]].T  # (k, D)
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(1)])
    return comps * signs[:, None]


def write_cog(src_path: Path, dst: Path) -> None:
    """Copy a tiled GeoTIFF (tags, band descriptions and all) to a COG (deflate, internal
    overviews), atomically."""
    import rasterio
    from rasterio.shutil import copy as rio_copy

    with rasterio.open(src_path) as src:
        big = max(src.width, src.height)
        floating = np.dtype(src.dtypes[0]).kind == "f"
    # Small rasters get small blocks so they still carry overviews (what COG readers page).
    block = 512 if big >= 4096 else (256 if big >= 1024 else 128)
    with atomic_path(dst) as tmp:
        # Class maps (integers) get nearest-neighbour overviews: an averaged class is no class.
        rio_copy(src_path, tmp, driver="COG", compress="DEFLATE",
                 predictor="3" if floating else "2", blocksize=block,
                 overview_resampling="average" if floating else "nearest",
                 bigtiff="IF_SAFER")  # fmt: skip


def _stage(path: Path, width: int, height: int, count: int, crs, transform: Affine):
    import rasterio

    return rasterio.open(
        path, "w+", driver="GTiff", width=width, height=height, count=count, dtype="float32",
        crs=crs, transform=transform, nodata=np.nan, tiled=True, blockxsize=256, blockysize=256,
        BIGTIFF="IF_SAFER",
    )  # fmt: skip


def _place_parts(ds, parts, *, dim, window, stride, pooling, patch, rows, cols, moments):
    """Write every window of ``parts`` into the staged raster ``ds`` (band ``dim + 1`` counts
    patch overlaps)."""
    from rasterio.windows import Window

    g = window // patch
    col_index = {c: j for j, c in enumerate(cols)}
    row_index = {r: i for i, r in enumerate(rows)}
    for part in parts:
        t = pq.read_table(part, columns=["row", "col", "embedding"])
        r_px = t.column("row").to_numpy()
        c_px = t.column("col").to_numpy()
        flat = t.column("embedding").combine_chunks().values.to_numpy(zero_copy_only=False)
        if pooling != "patch":
            emb = flat.reshape(len(r_px), dim)
            moments.update(emb)
            i = np.array([row_index[r] for r in r_px])
            j = np.array([col_index[c] for c in c_px])
            i0, i1 = i.min(), i.max() + 1
            win = Window(0, i0, ds.width, i1 - i0)
            block = ds.read(window=win)  # (D, rows, W), NaN where not yet written
            block[:, i - i0, j] = emb.T
            ds.write(block, window=win)
        else:
            emb = flat.reshape(len(r_px), dim, g, g)
            moments.update(emb.transpose(0, 2, 3, 1).reshape(-1, dim))
            p0 = int(r_px.min()) // patch
            p1 = min(int(r_px.max()) // patch + g, ds.height)
            win = Window(0, p0, ds.width, p1 - p0)
            block = np.nan_to_num(ds.read(window=win))  # (D + 1, rows, W)
            for k in range(len(r_px)):
                a, b = int(r_px[k]) // patch - p0, int(c_px[k]) // patch
                block[:dim, a : a + g, b : b + g] += emb[k]
                block[dim, a : a + g, b : b + g] += 1
            ds.write(block.astype(np.float32), window=win)


def assemble_cogs(staging: Path, output: Path, grids: dict[int, dict[str, Any]], *, dim: int,
                  window: int, stride: int, pooling: str, patch: int, pca: int | None,
                  preview: bool, tags: dict[str, Any]) -> tuple[list[str], str | None]:  # fmt: skip
    """One COG per scene (``OUT.tif``, or ``OUT_<scene>.tif`` for several) and a PCA-RGB PNG
    of the first scene beside it."""
    import rasterio
    from rasterio.crs import CRS
    from rasterio.windows import Window

    if not grids:
        for grid_file in sorted(staging.glob("s*.grid.json")):
            grids[int(grid_file.name[1:6])] = json.loads(grid_file.read_text())
    outputs: list[str] = []
    preview_path = None
    done = [i for i in sorted(grids) if list(staging.glob(f"s{i:05d}-*.parquet"))]
    for idx in done:
        info = grids[idx]
        crs = CRS.from_wkt(info["crs"])
        transform = Affine(*info["transform"])
        rows = window_origins(info["height"], window, stride)
        cols = window_origins(info["width"], window, stride)
        if pooling == "patch":
            width, height = (cols[-1] + window) // patch, (rows[-1] + window) // patch
        else:
            width, height = len(cols), len(rows)
        out_transform = embedding_transform(transform, window, stride, pooling, patch)
        dst = output if len(done) == 1 else output.with_name(
            f"{output.stem}_{info['scene_id']}{output.suffix or '.tif'}")  # fmt: skip
        stage = staging / f"s{idx:05d}.stage.tif"
        moments = _Moments(dim)
        extra = 1 if pooling == "patch" else 0
        with _stage(stage, width, height, dim + extra, crs, out_transform) as ds:
            _place_parts(ds, sorted(staging.glob(f"s{idx:05d}-*.parquet")), dim=dim,
                         window=window, stride=stride, pooling=pooling, patch=patch, rows=rows,
                         cols=cols, moments=moments)  # fmt: skip
        mean, cov = moments.mean_cov()
        comps = pca_components(mean, cov, pca) if pca else None
        rgb_comps = comps[:3] if comps is not None and len(comps) >= 3 else (
            pca_components(mean, cov, 3) if dim >= 3 else None)  # fmt: skip
        final_count = len(comps) if comps is not None else dim
        final = staging / f"s{idx:05d}.final.tif"
        rgb = (
            np.full((3, height, width), np.nan, np.float32)
            if preview and rgb_comps is not None
            else None
        )
        with rasterio.open(stage) as src, _stage(final, width, height, final_count, crs,
                                                 out_transform) as out:  # fmt: skip
            for r0 in range(0, height, _BLOCK_ROWS):
                win = Window(0, r0, width, min(_BLOCK_ROWS, height - r0))
                block = src.read(window=win).astype(np.float64)  # (D [+1], h, W)
                if extra:
                    count = block[dim]
                    with np.errstate(invalid="ignore", divide="ignore"):
                        block = np.where(count > 0, block[:dim] / count, np.nan)
                x = block.reshape(dim, -1).T  # (h * W, D)
                if comps is not None:
                    values = ((x - mean) @ comps.T).T
                else:
                    values = x.T
                out.write(values.reshape(final_count, win.height, width).astype(np.float32),
                          window=win)  # fmt: skip
                if rgb is not None:
                    rgb[:, r0 : r0 + win.height] = ((x - mean) @ rgb_comps.T).T.reshape(
                        3, win.height, width)  # fmt: skip
            names = ([f"pc{k + 1}" for k in range(final_count)] if comps is not None
                     else [f"emb{k:04d}" for k in range(final_count)])  # fmt: skip
            out.descriptions = tuple(names)
            cog_tags = dict(tags, source=info["source"], pca=pca or "none",
                            band_meaning="principal components" if comps is not None
                            else "embedding dimensions")  # fmt: skip
            out.update_tags(**{k: str(v) for k, v in cog_tags.items()})
        write_cog(final, Path(dst))
        outputs.append(str(dst))
        if rgb is not None and preview_path is None:
            preview_path = str(Path(dst).with_suffix(".png"))
            save_rgb_png(rgb, preview_path)
    return outputs, preview_path


def save_rgb_png(rgb: np.ndarray, path: str | os.PathLike, max_side: int = 2048) -> None:
    """``(3, H, W)`` floats -> PNG, each channel stretched between its 2nd and 98th percentile;
    NaN pixels black. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = max(1, int(np.ceil(max(rgb.shape[1:]) / max_side)))
    rgb = rgb[:, ::step, ::step]
    out = np.zeros(rgb.shape, np.float32)
    for c in range(3):
        ch = rgb[c]
        ok = np.isfinite(ch)
        if ok.any():
            lo, hi = np.percentile(ch[ok], [2, 98])
            out[c] = np.clip((np.nan_to_num(ch, nan=lo) - lo) / max(hi - lo, 1e-12), 0, 1)
            out[c][~ok] = 0
    with atomic_path(path) as tmp:
        plt.imsave(tmp, out.transpose(1, 2, 0), format="png")
