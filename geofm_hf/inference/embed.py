"""``geofm-embed``: an embedding per window of whole scenes, as GeoParquet or a COG.

Pipeline: scenes (rasters, or a shard dataset) -> windows of the model's input size every
``stride`` px, read a strip at a time -> batches through the image processor and the encoder
(bf16 autocast where the hardware multiplies bf16 natively) -> parts of <= ``part_rows`` windows
written atomically to ``OUT.partial/`` -> assembled into ``OUT`` when every scene is done.
The parts are what ``--resume`` keeps: a killed run restarts at the first window not yet in a
part. A scene that fails is dropped whole, recorded, and (``on_error="skip"``) the run goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from .._atomic import atomic_path, is_disk_full
from .._errors import DiskFullError
from ..data.error_policy import ErrorPolicy
from ..data.format import BadInputError
from ._cli import USER_ERRORS, Parser, fraction, positive_int, report
from .encoder import WindowEncoder, use_bf16
from .geometry import embedding_transform
from .geoparquet import BBOX_TYPE, bbox_polygons_wkb, geo_metadata
from .scenes import (
    SceneGrid,
    SceneReading,
    check_scenes,
    iter_windows,
    load_model,
    model_band_set,
    open_grid,
    open_scenes,
)

__all__ = ["EmbedSummary", "embed", "embedding_transform", "main"]

logger = logging.getLogger(__name__)

POOLINGS = ("cls", "mean", "patch")
FORMATS = ("parquet", "cog")
_MANIFEST = "manifest.json"


@dataclass
class EmbedSummary:
    """What an :func:`embed` run produced."""

    output: list[str]
    num_windows: int
    num_windows_resumed: int
    skipped: dict[str, Any]
    empty_windows: int
    seconds: float
    dim: int
    bf16: bool
    preview: str | None = None
    per_scene: dict[str, int] = field(default_factory=dict)

    @property
    def windows_per_s(self) -> float:
        return (self.num_windows - self.num_windows_resumed) / max(self.seconds, 1e-9)


def _part_schema(dim: int) -> pa.Schema:
    return pa.schema([
        ("source", pa.string()), ("row", pa.int32()), ("col", pa.int32()),
        ("datetime", pa.string()), ("valid_fraction", pa.float32()),
        ("xmin", pa.float64()), ("ymin", pa.float64()), ("xmax", pa.float64()),
        ("ymax", pa.float64()), ("embedding", pa.list_(pa.float32(), dim)),
    ])  # fmt: skip


def _window_sources(inputs, reading: SceneReading, on_error: str):
    """``("rasters", scenes, {source: sensor})`` or ``("shards", [dataset path or id], {})``."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    from ..data.format import DATASET_INFO_FILE

    if len(items) == 1 and not reading.band_files:
        text = str(items[0])
        if Path(text).is_dir() and (Path(text) / DATASET_INFO_FILE).exists():
            return "shards", [Path(text)], {}
        if not Path(text).exists() and text.count("/") == 1 and not any(c in text for c in "*?["):
            return "shards", [text], {}  # a Hub dataset repo id
    return "rasters", *open_scenes(items, reading, on_error)


def _iter_shard_chips(source, revision, window: int) -> Iterator[tuple[str, dict, np.ndarray]]:
    """Chips of a geofm shard dataset (every split) as ``(split, meta, pixels)``; ``meta`` holds
    the chip's ``temporal_coords`` ``(T, 2)`` and ``location_coords`` ``(2,)`` (NaN = unknown)
    beside its columns."""
    from ..data import decode_batch, read_dataset_info
    from ..data.format import chip_metadata

    info = read_dataset_info(source, revision=revision)
    if info.chip_size != window:
        raise ValueError(
            f"{source}: chips are {info.chip_size} px, the model takes {window} px windows; "
            "expected shards cut at the model's image_size (geofm-make-shards --chip-size)."
        )
    for split, shards in info.shards.items():
        for shard in shards:
            if isinstance(source, Path):
                file = source / shard["file"]
            else:
                from huggingface_hub import hf_hub_download

                file = hf_hub_download(str(source), shard["file"], repo_type="dataset",
                                       revision=revision)  # fmt: skip
            table = pq.read_table(file)
            images = decode_batch(table)  # (N, C, H, W) or a series' (N, T, C, H, W)
            frames = images.shape[1] if images.ndim == 5 else 1
            times, places = chip_metadata(table, np.arange(table.num_rows), frames)
            cols = table.select(["source", "chip_id", "bounds", "crs", "datetime", "band_names"])
            for i, meta in enumerate(cols.to_pylist()):
                meta.update(temporal_coords=times[i], location_coords=places[i])
                yield split, meta, images[i]


