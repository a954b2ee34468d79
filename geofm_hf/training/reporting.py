"""Metrics (JSON lines), device peak FLOP/s for MFU, and the run's figures."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from .._atomic import atomic_savefig, atomic_write_text

# Dense bf16 peak per device, FLOP/s (vendor figures, no sparsity). MFU on unknown devices is
# measured against a plain matmul instead.
_GPU_BF16_PEAK = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "MI250X": 191.5e12,  # per GCD, as in the paper
    "MI300X": 1307e12,
    "L40S": 362e12,
}


def measure_matmul_flops(
    dtype: torch.dtype = torch.bfloat16, n: int = 1024, seconds: float = 0.5
) -> float:
    """FLOP/s of a plain square matmul on this process's CPU threads."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)


def cpu_has_fast_bf16() -> bool:
    """True where this CPU multiplies bf16 at least as fast as fp32 (AMX, AVX512-BF16).

    Elsewhere (e.g. an AVX2-only EPYC) bf16 matmuls take a path ~50x slower than fp32, so
    ``bf16: auto`` must not pick them. Measured rather than read from CPU flags: what counts is
    what this torch build does on this CPU.
    """
    bf16 = measure_matmul_flops(torch.bfloat16, n=512, seconds=0.1)
    fp32 = measure_matmul_flops(torch.float32, n=512, seconds=0.1)
    return bf16 >= fp32


def device_peak_flops(device: torch.device, bf16: bool) -> tuple[float, str]:
    """(peak FLOP/s of one device, how it was obtained)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in _GPU_BF16_PEAK.items():
            if key in name:
                return peak, f"{name} bf16 spec"
        return 0.0, f"{name}: unknown peak"
    dtype = torch.bfloat16 if bf16 else torch.float32
    peak = measure_matmul_flops(dtype)
    return peak, f"measured {str(dtype).split('.')[-1]} matmul on {torch.get_num_threads()} threads"


class MetricsLog:
    """Appends one JSON object per logging step to ``metrics.jsonl`` (main process)."""

    def __init__(self, path: str | os.PathLike, resume_step: int | None) -> None:
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            # Lines logged after the checkpoint we resume from describe steps that will be
            # trained again: drop them so the curve has each step once.
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()

    def write(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def plot_loss_curve(records: list[dict], path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records if "loss" in r]
    losses = [r["loss"] for r in records if "loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, losses, lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("MAE loss (masked patches)")
    ax.set_title("Pretraining loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_savefig(fig, path)


def _rgb(image: np.ndarray, rgb_index: list[int] | None) -> np.ndarray:
    """(C, H, W) normalised bands -> (H, W, 3) in [0, 1] with a 2-98 % stretch."""
    bands = image[list(rgb_index)] if rgb_index else image[:1].repeat(3, axis=0)
    out = np.empty((*bands.shape[1:], 3), dtype=np.float32)
    for i, band in enumerate(bands):
        lo, hi = np.percentile(band, [2, 98])
        out[..., i] = np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1)
    return out


@torch.no_grad()
def plot_reconstructions(
    model,
    pixel_values: torch.Tensor,
    path: str | os.PathLike,
    rgb_index: list[int] | None,
    draw: bool = True,
) -> None:
    """Original / masked / reconstruction (RGB composite) for a few images (the first frame
    of a time series).

    With a sharded model every rank runs the forward (it gathers parameters); only the one with
    ``draw`` writes the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(pixel_values.shape[0], model.config.num_patches, generator=generator)
    out = model(pixel_values, noise=noise)
    if not draw:
        return
    pixel_values = pixel_values.cpu()
    target = model.patchify(pixel_values)  # (B, L, p*p*C)
    logits = out.logits.float().cpu()
    if model.config.norm_pix_loss:
        # The decoder predicts per-patch normalised pixels: undo it with the true patch stats.
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        logits = logits * (var + 1.0e-6) ** 0.5 + mean
    size = tuple(pixel_values.shape[-2:])
    mask = out.mask.float().cpu().unsqueeze(-1).expand_as(target)  # (B, L, p*p*C), 1 = masked
    masked = model.unpatchify(target * (1 - mask), size)
    pasted = model.unpatchify(target * (1 - mask) + logits * mask, size)
    rows = pixel_values.shape[0]
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows), dpi=100, squeeze=False)
    for r in range(rows):
        for c, (title, image) in enumerate(
            (
                ("original", pixel_values[r]),
                (f"masked {model.config.mask_ratio:.0%}", masked[r]),
                ("reconstruction", pasted[r]),
            )
        ):
            if image.ndim == 4:  # a time series: its first frame
                image = image[0]
            axes[r][c].imshow(_rgb(image.float().numpy(), rgb_index))
            axes[r][c].set_axis_off()
            if r == 0:
                axes[r][c].set_title(title)
    fig.tight_layout()
    atomic_savefig(fig, path)
