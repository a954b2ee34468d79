"""Cost of the wavelength-conditioned patch embedding against the conv one, per MAE step.

Two GeoViTMAEForPreTraining models of the same shape (default vit-base, 224 px, 13 bands, batch
8, mask 0.75), one with ``patch_embedding="conv"``, one with ``"wavelength"``, timed in
alternating rounds in one process (forward + backward, bf16 autocast where the hardware has
native bf16, else fp32). Prints each step time, the ratio wavelength/conv, and the overhead as a
share of the conv step (the goal is under 5%), plus the hypernetwork's share measured alone.

    python benchmarks/bench_wavelength.py [--preset vit-base] [--batch 8] [--rounds 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import geofm_hf
from geofm_hf.modeling_geofm import _generate
from geofm_hf.training.reporting import cpu_has_fast_bf16

S2_WAVELENGTHS = [0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.375, 1.61, 2.19]  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="vit-base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    bf16 = device.type == "cuda" or cpu_has_fast_bf16()
    torch.manual_seed(0)
    models = {}
    for kind in ("conv", "wavelength"):
        config = geofm_hf.GeoViTMAEConfig.from_preset(
            args.preset, num_channels=13, patch_embedding=kind
        )
        models[kind] = geofm_hf.GeoViTMAEForPreTraining(config).to(device).train()
    config = models["conv"].config
    size = config.image_size
    pixels = torch.randn(args.batch, 13, size, size, device=device)
    noise = torch.rand(args.batch, config.num_patches, device=device)
    wavelengths = torch.tensor(S2_WAVELENGTHS, device=device)
    inputs = {"conv": {}, "wavelength": {"wavelengths": wavelengths}}

    def step(kind: str) -> float:
        model = models[kind]
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = model(pixels, noise=noise, **inputs[kind]).loss
            loss.backward()
            model.zero_grad(set_to_none=True)
        _sync(device)
        return (time.perf_counter() - start) / args.steps

    def hypernetwork() -> float:
        # The extra work alone: band embedding, kernel generation (encoder and decoder).
        model = models["wavelength"]
        embed = model.vit.embeddings
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                bands = embed.wavelength_encoder(wavelengths)
                weight, bias = embed.patch_embeddings.kernels(bands)
                dec, dec_bias = _generate(
                    bands, model.decoder.weight_generator, model.decoder.bias_generator
                )
                total = weight.float().sum() + bias.float().sum() + dec.float().sum()
                total = total + dec_bias.float().sum()
            total.backward()
            model.zero_grad(set_to_none=True)
        _sync(device)
        return (time.perf_counter() - start) / args.steps

    for kind in models:  # warm-up
        step(kind)
    times = {"conv": [], "wavelength": [], "hypernetwork": []}
    for _ in range(args.rounds):
        times["conv"].append(step("conv"))
        times["wavelength"].append(step("wavelength"))
        times["hypernetwork"].append(hypernetwork())
    med = {k: statistics.median(v) for k, v in times.items()}
    params = {k: geofm_hf.count_parameters(m) for k, m in models.items()}
    case = (
        f"{torch.cuda.get_device_name(device)}"
        if device.type == "cuda"
        else f"CPU, {'native bf16 (AMX/AVX512-BF16) autocast' if bf16 else 'fp32 (no fast bf16)'}"
    )
    print(f"device: {case}; {args.preset} {size} px, 13 bands, batch {args.batch}, mask 0.75")
    print(f"{'model':<12}{'step s (median)':>18}{'params':>14}")
    for kind in ("conv", "wavelength"):
        print(f"{kind:<12}{med[kind]:>18.4f}{params[kind]:>14,}")
    ratio = med["wavelength"] / med["conv"]
    print(f"ratio wavelength/conv step time: {ratio:.3f} (overhead {100 * (ratio - 1):+.1f}%)")
    print(
        f"hypernetwork alone (fwd+bwd): {med['hypernetwork']:.4f} s = "
        f"{100 * med['hypernetwork'] / med['conv']:.1f}% of the conv step (goal < 5%)"
    )


if __name__ == "__main__":
    main()