def embed(
    model: str | os.PathLike,
    inputs,
    output: str | os.PathLike,
    *,
    revision: str | None = None,
    dataset_revision: str | None = None,
    stride: int | None = None,
    pooling: str = "cls",
    format: str = "parquet",
    pca: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    dtype: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    on_error: str = "raise",
    max_error_fraction: float = 0.05,
    band_files=None,
    band_names=None,
    sensor: str | None = None,
    filename_pattern: str | None = None,
    nodata: float | None = None,
    qa_masks: bool = True,
    part_rows: int = 4096,
    progress: bool = True,
    preview: bool = True,
) -> EmbedSummary:
    """Embed every window of ``inputs`` with ``model`` and write ``output``.

    Args:
        model: local export folder or Hub model repo id; ``revision`` pins the Hub commit.
        inputs: raster files / folders / globs, read as ``geofm-make-shards`` reads them:
            per-band files grouped by scene (``<scene>_B<n>``, ``filename_pattern``, or
            ``band_files`` mapping bands explicitly), multi-band files named by their band
            descriptions or ``band_names``, the sensor from ``sensor`` or evidence (product ids),
            invalid pixels from nodata, ``nodata``, the sensor's fill values and (``qa_masks``)
            the scene's cloud/QA masks. Or one shard dataset made by ``geofm-make-shards``
            (folder or Hub dataset id, at ``dataset_revision``; its chips are the windows).
            Scene bands feed the model's by sensor and wavelength, never by bare name.
        output: ``OUT.parquet`` (GeoParquet 1.1) or, with ``format="cog"``, ``OUT.tif``.
        stride: step between windows in pixels (default: the window size; smaller overlaps).
        pooling: ``cls`` token, ``mean`` of patch tokens, or ``patch`` (one embedding per patch:
            a dense raster at patch resolution; in Parquet one row per patch).
        pca: with ``format="cog"``, keep the first ``pca`` principal components (fit exactly on
            every embedding written) instead of every dimension.
        resume: continue an interrupted run from ``OUT.partial/`` (same model and settings).
        on_error: ``raise`` at the first bad scene, or ``skip`` it (counted in the summary) and
            stop only past ``max_error_fraction`` of the scenes.
    """
    start = time.perf_counter()
    _check_options(pooling, format, pca)
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it.")
    loaded = load_model(model, revision)
    window = loaded.image_size
    stride = _check_stride(stride or window, pooling, loaded.patch_size)
    reading = SceneReading(band_names, sensor, filename_pattern, band_files, nodata, qa_masks)
    kind, sources, sensors = _window_sources(inputs, reading, on_error)
    model_bands = model_band_set(loaded)
    if kind == "shards" and format == "cog":
        raise ValueError(
            "format='cog' needs raster scenes (one regular grid per scene); a shard dataset "
            "holds separate chips: use format='parquet' for it."
        )
    wanted = _check_metadata(loaded.model.config, kind, sources, dataset_revision)
    torch_device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    )
    bf16 = use_bf16(dtype, torch_device)
    encoder = WindowEncoder(loaded, pooling, torch_device, bf16)
    dim = loaded.model.config.hidden_size
    g = window // loaded.patch_size

    scene_keys = [s.source for s in sources] if kind == "rasters" else [str(sources[0])]
    policy = ErrorPolicy(on_error, max_error_fraction, len(scene_keys))
    if kind == "rasters":
        # Every scene's bands are matched to the model before OUT.partial/ exists: a scene that
        # cannot feed the model writes nothing.
        check_scenes(sources, sensors, model_bands, reading, policy)
    manifest = {
        "model_id": loaded.model_id, "model_revision": loaded.revision, "window": window,
        "stride": stride, "pooling": pooling, "dim": dim, "scenes": scene_keys,
        "format": format, "pca": pca,
    }  # fmt: skip
    staging = _open_staging(output, manifest, resume)

    from tqdm.auto import tqdm

    bar = tqdm(desc="embed", unit="win", disable=not progress, total=0)
    parts = _PartWriter(encoder, staging, dim * g * g if pooling == "patch" else dim,
                        batch_size, part_rows, bar)  # fmt: skip
    # A full disk, wherever met (a part, the assembled output), is reported on OUT.
    with _disk_full_names(output, staging):
        try:
            if kind == "rasters":
                bad = {item["item"] for item in policy.items}
                todo = [(i, s) for i, s in enumerate(sources) if s.source not in bad]
                tally = _embed_scenes(todo, sensors, reading, model_bands, window, stride, format,
                                      parts, policy)  # fmt: skip
            else:
                tally = _embed_shards(sources[0], dataset_revision, model_bands, window, parts,
                                      policy, wanted)  # fmt: skip
        except Exception:
            # What --resume would keep is the finished parts; a run that finished none leaves none.
            if not any(staging.glob("s*-*.parquet")):
                shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            bar.close()
        if not tally.per_scene:
            raise BadInputError(
                "no_output", f"no scene could be embedded; skipped: {policy.summary()}"
            )
        meta = {"model_id": loaded.model_id, "model_revision": loaded.revision, "pooling": pooling,
                "window": window, "stride": stride, "scene_bands": tally.bands}  # fmt: skip
        outputs: list[str] = []
        preview_path = None
        if format == "parquet":
            _assemble_parquet(staging, output, tally.crs, dim, g, loaded, pooling, meta)
            outputs.append(str(output))
        else:
            from .cog import assemble_cogs

            outputs, preview_path = assemble_cogs(
                staging, output, tally.grids, dim=dim, window=window, stride=stride, pooling=pooling,
                patch=loaded.patch_size, pca=pca, preview=preview, tags=meta,
            )  # fmt: skip
        shutil.rmtree(staging)
        return EmbedSummary(
            output=outputs,
            num_windows=tally.windows + tally.resumed,
            num_windows_resumed=tally.resumed,
            skipped=policy.summary(),
            empty_windows=tally.empty,
            seconds=time.perf_counter() - start,
            dim=dim,
            bf16=bf16,
            preview=preview_path,
            per_scene=tally.per_scene,
        )


