"""The fine-tuning loop shared by scene classification and segmentation, through Accelerate.

Whole splits are preprocessed once (benchmarks are small), then AdamW with layer-wise lr decay
(MAE's recipe: peak lr = base lr x global batch / 256, warm-up then cosine) trains the model the
way pretraining scales: ``accelerator.prepare`` and the accelerate config decide DDP/FSDP. What
differs between tasks, the loss of a batch, is the caller's ``compute_loss``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..training.optim import learning_rate_at
from .features import band_arguments
from .finetune import param_groups_layer_decay

__all__ = ["LoopResult", "flip_rotate", "predict", "preprocess_split", "train_loop"]


def preprocess_split(processor, images, band_names: list[str], batch_size: int) -> torch.Tensor:
    """All ``images`` (an ``(N, C, H, W)`` array or a list of ``(C, H, W)``) through the image
    processor: ``(N, C, S, S)`` float32 pixel values."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        batch = (batch.astype(np.float32) if isinstance(batch, np.ndarray)
                 else [np.asarray(b, np.float32) for b in batch])  # fmt: skip
        out.append(processor(batch, **band_arguments(processor, band_names))["pixel_values"])
    return torch.cat(out)


def flip_rotate(generator: torch.Generator, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One random horizontal flip and right-angle rotation, the same for every tensor (images
    and their masks): overhead imagery has no "up", so both preserve every label."""
    if torch.rand((), generator=generator) < 0.5:
        tensors = tuple(t.flip(-1) for t in tensors)
    k = int(torch.randint(4, (), generator=generator))
    return tuple(torch.rot90(t, k, dims=(-2, -1)) for t in tensors) if k else tensors


@dataclass
class LoopResult:
    """``model`` (prepared by Accelerate: unwrap before saving), the last batch's loss of each
    epoch, the optimizer steps taken, and the global batch and peak learning rate used."""

    model: torch.nn.Module
    losses: list[float]
    steps: int
    global_batch: int
    peak_lr: float


def train_loop(
    accelerator,
    model,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    args,
    compute_loss: Callable,
    *,
    seed: int,
    banner: str,
    metadata: dict[str, torch.Tensor] | None = None,
) -> LoopResult:
    """Train ``model`` on ``(train_x, train_y)`` for ``args.num_train_epochs``.

    ``args`` is a :class:`~geofm_hf.classification.FineTuneLoopArguments`. ``compute_loss(model,
    pixels, labels, generator, interpolate)`` returns the loss of one batch (its augmentation
    draws from ``generator``, seeded by ``seed`` and the process index). ``banner`` starts the
    line printed once the step count is known. ``metadata`` (``temporal_coords`` ``(N, T, 2)``,
    ``location_coords`` ``(N, 2)``) travels with each sample and reaches ``compute_loss`` as
    keyword arguments.
    """
    interpolate = train_x.shape[-1] != model.config.image_size
    global_batch = args.per_device_train_batch_size * accelerator.num_processes
    peak_lr = args.learning_rate * global_batch / 256
    groups = param_groups_layer_decay(model, args.weight_decay, args.layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=peak_lr, betas=(0.9, 0.999))
    names = list(metadata or {})
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(train_x, train_y, *(metadata[n] for n in names)),
        batch_size=args.per_device_train_batch_size, shuffle=True,
        drop_last=len(train_x) > args.per_device_train_batch_size,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    total = args.num_train_epochs * len(loader)
    warmup = args.warmup_epochs * len(loader)
    accelerator.print(
        f"{banner}; global batch {global_batch}, peak lr {peak_lr:.3g}, layer decay "
        f"{args.layer_decay}, {total} steps on {accelerator.num_processes} process(es)"
    )
    generator = torch.Generator().manual_seed(seed + accelerator.process_index)
    step, losses = 0, []
    model.train()
    for epoch in range(args.num_train_epochs):
        for pixels, labels, *coords in loader:
            scale = learning_rate_at(step, peak=1.0, warmup_steps=warmup, max_steps=total)
            for group in optimizer.param_groups:
                group["lr"] = peak_lr * scale * group.get("lr_scale", 1.0)
            loss = compute_loss(model, pixels, labels, generator, interpolate,
                                **dict(zip(names, coords)))  # fmt: skip
            accelerator.backward(loss)
            if args.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
        losses.append(loss.item())  # .item() is a sync point: once per epoch only
        if (epoch + 1) % max(1, args.num_train_epochs // 5) == 0:
            accelerator.print(f"epoch {epoch + 1}: loss {losses[-1]:.4f}")
    return LoopResult(model, losses, step, global_batch, peak_lr)


@torch.no_grad()
def predict(
    accelerator, model, pixels: torch.Tensor, batch_size: int, reduce=None, metadata=None
) -> np.ndarray:
    """The model's logits on ``pixels`` in batches, as float32 numpy (or ``reduce(logits)`` of
    each batch, e.g. the per-pixel argmax, to keep segmentation logits out of memory). Every
    process scores all of ``pixels``: test splits are small. ``metadata``: as for
    :func:`train_loop`."""
    interpolate = pixels.shape[-1] != accelerator.unwrap_model(model).config.image_size
    model.eval()
    out = []
    for i in range(0, len(pixels), batch_size):
        coords = {k: v[i : i + batch_size].to(accelerator.device)
                  for k, v in (metadata or {}).items()}  # fmt: skip
        logits = model(pixels[i : i + batch_size].to(accelerator.device),
                       interpolate_pos_encoding=interpolate, **coords).logits  # fmt: skip
        out.append((reduce(logits) if reduce else logits.float()).cpu())
    return torch.cat(out).numpy()
