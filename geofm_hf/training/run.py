"""What every stage of a pretraining run shares (:class:`Run`): arguments, the Accelerator, the
run folder; built once by :func:`start_run`, described once by :func:`describe_run`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DDPCommunicationHookType,
    DistributedDataParallelKwargs,
    InitProcessGroupKwargs,
)

from geofm_hf.modeling_geofm import count_parameters, flops_per_image
from geofm_hf.training.arguments import (
    ArgumentError,
    as_flat_dict,
)
from geofm_hf.training.checkpointing import (
    CheckpointManager,
    incomplete_checkpoints,
    list_checkpoints,
    starting_over_message,
)
from geofm_hf.training.collective import on_main_process
from geofm_hf.training.host_memory import pin_mmap_threshold
from geofm_hf.training.inputs import frames_text, loader_settings
from geofm_hf.training.optim import LearningRateRuleError, peak_learning_rate
from geofm_hf.training.reporting import (
    MetricsLog,
    cpu_has_fast_bf16,
    device_peak_flops,
)
from geofm_hf.training.signals import StopSignal


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
    lr_rule: str = ""
    stop: StopSignal | None = None
    metrics: MetricsLog | None = None
    pusher: object | None = None
    argument_changes: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def log(self):
        return self.accelerator.print


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
    # Explicit, not torch's 10-minute default: every collective (a checkpoint's barriers, the
    # per-step control all-reduce) fails the job after this long instead of hanging 8,191 ranks
    # behind one stuck rank; --ddp_timeout sizes it to the slowest legitimate wait (a save).
    handlers = [InitProcessGroupKwargs(timeout=timedelta(seconds=args.ddp_timeout))]
    if use_cuda and bf16 and args.gradient_reduce_dtype == "bfloat16":
        # Asked for: replicated (DDP) runs all-reduce gradients in bf16. FSDP2 runs ignore this
        # handler and reduce per their mixed-precision policy (distributed.mixed_precision_policy).
        handlers.append(DistributedDataParallelKwargs(comm_hook=DDPCommunicationHookType.BF16))
    kwargs["kwargs_handlers"] = handlers
    return Accelerator(**kwargs), bf16


def start_run(model_args, data_args, args) -> Run:
    """Accelerator, output folder (left-over partial checkpoint writes removed), resume point."""
    accelerator, bf16 = build_accelerator(args)
    if accelerator.device.type == "cpu" and args.cpu_release_freed_memory:
        accelerator.print(pin_mmap_threshold())
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    checkpoints = CheckpointManager(accelerator, output_dir, args.save_total_limit)
    if not args.resume_from_checkpoint:
        on_main_process(accelerator, lambda: _refuse_starting_over(output_dir))
    # Listed before clean_partial removes the unfinished writes among them.
    incomplete = incomplete_checkpoints(output_dir) if accelerator.is_main_process else []
    removed = checkpoints.clean_partial()
    world = accelerator.num_processes
    global_batch = args.per_device_train_batch_size * world * args.gradient_accumulation_steps
    try:
        peak_lr, lr_rule = peak_learning_rate(args, global_batch)
    except LearningRateRuleError as err:
        raise ArgumentError(str(err)) from err
    data_args.dataloader_num_workers, _ = loader_settings(
        accelerator.device.type, data_args.dataloader_num_workers
    )
    try:
        resume_path = checkpoints.resolve_resume(args.resume_from_checkpoint)
    except ValueError as err:  # not a checkpoint, or a damaged one: the user's to choose
        raise ArgumentError(str(err)) from None
    if resume_path is None and incomplete:
        accelerator.print(starting_over_message(output_dir, incomplete))
    elif removed:
        accelerator.print(f"removed unfinished checkpoint writes from a previous run: {removed}")
    return Run(
        model_args=model_args,
        data_args=data_args,
        args=args,
        accelerator=accelerator,
        output_dir=output_dir,
        checkpoints=checkpoints,
        resume_path=resume_path,
        bf16=bf16,
        rank=accelerator.process_index,
        world=world,
        global_batch=global_batch,
        peak_lr=peak_lr,
        lr_rule=lr_rule,
    )


def _refuse_starting_over(output_dir: Path) -> None:
    """Without ``--resume_from_checkpoint``, a folder holding an earlier run's checkpoints is
    not trained over from step 1 (its metrics log would be replaced, its checkpoints mixed)."""
    found = list_checkpoints(output_dir)
    if found:
        raise ArgumentError(
            f"--output_dir {output_dir} holds {len(found)} checkpoint(s) of an earlier run (newest "
            f"{found[-1][1].name}) and --resume_from_checkpoint is not set: starting over would "
            "train from step 1 on top of them. Pass --resume_from_checkpoint auto to continue "
            "that run, or another --output_dir to start a new one."
        )


def check_activation_checkpointing(run: Run, model_args) -> None:
    """One source of truth: the recipe's flag or the FSDP config's, never both."""
    plugin = getattr(run.accelerator.state, "fsdp_plugin", None)
    if model_args.gradient_checkpointing and plugin is not None and plugin.activation_checkpointing:
        raise ArgumentError(
            "Activation checkpointing is asked for twice: gradient_checkpointing: true in the "
            "recipe's arguments and fsdp_activation_checkpointing: true in the accelerate config; "
            "each block's forward would run three times. Under FSDP keep the accelerate config's "
            "and pass --gradient_checkpointing false (or set fsdp_activation_checkpointing: "
            "false)."
        )


def describe_run(run: Run, model, config, start_step: int) -> None:
    """Print the run's shape, and open the trackers, metrics log, Hub pusher and signals."""
    args, accelerator = run.args, run.accelerator
    unwrapped = accelerator.unwrap_model(model)
    peak_flops, peak_how = device_peak_flops(accelerator.device, run.bf16)
    run.extra.update(peak_flops=peak_flops, flops_img=flops_per_image(config))
    run.log(
        f"world size {run.world} | per-device batch {args.per_device_train_batch_size} | grad "
        f"accumulation {args.gradient_accumulation_steps} | global batch {run.global_batch}\n"
        f"peak lr {run.peak_lr:.3e} ({run.lr_rule}) | warm-up {args.warmup_steps} | "
        f"steps {args.max_steps}\n"
        f"model {config.preset or 'custom'} {count_parameters(unwrapped) / 1e6:.1f}M params "
        f"(encoder {count_parameters(unwrapped, encoder_only=True) / 1e6:.1f}M) | "
        f"{config.num_channels} bands {config.band_names} | {config.image_size}px / patch "
        f"{config.patch_size} | mask {config.mask_ratio}{frames_text(config)}\n"
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
            # Outside every checkpoint-N: rotation deletes those while their push may still be
            # queued behind a slow Hub. Staged snapshots are hard links, removed once pushed.
            staging_dir=run.output_dir / ".hub_staging",
        )
    run.stop = StopSignal()