@contextlib.contextmanager
def _disk_full_names(output: Path, staging: Path) -> Iterator[None]:
    """A full disk met in the block as one :class:`DiskFullError` naming ``output``, saying
    whether finished parts are kept for ``--resume`` (they are whole: written atomically)."""
    try:
        yield
    except Exception as err:
        if not is_disk_full(err, output):
            raise
        for scratch in staging.glob("*.tif"):  # rasters of the assembly: remade from the parts
            scratch.unlink()
        kept = None
        if any(staging.glob("s*-*.parquet")):
            kept = f"the finished parts in {staging} are kept: run again with --resume to go on"
        raise DiskFullError(output, kept=kept) from err


def _check_metadata(config, kind: str, sources, revision) -> tuple[str, ...]:
    """What the model encodes beside pixels (``temporal_coords``, ``location_coords``), checked
    against the input: frames per chip, and dates and places present. Raster scenes give one
    frame and no coordinates to the model yet, so a model that needs more takes a shard dataset.
    """
    from ..data import read_dataset_info

    frames = int(getattr(config, "num_frames", 1) or 1)
    wanted = tuple(name for option, name in (("temporal_encoding", "temporal_coords"),
                                             ("location_encoding", "location_coords"))
                   if getattr(config, option, False))  # fmt: skip
    if kind == "rasters":
        if frames > 1 or wanted:
            needs = [f"series of {frames} frames"] if frames > 1 else []
            needs += [{"temporal_coords": "dates", "location_coords": "places"}[w] for w in wanted]
            raise BadInputError(
                "needs_metadata",
                f"the model takes {' and '.join(needs)} (config num_frames / temporal_encoding / "
                "location_encoding), which geofm-embed reads from shard datasets only: write the "
                f"scenes with geofm-make-shards{f' --num-frames {frames}' if frames > 1 else ''}"
                " and embed that dataset",
            )
        return ()
    info = read_dataset_info(sources[0], revision=revision)
    if info.num_frames != frames:
        held = "single images" if info.num_frames == 1 else f"series of {info.num_frames} frames"
        todo = (f"write time-series shards with geofm-make-shards --num-frames {frames}"
                if frames > 1 else f"embed it with a time-series model (num_frames="
                f"{info.num_frames}), or write single-date shards")  # fmt: skip
        raise BadInputError(
            "frames_mismatch",
            f"the model takes {'single images' if frames == 1 else f'series of {frames} frames'}"
            f" (config num_frames={frames}) but {sources[0]} holds {held}: {todo}",
        )
    if wanted:
        # One chip tells whether the dataset records dates and places at all.
        _, meta, _ = next(_iter_shard_chips(sources[0], revision, info.chip_size))
        for name, what, how in (
            ("temporal_coords", "dates", "shards whose file names carry each scene's date "
             "(YYYYMMDD, ISO or a Landsat scene id)"),
            ("location_coords", "places", "shards of georeferenced rasters (a CRS and transform)"),
        ):  # fmt: skip
            if name in wanted and not np.isfinite(meta[name]).any():
                option = "temporal_encoding" if name == "temporal_coords" else "location_encoding"
                raise BadInputError(
                    "needs_metadata",
                    f"the model encodes {what} ({option}=True) but {sources[0]} gives none: "
                    f"expected {how}, written by geofm-make-shards",
                )
    return wanted


