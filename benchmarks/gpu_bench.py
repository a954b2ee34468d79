"""One-GPU checks for issue 14, run by benchmarks/gpu_check.sh (prepared; needs a GPU).

    python benchmarks/gpu_bench.py [--steps 5] [--rounds 3]

1. Model fwd+bwd under bf16 autocast, eager vs per-block compiled (``compile_blocks``), vit-base
   and vit-huge at 224 px, batch 32, alternating rounds (A B A B): images/s, the ratio, and MFU
   against the card's bf16 spec and a bf16 matmul measured in the same process.
2. SDPA backends for head dims 64 / 88 / 105 / 112: each backend forced in turn
   (``torch.nn.attention.sdpa_kernel``), forward+backward, accepted or refused, and time.
3. Data feed: ``apply_device_transforms`` on the GPU for a 224 px 13-band uint16 batch (ms per
   sample) and host-to-device bytes, uint16 vs float32.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import geofm_hf  # noqa: E402
from geofm_hf.data.device_transforms import RawBatch, apply_device_transforms  # noqa: E402
from geofm_hf.training.compile import compile_blocks  # noqa: E402
from geofm_hf.training.reporting import device_peak_flops  # noqa: E402


def timed(fn, steps: int) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def matmul_peak(n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    return 2 * n**3 / timed(lambda: a @ b, 20)


def model_check(preset: str, batch: int, steps: int, rounds: int, spec: float, measured: float):
    import copy

    torch.manual_seed(0)
    config = geofm_hf.GeoViTMAEConfig.from_preset(preset, num_channels=13, image_size=224)
    eager = geofm_hf.GeoViTMAEForPreTraining(config).cuda().train()
    compiled = copy.deepcopy(eager)
    compile_blocks(compiled)
    pixels = torch.randn(batch, 13, 224, 224, device="cuda")
    noise = torch.rand(batch, config.num_patches, device="cuda")
    models = {"eager": eager, "compiled": compiled}
    losses = {}

    def step(model):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(pixel_values=pixels, noise=noise).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss

    for name, model in models.items():
        start = time.perf_counter()
        losses[name] = step(model).item()
        step(model)
        torch.cuda.synchronize()
        print(f"{preset} {name}: warm-up {time.perf_counter() - start:.1f} s")
    times = {n: [] for n in models}
    for _ in range(rounds):
        for name, model in models.items():
            times[name].append(timed(lambda m=model: step(m), steps))
    flops = geofm_hf.flops_per_image(config) * batch
    for name in models:
        t = statistics.median(times[name])
        mfu = f"MFU {flops / t / spec:.1%} of spec" if spec else "spec unknown"
        print(
            f"RESULT {preset} {name}: {batch / t:.1f} img/s, {mfu}, "
            f"{flops / t / measured:.1%} of measured bf16 matmul, loss {losses[name]:.5f}"
        )
    ratio = statistics.median(times["eager"]) / statistics.median(times["compiled"])
    print(f"RESULT {preset} compiled / eager = {ratio:.2f}x")
    del eager, compiled
    torch.cuda.empty_cache()


def sdpa_check(tokens: int = 257, batch: int = 32, width_heads: int = 16) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "math": SDPBackend.MATH,
    }
    for head_dim in (64, 88, 105, 112):
        q, k, v = (
            torch.randn(
                batch, width_heads, tokens, head_dim, device="cuda", dtype=torch.bfloat16
            ).requires_grad_()
            for _ in range(3)
        )
        row = []
        for name, backend in backends.items():
            try:
                with sdpa_kernel(backend):

                    def run(q=q, k=k, v=v):
                        torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()

                    run()
                    row.append(f"{name} {1e3 * timed(run, 5):.2f} ms")
            except RuntimeError as exc:
                row.append(f"{name} refused ({str(exc).splitlines()[0][:60]})")
        print(f"RESULT sdpa head_dim {head_dim}: " + " | ".join(row))


def feed_check(batch: int = 32) -> None:
    raw = torch.randint(0, 2**15, (batch, 13, 224, 224), dtype=torch.int16).pin_memory()
    ops = torch.randint(0, 2, (batch, 3), dtype=torch.int64)
    ops[:, 2] = torch.randint(0, 4, (batch,))
    mean, std = [1500.0] * 13, [400.0] * 13
    t = timed(lambda: apply_device_transforms(RawBatch(raw, ops), "cuda", mean, std), 10)
    print(
        f"RESULT feed: device transforms {1e3 * t / batch:.3f} ms per sample on the GPU; "
        f"host->device {raw.nbytes / batch / 2**20:.2f} MiB per sample (float32 path: "
        f"{2 * raw.nbytes / batch / 2**20:.2f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    assert torch.cuda.is_available(), "no GPU visible: this check needs one"
    spec, how = device_peak_flops(torch.device("cuda"), bf16=True)
    measured = matmul_peak()
    print(
        f"device {torch.cuda.get_device_name(0)} | torch {torch.__version__} | "
        f"bf16 peak {spec / 1e12:.0f} TFLOP/s ({how}) | measured bf16 matmul "
        f"{measured / 1e12:.0f} TFLOP/s"
    )
    sdpa_check()
    feed_check(args.batch)
    for preset in ("vit-base", "vit-huge"):
        model_check(preset, args.batch, args.steps, args.rounds, spec, measured)


if __name__ == "__main__":
    main()
