"""Run health: device-side loss sums between votes, the ranks' vote (non-finite losses, stop
signals), and the diagnosis of a non-finite loss (data, weights or optimisation)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from geofm_hf.training.checkpointing import list_checkpoints

if TYPE_CHECKING:
    from geofm_hf.training.run import Run


def last_checkpoint_text(output_dir: Path) -> str:
    found = list_checkpoints(output_dir)
    if not found:
        return f"No checkpoint has been written to {output_dir} yet."
    return (
        f"The last complete checkpoint is {found[-1][1]} (--resume_from_checkpoint auto "
        "resumes from it)."
    )


def diagnose_nan(run: Run, loss: float, step: int, micro: int, input_bad: bool,
                  weights_bad: bool, start_step: int) -> str:  # fmt: skip
    """Say which fault made the loss non-finite: the data, the weights, or the optimisation."""
    where = f"Loss is {loss} at step {step} (micro-batch {micro}) on at least one rank"
    if input_bad:
        cause = (
            "the input batch holds NaN/inf: a data fault, not the learning rate. Check the "
            "dataset's mean/std in geofm_dataset.json and chips kept with NaN pixels "
            "(--max-nodata-fraction when writing the shards); then rewrite the dataset."
        )
    elif weights_bad:
        origin = (
            f"the weights this run started from ({run.model_args.model_name_or_path or run.resume_path})"
            if step == start_step
            else "an earlier update"
        )
        cause = (
            f"the model's weights already hold NaN/inf before this step (from {origin}). Resume "
            "from an earlier checkpoint, with a lower learning rate if the run diverged."
        )
    else:
        cause = (
            "inputs and weights are finite, so the optimisation diverged. Lower the learning "
            "rate (or raise warm-up), or use --nan_policy skip."
        )
    return (
        f"{where}: {cause} Stopping without writing a checkpoint. "
        f"{last_checkpoint_text(run.output_dir)}"
    )


@dataclass
class Vote:
    nonfinite: int
    mean_loss: float
    inputs_bad: bool
    weights_bad: bool


@dataclass
class Control:
    """What every rank agrees on after a step's backward, from the step's one collective."""

    stop: bool  # a stop signal reached at least one rank
    save_due: bool  # rank 0's clock says a time-based checkpoint is due
    loss_count: torch.Tensor  # pixel values in the loss over all ranks and micro-batches (device)
    # The window's health sums over all ranks (device), read on the host only when voting.
    health: torch.Tensor


class HealthWindow:
    """Device-side sums between two logging steps: no host read until :meth:`vote`."""

    def __init__(self, device, first_step: int = 1) -> None:
        zero = torch.zeros((), device=device)
        self.loss_sum = zero.clone()  # finite losses only
        self.nonfinite = zero.clone()
        self.inputs_bad = zero.clone()  # non-finite input batches among the non-finite losses
        self.weights_bad = zero.clone()  # non-finite weights when the window began
        self.first_bad_at = torch.full((3,), -1.0, device=device)  # (loss, step, micro)
        self.steps = 0
        self.first_step = first_step
        self.images = 0
        self.start = time.perf_counter()

    def check_weights(self, model) -> None:
        """Whether this rank's weights hold NaN/inf as the window begins (a device flag)."""
        flags = [
            ~torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all()
            for p in model.parameters()
        ]
        self.weights_bad = torch.stack(flags).any().float()

    def add(self, loss: torch.Tensor, pixels, step: int, micro: int, accumulation: int) -> None:
        finite = torch.isfinite(loss)
        self.loss_sum += torch.where(finite, loss, torch.zeros_like(loss)) / accumulation
        self.nonfinite += (~finite).float()
        self.inputs_bad += ((~finite) & ~torch.isfinite(pixels).all()).float()
        first = (self.first_bad_at[1] < 0) & ~finite
        here = torch.stack([loss, loss.new_tensor(step), loss.new_tensor(micro)])
        self.first_bad_at = torch.where(first, here, self.first_bad_at)
        if micro == accumulation - 1:
            self.steps += 1

    def control(self, accelerator, *, stop: bool, save_due: bool, loss_count, world: int):
        """The step's one collective (none on one process): a single all-reduce of (non-finite
        losses, loss sum, bad inputs, bad weights, loss count, stop signals, save due).

        Every rank learns within the step that a signal reached any of them, or that rank 0's
        clock wants a checkpoint (rank 0 alone sets ``save_due``: no clock skew between nodes),
        and the global loss count the gradients are normalised by. The health sums ride along
        at no extra cost and are read on the host only at logging steps (:meth:`vote`)."""
        device = self.nonfinite.device
        flags = torch.tensor([float(stop), float(save_due)], device=device)
        health = [self.nonfinite, self.loss_sum, self.inputs_bad, self.weights_bad]
        values = torch.cat([torch.stack([*health, loss_count.float()]), flags])
        if world == 1:
            return Control(stop, save_due, values[4], values[:4])
        values = accelerator.reduce(values, reduction="sum")
        # The one host read per step: a stop or save must be decided on every rank alike.
        stops, saves = values[5:].tolist()
        return Control(stops > 0, saves > 0, values[4], values[:4])

    def vote(self, control: Control, world: int) -> Vote:
        """The window's health over all ranks, from the last step's :meth:`control` (a host
        read, no collective)."""
        nonfinite, loss_sum, inputs_bad, weights_bad = control.health.tolist()
        return Vote(
            int(nonfinite),
            loss_sum / max(1, self.steps * world),
            inputs_bad > 0,
            weights_bad > 0,
        )

    def first_bad(self) -> tuple[float, int | None, int | None]:
        """(loss, step, micro-batch) of this rank's first non-finite loss in the window."""
        loss, step, micro = self.first_bad_at.tolist()
        return (loss, int(step), int(micro)) if step >= 0 else (float("nan"), None, None)


def parameters_finite(accelerator, model) -> bool:
    bad = torch.zeros(1, device=accelerator.device)
    for param in model.parameters():
        local = param.to_local() if hasattr(param, "to_local") else param
        if not torch.isfinite(local).all():
            bad += 1
            break
    return accelerator.reduce(bad, reduction="sum").item() == 0