def _check_options(pooling: str, format: str, pca: int | None) -> None:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}: found {pooling!r}.")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}: found {format!r}.")
    if pca is not None and format != "cog":
        raise ValueError("--pca applies to --format cog (a component raster); found parquet.")


def _check_stride(stride: int, pooling: str, patch_size: int) -> int:
    if stride <= 0:
        raise ValueError(f"stride must be positive: found {stride}.")
    if pooling == "patch" and stride % patch_size:
        raise ValueError(
            f"pooling='patch' needs a stride that is a multiple of the patch size "
            f"{patch_size} (patches must line up across windows): found {stride}."
        )
    return stride


def _open_staging(output: Path, manifest: dict[str, Any], resume: bool) -> Path:
    """``OUT.partial/``: the run's parts. Resumed only when written with the same settings
    (``manifest``); otherwise a leftover one is removed and a new one started."""
    staging = output.with_name(output.name + ".partial")
    if staging.exists() and resume:
        found = json.loads((staging / _MANIFEST).read_text())
        if found != manifest:
            diff = {k: (found.get(k), v) for k, v in manifest.items() if found.get(k) != v}
            raise ValueError(
                f"--resume: {staging} was written with other settings (found, now): {diff}. "
                "Rerun with the original settings, or without --resume to start again."
            )
    else:
        if staging.exists():
            logger.warning("%s holds an unfinished run; starting again (pass --resume to "
                           "continue it)", staging)  # fmt: skip
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        (staging / _MANIFEST).write_text(json.dumps(manifest, indent=1))
    return staging


class _PartWriter:
    """Windows -> embeddings in batches -> part files of <= ``part_rows`` rows in ``staging``
    (written atomically: a part is whole or absent, which is what ``--resume`` relies on)."""

    def __init__(self, encoder: WindowEncoder, staging: Path, part_dim: int, batch_size: int,
                 part_rows: int, bar) -> None:  # fmt: skip
        self.encoder, self.staging, self.part_dim = encoder, staging, part_dim
        self.batch_size, self.part_rows, self.bar = batch_size, part_rows, bar
        self.schema = _part_schema(part_dim)

    def write(self, items, scene_idx: int, first_part: int) -> tuple[int, int]:
        """Embed ``(meta, bounds, pixels)`` items of scene ``scene_idx``, parts numbered from
        ``first_part``; returns (windows, empty windows). A window with no valid pixel is
        counted, not embedded."""
        buf_meta, buf_pix, buf_coords, rows = [], [], [], []
        part, written, n_empty = first_part, 0, 0

        def flush_batch():
            coords = {k: np.stack([c[k] for c in buf_coords]) for k in buf_coords[0]}
            emb = self.encoder(np.stack(buf_pix), coords)
            for meta, vec in zip(buf_meta, emb):
                rows.append((*meta, vec.reshape(-1)))
            buf_meta.clear()
            buf_pix.clear()
            buf_coords.clear()

        def flush_part():
            nonlocal part
            if not rows:
                return
            self._write_part(rows, scene_idx, part)
            part += 1
            rows.clear()

        for meta, bounds, pixels, *coords in items:
            # Valid: finite in every band (and every frame of a series).
            valid = float(np.isfinite(pixels).reshape(-1, *pixels.shape[-2:]).all(axis=0).mean())
            if valid == 0.0:
                n_empty += 1
                continue
            buf_meta.append((*meta, valid, *bounds))
            buf_pix.append(pixels)
            buf_coords.append(coords[0] if coords else {})
            written += 1
            self.bar.update(1)
            if len(buf_pix) == self.batch_size:
                flush_batch()
                if len(rows) >= self.part_rows:
                    flush_part()
        if buf_pix:
            flush_batch()
        flush_part()
        return written, n_empty

    def _write_part(self, rows: list[tuple], scene_idx: int, part: int) -> None:
        cols = list(zip(*rows))
        arrays = [pa.array(c, type=t) for c, t in zip(cols[:-1], self.schema.types[:-1])]
        flat = np.stack(cols[-1]).astype(np.float32).reshape(-1)
        arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(flat), self.part_dim))
        with atomic_path(self.staging / f"s{scene_idx:05d}-{part:06d}.parquet") as tmp:
            pq.write_table(pa.Table.from_arrays(arrays, schema=self.schema), tmp)


