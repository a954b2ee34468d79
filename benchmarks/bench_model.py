"""Forward+backward speed of GeoViTMAEForPreTraining vs transformers' ViTMAEForPreTraining.

Same shape (default vit-base, 224 px, batch 8, mask 0.75), same weights (ours imported from
theirs), alternating timed rounds in one process (A B C A B C ...), fp32 and bf16 autocast.
Rows: transformers' ViTMAE, ours eager, ours with every block compiled
(``geofm_hf.training.compile.compile_blocks``, inductor; ``--no-compile`` drops it). Prints the
CPU case it ran in (model name, AMX / AVX512-BF16 flags, whether bf16 is native), the load
average, images/s, the ratios, and model FLOPs utilisation against a plain bf16 (and fp32)
matmul measured in the same run.

    python benchmarks/bench_model.py [--preset vit-base] [--batch 8] [--rounds 5] [--steps 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time

import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining

import geofm_hf
from geofm_hf.modeling_geofm import sincos_2d_position_embedding
from geofm_hf.training.compile import compile_blocks
from geofm_hf.training.reporting import cpu_has_fast_bf16, measure_matmul_flops


def cpu_case() -> str:
    """Which CPU case this run is: model name, native-bf16 ISA flags, cores, threads, load."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name") and name in ("", "unknown CPU", "x86_64"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2") if f in flags]
    native = "amx_bf16" in flags or "avx512_bf16" in flags
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"CPU: {name} | {os.cpu_count()} cores, {torch.get_num_threads()} threads | ISA: "
        f"{' '.join(isa) or 'none of amx/avx512'} | native bf16: {'yes' if native else 'NO'} | "
        f"load average {load}"
    )


def build_pair(preset: str):
    ours_cfg = geofm_hf.GeoViTMAEConfig.from_preset(preset)
    hf_cfg = ViTMAEConfig(
        **{
            k: getattr(ours_cfg, k)
            for k in (
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "image_size",
                "patch_size",
                "num_channels",
                "qkv_bias",
                "decoder_hidden_size",
                "decoder_num_hidden_layers",
                "decoder_num_attention_heads",
                "decoder_intermediate_size",
                "mask_ratio",
                "norm_pix_loss",
                "layer_norm_eps",
            )
        },
        attn_implementation="sdpa",
    )
    theirs = ViTMAEForPreTraining(hf_cfg)
    grid = hf_cfg.image_size // hf_cfg.patch_size
    with torch.no_grad():
        # transformers 5 leaves these tables zero at init; real checkpoints hold sin-cos.
        theirs.vit.embeddings.position_embeddings.copy_(
            sincos_2d_position_embedding(grid, grid, hf_cfg.hidden_size)[None]
        )
        theirs.decoder.decoder_pos_embed.copy_(
            sincos_2d_position_embedding(grid, grid, hf_cfg.decoder_hidden_size)[None]
        )
    ours = geofm_hf.from_transformers_vitmae(theirs)
    return ours.train(), theirs.train(), ours_cfg


def step(model, pixels, noise, autocast: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(pixel_values=pixels, noise=noise).loss
    loss.backward()
    model.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="vit-base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed round")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled row")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=None,
        help="fp32 and/or bf16; default fp32, plus bf16 where this CPU multiplies bf16 natively",
    )
    args = parser.parse_args()

    torch.manual_seed(0)
    ours, theirs, cfg = build_pair(args.preset)
    models = {"transformers": theirs, "geofm_hf": ours}
    if not args.no_compile:
        compiled = copy.deepcopy(ours)
        compile_blocks(compiled)
        models["geofm_hf compiled"] = compiled
    print(cpu_case())
    pixels = torch.randn(args.batch, cfg.num_channels, cfg.image_size, cfg.image_size)
    noise = torch.rand(args.batch, cfg.num_patches)
    flops = geofm_hf.flops_per_image(cfg) * args.batch
    print(
        f"preset={args.preset} batch={args.batch} image={cfg.image_size} threads={torch.get_num_threads()}"
    )
    peak = {
        "fp32": measure_matmul_flops(torch.float32, n=1024, seconds=1.0),
        "bf16": measure_matmul_flops(torch.bfloat16, n=1024, seconds=1.0),
    }
    print(
        f"plain matmul peak: fp32 {peak['fp32'] / 1e12:.3f} TFLOP/s, bf16 {peak['bf16'] / 1e12:.3f} TFLOP/s"
    )

    precisions = args.precisions
    if precisions is None:
        precisions = ["fp32", "bf16"] if cpu_has_fast_bf16() else ["fp32"]
        if "bf16" not in precisions:
            print(
                "bf16 skipped: this CPU has no native bf16 (no AMX / AVX512-BF16); --precisions bf16 forces it"
            )
    for precision in precisions:
        autocast = precision == "bf16"
        times = {name: [] for name in models}
        for name, model in models.items():
            start = time.perf_counter()
            step(model, pixels, noise, autocast)  # warm-up (compiles the compiled row)
            step(model, pixels, noise, autocast)
            print(f"{precision:5s} {name:18s} warm-up {time.perf_counter() - start:6.1f} s")
        for _ in range(args.rounds):
            for name, model in models.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    step(model, pixels, noise, autocast)
                times[name].append((time.perf_counter() - start) / args.steps)
        ips = {n: args.batch / statistics.median(t) for n, t in times.items()}
        for name in models:
            achieved = flops / statistics.median(times[name])
            # MFU against the bf16 matmul only where bf16 is native: elsewhere that "peak" is a
            # slow fallback path and the fraction means nothing.
            against = ["bf16", precision] if "bf16" in precisions else [precision]
            mfu = "  ".join(
                f"MFU vs {p} matmul {achieved / peak[p]:5.1%}" for p in dict.fromkeys(against)
            )
            print(f"{precision:5s} {name:18s} {ips[name]:7.2f} img/s  {mfu}")
        for name in models:
            if name != "transformers":
                print(
                    f"{precision:5s} ratio {name} / transformers = "
                    f"{ips[name] / ips['transformers']:.2f}x"
                )
        if "geofm_hf compiled" in ips:
            print(
                f"{precision:5s} ratio geofm_hf compiled / eager = "
                f"{ips['geofm_hf compiled'] / ips['geofm_hf']:.2f}x"
            )
        print(f"{precision:5s} load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
