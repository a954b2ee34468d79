"""Whole-scene inference plumbing: load a checkpoint, lay windows over scenes, read them lazily.

Scenes are discovered and their bands named exactly as ``geofm-make-shards`` does it (the same
flags, sensor evidence, fill values and QA masks: :mod:`geofm_hf.data.band_resolution`); the
model's bands are taken by sensor and wavelength (:func:`geofm_hf.bands.match_bands`); each scene is brought onto one grid (the finest band's)
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

__all__ = [
    "LoadedModel",
    "SceneGrid",
    "SceneReading",
    "check_scenes",
    "load_model",
    "model_band_set",
    "open_grid",
    "open_scenes",
    "window_origins",
]

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
    try:
        loaded, info = cls.from_pretrained(local, output_loading_info=True)
    except OSError as err:  # a shard dataset or another folder: no config.json or no weights
        raise BadInputError(
            "not_a_model",
            f"model {text} is not a model export (a folder or Hub repo with config.json and "
            f"model.safetensors): {' '.join(str(err).split())[:300].rstrip('.')}. Pass an export folder "
            "(OUTPUT_DIR/final) or an ORG/NAME model repo.",
        ) from None
    # A head that was not in the export was initialised at random: its outputs would look like
    # a map and mean nothing (a pretraining export given to geofm-segment).
    prefix = f"{loaded.base_model_prefix}."
    untrained = sorted(k for k in info.get("missing_keys", []) if not k.startswith(prefix))
    if cls is not GeoViTMAEModel and untrained:
        architectures = ", ".join(getattr(loaded.config, "architectures", None) or ["?"])
        raise BadInputError(
            "untrained_head",
            f"{model} is a {architectures} export without the {cls.__name__} head this tool "
            f"needs ({len(untrained)} tensors missing, first: {untrained[0]}); a head "
            "initialised at random would give a map that means nothing. Train one first "
            "(recipes/segment.py --model_name_or_path ...) and pass its output folder.",
        )
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
    sensor: str | None = None  # the scene's sensor, as the shard writer identifies it
    input_bands: list[str] = field(default_factory=list)  # scene band fed to each model band
    wavelengths_um: list[float] | None = None  # of input_bands, from the sensor's table
    _vrts: list[Any] = field(default_factory=list)
    _bidx: list[int] = field(default_factory=list)
    _nodata: list[list[float]] = field(default_factory=list)
    _srcs: list[Any] = field(default_factory=list)
    _qa: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def scene_id(self) -> str:
        return self.scene.scene_id

    @property
    def datetimes(self) -> list[str | None]:
        """The date of each frame the model sees: one, this scene's."""
        return [self.datetime]

    def read_block(
        self, row0: int, rows: int, col0: int = 0, cols: int | None = None
    ) -> np.ndarray:
        """Rows ``row0 .. row0 + rows``, columns ``col0 .. col0 + cols`` (default: to the right
        edge) of every band, float32 ``(C, rows, cols)``; pixels outside the scene, equal to a
        fill value of their band, or flagged by a QA mask are NaN (in every band)."""
        from rasterio.windows import Window

        from ..bands import qa_invalid

        cols = self.width - col0 if cols is None else cols
        out = np.full((len(self._vrts), rows, cols), np.nan, dtype=np.float32)
        take = max(0, min(rows, self.height - row0))
        take_cols = max(0, min(cols, self.width - col0))
        if take == 0 or take_cols == 0:
            return out
        window = Window(col0, row0, take_cols, take)
        for b, (vrt, bidx, fills) in enumerate(zip(self._vrts, self._bidx, self._nodata)):
            try:
                data = vrt.read(bidx, window=window)
            except Exception as err:
                raise BadInputError(
                    "unreadable_band",
                    f"band {self.band_names[b]} of {self.source} failed to read at rows "
                    f"{row0}..{row0 + take}, columns {col0}..{col0 + take_cols}: {err}",
                ) from err
            block = data.astype(np.float32)
            for value in fills:
                block[data == value] = np.nan
            block[~np.isfinite(block)] = np.nan
            out[b, :take, :take_cols] = block
        for kind, vrt in self._qa:
            flagged = qa_invalid(kind, vrt.read(1, window=window))
            out[:, :take, :take_cols][:, flagged] = np.nan
        return out

    def close(self) -> None:
        for handle in (*self._vrts, *(v for _, v in self._qa), *self._srcs):
            handle.close()
        self._vrts, self._srcs, self._qa = [], [], []


@dataclass(frozen=True)
class SceneReading:
    """How the input rasters are read: the flags ``geofm-make-shards`` takes, with its meaning
    (:func:`geofm_hf.data.cli.add_scene_arguments`)."""

    band_names: Sequence[str] | None = None
    sensor: str | None = None
    filename_pattern: str | None = None
    band_files: Any = None
    nodata: float | None = None
    qa_masks: bool = True