@dataclass
class _Tally:
    """What the scenes gave: windows embedded now and before (resumed), empty windows, per
    scene counts, the output CRS and (rasters) each scene's grid for the COG."""

    windows: int = 0
    resumed: int = 0
    empty: int = 0
    per_scene: dict[str, int] = field(default_factory=dict)
    crs: Any = None
    grids: dict[int, dict[str, Any]] = field(default_factory=dict)
    bands: dict[str, dict[str, Any]] = field(default_factory=dict)


def _embed_scenes(scenes: list[tuple[int, Any]], sensors: dict[str, str | None],
                  reading: SceneReading, model_bands, window: int, stride: int, format: str,
                  parts: _PartWriter, policy: ErrorPolicy) -> _Tally:  # fmt: skip
    """Every window of every ``(index, scene)`` into parts; a bad scene loses its parts and is
    recorded in ``policy``."""
    tally = _Tally()
    staging = parts.staging
    for idx, scene in scenes:
        done = _done_windows(staging, idx)
        tally.resumed += len(done)
        first_part = len(list(staging.glob(f"s{idx:05d}-*.parquet")))
        grid = None
        try:
            grid = open_grid(scene, model_bands, sensors.get(scene.source), reading)
            if tally.crs is None:
                tally.crs = grid.crs
            elif grid.crs != tally.crs and format == "parquet":
                raise BadInputError(
                    "crs_mismatch",
                    f"{grid.source} is in {grid.crs}, earlier scenes in {tally.crs}; one "
                    "GeoParquet file has one CRS: embed scenes of each CRS separately.",
                )
            tally.grids[idx] = {"crs": grid.crs.to_wkt(), "transform": list(grid.transform)[:6],
                                "width": grid.width, "height": grid.height,
                                "source": grid.source, "scene_id": grid.scene.scene_id}  # fmt: skip
            (staging / f"s{idx:05d}.grid.json").write_text(json.dumps(tally.grids[idx]))
            tally.bands[scene.source] = _scene_bands(grid)
            items = _raster_items(grid, window, stride, done)
            n, n_empty = parts.write(items, idx, first_part)
            tally.windows += n
            tally.empty += n_empty
            tally.per_scene[scene.source] = n + len(done)
        except BadInputError as err:
            for stale in staging.glob(f"s{idx:05d}-*.parquet"):
                stale.unlink()
            policy.record(err, scene.source)
        finally:
            if grid is not None:
                grid.close()
    return tally


def _scene_bands(grid: SceneGrid) -> dict[str, Any]:
    """What fed the model from one scene: its sensor, and the scene band (with wavelength) that
    went into each model band. Logged, and kept in the output's metadata."""
    fed = {"sensor": grid.sensor, "bands": dict(zip(grid.band_names, grid.input_bands)),
           "wavelengths_um": grid.wavelengths_um}  # fmt: skip
    logger.info("%s (%s): scene bands %s -> model bands %s", grid.source,
                grid.sensor or "sensor unknown", grid.input_bands, grid.band_names)  # fmt: skip
    return fed


