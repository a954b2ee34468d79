"""The pretraining loop: learning-rate schedule, micro-batches, logging, checkpoints and stops."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from geofm_hf.data.device_transforms import batch_to_device
from geofm_hf.training.health import HealthWindow, diagnose_nan, last_checkpoint_text
from geofm_hf.training.inputs import mask_noise
from geofm_hf.training.optim import (
    learning_rate_at,
    set_learning_rate,
)
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


def train(run: Run, model, optimizer, loader, config, processor, start_step: int) -> Outcome:
    """The loop: lr schedule, micro-batches, logging, checkpoints.

    No host sync or collective per micro-batch: losses and the non-finite count stay on the
    device, and the ranks vote (one small all-reduce: NaN count, stop signal, loss sum) only at
    logging steps and before every checkpoint, so a non-finite loss is still caught before any
    checkpoint is written.
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
    grad_norm = torch.zeros((), device=device)
    progress = tqdm(
        total=args.max_steps, initial=start_step, disable=not accelerator.is_local_main_process
    )
    while step < args.max_steps:
        lr = learning_rate_at(
            step,
            peak=run.peak_lr,
            warmup_steps=args.warmup_steps,
            max_steps=args.max_steps,
            min_lr=args.min_learning_rate,
        )
        set_learning_rate(optimizer, lr)
        for micro in range(args.gradient_accumulation_steps):
            try:
                batch = run.stop.next_batch(data_iter)
            except StopWhileWaitingForData as stop:
                # A checkpoint is collective and this rank has no batch: exit, do not hang.
                run.log(
                    f"signal {stop.signum} while waiting for data at step {step}: exiting "
                    f"without a checkpoint. {last_checkpoint_text(run.output_dir)}"
                )
                return Outcome(step, 0.0, trained_images, last_loss, stopped_by_signal=True,
                               exit_code=128 + stop.signum)  # fmt: skip
            pixels, pixel_mask, wavelengths, metadata = batch, None, None, {}
            if isinstance(batch, dict):  # the real stream: pixels + validity mask
                wavelengths = batch.get("wavelengths")  # a mixed-sensor stream's band set
                # Band widths, dates and places, for a model built to take them (NaN = unknown).
                metadata = {k: batch[k].to(device) for k, on in (
                    ("bandwidths", config.wavelength_bandwidths),
                    ("temporal_coords", config.temporal_encoding),
                    ("location_coords", config.location_encoding)) if on and k in batch}  # fmt: skip
                pixels, pixel_mask = batch["pixel_values"], batch["pixel_mask"]
                # An all-valid batch takes the unmasked loss (checked on the CPU: no sync).
                pixel_mask = None if bool(pixel_mask.all()) else pixel_mask.to(device)
            pixels = batch_to_device(pixels, device, loader)
            noise = mask_noise(
                args.seed, step, micro, run.rank, (pixels.shape[0], config.num_patches)
            )
            if config.metadata_dropout and (config.temporal_encoding or config.location_encoding):
                metadata["metadata_noise"] = mask_noise(
                    args.seed, step, micro, run.rank, (pixels.shape[0], 2), stream=1
                ).to(device)
            if window.steps == 0 and micro == 0:
                window.check_weights(model)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = model(
                        pixel_values=pixels,
                        pixel_mask=pixel_mask,
                        wavelengths=wavelengths,
                        noise=noise.to(device),
                        **metadata,
                    ).loss
                window.add(
                    loss.detach().float(), pixels, step, micro, args.gradient_accumulation_steps
                )
                # A non-finite loss makes every rank's reduced gradients non-finite, so under
                # `skip` all ranks see the same non-finite norm below and skip together.
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = _plain(
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    )
                    if args.nan_policy == "skip" and not torch.isfinite(grad_norm):
                        # One host read per step, no collective: the norm is already global.
                        skipped_steps += 1
                    else:
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
        step += 1
        window.images += run.global_batch
        trained_images += run.global_batch
        progress.update(1)

        saving = step % args.save_steps == 0 or step == args.max_steps
        if step % args.logging_steps == 0 or saving:
            vote = window.vote(accelerator, run.stop, run.world)
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
                "grad_norm": float(grad_norm),
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
            window = HealthWindow(device, first_step=step + 1)
            stopping = vote.stop
        else:
            stopping = False
        if saving or stopping:
            save_checkpoint(run, model, loader, step, config, processor)
        if stopping:
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
