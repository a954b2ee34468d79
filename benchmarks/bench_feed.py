"""Can the data workers feed a GPU at the paper's scale? 224 px crops of 13-band uint16 chips.

    python benchmarks/bench_feed.py [--rounds 5] [--batch 16] [--chips 16]

Writes a 13-band uint16 Sentinel-2-shaped GeoTIFF (smooth field + noise, 256 px chips) through
the real shard writer, then times one data worker (``num_workers=0``: the worker's own code in
this process) producing batches in two modes, alternating rounds (A B A B ...):

* host: decode (Parquet -> uint16), random 224 crop, flips / rot90, float32, ``(x - mean) / std``
  -- what every worker does today;
* device_transforms: decode and crop only; ships uint16 (half the bytes) and leaves flips,
  rotation and normalisation to the device (``geofm_hf.data.device_transforms``).

Prints samples/s per worker, host seconds per sample before and after, the ratio, and how many
workers one GCD needs at the planner's images/s (1 node, paper settings) for vit-base, vit-huge
and vit-3b. The device-side cost of the moved work is timed here on CPU for reference only; on a
GPU, benchmarks/gpu_check.sh times it.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geofm_hf import planner  # noqa: E402
from geofm_hf.bands import get_sensor_bands  # noqa: E402
from geofm_hf.data import make_pretrain_dataloader, read_dataset_info, write_shards  # noqa: E402
from geofm_hf.data.device_transforms import apply_device_transforms  # noqa: E402

# The band table, not a copy: the benchmark feeds what the writer names.
S2_BANDS = [b.name for b in get_sensor_bands("sentinel2-l1c")]


def make_dataset(folder: Path, chips: int, chip: int = 256) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    side = math.ceil(math.sqrt(chips))
    n = side * chip
    rng = np.random.default_rng(0)
    field = rng.normal(size=(13, n // 16, n // 16)).repeat(16, 1).repeat(16, 2)
    data = np.clip(1500 + 400 * field + rng.normal(scale=60, size=(13, n, n)), 0, 65535)
    tif = folder / "scene.tif"
    profile = dict(driver="GTiff", width=n, height=n, count=13, dtype="uint16", tiled=True)
    with rasterio.open(
        tif, "w", crs="EPSG:32633", transform=from_origin(500000, 5e6, 10, 10), **profile
    ) as dst:
        dst.write(data.astype(np.uint16))
        for i, band in enumerate(S2_BANDS, 1):
            dst.set_band_description(i, band)
    out = folder / "ds"
    write_shards([tif], out, chip_size=chip, sensor="sentinel2-l1c")
    return out


def rate(loader, batches: int, batch: int) -> float:
    it = iter(loader)
    next(it)  # open the shard
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=4, help="batches per timed round")
    parser.add_argument("--chips", type=int, default=16)
    parser.add_argument("--crop", type=int, default=224)
    args = parser.parse_args()
    print(
        f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores; one worker = one process"
    )
    with tempfile.TemporaryDirectory() as tmp:
        ds = make_dataset(Path(tmp), args.chips)
        info = read_dataset_info(ds)
        common = dict(batch_size=args.batch, crop_size=args.crop, seed=0)
        loaders = {
            "host": make_pretrain_dataloader(ds, **common),
            "device_transforms": make_pretrain_dataloader(ds, device_transforms=True, **common),
        }
        sample = next(iter(loaders["device_transforms"]))
        host_batch = next(iter(loaders["host"]))
        print(
            f"batch {tuple(host_batch.shape)}: host path ships {host_batch.element_size()} B per "
            f"value ({host_batch.nbytes / 2**20:.1f} MiB), device path {sample.pixels.element_size()}"
            f" B ({sample.pixels.nbytes / 2**20:.1f} MiB)"
        )
        rates: dict[str, list[float]] = {k: [] for k in loaders}
        for _ in range(args.rounds):
            for name, loader in loaders.items():
                rates[name].append(rate(loader, args.batches, args.batch))
        med = {k: statistics.median(v) for k, v in rates.items()}
        for name, r in med.items():
            print(f"{name:18s} {r:8.1f} samples/s per worker   host {1e3 / r:6.2f} ms per sample")
        print(
            f"host cost per sample, device_transforms / host = {med['host'] / med['device_transforms']:.2f}x"
        )
        start = time.perf_counter()
        for _ in range(3):
            apply_device_transforms(sample, "cpu", info.mean, info.std)
        moved = (time.perf_counter() - start) / 3 / args.batch
        print(f"the moved work, run on this CPU for reference: {1e3 * moved:.2f} ms per sample")
        print(
            "\nworkers per GCD at the planner's images/s (1 node x 8 GCDs, MI250X, paper settings):"
        )
        for preset in ("vit-base", "vit-huge", "vit-3b"):
            result = planner.plan(preset, num_nodes=1, **planner.PAPER_SETTINGS)
            est = result.strategies[result.ranking[0]]
            per_gcd = est.images_per_s / (result.num_nodes * result.gcds_per_node)
            need = {k: math.ceil(per_gcd / r) for k, r in med.items()}
            print(
                f"  {preset:9s} {per_gcd:7.1f} img/s per GCD ({est.strategy}): "
                f"{need['host']} workers (host path), {need['device_transforms']} (device_transforms)"
            )


if __name__ == "__main__":
    main()
