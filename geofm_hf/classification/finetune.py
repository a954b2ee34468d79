"""Fine-tuning helpers: layer-wise lr decay parameter groups (BEiT/MAE) and mixup / cutmix."""

from __future__ import annotations

import torch

__all__ = ["mixup_cutmix", "param_groups_layer_decay"]


def _layer_id(name: str, num_layers: int) -> int:
    """0 for embeddings, i + 1 for encoder block i, num_layers + 1 for the final norm and head."""
    if name.startswith(("vit.embeddings", "embeddings")):
        return 0
    for prefix in ("vit.encoder.layers.", "encoder.layers."):
        if name.startswith(prefix):
            return int(name[len(prefix) :].split(".")[0]) + 1
    return num_layers + 1


def param_groups_layer_decay(
    model, weight_decay: float = 0.05, layer_decay: float = 0.75
) -> list[dict]:
    """Optimizer groups with ``lr_scale = layer_decay ** (num_layers + 1 - layer_id)``.

    As MAE's ``lrd.param_groups_lrd``: the head learns at the full rate, each block below at
    ``layer_decay`` times the one above, the patch embedding and cls token least. Biases, norms and
    the cls token get no weight decay. Multiply each group's ``lr`` by its ``lr_scale``.
    """
    if not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1]: found {layer_decay}.")
    num_layers = model.config.num_hidden_layers
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim == 1 or name.endswith(".bias") or "cls_token" in name
        layer = _layer_id(name, num_layers)
        group = groups.setdefault(
            (layer, no_decay),
            {
                "params": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": layer_decay ** (num_layers + 1 - layer),
                "layer_id": layer,
            },
        )
        group["params"].append(param)
    return list(groups.values())


def mixup_cutmix(
    pixels: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    label_smoothing: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch with its reverse: returns pixels and soft targets ``(B, num_classes)``.

    With both alphas > 0, mixup or cutmix is chosen with probability 0.5 per batch (timm's
    default switch). With both 0 only label smoothing applies. Cutmix's lambda is corrected to the
    pasted box's actual area.
    """
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(f"alphas must be >= 0: found {mixup_alpha}, {cutmix_alpha}.")
    off = label_smoothing / num_classes
    targets = torch.full((len(labels), num_classes), off, device=pixels.device)
    targets.scatter_(1, labels.view(-1, 1).long(), 1.0 - label_smoothing + off)
    if mixup_alpha == 0 and cutmix_alpha == 0:
        return pixels, targets
    use_cutmix = cutmix_alpha > 0 and (
        mixup_alpha == 0 or torch.rand((), generator=generator).item() < 0.5
    )
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    flipped = pixels.flip(0)
    if use_cutmix:
        height, width = pixels.shape[-2:]
        cut_h, cut_w = int(height * (1 - lam) ** 0.5), int(width * (1 - lam) ** 0.5)
        cy = int(torch.randint(height, (), generator=generator))
        cx = int(torch.randint(width, (), generator=generator))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        pixels = pixels.clone()
        pixels[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (height * width)
    else:
        pixels = lam * pixels + (1 - lam) * flipped
    return pixels, lam * targets + (1 - lam) * targets.flip(0)
