"""AdamW parameter groups and the warm-up + cosine learning-rate schedule (MAE's recipe)."""

from __future__ import annotations

import math

import torch
from torch import nn

# Tokens are added to activations, not multiplied: decaying them only shrinks the signal.
_NO_DECAY_NAMES = ("cls_token", "mask_token")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decay on weight matrices; none on biases, norms and tokens."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] in _NO_DECAY_NAMES:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def scaled_learning_rate(base_learning_rate: float, global_batch: int) -> float:
    """MAE's linear scaling rule: ``lr = base_lr * global_batch / 256``."""
    return base_learning_rate * global_batch / 256


def learning_rate_at(
    step: int, *, peak: float, warmup_steps: int, max_steps: int, min_lr: float = 0.0
) -> float:
    """Linear warm-up to ``peak`` over ``warmup_steps``, then half-cosine to ``min_lr``.

    A pure function of the optimizer step: nothing to checkpoint, exact on resume.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + (peak - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
