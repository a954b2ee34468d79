"""Frozen-encoder features for the linear probe, with an on-disk cache (safetensors, no pickle)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import atomic_path

__all__ = [
    "FEATURE_CHOICES",
    "check_feature",
    "extract_features",
    "feature_cache_key",
    "load_or_extract_features",
]

# The probe's candidate features: MAE's cls token, the mean patch token, and the mean patch token
# averaged over the last 4 blocks (each block's output through the final LayerNorm).
FEATURE_CHOICES = ("cls", "mean", "mean_last4")
_LAST_K = re.compile(r"mean_last(\d+)")


def check_feature(feature: str, num_layers: int | None = None) -> int:
    """Validate a feature name; returns the number of blocks it averages (1 for cls / mean)."""
    if feature in ("cls", "mean"):
        return 1
    match = _LAST_K.fullmatch(feature)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(
            f"feature must be 'cls', 'mean' or 'mean_lastK' (K >= 1 blocks, e.g. mean_last4): "
            f"found {feature!r}."
        )
    k = int(match.group(1))
    if num_layers is not None and k > num_layers:
        raise ValueError(f"feature {feature!r} averages {k} blocks; the model has {num_layers}.")
    return k


def band_arguments(processor, band_names: list[str]) -> dict:
    """The processor's band arguments for bands already matched to the model's (by
    :func:`~geofm_hf.classification.bands.match_splits_to_model`): their names and, where the
    model records them, its own wavelengths, so the processor compares by wavelength instead
    of asking which sensor a bare name such as Landsat ``B4`` belongs to."""
    names = list(band_names)
    model_names, model_um = processor.band_names, processor.wavelengths_um
    if not model_names or model_um is None or not set(names) <= set(model_names):
        return {"band_names": names}
    return {"band_names": names, "wavelengths_um": [model_um[model_names.index(n)] for n in names]}


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
    metadata: dict[str, np.ndarray] | None = None,
) -> torch.Tensor:
    """``(N, D)`` float32 features of ``images`` from a frozen :class:`GeoViTMAEModel`.

    ``feature``: ``"cls"`` (the cls token after the final LayerNorm, MAE's linear-probe feature),
    ``"mean"`` (mean of the patch tokens after it) or ``"mean_lastK"`` (the mean patch token of each
    of the last K blocks, each through the final LayerNorm, averaged). Images go through ``processor`` (band order by
    name, per-band normalisation, resize to the model's size); other sizes than the model's
    ``image_size`` run with interpolated position embeddings.

    Time series are ``(N, T, C, H, W)``; ``metadata`` holds what the model encodes of each
    sample, ``temporal_coords`` ``(N, T, 2)`` and / or ``location_coords`` ``(N, 2)``
    (:func:`~geofm_hf.classification.data.metadata_for_model`).
    """
    last_k = check_feature(feature, model.config.num_hidden_layers)
    model = model.to(device).eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        if isinstance(batch, np.ndarray):
            batch = batch.astype(np.float32)
        else:
            batch = [np.asarray(b, dtype=np.float32) for b in batch]
        pixels = processor(batch, **band_arguments(processor, band_names))["pixel_values"]
        pixels = pixels.to(device)
        coords = {name: torch.as_tensor(values[start : start + batch_size], device=device)
                  for name, values in (metadata or {}).items()}  # fmt: skip
        output = model(
            pixels,
            interpolate_pos_encoding=True,
            output_hidden_states=feature.startswith("mean_"),
            **coords,
        )
        hidden = output.last_hidden_state  # (B, 1 + L, D)
        if feature == "cls":
            pooled = hidden[:, 0]
        elif feature == "mean":
            pooled = hidden[:, 1:].mean(dim=1)  # (B, D)
        else:  # hidden_states[-1] is the last block's output before the final LayerNorm
            blocks = output.hidden_states[-last_k:]
            pooled = torch.stack([model.layernorm(h[:, 1:]).mean(dim=1) for h in blocks]).mean(0)
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
    with atomic_path(path) as tmp:
        save_file({"features": features.contiguous()}, tmp, metadata={"key": key})
    return features, False
