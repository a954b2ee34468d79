"""MAE pretraining of a geospatial ViT, through Accelerate (DDP or FSDP2 from the launch config).

    accelerate launch --config_file accelerate_configs/cpu.yaml recipes/pretrain.py \
        --config recipes/configs/demo.yaml [--max_steps 50 ...]

``main()`` is the table of contents: arguments -> model config (the same path for ``--dry_run``)
-> Accelerator and run folder -> model -> data -> optimiser -> resume -> train -> export. Exactly
resumable (``--resume_from_checkpoint auto``): model, optimiser, data position and the masking
noise are all functions of saved state or of (seed, step, rank).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DDPCommunicationHookType,
    DistributedDataParallelKwargs,
    set_seed,
)
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForPreTraining

import geofm_hf
from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining, GeoViTMAEImageProcessor
from geofm_hf.bands import rgb_band_indices
from geofm_hf.data import make_pretrain_dataloader, read_dataset_info, sample_dataset_path
from geofm_hf.data.mixing import MixedPretrainLoader
from geofm_hf.modeling_geofm import count_parameters, flops_per_image
from geofm_hf.training.arguments import as_flat_dict, parse_arguments
from geofm_hf.training.checkpointing import CheckpointManager, resolve_resume
from geofm_hf.training.optim import (
    learning_rate_at,
    parameter_groups,
    scaled_learning_rate,
    set_learning_rate,
)
from geofm_hf.training.reporting import (
    MetricsLog,
    cpu_has_fast_bf16,
    device_peak_flops,
    plot_loss_curve,
    plot_reconstructions,
)


def main(argv: list[str] | None = None) -> int:
    model_args, data_args, args = parse_arguments(argv)
    data = read_data_contract(data_args)
    config = build_model_config(model_args, data_args, data.info, data.datasets)
    if args.dry_run:
        return dry_run(config, args)

    run = start_run(model_args, data_args, args)
    model = build_model(config, model_args, args.seed)
    # A wavelength model's processor takes any bands and returns their wavelengths.
    processor = (
        GeoViTMAEImageProcessor.from_model_config(config)
        if config.image_mean is not None or config.patch_embedding == "wavelength"
        else None
    )
    loader = build_dataloader(run, data, data_args, config)
    model, optimizer = build_optimizer(run, model)
    start_step = resume(run, loader)
    describe_run(run, model, config, start_step)

    outcome = train(run, model, optimizer, loader, config, processor, start_step)
    if outcome.stopped_by_signal:
        run.accelerator.end_training()
        return 0
    export(run, model, processor, data, outcome, loader)
    run.accelerator.end_training()
    return 0


# ---------------------------------------------------------------------------------- config


@dataclass
class DataContract:
    """Where the images come from and what they are (bands, chip size, statistics)."""

    name_or_path: str
    info: object | None  # geofm_hf.data.DatasetInfo; None for synthetic data
    # Every dataset of a mixed-sensor run, (name_or_path, info); the first is the one above.
    datasets: list[tuple[str, object]] = field(default_factory=list)
    weights: dict[str, float] | None = None


def read_data_contract(data_args) -> DataContract:
    names = [n.strip() for n in (data_args.dataset_name_or_path or "").split(",") if n.strip()] or [
        str(sample_dataset_path())
    ]
    if data_args.synthetic_data:
        return DataContract(names[0], None)
    datasets = [(n, read_dataset_info(n, revision=data_args.dataset_revision)) for n in names]
    weights = None
    if data_args.dataset_weights:
        values = [float(w) for w in data_args.dataset_weights.split(",")]
        if len(values) != len(names):
            raise ValueError(
                f"--dataset_weights needs one weight per dataset: expected {len(names)} for "
                f"{names}, found {len(values)}: {values}."
            )
        weights = dict(zip(names, values))
    return DataContract(names[0], datasets[0][1], datasets, weights)


def build_model_config(model_args, data_args, data_info, datasets=()) -> GeoViTMAEConfig:
    """The one place a run's model config is decided, for the run and for ``--dry_run`` alike.

    Continuing: the checkpoint's config (its bands must be the dataset's). From scratch: the
    preset's shape with the dataset's band contract and statistics.
    """
    if model_args.model_name_or_path:
        config = AutoConfig.from_pretrained(
            model_args.model_name_or_path, revision=model_args.model_revision
        )
        if not isinstance(config, GeoViTMAEConfig):
            raise ValueError(
                f"{model_args.model_name_or_path} holds a {type(config).__name__}; continuing "
                "pretraining needs a GeoViTMAEForPreTraining checkpoint."
            )
        # A wavelength model takes any bands; a conv model only the ones it learnt.
        if data_info is not None and config.patch_embedding == "conv":
            check_band_contract(config, data_info)
        for name in ("mask_ratio", "norm_pix_loss"):
            if getattr(model_args, name) is not None:
                setattr(config, name, getattr(model_args, name))
        config._attn_implementation = model_args.attn_implementation
        return config

    overrides = {
        "attn_implementation": model_args.attn_implementation,
        "patch_embedding": model_args.patch_embedding,
        "wavelength_embed_dim": model_args.wavelength_embed_dim,
    }
    if len(datasets) > 1:
        if model_args.patch_embedding != "wavelength":
            raise ValueError(
                f"{len(datasets)} datasets were given ({[n for n, _ in datasets]}): mixing "
                "sensors needs --patch_embedding wavelength (conv kernels are tied to one band "
                "set)."
            )
        # No single band contract: each dataset brings its bands, wavelengths and statistics.
        overrides["num_channels"] = len(data_info.band_names)
    elif data_info is not None:
        overrides.update(
            num_channels=len(data_info.band_names),
            band_names=data_info.band_names,
            wavelengths_um=data_info.wavelengths_um,
            gsd_m=data_info.gsd_m,
            image_mean=data_info.mean,
            image_std=data_info.std,
        )
    else:
        overrides["num_channels"] = data_args.synthetic_channels
    for name in ("mask_ratio", "norm_pix_loss"):
        if getattr(model_args, name) is not None:
            overrides[name] = getattr(model_args, name)
    preset = geofm_hf.PRESETS.get(model_args.preset, {})
    patch = preset.get("patch_size", 16)
    size = model_args.image_size or preset.get("image_size", 224)
    crop = min(info.chip_size for _, info in datasets) if datasets else None
    if crop is not None and size > crop:
        # The paper's 224 px does not fit a 64 px chip: train on the largest patch-aligned crop.
        size = (crop // patch) * patch
    overrides["image_size"] = size
    return GeoViTMAEConfig.from_preset(model_args.preset, **overrides)


def check_band_contract(config, data_info) -> None:
    """Continuing pretraining: the dataset must carry the model's bands, in the model's order."""
    model_bands, data_bands = list(config.band_names or []), list(data_info.band_names)
    if model_bands == data_bands:
        return
    missing = [b for b in model_bands if b not in data_bands]
    extra = [b for b in data_bands if b not in model_bands]
    detail = []
    if missing:
        detail.append(f"missing from the dataset: {missing}")
    if extra:
        detail.append(f"not in the model: {extra}")
    if not missing and not extra:
        detail.append("same bands in another order")
    raise ValueError(
        f"The dataset's bands {data_bands} do not match the model's {model_bands} "
        f"({'; '.join(detail)}). Rewrite the shards with --bands in the model's order, or start "
        "from scratch."
    )


def dry_run(config: GeoViTMAEConfig, args) -> int:
    """Build the model on the meta device and print the memory/throughput plan; no training."""
    from geofm_hf.planner import plan_from_accelerate_config

    with torch.device("meta"):
        model = GeoViTMAEForPreTraining(config)
    path = (
        args.accelerate_config
        or os.environ.get("GEOFM_ACCELERATE_CONFIG")
        or "accelerate_configs/frontier_fsdp.yaml"
    )
    strategy, plan = plan_from_accelerate_config(
        config, path, num_nodes=args.dry_run_nodes, local_batch=args.per_device_train_batch_size
    )
    print(
        f"dry run: {config.preset} on meta: {count_parameters(model) / 1e9:.3f}B parameters "
        f"(encoder {count_parameters(model, encoder_only=True) / 1e9:.3f}B), "
        f"{config.num_channels} bands at {config.image_size} px, "
        f"{flops_per_image(config) / 1e12:.3f} TFLOPs per image (fwd+bwd)\n"
        f"accelerate config {path} -> strategy {strategy}, {args.dry_run_nodes} node(s)"
    )
    print(plan.format_table())
    estimate = plan.strategies[strategy]
    print(
        f"chosen strategy {strategy}: {estimate.memory_gb_per_gcd:.1f} GB per GCD "
        f"({'fits' if estimate.fits else 'does NOT fit'}), about {estimate.images_per_s:,.0f} "
        "images/s predicted"
    )
    return 0


# ---------------------------------------------------------------------------------- run setup


@dataclass
class Run:
    """What every stage shares: the arguments, the Accelerator and the run folder."""

    model_args: object
    data_args: object
    args: object
    accelerator: Accelerator
    output_dir: Path
    checkpoints: CheckpointManager
    resume_path: Path | None
    bf16: bool
    rank: int = 0
    world: int = 1
    global_batch: int = 0
    peak_lr: float = 0.0
    stop: _StopSignal | None = None
    metrics: MetricsLog | None = None
    pusher: object | None = None
    extra: dict = field(default_factory=dict)

    @property
    def log(self):
        return self.accelerator.print


class _StopSignal:
    """SIGTERM / SIGUSR1 (Slurm's warning before the time limit) -> checkpoint and exit."""

    def __init__(self) -> None:
        self.received: int | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = signum


def build_accelerator(args) -> tuple[Accelerator, bool]:
    """The Accelerator as the launch config asks (DDP, FSDP2, HSDP) and the precision chosen."""
    use_cuda = torch.cuda.is_available()
    hardware_bf16 = torch.cuda.is_bf16_supported() if use_cuda else cpu_has_fast_bf16()
    bf16 = args.bf16 == "true" or (args.bf16 == "auto" and hardware_bf16)
    kwargs = {
        # Without a GPU, `cpu=True` makes the launched processes form a gloo group (MULTI_CPU);
        # otherwise accelerate treats each of them as a lone, non-distributed process.
        "cpu": not use_cuda,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "mixed_precision": "bf16" if bf16 else "no",
        "project_dir": str(args.output_dir),
        "log_with": None if args.report_to == "none" else args.report_to,
    }
    if use_cuda and bf16:
        # Replicated (DDP) runs all-reduce gradients in bf16, as the paper's FSDP runs did;
        # FSDP configs ignore this handler and reduce per their own mixed-precision policy.
        kwargs["kwargs_handlers"] = [
            DistributedDataParallelKwargs(comm_hook=DDPCommunicationHookType.BF16)
        ]
    return Accelerator(**kwargs), bf16


def start_run(model_args, data_args, args) -> Run:
    """Accelerator, output folder (left-over partial checkpoint writes removed), resume point."""
    accelerator, bf16 = build_accelerator(args)
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    checkpoints = CheckpointManager(accelerator, output_dir, args.save_total_limit)
    removed = checkpoints.clean_partial()
    if removed:
        accelerator.print(f"removed unfinished checkpoint writes from a previous run: {removed}")
    world = accelerator.num_processes
    return Run(
        model_args=model_args,
        data_args=data_args,
        args=args,
        accelerator=accelerator,
        output_dir=output_dir,
        checkpoints=checkpoints,
        resume_path=resolve_resume(output_dir, args.resume_from_checkpoint),
        bf16=bf16,
        rank=accelerator.process_index,
        world=world,
        global_batch=args.per_device_train_batch_size * world * args.gradient_accumulation_steps,
    )


# ---------------------------------------------------------------------------------- model


def build_model(config: GeoViTMAEConfig, model_args, seed: int) -> GeoViTMAEForPreTraining:
    """The model to train: the continued checkpoint's weights, or a fresh init from ``seed``."""
    set_seed(seed)  # identical initial weights on every rank and every rerun
    if model_args.model_name_or_path:
        model = AutoModelForPreTraining.from_pretrained(
            model_args.model_name_or_path,
            config=config,
            revision=model_args.model_revision,
            attn_implementation=model_args.attn_implementation,
        )
        if not isinstance(model, GeoViTMAEForPreTraining):
            raise ValueError(
                f"{model_args.model_name_or_path} holds a {type(model).__name__}; continuing "
                "pretraining needs a GeoViTMAEForPreTraining checkpoint."
            )
    else:
        model = GeoViTMAEForPreTraining(config)
    if model_args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    return model


# ---------------------------------------------------------------------------------- data


def mask_noise(seed: int, step: int, micro: int, rank: int, shape: tuple[int, int]) -> torch.Tensor:
    """The MAE mask as a function of (seed, step, micro-batch, rank): exact on resume."""
    generator = torch.Generator().manual_seed(
        ((seed * 1_000_003 + step) * 1_009 + micro) * 9_176 + rank
    )
    return torch.rand(shape, generator=generator)


class SyntheticLoader:
    """Random batches, as the paper's throughput runs used; stateless apart from the step."""

    def __init__(self, batch: int, channels: int, size: int, seed: int, rank: int) -> None:
        self.shape = (batch, channels, size, size)
        self.seed, self.rank, self.consumed = seed, rank, 0
        self.batches_per_epoch = None

    def __iter__(self):
        while True:
            generator = torch.Generator().manual_seed(self.seed * 7919 + self.rank + self.consumed)
            self.consumed += 1
            yield torch.randn(self.shape, generator=generator)

    def state_dict(self) -> dict:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.consumed = state["consumed"]


def build_dataloader(run: Run, data: DataContract, data_args, config: GeoViTMAEConfig):
    """This rank's stream of normalised, cropped batches (or synthetic ones)."""
    batch = run.args.per_device_train_batch_size
    if data_args.synthetic_data:
        return SyntheticLoader(
            batch, config.num_channels, config.image_size, run.args.seed, run.rank
        )
    if config.patch_embedding == "wavelength":
        return _mixed_loader(run, data, data_args, config)
    # Normalise with the statistics stored in the weights' config: for a continued run they
    # are the ones the model learnt with, not the new dataset's.
    return make_pretrain_dataloader(
        data.name_or_path,
        split=data_args.train_split,
        batch_size=batch,
        seed=run.args.seed,
        rank=run.rank,
        world_size=run.world,
        num_workers=data_args.dataloader_num_workers,
        crop_size=config.image_size,
        mean=config.image_mean,
        std=config.image_std,
        revision=data_args.dataset_revision,
        on_error=data_args.on_error,
        max_error_fraction=data_args.max_error_fraction,
        return_masks=True,  # nodata / fill / cloud pixels are kept out of the MAE loss
    )


def _mixed_loader(run: Run, data: DataContract, data_args, config) -> MixedPretrainLoader:
    """A wavelength model's stream: each dataset normalised with its own statistics, one
    dataset (one band set, with its wavelengths) per batch."""
    loaders, wavelengths = {}, {}
    for name, info in data.datasets:
        loaders[name] = make_pretrain_dataloader(
            name,
            split=data_args.train_split,
            batch_size=run.args.per_device_train_batch_size,
            seed=run.args.seed,
            rank=run.rank,
            world_size=run.world,
            num_workers=data_args.dataloader_num_workers,
            crop_size=config.image_size,
            revision=data_args.dataset_revision,
            on_error=data_args.on_error,
            max_error_fraction=data_args.max_error_fraction,
            return_masks=True,
        )
        wavelengths[name] = info.wavelengths_um
    return MixedPretrainLoader(loaders, wavelengths, data.weights, seed=run.args.seed)


# ---------------------------------------------------------------------------------- optimiser


def build_optimizer(run: Run, model):
    """AdamW (MAE's groups) at the peak lr; model and optimiser prepared by accelerate."""
    args = run.args
    run.peak_lr = args.learning_rate or scaled_learning_rate(
        args.base_learning_rate, run.global_batch
    )
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.weight_decay),
        lr=run.peak_lr,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    model, optimizer = run.accelerator.prepare(model, optimizer)
    if run.accelerator.distributed_type.value == "FSDP":
        shard = model.vit.encoder.layers[0].mlp.fc1.weight
        run.log(
            f"FSDP2: block weights sharded {tuple(shard.to_local().shape)} of {tuple(shard.shape)}"
        )
    return model, optimizer


