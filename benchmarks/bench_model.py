"""Forward+backward speed of GeoViTMAEForPreTraining vs transformers' ViTMAEForPreTraining.

Same shape (default vit-base, 224 px, batch 8, mask 0.75), same weights (ours imported from
theirs), alternating timed rounds in one process, fp32 and bf16 autocast. Prints images/s for
each, the ratio ours/theirs, and model FLOPs utilisation against a plain bf16 (and fp32) matmul
measured in the same run.

    python benchmarks/bench_model.py [--preset vit-base] [--batch 8] [--rounds 5] [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining

import geofm_hf
from geofm_hf.modeling_geofm import sincos_2d_position_embedding
from geofm_hf.training.reporting import cpu_has_fast_bf16, measure_matmul_flops


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
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=None,
        help="fp32 and/or bf16; default fp32, plus bf16 where this CPU multiplies bf16 natively",
    )
    args = parser.parse_args()

    torch.manual_seed(0)
    ours, theirs, cfg = build_pair(args.preset)
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
        times = {"geofm_hf": [], "transformers": []}
        models = {"geofm_hf": ours, "transformers": theirs}
        for model in models.values():
            step(model, pixels, noise, autocast)  # warm-up
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
            print(f"{precision:5s} {name:13s} {ips[name]:7.2f} img/s  {mfu}")
        print(
            f"{precision:5s} ratio geofm_hf / transformers = {ips['geofm_hf'] / ips['transformers']:.2f}x"
        )


if __name__ == "__main__":
    main()