def _raster_items(grid: SceneGrid, window: int, stride: int, done: set[tuple[str, int, int]]):
    """A scene's windows not yet ``done`` as ``((source, row, col, datetime), bounds, pixels)``."""
    t = grid.transform

    def bounds(r, c):
        x0, y0 = t @ (c, r)
        x1, y1 = t @ (c + window, r + window)
        return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)

    src = grid.source
    skip = {(r, c) for s_, r, c in done if s_ == src}
    for r, c, pix in iter_windows(grid, window, stride, skip):
        yield (src, r, c, grid.datetime), bounds(r, c), pix


def _embed_shards(source, revision, model_bands, window: int, parts: _PartWriter,
                  policy: ErrorPolicy, wanted=()) -> _Tally:  # fmt: skip
    """Every chip of a shard dataset into parts (its chips are the windows)."""
    tally = _Tally()
    key = str(source)
    done = _done_windows(parts.staging, 0)
    tally.resumed += len(done)
    first_part = len(list(parts.staging.glob("s00000-*.parquet")))
    try:
        items = _shard_items(source, revision, window, done, model_bands, wanted)
        n, n_empty = parts.write(items, 0, first_part)
        tally.crs = _shard_crs(source, revision, window)
        tally.windows += n
        tally.empty += n_empty
        tally.per_scene[key] = n + len(done)
    except BadInputError as err:
        for stale in parts.staging.glob("s00000-*.parquet"):
            stale.unlink()
        policy.record(err, key)
    return tally


def _shard_items(source, revision, window, done, model_bands, wanted=()):
    """Shard chips as ``((source, row, col, datetime), bounds, pixels, coords)``; row/col are the
    chip's offsets parsed from its id (``<scene>_rNNNNN_cNNNNN``); ``coords`` holds the
    ``wanted`` metadata (``temporal_coords``, ``location_coords``). Every chip must share one
    CRS (one GeoParquet file has one)."""
    import re

    from rasterio.crs import CRS

    crs_ref = None
    pattern = re.compile(r"_r(\d+)_c(\d+)$")
    take = None
    for _, meta, pixels in _iter_shard_chips(source, revision, window):
        names = list(meta["band_names"])
        if take is None:
            take = _shard_band_index(source, revision, names, model_bands)
        crs = CRS.from_user_input(meta["crs"])
        if crs_ref is None:
            crs_ref = crs
        elif crs != crs_ref:
            raise BadInputError(
                "crs_mismatch",
                f"chip {meta['chip_id']} is in {crs}, earlier chips in {crs_ref}; one GeoParquet "
                "file has one CRS: write the shards of each CRS to their own dataset.",
            )
        m = pattern.search(meta["chip_id"])
        r, c = (int(m.group(1)), int(m.group(2))) if m else (-1, -1)
        if (meta["source"], r, c) in done:
            continue
        pix = pixels[..., take, :, :].astype(np.float32)  # bands are the third axis from the end
        coords = {k: meta[k] for k in wanted}
        yield (meta["source"], r, c, meta["datetime"]), tuple(meta["bounds"]), pix, coords


def _shard_band_index(source, revision, names: list[str], model_bands) -> list[int]:
    """The chip channel of each model band: the dataset's bands identified by the sensor and
    wavelengths its ``geofm_dataset.json`` records, matched by the one rule."""
    from ..bands import BandMatchError, BandSet, match_bands, unknown_band_names
    from ..data import read_dataset_info

    info = read_dataset_info(source, revision=revision)
    sensor = info.sensor if info.sensor and "+" not in info.sensor else None
    wavelengths = info.wavelengths_um if list(info.band_names) == names else None
    try:
        have = BandSet.of(names, None if wavelengths else sensor, wavelengths,
                          named=names != unknown_band_names(len(names)),
                          label=f"dataset {source}",
                          hint="write it with geofm-make-shards --sensor")  # fmt: skip
        hits = match_bands(model_bands, have)
    except BandMatchError as err:
        raise BadInputError("band_mismatch", str(err)) from None
    missing = [n for n, i in zip(model_bands.names, hits) if i is None]
    if missing:
        raise BadInputError(
            "band_mismatch",
            f"{source}: chips have no band for the model's {missing}: the model takes "
            f"{model_bands.describe()}, the chips have {have.describe()}.",
        )
    return [int(i) for i in hits]


def _shard_crs(source, revision, window):
    """The CRS of a shard dataset's chips (all equal: :func:`_shard_items` checks)."""
    from rasterio.crs import CRS

    for _, meta, _ in _iter_shard_chips(source, revision, window):
        return CRS.from_user_input(meta["crs"])
    raise BadInputError("empty_dataset", f"{source} holds no chips")