# ---------------------------------------------------------------------------------- resume


def resume(run: Run, loader) -> int:
    """Restore model, optimiser and data position from the resume checkpoint; the start step."""
    if run.resume_path is None:
        return 0
    trainer_state, data_state = run.checkpoints.load(run.resume_path)
    loader.load_state_dict(data_state)
    run.log(f"resumed from {run.resume_path} at step {trainer_state['step']}")
    return trainer_state["step"]


def describe_run(run: Run, model, config, start_step: int) -> None:
    """Print the run's shape, and open the trackers, metrics log, Hub pusher and signals."""
    args, accelerator = run.args, run.accelerator
    unwrapped = accelerator.unwrap_model(model)
    peak_flops, peak_how = device_peak_flops(accelerator.device, run.bf16)
    run.extra.update(peak_flops=peak_flops, flops_img=flops_per_image(config))
    run.log(
        f"world size {run.world} | per-device batch {args.per_device_train_batch_size} | grad "
        f"accumulation {args.gradient_accumulation_steps} | global batch {run.global_batch}\n"
        f"peak lr {run.peak_lr:.3e} (base {args.base_learning_rate:g} x {run.global_batch}/256"
        f"{', overridden' if args.learning_rate else ''}) | warm-up {args.warmup_steps} | "
        f"steps {args.max_steps}\n"
        f"model {config.preset or 'custom'} {count_parameters(unwrapped) / 1e6:.1f}M params "
        f"(encoder {count_parameters(unwrapped, encoder_only=True) / 1e6:.1f}M) | "
        f"{config.num_channels} bands {config.band_names} | {config.image_size}px / patch "
        f"{config.patch_size} | mask {config.mask_ratio}\n"
        f"{run.extra['flops_img'] / 1e9:.2f} GFLOPs per image (fwd+bwd) | precision "
        f"{'bf16 autocast' if run.bf16 else 'fp32'} | {accelerator.distributed_type.value} | "
        f"MFU peak {peak_flops / 1e12:.3f} TFLOP/s per process ({peak_how})"
    )
    if accelerator.is_main_process and args.report_to != "none":
        flat = as_flat_dict(run.model_args, run.data_args, args)
        accelerator.init_trackers(
            "pretrain", config={k: v for k, v in flat.items() if v is not None}
        )
    if accelerator.is_main_process:
        run.metrics = MetricsLog(
            run.output_dir / "metrics.jsonl", start_step if run.resume_path else None
        )
    if args.push_to_hub and accelerator.is_main_process:
        from geofm_hf.hub import HubPusher

        run.pusher = HubPusher(
            args.hub_model_id,
            private=args.hub_private_repo,
            retry_backoff_s=args.hub_retry_backoff_s,
        )
    run.stop = _StopSignal()


