"""Training-step throughput of the pretraining recipe, with the data pipeline vs a pre-loaded batch.

For each preset (default: tiny and vit-base, on the bundled 13-band 64 px chips), alternates
timed rounds of (a) the recipe's step fed by the streaming loader and (b) the same step on one
pre-loaded batch, in one process. Prints steps/s, images/s, MFU against a plain matmul of the
step's precision measured in the same run, and the ratio (a)/(b): near 1.0 means the data
pipeline is not the bottleneck.

    python benchmarks/bench_pretrain.py [--presets tiny vit-base] [--batch 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import geofm_hf
from geofm_hf.data import make_pretrain_dataloader, read_dataset_info, sample_dataset_path
from geofm_hf.training.optim import parameter_groups
from geofm_hf.training.reporting import cpu_has_fast_bf16, measure_matmul_flops


def build(preset: str, info, size: int):
    config = geofm_hf.GeoViTMAEConfig.from_preset(
        preset,
        num_channels=len(info.band_names),
        band_names=info.band_names,
        image_mean=info.mean,
        image_std=info.std,
        image_size=size,
    )
    model = geofm_hf.GeoViTMAEForPreTraining(config).train()
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95))
    return model, optimizer


def train_step(model, optimizer, pixels, bf16: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(pixel_values=pixels).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "vit-base"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--bf16", choices=["auto", "true", "false"], default="auto")
    args = parser.parse_args()

    dataset = sample_dataset_path()
    info = read_dataset_info(dataset)
    bf16 = args.bf16 == "true" or (args.bf16 == "auto" and cpu_has_fast_bf16())
    dtype = torch.bfloat16 if bf16 else torch.float32
    peak = measure_matmul_flops(dtype, n=1024, seconds=1.0)
    print(
        f"threads={torch.get_num_threads()} batch={args.batch} precision={'bf16' if bf16 else 'fp32'} "
        f"matmul peak {peak / 1e12:.3f} TFLOP/s"
    )
    for preset in args.presets:
        size = info.chip_size
        model, optimizer = build(preset, info, size)
        loader = make_pretrain_dataloader(
            dataset, batch_size=args.batch, crop_size=size, seed=0, num_workers=0
        )
        stream = iter(loader)
        preloaded = next(stream)
        flops = geofm_hf.flops_per_image(model.config) * args.batch
        train_step(model, optimizer, preloaded, bf16)  # warm-up
        times = {"with data": [], "pre-loaded": []}
        for _ in range(args.rounds):
            start = time.perf_counter()
            for _ in range(args.steps):
                train_step(model, optimizer, next(stream), bf16)
            times["with data"].append((time.perf_counter() - start) / args.steps)
            start = time.perf_counter()
            for _ in range(args.steps):
                train_step(model, optimizer, preloaded, bf16)
            times["pre-loaded"].append((time.perf_counter() - start) / args.steps)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        for name, values in times.items():
            step = statistics.median(values)
            print(
                f"{preset:9s} ({params:6.1f}M, {size}px) {name:10s} {1 / step:6.2f} steps/s "
                f"{args.batch / step:8.1f} images/s  MFU {flops / step / peak:5.1%}"
            )
        ratio = statistics.median(times["pre-loaded"]) / statistics.median(times["with data"])
        print(f"{preset:9s} data-fed / pre-loaded throughput = {ratio:.2f}")


if __name__ == "__main__":
    main()