def _done_windows(staging: Path, idx: int) -> set[tuple[str, int, int]]:
    """``(source, row, col)`` of the windows already in scene ``idx``'s parts."""
    done: set[tuple[str, int, int]] = set()
    for part in sorted(staging.glob(f"s{idx:05d}-*.parquet")):
        t = pq.read_table(part, columns=["source", "row", "col"])
        done.update(zip(*(t.column(k).to_pylist() for k in ("source", "row", "col"))))
    return done


def _parse_datetime(values: list[str | None]) -> pa.Array:
    out = []
    for v in values:
        out.append(None if not v else np.datetime64(v, "s").astype("int64"))
    return pa.array(out, type=pa.int64()).cast(pa.timestamp("s"))


def _assemble_parquet(staging: Path, output: Path, crs, dim: int, g: int, loaded, pooling: str,
                      meta: dict) -> None:  # fmt: skip
    """Parts -> one GeoParquet 1.1 file, streamed part by part (bounded memory)."""
    parts = sorted(staging.glob("s*-*.parquet"))
    schema = pa.schema([
        ("geometry", pa.binary()), ("bbox", BBOX_TYPE),
        ("embedding", pa.list_(pa.float32(), dim)), ("source", pa.string()),
        ("row", pa.int32()), ("col", pa.int32()), ("datetime", pa.timestamp("s")),
        ("valid_fraction", pa.float32()), ("model_id", pa.string()),
        ("model_revision", pa.string()),
    ])  # fmt: skip
    # The geo metadata (with the overall bbox) goes in the schema the writer starts with, so
    # every reader (Arrow schema or Parquet footer) sees it: a first pass reads only the bounds.
    bbox = [np.inf, np.inf, -np.inf, -np.inf]
    for part in parts:
        b = pq.read_table(part, columns=["xmin", "ymin", "xmax", "ymax"])
        if b.num_rows:
            bbox = [min(bbox[0], pc.min(b["xmin"]).as_py()), min(bbox[1], pc.min(b["ymin"]).as_py()),
                    max(bbox[2], pc.max(b["xmax"]).as_py()), max(bbox[3], pc.max(b["ymax"]).as_py())]  # fmt: skip
    if not parts or not np.isfinite(bbox).all():
        raise BadInputError("no_output", "no window held any valid pixel; nothing to write")
    schema = schema.with_metadata(
        {"geo": geo_metadata(crs, bbox), "geofm_embed": json.dumps(meta).encode()}
    )
    with atomic_path(output) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for part in parts:
            t = pq.read_table(part)
            n = t.num_rows
            x0, y0, x1, y1 = (t.column(k).to_numpy() for k in ("xmin", "ymin", "xmax", "ymax"))
            row, col = t.column("row").to_numpy(), t.column("col").to_numpy()
            emb = t.column("embedding").combine_chunks().values.to_numpy(zero_copy_only=False)
            valid = t.column("valid_fraction").to_numpy()
            sources = t.column("source").to_pylist()
            dts = t.column("datetime").to_pylist()
            if pooling == "patch":
                # One row per patch: (n, D, g, g) -> (n * g * g, D); patch (i, j) of a window at
                # (row, col) covers pixels row + i*p .. and col + j*p ..
                p = loaded.patch_size
                emb = emb.reshape(n, dim, g, g).transpose(0, 2, 3, 1).reshape(-1, dim)
                ii, jj = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
                ii, jj = ii.reshape(-1), jj.reshape(-1)
                sx = (x1 - x0) / g
                sy = (y1 - y0) / g
                x0n = (x0[:, None] + jj[None] * sx[:, None]).reshape(-1)
                y1n = (y1[:, None] - ii[None] * sy[:, None]).reshape(-1)
                x0, x1 = x0n, x0n + np.repeat(sx, g * g)
                y1, y0 = y1n, y1n - np.repeat(sy, g * g)
                row = (row[:, None] + ii[None] * p).reshape(-1)
                col = (col[:, None] + jj[None] * p).reshape(-1)
                valid = np.repeat(valid, g * g)
                sources = [s for s in sources for _ in range(g * g)]
                dts = [d for d in dts for _ in range(g * g)]
                n = n * g * g
            table = pa.Table.from_arrays(
                [
                    bbox_polygons_wkb(x0, y0, x1, y1),
                    pa.StructArray.from_arrays(
                        [pa.array(v, pa.float64()) for v in (x0, y0, x1, y1)],
                        fields=list(BBOX_TYPE),
                    ),
                    pa.FixedSizeListArray.from_arrays(
                        pa.array(emb.astype(np.float32).reshape(-1)), dim
                    ),
                    pa.array(sources, pa.string()),
                    pa.array(row, pa.int32()),
                    pa.array(col, pa.int32()),
                    _parse_datetime(dts),
                    pa.array(valid, pa.float32()),
                    pa.array([meta["model_id"]] * n, pa.string()),
                    pa.array([meta["model_revision"]] * n, pa.string()),
                ],
                schema=schema,
            )
            writer.write_table(table, row_group_size=8192)