# ---------------------------------------------------------------------------------- train


@dataclass
class Outcome:
    step: int
    wall_s: float
    images: int
    last_loss: float
    stopped_by_signal: bool = False


def train(run: Run, model, optimizer, loader, config, processor, start_step: int) -> Outcome:
    """The loop: lr schedule, micro-batches, the NaN/signal vote, logging, checkpoints."""
    args, accelerator = run.args, run.accelerator
    flops_img, peak_flops = run.extra["flops_img"], run.extra["peak_flops"]
    model.train()
    data_iter = iter(loader)
    step = start_step
    window_loss, window_images, window_start = 0.0, 0, time.perf_counter()
    train_start, trained_images, last_loss = time.perf_counter(), 0, float("nan")
    skipped_steps = 0
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
        step_loss, bad = 0.0, False
        for micro in range(args.gradient_accumulation_steps):
            pixels = next(data_iter)
            pixel_mask = wavelengths = None
            if isinstance(pixels, dict):  # the real stream: pixels + validity mask
                wavelengths = pixels.get("wavelengths")  # a mixed-sensor stream's band set
                pixels, pixel_mask = pixels["pixel_values"], pixels["pixel_mask"]
                # An all-valid batch takes the unmasked loss (checked on the CPU: no sync).
                pixel_mask = None if bool(pixel_mask.all()) else pixel_mask.to(accelerator.device)
            pixels = pixels.to(accelerator.device, non_blocking=True)
            noise = mask_noise(
                args.seed, step, micro, run.rank, (pixels.shape[0], config.num_patches)
            )
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = model(
                        pixel_values=pixels,
                        pixel_mask=pixel_mask,
                        wavelengths=wavelengths,
                        noise=noise.to(accelerator.device),
                    ).loss
                # One small all-reduce: every rank must agree to skip or stop, or the next
                # collective would hang. It doubles as the preemption-signal vote.
                flags = torch.tensor(
                    [float(not torch.isfinite(loss)), float(run.stop.received is not None)],
                    device=accelerator.device,
                )
                flags = accelerator.reduce(flags, reduction="sum")
                if flags[0] > 0:
                    bad = True
                    if args.nan_policy == "stop":
                        raise FloatingPointError(
                            f"Loss is {loss.item()} at step {step} (micro-batch {micro}) on at "
                            f"least one rank; stopping without writing a checkpoint. The last "
                            f"good checkpoint is in {run.output_dir}. Lower the learning rate or "
                            "use --nan_policy skip."
                        )
                    loss = loss.nan_to_num(0.0, 0.0, 0.0) * 0.0  # contributes no gradient
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    if bad or not torch.isfinite(torch.as_tensor(grad_norm)):
                        skipped_steps += 1
                        optimizer.zero_grad(set_to_none=True)
                    else:
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            step_loss += loss.detach().float().item() / args.gradient_accumulation_steps
        step += 1
        last_loss = step_loss
        window_loss += step_loss
        window_images += run.global_batch
        trained_images += run.global_batch
        progress.update(1)

        if step % args.logging_steps == 0 or step == args.max_steps:
            elapsed = time.perf_counter() - window_start
            images_per_s = window_images / elapsed
            mfu = (
                images_per_s * flops_img / (peak_flops * run.world) if peak_flops else float("nan")
            )
            record = {
                "step": step,
                "loss": window_loss / max(1, window_images // run.global_batch),
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
            window_loss, window_images, window_start = 0.0, 0, time.perf_counter()

        stopping = flags[1] > 0
        if step % args.save_steps == 0 or stopping or step == args.max_steps:
            save_checkpoint(run, model, loader, step, config, processor)
        if stopping:
            run.log(
                f"signal {run.stop.received or 'on another rank'}: checkpoint written at step "
                f"{step}, exiting"
            )
            return Outcome(step, 0.0, trained_images, last_loss, stopped_by_signal=True)
    progress.close()
    return Outcome(step, time.perf_counter() - train_start, trained_images, last_loss)


# ---------------------------------------------------------------------------------- checkpoints


def _parameters_finite(accelerator, model) -> bool:
    bad = torch.zeros(1, device=accelerator.device)
    for param in model.parameters():
        local = param.to_local() if hasattr(param, "to_local") else param
        if not torch.isfinite(local).all():
            bad += 1
            break
    return accelerator.reduce(bad, reduction="sum").item() == 0


def save_checkpoint(run: Run, model, loader, step: int, config, processor=None) -> None:
    """Collective. Refuses to write weights holding NaN/inf."""
    args, accelerator = run.args, run.accelerator
    if not _parameters_finite(accelerator, model):
        raise FloatingPointError(
            f"Parameters hold NaN/inf at step {step}: not writing a checkpoint. The previous "
            f"checkpoint in {args.output_dir} is intact."
        )
    trainer_state = {
        "step": step,
        "world_size": run.world,
        "seed": args.seed,
        "max_steps": args.max_steps,
        "global_batch": run.global_batch,
        "geofm_hf_version": geofm_hf.__version__,
    }
    path = run.checkpoints.save(step, trainer_state, loader.state_dict())
    if args.push_to_hub:
        # Hub revisions hold loadable weights (safetensors + code), not optimiser shards.
        state_dict = accelerator.get_state_dict(model)
        if run.pusher is not None:
            export_dir = path / "hub_export"
            accelerator.unwrap_model(model).save_pretrained(export_dir, state_dict=state_dict)
            if processor is not None:
                # Without it AutoImageProcessor (and so the probe / fine-tune recipes) cannot
                # load a checkpoint revision.
                processor.save_pretrained(export_dir)
            run.pusher.push_checkpoint(export_dir, step)
        accelerator.wait_for_everyone()


# ---------------------------------------------------------------------------------- export


def export(run: Run, model, processor, data: DataContract, outcome: Outcome, loader) -> None:
    """Consolidated safetensors weights, processor, figures, run record and card -> final/."""
    from geofm_hf.model_card import RunRecord, write_model_card

    args, accelerator, output_dir = run.args, run.accelerator, run.output_dir
    model_args, data_args = run.model_args, run.data_args
    step, wall, last_loss = outcome.step, outcome.wall_s, outcome.last_loss
    flops_img, peak_flops = run.extra["flops_img"], run.extra["peak_flops"]
    state_dict = accelerator.get_state_dict(model)  # collective: gathers FSDP shards
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return
    final = output_dir / "final"
    tmp = output_dir / ".tmp-final"
    shutil.rmtree(tmp, ignore_errors=True)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
    if processor is not None:
        processor.save_pretrained(tmp)
    records = run.metrics.read() if run.metrics is not None else []
    plot_loss_curve(records, tmp / "loss_curve.png")
    recon = None
    reloaded = GeoViTMAEForPreTraining.from_pretrained(tmp)
    if (
        args.plot_reconstructions
        and count_parameters(reloaded) < 2e9
        and not data_args.synthetic_data
        # A wavelength model needs each dataset's wavelengths; the plot takes one band set.
        and reloaded.config.patch_embedding == "conv"
    ):
        sample = make_pretrain_dataloader(
            data.name_or_path,
            split=data_args.train_split,
            batch_size=3,
            seed=args.seed + 1,
            crop_size=reloaded.config.image_size,
            mean=reloaded.config.image_mean,
            std=reloaded.config.image_std,
            augment=False,
            revision=data_args.dataset_revision,
        )
        try:
            rgb = rgb_band_indices(reloaded.config.band_names or [])
        except ValueError:
            rgb = None  # no red/green/blue bands: a grey composite of the first band
        plot_reconstructions(reloaded, next(iter(sample)), tmp / "reconstruction.png", rgb)
        recon = "reconstruction.png"
    ips = outcome.images / wall if wall > 0 else None
    info = data.info
    record = RunRecord.from_model(
        reloaded,
        processor,
        sensor=getattr(info, "sensor", None),
        datasets=[
            {
                "repo_id_or_path": name
                if not os.path.isdir(name)
                else os.path.basename(os.path.normpath(name)),
                "revision": data_args.dataset_revision,
            }
            for name, _ in data.datasets
        ]
        if info
        else [],
        base_model=model_args.model_name_or_path,
        base_model_revision=model_args.model_revision,
        run_config=as_flat_dict(model_args, data_args, args),
        accelerate_config={
            "distributed_type": accelerator.distributed_type.value,
            "mixed_precision": accelerator.mixed_precision,
            "num_processes": accelerator.num_processes,
        },
        hardware=_hardware(accelerator),
        world_size=accelerator.num_processes,
        global_batch=run.global_batch,
        steps=step,
        wall_time_s=round(wall, 1),
        images_per_s=round(ips, 2) if ips else None,
        mfu=round(ips * flops_img / (peak_flops * accelerator.num_processes), 4)
        if ips and peak_flops
        else None,
        final_loss=round(last_loss, 5),
        loss_curve_png="loss_curve.png",
        reconstruction_png=recon,
        license="apache-2.0",
        repo_id=args.hub_model_id,
        package_version=geofm_hf.__version__,
    )
    record.save(tmp / "run_record.json")
    write_model_card(tmp, record)
    if final.exists():
        # Never overwrite published weights: the earlier export is kept under its own name.
        previous = output_dir / f"final-before-step-{step:06d}-{int(time.time())}"
        os.replace(final, previous)
        accelerator.print(f"kept the previous export as {previous}")
    os.replace(tmp, final)
    summary = {"final_dir": str(final), "steps": step, "final_loss": last_loss, "images_per_s": ips}
    if hasattr(loader, "stats"):
        summary["data"] = loader.stats
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    accelerator.print(
        f"exported {final} (loss {last_loss:.4f}); images/s: {ips or 0:.2f}, MFU: {record.mfu}"
    )
    if run.pusher is not None:
        run.pusher.push_final(final, step=step)
        accelerator.print(f"hub: {run.pusher.close()}")
    accelerator.wait_for_everyone()


def _hardware(accelerator) -> str:
    device = accelerator.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads/process)"
    return f"{accelerator.num_processes}x {name} on {socket.gethostname() if accelerator.num_processes > 1 else 'one host'}"


if __name__ == "__main__":
    sys.exit(main())
