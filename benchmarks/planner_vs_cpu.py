"""The planner's peak memory per rank against real FSDP2 / DDP runs on this CPU.

    python benchmarks/planner_vs_cpu.py [--procs 2 4] [--sizes vit-s vit-m] [--steps 3]

For each model size, process count and strategy (FULL_SHARD, SHARD_GRAD_OP: FSDP2 fully_shard
per block with reshard_after_forward true / false; replicate: DDP), launches real processes
(``torch.distributed.run``, gloo), builds the MAE model on the meta device, shards or replicates
it, materialises it, trains ``--steps`` AdamW steps in fp32 and reports each rank's largest
resident set size (sampled after forward, backward and the optimiser step) above its RSS
before the model existed. The
planner predicts the same run (fp32, no activation checkpointing, ``gcds_per_node`` = process
count, no runtime overhead: the baseline is subtracted). Goal: within +-25 %. Workers pin glibc's
mmap threshold as the recipe's CPU ranks do (``geofm_hf/training/host_memory.py``);
``GEOFM_BENCH_GLIBC_DEFAULT=1`` measures with glibc's default instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    # ViT-S / a mid size at 64 px with 13 bands: states of ~0.35 and ~0.9 GB replicated.
    "vit-s": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                  intermediate_size=1536),
    "vit-m": dict(hidden_size=512, num_hidden_layers=16, num_attention_heads=8,
                  intermediate_size=2048),
}  # fmt: skip
COMMON = dict(image_size=64, patch_size=8, num_channels=13)
STRATEGY = {"FULL_SHARD": "FULL_SHARD", "SHARD_GRAD_OP": "SHARD_GRAD_OP", "replicate": "DDP"}


def _rss() -> int:
    """Current resident set size in bytes (``ru_maxrss`` is a high-water mark that import-time
    transients may already have set above everything training allocates)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def worker(size: str, strategy: str, batch: int, steps: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    if os.environ.get("GEOFM_BENCH_GLIBC_DEFAULT") != "1":
        # As the recipe does on CPU ranks: freed tensors go back to the OS (else glibc keeps
        # freed block gathers in the heap and the RSS measures the allocator, not the plan).
        from geofm_hf.training.host_memory import pin_mmap_threshold

        pin_mmap_threshold()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    from geofm_hf import GeoViTMAEConfig
    from geofm_hf.modeling_geofm import GeoViTMAEForPreTraining

    config = GeoViTMAEConfig.from_preset("tiny", **SIZES[size], **COMMON)
    x = torch.randn(batch, 13, 64, 64)
    noise = torch.rand(batch, config.num_patches)
    dist.barrier()
    base = _rss()
    with torch.device("meta"):
        model = GeoViTMAEForPreTraining(config)
    if strategy == "replicate":
        model.to_empty(device="cpu")
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02)
        model = torch.nn.parallel.DistributedDataParallel(model)
    else:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        reshard = strategy == "FULL_SHARD"
        for module in model.modules():
            if type(module).__name__ == "GeoViTMAELayer":
                fully_shard(module, mesh=mesh, reshard_after_forward=reshard)
        fully_shard(model, mesh=mesh, reshard_after_forward=reshard)
        model.to_empty(device="cpu")
        with torch.no_grad():
            for p in model.parameters():
                p.to_local().normal_(0, 0.02)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
    high = 0
    for _ in range(steps):
        loss = model(pixel_values=x, noise=noise).loss
        high = max(high, _rss())  # activations alive
        loss.backward()
        high = max(high, _rss())  # gradients
        optim.step()
        high = max(high, _rss())  # AdamW moments
        optim.zero_grad(set_to_none=True)
    peak = torch.tensor([float(high - base)])
    peaks = [torch.zeros(1) for _ in range(world)]
    dist.all_gather(peaks, peak)
    if rank == 0:
        Path(out).write_text(json.dumps([p.item() for p in peaks]))
    from geofm_hf.training.arguments import let_gloo_threads_finish

    let_gloo_threads_finish()  # else ~ProcessGroupGloo can deadlock (seen here at 4 processes)
    dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def predict(size: str, strategy: str, procs: int, batch: int) -> float:
    from geofm_hf import planner

    cal = dataclasses.replace(planner.CALIBRATION, runtime_overhead_gib=0.0)
    from geofm_hf import GeoViTMAEConfig

    # The config the workers build (the decoder included), not a dict of the encoder's sizes:
    # the planner's default decoder (512 x 8 layers) doubled vit-s's parameters.
    result = planner.plan(
        GeoViTMAEConfig.from_preset("tiny", **SIZES[size], **COMMON),
        num_nodes=1,
        gcds_per_node=procs,
        gcd_memory_gb=1e9,
        local_batch=batch,
        precision="fp32",
        activation_checkpointing=False,
        calibration=cal,
    )
    return result.strategies[STRATEGY[strategy]].memory_gb_per_gcd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGY), choices=list(STRATEGY))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", nargs=3, metavar=("SIZE", "STRATEGY", "OUT"))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.batch, args.steps, args.worker[2])
        return
    print(f"load average {os.getloadavg()[0]:.1f}; fp32, batch {args.batch}, 64 px, 13 bands")
    print("| size | procs | strategy | predicted GiB | measured GiB (max rank) | error |")
    print("|---|---|---|---|---|---|")
    errors = []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for size in args.sizes:
        for procs in args.procs:
            for strategy in args.strategies:
                with tempfile.TemporaryDirectory() as tmp:
                    out = Path(tmp) / "peaks.json"
                    cmd = [
                        sys.executable, "-m", "torch.distributed.run",
                        f"--nproc_per_node={procs}", f"--master_port={_free_port()}", __file__,
                        "--batch", str(args.batch), "--steps", str(args.steps),
                        "--worker", size, strategy, str(out),
                    ]  # fmt: skip
                    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
                    if run.returncode or not out.exists():
                        print(f"| {size} | {procs} | {strategy} | failed: {run.stderr[-300:]} |")
                        continue
                    measured = max(json.loads(out.read_text())) / 2**30
                pred = predict(size, strategy, procs, args.batch)
                err = (pred - measured) / measured
                errors.append(err)
                print(
                    f"| {size} | {procs} | {strategy} | {pred:.3f} | {measured:.3f} | {err:+.0%} |",
                    flush=True,
                )
    if errors:
        inside = sum(abs(e) <= 0.25 for e in errors)
        print(f"\nwithin +-25 %: {inside}/{len(errors)}; mean |error| "
              f"{sum(abs(e) for e in errors) / len(errors):.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
