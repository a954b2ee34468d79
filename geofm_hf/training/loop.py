"""The pretraining loop (:func:`train`) and its one optimizer step (:func:`train_step`):
learning-rate schedule, micro-batches, logging, checkpoints and stops."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from geofm_hf.data.device_transforms import batch_to_device
from geofm_hf.training.health import Control, HealthWindow, diagnose_nan, last_checkpoint_text
from geofm_hf.training.inputs import mask_noise
from geofm_hf.training.optim import (
    learning_rate_at,
    set_learning_rate,
)
from geofm_hf.training.run_status import write_run_status
from geofm_hf.training.saving import save_checkpoint
from geofm_hf.training.signals import StopWhileWaitingForData

if TYPE_CHECKING:
    from geofm_hf.training.run import Run


@dataclass
class Outcome:
    step: int
    wall_s: float
    images: int
    last_loss: float
    stopped_by_signal: bool = False
    exit_code: int = 0
    skipped_steps: int = 0


@dataclass
class StepResult:
    control: Control
    grad_norm: torch.Tensor
    skipped: bool


def model_inputs(batch, config, device, loader) -> dict:
    """The forward's keyword arguments for one micro-batch of the stream (a dict with pixels,
    validity mask, band set, dates and places) or of the synthetic loader (a tensor)."""
    pixels, pixel_mask, wavelengths, metadata = batch, None, None, {}
    if isinstance(batch, dict):  # the real stream: pixels + validity mask
        wavelengths = batch.get("wavelengths")  # a mixed-sensor stream's band set
        # Band widths, dates and places, for a model built to take them (NaN = unknown).
        metadata = {k: batch[k].to(device, non_blocking=True) for k, on in (
            ("bandwidths", config.wavelength_bandwidths),
            ("temporal_coords", config.temporal_encoding),
            ("location_coords", config.location_encoding)) if on and k in batch}  # fmt: skip
        pixels, pixel_mask = batch["pixel_values"], batch["pixel_mask"]
        # An all-valid batch takes the unmasked loss (checked on the CPU: no sync).
        pixel_mask = None if bool(pixel_mask.all()) else pixel_mask.to(device, non_blocking=True)
    # Every copy to the device is asynchronous from pinned memory (the loader pins on GPUs):
    # the host queues the step's kernels instead of waiting for each copy.
    return {
        "pixel_values": batch_to_device(pixels, device, loader),
        "pixel_mask": pixel_mask,
        "wavelengths": wavelengths,
        **metadata,
    }


def train_step(run: Run, model, optimizer, data_iter, loader, config, step: int,
               window: HealthWindow, save_due: bool) -> StepResult:  # fmt: skip
    """One optimizer step: each micro-batch's forward and backward of its summed loss, then the
    step's one collective (:meth:`HealthWindow.control`), the gradients divided by the global
    loss count, clipping and the update.

    Dividing by the count over all ranks and micro-batches (as torchtitan divides by global
    tokens) makes every valid masked pixel weigh the same wherever it fell: a cloudy rank's few
    pixels do not weigh more, and an all-invalid batch adds nothing. Raises
    :class:`StopWhileWaitingForData` when a signal interrupts a wait for data.
    """
    args, accelerator, device = run.args, run.accelerator, run.accelerator.device
    accumulation = args.gradient_accumulation_steps
    loss_count = torch.zeros((), device=device)
    for micro in range(accumulation):
        batch = run.stop.next_batch(data_iter)
        inputs = model_inputs(batch, config, device, loader)
        batch_size = inputs["pixel_values"].shape[0]  # after the device transforms, if any
        inputs["noise"] = mask_noise(
            args.seed, step, micro, run.rank, (batch_size, config.num_patches), device=device
        )
        if config.metadata_dropout and (config.temporal_encoding or config.location_encoding):
            inputs["metadata_noise"] = mask_noise(
                args.seed, step, micro, run.rank, (batch_size, 2), stream=1, device=device
            )
        if window.steps == 0 and micro == 0:
            window.check_weights(model)
        with accelerator.accumulate(model):
            with accelerator.autocast():
                out = model(**inputs)
            window.add(out.loss.detach().float(), inputs["pixel_values"], step, micro, accumulation)
            loss_count += out.loss_count.detach()
            # A non-finite loss makes every rank's reduced gradients non-finite, so under `skip`
            # all ranks see the same non-finite norm below and skip together.
            accelerator.backward(out.loss_sum)
    control = window.control(
        accelerator,
        stop=run.stop.received is not None,
        save_due=save_due,
        loss_count=loss_count,
        world=run.world,
    )
    # DDP/FSDP averaged the ranks' gradients and accelerate divided each micro-batch's by the
    # accumulation steps: scaling by world x accumulation / global count leaves the gradient of
    # (sum of all squared errors) / (global count). On the device: no host read.
    scale = (run.world * accumulation) / control.loss_count.clamp_min(1)
    # FSDP2's gradients are DTensors: scale each rank's local shard in place.
    grads = [p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
             for p in model.parameters() if p.grad is not None]  # fmt: skip
    if grads:
        torch._foreach_mul_(grads, scale)
    grad_norm = _plain(accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm))
    skipped = args.nan_policy == "skip" and not torch.isfinite(grad_norm)
    if not skipped:  # one host read per step, no collective: the norm is already global
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(control, grad_norm, skipped)


def train(run: Run, model, optimizer, loader, config, processor, start_step: int) -> Outcome:
    """The loop: lr schedule, :func:`train_step`, logging, checkpoints and stops.

    One small all-reduce per step and no host read per micro-batch: a stop signal on any rank
    (Slurm's warning) or a time-based checkpoint (``--save_every_minutes``) is acted on at the
    end of the step it is seen in, on every rank. Losses and the non-finite count stay on the
    device and are read at logging steps and before every checkpoint, so a non-finite loss is
    still caught before any checkpoint is written.
    """
    args, accelerator = run.args, run.accelerator
    device = accelerator.device
    flops_img, peak_flops = run.extra["flops_img"], run.extra["peak_flops"]
    model.train()
    data_iter = iter(loader)
    step = start_step
    window = HealthWindow(device)
    train_start, trained_images, last_loss = time.perf_counter(), 0, float("nan")
    skipped_steps = 0
    save_every_s = args.save_every_minutes * 60 if args.save_every_minutes else None
    last_save = time.monotonic()
    # One bar per job, not one per node: 1,024 bars interleave into an unreadable log.
    progress = tqdm(
        total=args.max_steps, initial=start_step, disable=not accelerator.is_main_process
    )
    if accelerator.is_main_process:
        write_run_status(run.output_dir, "running", step=start_step, signal=None)
    while step < args.max_steps:
        lr = learning_rate_at(
            step,
            peak=run.peak_lr,
            warmup_steps=args.warmup_steps,
            max_steps=args.max_steps,
            min_lr=args.min_learning_rate,
        )
        set_learning_rate(optimizer, lr)
        save_due = (
            accelerator.is_main_process
            and save_every_s is not None
            and time.monotonic() - last_save >= save_every_s
        )
        try:
            result = train_step(
                run, model, optimizer, data_iter, loader, config, step, window, save_due
            )
        except StopWhileWaitingForData as stop:
            # A checkpoint is collective and this rank has no batch: exit, do not hang.
            run.log(
                f"signal {stop.signum} while waiting for data at step {step}: exiting "
                f"without a checkpoint. {last_checkpoint_text(run.output_dir)}"
            )
            return Outcome(step, 0.0, trained_images, last_loss, stopped_by_signal=True,
                           exit_code=128 + stop.signum)  # fmt: skip
        skipped_steps += int(result.skipped)
        control = result.control
        step += 1
        window.images += run.global_batch
        trained_images += run.global_batch
        progress.update(1)

        saving = (
            step % args.save_steps == 0
            or step == args.max_steps
            or control.stop
            or control.save_due
        )
        if step % args.logging_steps == 0 or saving:
            vote = window.vote(control, run.world)
            if vote.nonfinite and args.nan_policy == "stop":
                bad_loss, bad_step, bad_micro = window.first_bad()
                raise FloatingPointError(
                    diagnose_nan(
                        run,
                        bad_loss,
                        bad_step if bad_step is not None else f"{window.first_step - 1}..{step}",
                        bad_micro if bad_micro is not None else "?",
                        vote.inputs_bad,
                        vote.weights_bad,
                        start_step,
                    )
                )
            last_loss = vote.mean_loss
            elapsed = time.perf_counter() - window.start
            images_per_s = window.images / elapsed
            mfu = (
                images_per_s * flops_img / (peak_flops * run.world) if peak_flops else float("nan")
            )
            record = {
                "step": step,
                "loss": vote.mean_loss,
                "lr": lr,
                "grad_norm": float(result.grad_norm),
                "images_per_s": images_per_s,
                "mfu": mfu,
                "skipped_steps": skipped_steps,
            }
            progress.set_postfix(
                loss=f"{record['loss']:.4f}",
                lr=f"{lr:.2e}",
                ips=f"{images_per_s:.1f}",
                mfu=f"{mfu:.1%}",
            )
            if run.metrics is not None:
                run.metrics.write(record)
            if args.report_to != "none":
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
            run.extra["step_s"] = elapsed / max(1, window.steps)
            window = HealthWindow(device, first_step=step + 1)
        if saving:
            started = time.monotonic()
            save_checkpoint(run, model, loader, step, config, processor)
            last_save = time.monotonic()
            if accelerator.is_main_process:
                # Measured, for the Slurm script's signal lead (recipes/frontier/pretrain.sbatch).
                write_run_status(
                    run.output_dir,
                    "stopped_by_signal" if control.stop else "running",
                    step=step,
                    checkpoint_save_s=round(last_save - started, 3),
                    step_s=run.extra.get("step_s"),
                    signal=run.stop.received if control.stop else None,
                )
        if control.stop:
            run.log(
                f"signal {run.stop.received or 'on another rank'}: checkpoint written at step "
                f"{step}, exiting"
            )
            return Outcome(step, 0.0, trained_images, last_loss, stopped_by_signal=True,
                           skipped_steps=skipped_steps)  # fmt: skip
    progress.close()
    return Outcome(step, time.perf_counter() - train_start, trained_images, last_loss,
                   skipped_steps=skipped_steps)  # fmt: skip


def _plain(tensor):
    """A clipped-gradient norm as a plain tensor (FSDP2 returns a replicated DTensor)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else torch.as_tensor(tensor)