def open_scenes(inputs, reading: SceneReading | None = None,
                on_error: str = "raise") -> tuple[list[Any], dict[str, str | None]]:  # fmt: skip
    """The scenes of ``inputs`` (files, folders, globs) and the sensor of each, discovered as the
    shard writer discovers them (:func:`geofm_hf.data.band_resolution.discover_scenes`)."""
    from ..bands import resolve_sensor
    from ..data.band_resolution import discover_scenes

    reading = reading or SceneReading()
    sensor = resolve_sensor(reading.sensor) if reading.sensor else None
    return discover_scenes(inputs, reading.band_files, reading.filename_pattern,
                           reading.band_names, None, sensor, on_error)  # fmt: skip


def model_band_set(loaded: LoadedModel):
    """The model's bands as a :class:`~geofm_hf.bands.BandSet`: its names, and the wavelengths
    its config records (else its names' sensor table, where the names say which sensor)."""
    from ..bands import BandMatchError, BandSet

    wavelengths = getattr(loaded.model.config, "wavelengths_um", None)
    if wavelengths is not None and len(wavelengths) != len(loaded.band_names):
        wavelengths = None
    try:
        return BandSet.of(loaded.band_names, wavelengths_um=wavelengths, label="the model",
                          hint="record its bands' wavelengths in its config (wavelengths_um)")  # fmt: skip
    except BandMatchError as err:
        raise BadInputError("band_mismatch", str(err)) from None


def check_scenes(scenes, sensors: dict[str, str | None], model, reading: SceneReading,
                 policy) -> None:  # fmt: skip
    """Match every scene's bands to ``model`` from the headers, before anything is written:
    a scene that cannot feed the model is recorded in ``policy`` (raised under ``raise``)."""
    from ..data.band_resolution import resolve_model_bands
    from ..data.scenes import open_raster

    for scene in scenes:
        srcs = []
        try:
            for path in scene.paths:
                srcs.append(open_raster(path))
            resolve_model_bands(scene, srcs, model, sensors.get(scene.source),
                                reading.band_names)  # fmt: skip
        except BadInputError as err:
            policy.record(err, scene.source)
        finally:
            for src in srcs:
                src.close()


def open_grid(scene, model, sensor: str | None = None, reading: SceneReading | None = None,
              resolution: float | None = None, target: tuple | None = None) -> SceneGrid:  # fmt: skip
    """Open ``scene`` and bring the bands ``model`` takes (a :class:`~geofm_hf.bands.BandSet`,
    matched by sensor and wavelength) onto one grid, in the model's order, with the writer's
    validity: nodata, the sensor's fill values and the scene's QA masks read as NaN. The grid
    is the finest band's, or ``target`` ``(crs, transform, width, height)`` (another date of a
    scene stack)."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    from ..bands import band_wavelengths
    from ..data.band_resolution import band_fill_values, qa_mask_sources, resolve_model_bands
    from ..data.grid import target_grid
    from ..data.scenes import open_raster

    reading = reading or SceneReading()
    srcs = []
    try:
        for path in scene.paths:
            srcs.append(open_raster(path))
        selected = resolve_model_bands(scene, srcs, model, sensor, reading.band_names)
        crs, transform, width, height = (
            target or target_grid([s for _, s, _ in selected], resolution)[:4]
        )
        qa = []
        if reading.qa_masks:
            for kind, path in qa_mask_sources(scene, sensor):
                srcs.append(open_raster(path))
                qa.append((kind, srcs[-1]))

        def warp(src):
            return WarpedVRT(src, crs=crs, transform=transform, width=width, height=height,
                             resampling=Resampling.nearest)  # fmt: skip

        vrts = [warp(s) for _, s, _ in selected]
        qa_vrts = [(kind, warp(q)) for kind, q in qa]
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
        band_names=list(model.names),
        sensor=sensor,
        input_bands=[n for n, _, _ in selected],
        wavelengths_um=band_wavelengths([n for n, _, _ in selected], sensor) if sensor else None,
        _vrts=vrts,
        _bidx=[i for _, _, i in selected],
        _nodata=[band_fill_values(s, i, sensor, reading.nodata) for _, s, i in selected],
        _srcs=srcs,
        _qa=qa_vrts,
    )


def iter_windows(
    grid: SceneGrid, window: int, stride: int, skip: set[tuple[int, int]] | None = None
) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(row, col, pixels (C, window, window) float32, NaN = missing)`` in row-major order
    (``(T, C, window, window)`` from a scene stack).

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
                yield r, c, block[..., c - first : c - first + window]