# ---------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    from ..data.cli import add_scene_arguments

    p = Parser(
        prog="geofm-embed",
        description="Embed every window of whole scenes with a geofm_hf model: GeoParquet "
        "(polygon per window, CRS as PROJJSON) or a Cloud-Optimised GeoTIFF.",
    )
    p.add_argument("model", help="local export folder or Hub model repo id")
    p.add_argument("inputs", nargs="*", help="rasters (files, folders, globs), or one shard "
                   "dataset (folder or Hub dataset id)")  # fmt: skip
    p.add_argument(
        "-o", "--output", required=True, help="OUT.parquet, or OUT.tif with --format cog"
    )
    p.add_argument("--revision", help="model revision (Hub branch, tag or commit)")
    p.add_argument("--dataset-revision", help="dataset revision (Hub shard datasets)")
    p.add_argument("--stride", type=positive_int,
                   help="window step in pixels (default: window size)")  # fmt: skip
    p.add_argument("--pooling", choices=POOLINGS, default="cls")
    p.add_argument("--format", choices=FORMATS, default="parquet")
    p.add_argument("--pca", type=positive_int, help="COG: keep this many principal components")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=("auto", "bfloat16", "float32"), default="auto")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise")
    p.add_argument("--max-error-fraction", type=fraction, default=0.05)
    p.add_argument("--checkpoint-every", type=positive_int, default=4096, metavar="N",
                   help="windows per part file: what --resume keeps of a killed run")  # fmt: skip
    p.add_argument("--no-progress", action="store_true")
    add_scene_arguments(p)
    return p


# The output file's extension for each --format.
_EXTENSIONS = {"parquet": (".parquet", ".geoparquet"), "cog": (".tif", ".tiff")}


def main(argv: list[str] | None = None) -> int:
    from ..data.cli import scene_arguments

    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if Path(args.output).suffix.lower() not in _EXTENSIONS[args.format]:
        parser.error(
            f"argument -o/--output: --format {args.format} writes "
            f"{' or '.join(_EXTENSIONS[args.format])}, found {args.output!r}; rename the output "
            "or pass the --format it names"
        )
    if args.pca is not None and args.format != "cog":
        parser.error("argument --pca: applies to --format cog (a component raster)")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        reading = scene_arguments(args)
        if not args.inputs and not reading["band_files"]:
            raise ValueError("no inputs: give raster files/folders/globs, --band-files or a "
                             "shard dataset")  # fmt: skip
        summary = embed(
            args.model, args.inputs, args.output, revision=args.revision,
            dataset_revision=args.dataset_revision, stride=args.stride, pooling=args.pooling,
            format=args.format, pca=args.pca, batch_size=args.batch_size, device=args.device,
            dtype=args.dtype, resume=args.resume, overwrite=args.overwrite,
            on_error=args.on_error, max_error_fraction=args.max_error_fraction,
            progress=not args.no_progress, part_rows=args.checkpoint_every, **reading,
        )  # fmt: skip
    except USER_ERRORS as err:
        return report("geofm-embed", err)
    print(
        f"{summary.num_windows} windows ({summary.num_windows_resumed} resumed, "
        f"{summary.empty_windows} empty skipped) -> {', '.join(summary.output)}"
        + (f" + {summary.preview}" if summary.preview else "")
        + f"; {summary.windows_per_s:.1f} windows/s, {'bf16' if summary.bf16 else 'fp32'}; "
        f"skipped inputs: {summary.skipped}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
