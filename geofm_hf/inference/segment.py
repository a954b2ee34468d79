"""``geofm-segment``: a georeferenced class map (COG) of whole scenes.

Windows of the model's input size overlap (``stride`` < window); each window's logits are
weighted by a taper that is highest at the window centre (predictions near a window edge see
less context) and summed into a staged raster one strip of windows at a time; the class map is
the argmax of the weighted mean. Pixels no valid window covered, or with a missing band, are 255.
A regression model (``problem_type="regression"``, ``recipes/segment.py --task regression``)
gets the weighted mean of its predictions instead: a float32 COG, NaN where nothing predicted.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import is_disk_full
from .._errors import DiskFullError
from ..data.format import BadInputError
from ._cli import USER_ERRORS, Parser, fraction, positive_int, report
from .planning import start_progress
from .scenes import (
    SceneReading,
    check_scenes,
    iter_windows,
    load_model,
    model_band_set,
    open_scenes,
)
from .stacks import ModelNeeds, group_inputs, open_unit, window_coords

__all__ = ["SegmentSummary", "main", "segment"]

logger = logging.getLogger(__name__)

NODATA = 255


@dataclass
class SegmentSummary:
    output: list[str]
    num_windows: int
    skipped: dict[str, Any]
    seconds: float
    label_names: list[str]
    preview: str | None = None
    class_fractions: dict[str, float] = field(default_factory=dict)


def _taper(window: int) -> np.ndarray:
    """``(window, window)`` weights: a raised cosine, floored at 0.1 so edge pixels of the
    scene (covered by one window only) still get a prediction."""
    ramp = 0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(window) + 0.5) / window)
    return np.maximum(np.outer(ramp, ramp), 0.1).astype(np.float32)


class _Blender:
    """Weighted probability sums (k bands) and weights (1) of the rows some pending window still
    covers: at most window + stride rows of the scene are held."""

    def __init__(self, grid, out, k, window, weight, processor, net, device, bf16,
                 regression=False, wanted=()):  # fmt: skip
        self.grid, self.out, self.k, self.window, self.weight = grid, out, k, window, weight
        self.regression, self.wanted = regression, wanted
        self.processor, self.net, self.device, self.bf16 = processor, net, device, bf16
        self.acc = np.zeros((k + 1, 0, grid.width), np.float32)
        self.r0 = 0
        self.batch: list[tuple[int, int, np.ndarray]] = []
        self.counts = np.zeros(k, np.int64)

    def grow(self, upto: int) -> None:
        need = min(upto, self.grid.height) - self.r0 - self.acc.shape[1]
        if need > 0:
            extra = np.zeros((self.k + 1, need, self.grid.width), np.float32)
            self.acc = np.concatenate([self.acc, extra], axis=1)

    def flush(self) -> None:
        if not self.batch:
            return
        pixels = np.stack([b[2] for b in self.batch])  # (B, C, S, S) or a series' (B, T, C, S, S)
        # Valid: finite in every band (and every frame of a series).
        valid = np.isfinite(pixels).reshape(len(pixels), -1, *pixels.shape[-2:]).all(axis=1)
        inp = self.processor(pixels, return_tensors="pt")["pixel_values"]
        windows = [(r, c) for r, c, _ in self.batch]
        found = window_coords(self.grid, windows, self.window, self.wanted)
        coords = {k: torch.as_tensor(np.stack([f[k] for f in found]), device=self.device)
                  for k in self.wanted}  # fmt: skip
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                             enabled=self.bf16):  # fmt: skip
            logits = self.net(inp.to(self.device), **coords).logits.float()
        # Regression outputs are values, blended as they are; class logits as probabilities.
        probs = (logits if self.regression else torch.softmax(logits, 1)).cpu().numpy()
        k, grid = self.k, self.grid
        for (r, c, _), p, v in zip(self.batch, probs, valid):
            h = min(self.window, grid.height - r)
            w = min(self.window, grid.width - c)
            wgt = self.weight[:h, :w] * v[:h, :w]
            a0 = r - self.r0
            self.acc[:k, a0 : a0 + h, c : c + w] += p[:, :h, :w] * wgt
            self.acc[k, a0 : a0 + h, c : c + w] += wgt
        self.batch.clear()

    def finalize(self, upto: int) -> None:
        """Rows before ``upto`` get no more windows: argmax them and write them."""
        from rasterio.windows import Window

        upto = min(upto, self.grid.height)
        n = upto - self.r0
        if n <= 0:
            return
        self.grow(upto)
        part = self.acc[:, :n]
        if self.regression:
            covered = part[self.k] > 0
            values = np.full(part.shape[1:], np.nan, np.float32)
            values[covered] = part[0][covered] / part[self.k][covered]
            self.out.write(values, 1, window=Window(0, self.r0, self.grid.width, n))
            self.acc = self.acc[:, n:]
            self.r0 = upto
            return
        classes = part[: self.k].argmax(0).astype(np.uint8)
        classes[part[self.k] <= 0] = NODATA
        self.counts += np.bincount(classes[classes != NODATA], minlength=self.k)[: self.k]
        self.out.write(classes, 1, window=Window(0, self.r0, self.grid.width, n))
        self.acc = self.acc[:, n:]
        self.r0 = upto


def segment(
    model: str | os.PathLike,
    inputs,
    output: str | os.PathLike,
    *,
    revision: str | None = None,
    stride: int | None = None,
    batch_size: int = 32,
    device: str = "auto",
    dtype: str = "auto",
    on_error: str = "raise",
    max_error_fraction: float = 0.05,
    band_files=None,
    band_names=None,
    sensor: str | None = None,
    filename_pattern: str | None = None,
    nodata: float | None = None,
    qa_masks: bool = True,
    overwrite: bool = False,
    preview: bool = True,
    progress: bool = True,
    max_chips: int | None = None,
) -> SegmentSummary:
    """Class map of every scene of ``inputs`` with a ``GeoViTMAEForSemanticSegmentation``.

    ``output`` is ``PRED.tif`` (one scene) or the stem of ``PRED_<scene>.tif`` (several): uint8
    COG, class index per pixel, 255 = no prediction, the class names in its tags and colour
    table; plus ``PRED.png`` (colours + legend) of the first scene. ``inputs`` and the
    scene-reading arguments (``band_files``, ``band_names``, ``sensor``, ``filename_pattern``,
    ``nodata``, ``qa_masks``) mean what they mean to :func:`geofm_hf.embed`: scenes are read as
    ``geofm-make-shards`` reads them, their bands matched to the model's by sensor and
    wavelength; invalid pixels get no prediction. A time-series model (``num_frames`` T) maps
    each place's T dated scenes to one map (``PRED_<first scene>_T<T>.tif`` when there are
    several places), with the dates and places it encodes, as :func:`geofm_hf.embed` feeds
    them. A regression model (``config.problem_type="regression"``) writes a float32 COG of
    its predicted values instead, nodata NaN, the target's name in the ``target`` tag, and no
    PNG. ``progress`` prints the plan and progress lines on stderr; ``max_chips`` refuses,
    before any pixel is read, inputs of more windows (``None``: no limit; ``--max-chips``
    defaults to 1,000,000).
    """
    import rasterio

    from ..data.error_policy import ErrorPolicy
    from ..modeling_geofm import GeoViTMAEForSemanticSegmentation
    from ..segmentation.visualize import class_colors
    from .cog import write_cog
    from .encoder import use_bf16

    start = time.perf_counter()
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it.")
    loaded = load_model(model, revision, cls=GeoViTMAEForSemanticSegmentation)
    config = loaded.model.config
    names = [config.id2label[i] for i in range(config.num_labels)]
    regression = config.problem_type == "regression"
    if len(names) >= NODATA:
        raise ValueError(f"at most {NODATA} classes fit a uint8 map: found {len(names)}.")
    window = loaded.image_size
    stride = stride or window // 2
    if not 0 < stride <= window:
        raise ValueError(f"stride must be in 1..{window} (windows must overlap or touch): "
                         f"found {stride}.")  # fmt: skip
    reading = SceneReading(band_names, sensor, filename_pattern, band_files, nodata, qa_masks)
    scenes, sensors = open_scenes(inputs, reading, on_error)
    model_bands = model_band_set(loaded)
    needs = ModelNeeds.of(config)
    torch_device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    )
    bf16 = use_bf16(dtype, torch_device)
    net = loaded.model.to(torch_device)
    weight = _taper(window)
    k = len(names)
    policy = ErrorPolicy(on_error, max_error_fraction, len(scenes))
    check_scenes(scenes, sensors, model_bands, reading, policy)
    bad = {item["item"] for item in policy.items}
    # A series model's input is a stack of one place's dates: one map per place.
    units = group_inputs([s for s in scenes if s.source not in bad], needs, policy)
    bar = start_progress("geofm-segment", "rasters", units, sensors, model_bands, reading, window,
                         stride, max_chips, progress)  # fmt: skip
    outputs: list[str] = []
    preview_path = None
    fractions: dict[str, float] = {}
    n_windows = 0
    work = Path(tempfile.mkdtemp(prefix=".geofm-segment-", dir=output.parent))
    try:
        for unit in units:
            grid = None
            try:
                grid = open_unit(unit, model_bands, sensors, reading)
                dst = output if len(units) == 1 else output.with_name(
                    f"{output.stem}_{grid.scene_id}{output.suffix or '.tif'}")  # fmt: skip
                final = work / f"{grid.scene_id}.final.tif"
                profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1,
                               dtype="uint8", nodata=NODATA, crs=grid.crs,
                               transform=grid.transform, tiled=True, blockxsize=256,
                               blockysize=256, BIGTIFF="IF_SAFER")  # fmt: skip
                if regression:
                    profile.update(dtype="float32", nodata=float("nan"))
                with rasterio.open(final, "w", **profile) as out:
                    if regression:
                        out.update_tags(target=names[0])
                    else:
                        colors = (class_colors(k) * 255).astype(int)
                        out.write_colormap(1, {i: (*map(int, colors[i]), 255) for i in range(k)})
                    out.update_tags(class_names=",".join(names), model_id=loaded.model_id,
                                    model_revision=str(loaded.revision), stride=stride,
                                    window=window, source=grid.source,
                                    sensor=str(grid.sensor), input_bands=",".join(grid.input_bands),
                                    model_bands=",".join(grid.band_names),
                                    wavelengths_um=",".join(map(str, grid.wavelengths_um or [])))  # fmt: skip
                    if len(unit) > 1:
                        out.update_tags(frames=",".join(grid.sources),
                                        frame_datetimes=",".join(grid.datetimes))  # fmt: skip
                    blender = _Blender(grid, out, k, window, weight, loaded.processor, net,
                                       torch_device, bf16, regression, needs.wanted)  # fmt: skip
                    current = None
                    for r, c, pix in iter_windows(grid, window, stride):
                        if r != current:
                            blender.flush()
                            blender.finalize(r)
                            blender.grow(r + window)
                            current = r
                        bar.update(1)  # empty windows too: the plan counts every window
                        if not np.isfinite(pix).any():
                            continue
                        blender.batch.append((r, c, pix))
                        n_windows += 1
                        if len(blender.batch) == batch_size:
                            blender.flush()
                    blender.flush()
                    blender.finalize(grid.height)
                    counts = blender.counts
                write_cog(final, dst)
                outputs.append(str(dst))
                total = max(int(counts.sum()), 1)
                if not regression:
                    fractions = fractions or {n: float(c / total) for n, c in zip(names, counts)}
                if preview and preview_path is None and not regression:
                    preview_path = str(dst.with_suffix(".png"))
                    _save_map_png(dst, names, preview_path)
            except BadInputError as err:
                policy.record(err, unit[0].source)
            finally:
                if grid is not None:
                    grid.close()
    except Exception as err:
        if not is_disk_full(err, work):
            raise
        raise DiskFullError(output) from err  # its scratch folder goes just below
    finally:
        bar.close()
        shutil.rmtree(work, ignore_errors=True)
    if not outputs:
        raise BadInputError("no_output", f"no scene could be segmented: {policy.summary()}")
    return SegmentSummary(outputs, n_windows, policy.summary(), time.perf_counter() - start,
                          names, preview_path, fractions)  # fmt: skip


def _save_map_png(cog: Path, names: list[str], path: str, max_side: int = 2048) -> None:
    import rasterio

    from ..segmentation.visualize import save_prediction_png

    with rasterio.open(cog) as src:
        step = max(1, int(np.ceil(max(src.width, src.height) / max_side)))
        data = src.read(1, out_shape=(src.height // step or 1, src.width // step or 1),
                        resampling=rasterio.enums.Resampling.nearest)  # fmt: skip
    save_prediction_png([(Path(cog).name, data)], names, path, ignore_index=NODATA)


def _parser() -> argparse.ArgumentParser:
    from ..data.cli import add_scene_arguments
    from ..data.progress import add_max_chips_argument

    p = Parser(
        prog="geofm-segment",
        description="Georeferenced class map (COG) of whole scenes with a geofm_hf segmentation "
        "model: overlapping windows, blended probabilities.",
    )
    p.add_argument("model", help="local export folder or Hub model repo id")
    p.add_argument("inputs", nargs="*", help="rasters: files, folders or globs")
    p.add_argument("-o", "--output", required=True, help="PRED.tif")
    p.add_argument("--revision", help="model revision (Hub branch, tag or commit)")
    p.add_argument("--stride", type=positive_int,
                   help="window step in pixels (default: half a window)")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=("auto", "bfloat16", "float32"), default="auto")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise")
    p.add_argument("--max-error-fraction", type=fraction, default=0.05)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true",
                   help="print neither the plan nor progress lines")  # fmt: skip
    add_max_chips_argument(p, "windows")
    add_scene_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from ..data.cli import scene_arguments

    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if Path(args.output).suffix.lower() not in (".tif", ".tiff"):
        parser.error(f"argument -o/--output: a class map is a GeoTIFF (.tif), found "
                     f"{args.output!r}")  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        reading = scene_arguments(args)
        if not args.inputs and not reading["band_files"]:
            raise ValueError("no inputs: give raster files/folders/globs or --band-files")
        summary = segment(
            args.model, args.inputs, args.output, revision=args.revision, stride=args.stride,
            batch_size=args.batch_size, device=args.device, dtype=args.dtype,
            on_error=args.on_error, max_error_fraction=args.max_error_fraction,
            overwrite=args.overwrite, progress=not args.no_progress, max_chips=args.max_chips,
            **reading,
        )  # fmt: skip
    except USER_ERRORS as err:
        return report("geofm-segment", err)
    shares = ", ".join(f"{n} {100 * f:.0f}%" for n, f in summary.class_fractions.items())
    print(f"{summary.num_windows} windows -> {', '.join(summary.output)}"
          + (f" + {summary.preview}" if summary.preview else "")
          + f" in {summary.seconds:.1f} s; "
          + (f"classes: {shares}; " if shares else "")
          + f"skipped: {summary.skipped}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
