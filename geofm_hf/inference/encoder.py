"""The encoder side of inference: processor + encoder on batches of windows, in bf16 where the
hardware multiplies bf16 natively. Shared by ``geofm-embed`` and ``geofm-segment``."""

from __future__ import annotations

import numpy as np
import torch

from .scenes import LoadedModel

__all__ = ["WindowEncoder", "use_bf16"]


def use_bf16(dtype: str, device: torch.device) -> bool:
    """Whether to run under bf16 autocast: ``dtype`` auto, bfloat16 or float32 on ``device``."""
    if dtype == "float32":
        return False
    if dtype == "bfloat16":
        return True
    if dtype != "auto":
        raise ValueError(f"dtype must be auto, bfloat16 or float32: found {dtype!r}.")
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    from ..training.reporting import cpu_has_fast_bf16

    return cpu_has_fast_bf16()


class WindowEncoder:
    """Processor + encoder on batches of NaN-marked windows -> float32 embeddings."""

    def __init__(self, loaded: LoadedModel, pooling: str, device: torch.device, bf16: bool):
        self.loaded = loaded
        self.pooling = pooling
        self.device = device
        self.bf16 = bf16
        self.model = loaded.model.to(device)
        self.grid = loaded.image_size // loaded.patch_size

    @torch.no_grad()
    def __call__(
        self, pixels: np.ndarray, metadata: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """``(B, C, S, S)`` raw values (NaN = missing) -> ``(B, D)`` or ``(B, D, g, g)``.

        A time-series model takes ``(B, T, C, S, S)``; ``metadata`` holds what the model encodes,
        ``temporal_coords`` ``(B, T, 2)`` and / or ``location_coords`` ``(B, 2)``."""
        batch = self.loaded.processor(pixels, return_tensors="pt")["pixel_values"]
        batch = batch.to(self.device)
        coords = {k: torch.as_tensor(v, device=self.device) for k, v in (metadata or {}).items()}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            hidden = self.model(batch, **coords).last_hidden_state  # (B, 1 + L, D)
        hidden = hidden.float()
        if self.pooling == "cls":
            out = hidden[:, 0]
        elif self.pooling == "mean":
            out = hidden[:, 1:].mean(dim=1)
        else:
            g = self.grid
            out = hidden[:, 1:].transpose(1, 2).reshape(hidden.shape[0], -1, g, g)
        # contiguous(): a view (the CLS slice) would keep the batch's whole hidden state alive for
        # as long as its rows wait to be written (4096 rows of a ViT-L at 224 px: 3.2 GB).
        return out.contiguous().cpu().numpy()
