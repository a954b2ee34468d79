"""``geofm-embed``: an embedding per window of whole scenes, as GeoParquet or a COG.

Pipeline: scenes (rasters, stacks of one place's dates for a time-series model:
:mod:`~geofm_hf.inference.stacks`; or a shard dataset: :mod:`~geofm_hf.inference.shard_inputs`)
-> windows of the model's input size every ``stride`` px, read a strip at a time -> batches
through the image processor and the encoder (bf16 autocast where the hardware multiplies bf16
natively) -> parts of <= ``part_rows`` windows written atomically to ``OUT.partial/`` ->
assembled into ``OUT`` when every scene is done (:mod:`~geofm_hf.inference.embed_output`).
The parts are what ``--resume`` keeps: a killed run restarts at the first window not yet in a
part. A scene that fails is dropped whole, recorded, and (``on_error="skip"``) the run goes on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.error_policy import ErrorPolicy
from ..data.format import BadInputError
from ._cli import USER_ERRORS, Parser, fraction, positive_int, report
from .embed_output import (
    PartWriter,
    Tally,
    assemble_parquet,
    disk_full_names,
    done_windows,
    open_staging,
)
from .encoder import WindowEncoder, use_bf16
from .geometry import embedding_transform, window_origins
from .planning import start_progress
from .scenes import SceneReading, check_scenes, iter_windows, load_model, model_band_set
from .shard_inputs import check_shard_dataset, embed_shards, window_sources
from .stacks import ModelNeeds, group_inputs, open_unit, window_coords

__all__ = ["EmbedSummary", "embed", "embedding_transform", "main"]

logger = logging.getLogger(__name__)

POOLINGS = ("cls", "mean", "patch")
FORMATS = ("parquet", "cog")


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
    max_chips: int | None = None,
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
            Scene bands feed the model's by sensor and wavelength, never by bare name. A model
            of ``num_frames`` T takes each place's dated scenes as series of T (grouped and
            cut as ``geofm-make-shards --num-frames`` does, dates from the file names; dates
            left over are named and counted); a place with fewer than T dates is an error. A model that encodes dates or
            places (``temporal_encoding``, ``location_encoding``) gets each window's: the
            frames' dates and the window centre's latitude and longitude.
        output: ``OUT.parquet`` (GeoParquet 1.1) or, with ``format="cog"``, ``OUT.tif``.
        stride: step between windows in pixels (default: the window size; smaller overlaps).
        pooling: ``cls`` token, ``mean`` of patch tokens, or ``patch`` (one embedding per patch:
            a dense raster at patch resolution; in Parquet one row per patch).
        pca: with ``format="cog"``, keep the first ``pca`` principal components (fit exactly on
            every embedding written) instead of every dimension.
        resume: continue an interrupted run from ``OUT.partial/`` (same model and settings).
        on_error: ``raise`` at the first bad scene, or ``skip`` it (counted in the summary) and
            stop only past ``max_error_fraction`` of the scenes.
        progress: print the plan (scenes, windows, bytes) and progress lines on stderr.
        max_chips: refuse, before any pixel is read, inputs of more windows (``None``: no
            limit; ``--max-chips`` defaults to 1,000,000).
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
    kind, sources, sensors = window_sources(inputs, reading, on_error)
    model_bands = model_band_set(loaded)
    needs = ModelNeeds.of(loaded.model.config)
    if kind == "shards" and format == "cog":
        raise ValueError(
            "format='cog' needs raster scenes (one regular grid per scene); a shard dataset "
            "holds separate chips: use format='parquet' for it."
        )
    torch_device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    )
    bf16 = use_bf16(dtype, torch_device)
    encoder = WindowEncoder(loaded, pooling, torch_device, bf16)
    dim = loaded.model.config.hidden_size
    g = window // loaded.patch_size

    policy = ErrorPolicy(on_error, max_error_fraction, len(sources))
    if kind == "rasters":
        # Every scene's bands are matched to the model, and the scenes grouped into the model's
        # inputs (series of its num_frames dates), before OUT.partial/ exists: a scene that
        # cannot feed the model writes nothing.
        check_scenes(sources, sensors, model_bands, reading, policy)
        bad = {item["item"] for item in policy.items}
        units = group_inputs([s for s in sources if s.source not in bad], needs, policy)
        keys = [[m.source for m in unit] if len(unit) > 1 else unit[0].source for unit in units]
    else:
        wanted = check_shard_dataset(needs, sources[0], dataset_revision)
        keys = [str(sources[0])]
    bar = start_progress("geofm-embed", kind, units if kind == "rasters" else sources, sensors,
                         model_bands, reading, window, stride, max_chips, progress,
                         dataset_revision)  # fmt: skip
    manifest = {
        "model_id": loaded.model_id, "model_revision": loaded.revision, "window": window,
        "stride": stride, "pooling": pooling, "dim": dim, "scenes": keys,
        "format": format, "pca": pca,
    }  # fmt: skip
    staging = open_staging(output, manifest, resume)

    parts = PartWriter(encoder, staging, dim * g * g if pooling == "patch" else dim,
                       batch_size, part_rows, bar)  # fmt: skip
    # A full disk, wherever met (a part, the assembled output), is reported on OUT.
    with disk_full_names(output, staging):
        try:
            if kind == "rasters":
                tally = _embed_scenes(units, sensors, reading, model_bands, window, stride, format,
                                      parts, policy, needs.wanted)  # fmt: skip
            else:
                tally = embed_shards(sources[0], dataset_revision, model_bands, window, parts,
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
            assemble_parquet(staging, output, tally.crs, dim, g, loaded, pooling, meta)
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


def _embed_scenes(units: list[list[Any]], sensors: dict[str, str | None],
                  reading: SceneReading, model_bands, window: int, stride: int, format: str,
                  parts: PartWriter, policy: ErrorPolicy, wanted=()) -> Tally:  # fmt: skip
    """Every window of every input (a scene, or a stack of one place's dates) into parts; a bad
    input loses its parts and is recorded in ``policy``. ``wanted``: the metadata the model
    encodes, passed with each window."""
    tally = Tally()
    staging = parts.staging
    for idx, unit in enumerate(units):
        key = unit[0].source
        done = done_windows(staging, idx)
        tally.resumed += len(done)
        first_part = len(list(staging.glob(f"s{idx:05d}-*.parquet")))
        grid = None
        try:
            grid = open_unit(unit, model_bands, sensors, reading)
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
                                "source": grid.source, "scene_id": grid.scene_id}  # fmt: skip
            (staging / f"s{idx:05d}.grid.json").write_text(json.dumps(tally.grids[idx]))
            tally.bands[key] = _scene_bands(grid)
            items = _raster_items(grid, window, stride, done, wanted)
            n, n_empty = parts.write(items, idx, first_part)
            tally.windows += n
            tally.empty += n_empty
            tally.per_scene[key] = n + len(done)
        except BadInputError as err:
            for stale in staging.glob(f"s{idx:05d}-*.parquet"):
                stale.unlink()
            policy.record(err, key)
        finally:
            if grid is not None:
                grid.close()
    return tally


def _scene_bands(grid) -> dict[str, Any]:
    """What fed the model from one input: its sensor, the scene band (with wavelength) that went
    into each model band and (a stack) each frame's scene and date. Logged, and kept in the
    output's metadata."""
    fed = {"sensor": grid.sensor, "bands": dict(zip(grid.band_names, grid.input_bands)),
           "wavelengths_um": grid.wavelengths_um}  # fmt: skip
    if len(grid.datetimes) > 1:
        fed.update(frames=grid.sources, frame_datetimes=grid.datetimes)
    logger.info("%s (%s): scene bands %s -> model bands %s", grid.source,
                grid.sensor or "sensor unknown", grid.input_bands, grid.band_names)  # fmt: skip
    return fed


def _raster_items(grid, window: int, stride: int, done: set[tuple[str, int, int]], wanted=()):
    """An input's windows not yet ``done`` as ``((source, row, col, datetime), bounds, pixels,
    coords)``, ``coords`` the ``wanted`` metadata of the window."""
    t = grid.transform

    def bounds(r, c):
        x0, y0 = t @ (c, r)
        x1, y1 = t @ (c + window, r + window)
        return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)

    src = grid.source
    skip = {(r, c) for s_, r, c in done if s_ == src}
    cols = window_origins(grid.width, window, stride)
    coords: dict[tuple[int, int], dict] = {}
    for r, c, pix in iter_windows(grid, window, stride, skip):
        if (r, c) not in coords:  # a new row of windows: their metadata in one call
            row = [(r, x) for x in cols]
            coords = dict(zip(row, window_coords(grid, row, window, wanted)))
        yield (src, r, c, grid.datetime), bounds(r, c), pix, coords[r, c]


# ---------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    from ..data.cli import add_scene_arguments
    from ..data.progress import add_max_chips_argument

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
    p.add_argument("--no-progress", action="store_true",
                   help="print neither the plan nor progress lines")  # fmt: skip
    add_max_chips_argument(p, "windows")
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
            progress=not args.no_progress, part_rows=args.checkpoint_every,
            max_chips=args.max_chips, **reading,
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
