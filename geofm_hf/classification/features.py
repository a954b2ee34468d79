"""Frozen-encoder features for the linear probe, with an on-disk cache (safetensors, no pickle)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["extract_features", "feature_cache_key", "load_or_extract_features"]


@torch.no_grad()
def extract_features(
    model,
    processor,
    images: np.ndarray | list[np.ndarray],
    band_names: list[str],
    *,
    feature: str = "cls",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """``(N, D)`` float32 features of ``images`` from a frozen :class:`GeoViTMAEModel`.

    ``feature``: ``"cls"`` (the cls token after the final LayerNorm, MAE's linear-probe feature) or
    ``"mean"`` (mean of the patch tokens after it). Images go through ``processor`` (band order by
    name, per-band normalisation, resize to the model's size); other sizes than the model's
    ``image_size`` run with interpolated position embeddings.
    """
    if feature not in ("cls", "mean"):
        raise ValueError(f"feature must be 'cls' or 'mean': found {feature!r}.")
    model = model.to(device).eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        if isinstance(batch, np.ndarray):
            batch = batch.astype(np.float32)
        else:
            batch = [np.asarray(b, dtype=np.float32) for b in batch]
        pixels = processor(batch, band_names=band_names)["pixel_values"].to(device)
        hidden = model(pixels, interpolate_pos_encoding=True).last_hidden_state  # (B, 1 + L, D)
        pooled = hidden[:, 0] if feature == "cls" else hidden[:, 1:].mean(dim=1)  # (B, D)
        out.append(pooled.float().cpu())
    return torch.cat(out) if out else torch.empty(0, model.config.hidden_size)


def feature_cache_key(**parts: Any) -> str:
    """A short stable hash of everything the features depend on (model, data, options)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_or_extract_features(
    cache_dir: str | os.PathLike | None, key: str, compute
) -> tuple[torch.Tensor, bool]:
    """Features from ``cache_dir/features-<key>.safetensors`` or ``compute()`` (then stored).

    Returns ``(features, from_cache)``. The file is written under a temporary name and renamed,
    so an interrupted run never leaves a truncated cache entry behind.
    """
    from safetensors.torch import load_file, save_file

    if cache_dir is None:
        return compute(), False
    path = Path(cache_dir) / f"features-{key}.safetensors"
    if path.is_file():
        return load_file(path)["features"], True
    features = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".safetensors.tmp")
    save_file({"features": features.contiguous()}, tmp, metadata={"key": key})
    os.replace(tmp, path)
    return features, False
