"""Whole-scene inference plumbing: load a checkpoint, lay windows over scenes, read them lazily.

Scenes are discovered exactly as ``geofm-make-shards`` discovers them (files, folders, globs,
per-band files grouped by scene prefix); each scene is brought onto one grid (the finest band's)
through a ``WarpedVRT`` and read one block of windows at a time (one window row high, at most
:data:`MAX_BLOCK_COLS` columns wide), so what is held is bounded whatever the scene's size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from ..data.format import BadInputError
from .geometry import window_origins

__all__ = ["LoadedModel", "SceneGrid", "load_model", "open_scenes", "window_origins"]

# Widest block of windows read at once: 13 bands x 64 rows x 2048 columns of float32 is 6.8 MB,
# and GDAL's warp buffers follow the request, so a 10980-px Sentinel-2 tile costs what a small
# crop does.
MAX_BLOCK_COLS = 2048


@dataclass
class LoadedModel:
    """A checkpoint ready for inference, with where it came from."""

    model: Any
    processor: Any
    model_id: str
    revision: str | None
    band_names: list[str]
    image_size: int
    patch_size: int


def load_model(model: str | os.PathLike, revision: str | None = None, cls=None) -> LoadedModel:
    """Load ``model`` (a local export folder or a Hub repo id at ``revision``).

    A Hub model is downloaded once (``snapshot_download``) and the commit it resolved to is
    recorded as the revision, so every output names the exact weights that produced it.
    """
    from ..image_processing_geofm import GeoViTMAEImageProcessor
    from ..modeling_geofm import GeoViTMAEModel

    cls = cls or GeoViTMAEModel
    path = Path(model)
    text = str(model)
    if path.is_dir():
        local, model_id = path, text
    elif path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise FileNotFoundError(
            f"model {text!r} is neither a local export folder nor a Hub repo id (ORG/NAME)"
        )
    else:
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(str(model), revision=revision))
        model_id = str(model)
        revision = local.name  # snapshots/<commit sha>
    loaded = cls.from_pretrained(local)
    loaded.eval()
    processor = GeoViTMAEImageProcessor.from_pretrained(local)
    # Windows are cut at the model's input size: the processor must never resize or crop them.
    processor.size = None
    processor.crop_size = None
    config = loaded.config
    bands = list(processor.band_names or config.band_names or [])
    if not bands:
        raise ValueError(
            f"{model}: neither the config nor the image processor names the input bands; "
            "expected band_names so scene bands can be matched by name."
        )
    return LoadedModel(loaded, processor, model_id, revision, bands, config.image_size,
                       config.patch_size)  # fmt: skip


@dataclass
class SceneGrid:
    """One scene on its common grid, open for windowed reads."""

    scene: Any
    source: str
    datetime: str | None
    crs: Any
    transform: Affine
    width: int
    height: int
    band_names: list[str]
    _vrts: list[Any] = field(default_factory=list)
    _bidx: list[int] = field(default_factory=list)
    _nodata: list[float | None] = field(default_factory=list)
    _srcs: list[Any] = field(default_factory=list)

    def read_block(
        self, row0: int, rows: int, col0: int = 0, cols: int | None = None
    ) -> np.ndarray:
        """Rows ``row0 .. row0 + rows``, columns ``col0 .. col0 + cols`` (default: to the right
        edge) of every band, float32 ``(C, rows, cols)``; pixels outside the scene or equal to
        nodata are NaN."""
        from rasterio.windows import Window

        cols = self.width - col0 if cols is None else cols
        out = np.full((len(self._vrts), rows, cols), np.nan, dtype=np.float32)
        take = max(0, min(rows, self.height - row0))
        take_cols = max(0, min(cols, self.width - col0))
        if take == 0 or take_cols == 0:
            return out
        for b, (vrt, bidx, nd) in enumerate(zip(self._vrts, self._bidx, self._nodata)):
            try:
                data = vrt.read(bidx, window=Window(col0, row0, take_cols, take))
            except Exception as err:
                raise BadInputError(
                    "unreadable_band",
                    f"band {self.band_names[b]} of {self.source} failed to read at rows "
                    f"{row0}..{row0 + take}, columns {col0}..{col0 + take_cols}: {err}",
                ) from err
            block = data.astype(np.float32)
            if nd is not None and not np.isnan(nd):
                block[data == nd] = np.nan
            out[b, :take, :take_cols] = block
        return out

    def close(self) -> None:
        for handle in (*self._vrts, *self._srcs):
            handle.close()
        self._vrts, self._srcs = [], []


def open_scenes(inputs, band_files=None) -> list[Any]:
    """The scenes of ``inputs`` (files, folders, globs), grouped as the shard writer groups them."""
    from ..data.scenes import find_scenes

    return find_scenes(inputs, band_files)


def open_grid(scene, band_names: Sequence[str], resolution: float | None = None) -> SceneGrid:
    """Open ``scene`` and bring the bands ``band_names`` (model order) onto one grid."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    from ..bands import detect_sensor
    from ..data.band_resolution import resolve_band_names
    from ..data.grid import target_grid
    from ..data.scenes import open_raster

    srcs = []
    try:
        paths = [scene.multiband] if scene.multiband else list(scene.band_files.values())
        for path in paths:
            srcs.append(open_raster(path))
        sensor = None if scene.multiband else detect_sensor(list(scene.band_files))
        selected = resolve_band_names(scene, srcs, list(band_names), sensor)
        crs, transform, width, height, _ = target_grid([s for _, s, _ in selected], resolution)
        vrts = [
            WarpedVRT(s, crs=crs, transform=transform, width=width, height=height,
                      resampling=Resampling.nearest)
            for _, s, _ in selected
        ]  # fmt: skip
    except BaseException:
        for src in srcs:
            src.close()
        raise
    return SceneGrid(
        scene=scene,
        source=scene.source,
        datetime=scene.datetime,
        crs=crs,
        transform=transform,
        width=width,
        height=height,
        band_names=list(band_names),
        _vrts=vrts,
        _bidx=[i for _, _, i in selected],
        _nodata=[s.nodatavals[i - 1] for _, s, i in selected],
        _srcs=srcs,
    )


def iter_windows(
    grid: SceneGrid, window: int, stride: int, skip: set[tuple[int, int]] | None = None
) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(row, col, pixels (C, window, window) float32, NaN = missing)`` in row-major order.

    Each window row is read in blocks of at most :data:`MAX_BLOCK_COLS` columns (or one window,
    if wider); ``skip`` holds ``(row, col)`` pixel offsets already done (a resumed run), whose
    blocks are not even read when every window of a block is done.
    """
    rows = window_origins(grid.height, window, stride)
    cols = window_origins(grid.width, window, stride)
    span = max(MAX_BLOCK_COLS, window)
    for r in rows:
        todo = [c for c in cols if not skip or (r, c) not in skip]
        while todo:
            first = todo[0]
            chunk = [c for c in todo if c + window <= first + span]
            todo = todo[len(chunk) :]
            block = grid.read_block(r, window, first, chunk[-1] + window - first)
            for c in chunk:
                yield r, c, block[:, :, c - first : c - first + window]
