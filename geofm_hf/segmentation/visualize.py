"""Pictures of segmentation maps: image | reference | prediction, one shared class legend."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._atomic import atomic_savefig

__all__ = ["class_colors", "rgb_composite", "save_prediction_png", "scene_mosaic"]


def class_colors(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` floats from matplotlib's tab10/tab20."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
    return np.array([cmap(i % cmap.N)[:3] for i in range(num_classes)])


def rgb_composite(image: np.ndarray, band_names: list[str]) -> np.ndarray:
    """``(C, H, W)`` -> ``(H, W, 3)`` in [0, 1] from the red/green/blue bands (B04/B03/B02), each
    stretched between its 2nd and 98th percentile; the first three bands otherwise."""
    wanted = [("B04", "red"), ("B03", "green"), ("B02", "blue")]
    lower = [b.lower() for b in band_names]
    idx = []
    for names in wanted:
        hit = next((lower.index(n.lower()) for n in names if n.lower() in lower), None)
        idx.append(hit)
    if None in idx:
        idx = [0, 1, 2] if image.shape[0] >= 3 else [0, 0, 0]
    rgb = image[idx].astype(np.float32)
    out = np.zeros_like(rgb)
    for c in range(3):
        ok = np.isfinite(rgb[c])
        if ok.any():
            lo, hi = np.percentile(rgb[c][ok], [2, 98])
            out[c] = np.clip((rgb[c] - lo) / max(hi - lo, 1e-6), 0, 1)
    return out.transpose(1, 2, 0)


def save_prediction_png(panels: list[tuple[str, np.ndarray]], label_names: list[str],
                        path: str | os.PathLike, ignore_index: int = 255,
                        title: str = "") -> Path:  # fmt: skip
    """Side-by-side panels: ``(H, W, 3)`` float images as they are, ``(H, W)`` integer class maps
    in the class colours (``ignore_index`` grey). Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colors = class_colors(len(label_names))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), dpi=110)
    axes = np.atleast_1d(axes)
    for ax, (name, data) in zip(axes, panels):
        if data.ndim == 2:
            rgb = np.full((*data.shape, 3), 0.93)
            known = data != ignore_index
            rgb[known] = colors[np.clip(data[known], 0, len(label_names) - 1)]
            data = rgb
        ax.imshow(data, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    handles = [Patch(color=colors[i], label=n) for i, n in enumerate(label_names)]
    handles.append(Patch(facecolor=(0.93, 0.93, 0.93), edgecolor="black", label="unlabelled"))
    fig.legend(handles=handles, loc="lower center", ncol=min(9, len(handles)), fontsize=7,
               frameon=False)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return atomic_savefig(fig, path, format="png")


def scene_mosaic(split, values: np.ndarray, fill) -> np.ndarray | None:
    """Per-chip ``values`` ``(N, ..., H, W)`` of the split's first scene placed at their chip
    offsets, ``fill`` elsewhere; ``None`` when no chip of that scene knows its offset."""
    first = split.sources[0]
    keep = [i for i, s in enumerate(split.sources) if s == first and split.offsets[i, 0] >= 0]
    if not keep:
        return None
    side = split.masks.shape[-1]
    r0, c0 = split.offsets[keep].min(0)
    r1, c1 = split.offsets[keep].max(0) + side
    canvas = np.full((*values.shape[1:-2], r1 - r0, c1 - c0), fill, dtype=values.dtype)
    for i in keep:
        r, c = split.offsets[i] - (r0, c0)
        canvas[..., r : r + side, c : c + side] = values[i]
    return canvas
