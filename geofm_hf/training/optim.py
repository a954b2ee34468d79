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


# MAE scaled AdamW's learning rate linearly up to a global batch of 4,096 (its largest), and the
# linear rule is known to break for adaptive optimisers past a few thousand (Goyal et al. 2017 for
# SGD; Malladi et al. 2022 derive square-root scaling for Adam). Above LINEAR_SCALING_MAX_BATCH
# the default switches to the square root; past SQRT_SCALING_MAX_BATCH (the largest batches
# published for ViTs with adaptive optimisers, e.g. LAMB at 64k) no rule is extrapolated silently:
# the run must say which it wants.
LINEAR_SCALING_MAX_BATCH = 4_096
SQRT_SCALING_MAX_BATCH = 65_536
LR_SCALING_RULES = ("auto", "linear", "sqrt")


class LearningRateRuleError(ValueError):
    """No scaling rule is known to hold at this global batch; names the explicit choices."""


def scaled_learning_rate(base_learning_rate: float, global_batch: int, rule: str = "auto") -> float:
    """The peak learning rate for ``global_batch`` (:func:`learning_rate_rule` says why)."""
    return learning_rate_rule(base_learning_rate, global_batch, rule)[0]


def learning_rate_rule(
    base_learning_rate: float, global_batch: int, rule: str = "auto"
) -> tuple[float, str]:
    """(peak lr, one line stating the rule) for ``global_batch``.

    ``linear``: ``base * batch / 256`` (MAE). ``sqrt``: linear up to
    :data:`LINEAR_SCALING_MAX_BATCH`, then ``* sqrt(batch / 4096)``. ``auto``: linear where MAE
    measured it, sqrt above, and :class:`LearningRateRuleError` past
    :data:`SQRT_SCALING_MAX_BATCH` (pass ``--lr_scaling`` or ``--learning_rate`` there).
    """
    if rule not in LR_SCALING_RULES:
        raise ValueError(f"lr scaling rule must be one of {LR_SCALING_RULES}: found {rule!r}")
    linear = base_learning_rate * global_batch / 256
    knee = base_learning_rate * LINEAR_SCALING_MAX_BATCH / 256
    sqrt = knee * math.sqrt(global_batch / LINEAR_SCALING_MAX_BATCH)
    if rule == "linear" or (rule == "auto" and global_batch <= LINEAR_SCALING_MAX_BATCH):
        return linear, f"linear: base {base_learning_rate:g} x {global_batch}/256"
    if rule == "auto" and global_batch > SQRT_SCALING_MAX_BATCH:
        raise LearningRateRuleError(
            f"global batch {global_batch:,} is above {SQRT_SCALING_MAX_BATCH:,}, where no "
            "published learning-rate rule for AdamW holds; the default will not extrapolate one. "
            f"Choose: --lr_scaling sqrt (peak {sqrt:.3g}), --lr_scaling linear (peak {linear:.3g}, "
            "known to diverge at such batches), or an explicit --learning_rate."
        )
    if global_batch <= LINEAR_SCALING_MAX_BATCH:
        return linear, f"sqrt rule, linear part: base {base_learning_rate:g} x {global_batch}/256"
    return sqrt, (
        f"sqrt above {LINEAR_SCALING_MAX_BATCH}: base {base_learning_rate:g} x "
        f"{LINEAR_SCALING_MAX_BATCH}/256 x sqrt({global_batch}/{LINEAR_SCALING_MAX_BATCH})"
    )


def peak_learning_rate(args, global_batch: int) -> tuple[float, str]:
    """The run's peak lr and the line that states its rule (banner, card, ``--dry_run``):
    ``--learning_rate`` when given, else ``--base_learning_rate`` scaled by ``--lr_scaling``."""
    if args.learning_rate is not None:
        return args.learning_rate, f"--learning_rate {args.learning_rate:g} (given)"
    peak, rule = learning_rate_rule(args.base_learning_rate, global_batch, args.lr_scaling)
    return peak, f"{rule} (--lr_scaling {args.lr_scaling})"


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
