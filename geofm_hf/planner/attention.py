"""Which ``scaled_dot_product_attention`` kernel a head dimension gets, on CUDA and on ROCm.

The planner must cost the kernel that actually runs: a fused kernel stores no ``tokens**2``
scores, the unfused ("math") path stores them for every block and moves them through memory
several times. The rules below are PyTorch's own dispatch filters
(``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp`` and ``attention.cpp``; PyTorch 2.5+,
the same file serves ROCm through HIP with AOTriton); docs/frontier.md cites them line by line.

* flash (CUDA sm80+ or a ROCm GPU AOTriton was built for; fp16/bf16 only): q, k, v head dims equal
  and <= 256 (AOTriton >= 0.9: 512). No alignment filter: ``attention.cpp`` pads the head dim to a
  multiple of 8 with zeros before the call (``pad_last_dim<8>``) and slices the output, so 105
  runs as 112 (+6.7 % attention FLOPs and q/k/v bytes).
* memory-efficient (CUTLASS on CUDA, AOTriton on ROCm): head dim divisible by 8 in fp16/bf16,
  by 4 in fp32; on ROCm with AOTriton < 0.12 also <= 256. 88 passes, 105 does not.
* cuDNN (CUDA only): head dim a multiple of 8 and <= 128 (256 forward on sm90/sm100 with recent
  cuDNN). 88 passes, 105 does not.
* math: everything else, unfused, ``B x heads x tokens**2`` scores materialised.

Priority: [cuDNN on sm90+ with cuDNN >= 9.15.1], flash, memory-efficient, math. fp32 never gets
flash, so a 105-wide head in fp32 runs the math path on both platforms.
"""

from __future__ import annotations

import math

__all__ = ["BACKENDS", "PLATFORMS", "sdpa_backend"]

BACKENDS = ("flash", "efficient", "cudnn", "math")
PLATFORMS = ("rocm", "cuda")


def sdpa_backend(
    head_dim: int, *, platform: str = "rocm", precision: str = "bf16"
) -> tuple[str, int]:
    """``(backend, head dim the kernel computes with)`` for dense, mask-free, non-causal SDPA.

    ``platform``: ``"rocm"`` (Frontier's MI250X) or ``"cuda"`` (sm80 or newer). ``precision``:
    ``"bf16"`` (autocast / FSDP param dtype) or ``"fp32"``. The second value is the padded head
    dim the flash path runs with (a multiple of 8), or ``head_dim`` itself.
    """
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {PLATFORMS}: found {platform!r}.")
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'bf16' or 'fp32': found {precision!r}.")
    if not isinstance(head_dim, int) or head_dim <= 0:
        raise ValueError(f"head_dim must be a positive integer: found {head_dim!r}.")
    half = precision == "bf16"
    if half and head_dim <= 256:
        return "flash", 8 * math.ceil(head_dim / 8)
    if head_dim % (8 if half else 4) == 0 and (platform == "cuda" or head_dim <= 256):
        return "efficient", head_dim
    return "math", head_dim
