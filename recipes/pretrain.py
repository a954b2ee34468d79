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
import math
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
    gather_object,
    set_seed,
)
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForPreTraining

import geofm_hf
from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining, GeoViTMAEImageProcessor
from geofm_hf._atomic import atomic_write_text
from geofm_hf.bands import rgb_band_indices
from geofm_hf.data import make_pretrain_dataloader, read_dataset_info, sample_dataset_path
from geofm_hf.data.device_transforms import batch_to_device, resolve_device_transforms
from geofm_hf.data.mixing import MixedPretrainLoader
from geofm_hf.modeling_geofm import count_parameters, flops_per_image
from geofm_hf.training.arguments import (
    ArgumentError,
    as_flat_dict,
    check_output_dir_writable,
    end_training,
    parse_arguments,
    run_recipe,
)
from geofm_hf.training.checkpointing import TRAINER_STATE, CheckpointManager, list_checkpoints
from geofm_hf.training.compile import compile_blocks
from geofm_hf.training.distributed import prepare_model, save_pretrained_streaming
from geofm_hf.training.host_memory import pin_mmap_threshold
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
from geofm_hf.training.run_status import write_run_status


def main(argv: list[str] | None = None) -> int:
    model_args, data_args, args = parse_arguments(argv)
    data = read_data_contract(data_args)
    config = build_model_config(model_args, data_args, data.info, data.datasets)
    if args.dry_run:
        return dry_run(config, args)

    check_output_dir_writable(args.output_dir)
    run = start_run(model_args, data_args, args)
    check_activation_checkpointing(run, model_args)
    if run_already_finished(run):
        return 0
    check_resume_compatibility(run, config, data)
    model = build_model(config, model_args, args.seed)
    processor = build_processor(config, data)
    loader = build_dataloader(run, data, data_args, config)
    model, optimizer = build_optimizer(run, model)
    start_step = resume(run, loader)
    describe_run(run, model, config, start_step)

    try:
        outcome = train(run, model, optimizer, loader, config, processor, start_step)
        if not outcome.stopped_by_signal:
            export(run, model, config, processor, data, outcome, loader)
            if run.accelerator.is_main_process:
                write_run_status(run.output_dir, "finished", step=outcome.step, signal=None)
    finally:
        if run.pusher is not None and not run.pusher.closed:
            # Stopped by a signal or an error: the job's end must not wait for the Hub (queued
            # pushes would otherwise run before the interpreter exits). What is not pushed stays
            # staged, logged with the geofm-push command that uploads it.
            run.accelerator.print(f"hub: {run.pusher.close(timeout=0)}")
    end_training(run.accelerator)
    return outcome.exit_code


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
    for name, info in datasets:
        bad = {k: v for k, v in (("mean", info.mean), ("std", info.std))
               if not all(math.isfinite(x) for x in v)}  # fmt: skip
        if bad:
            raise ValueError(
                f"{name}: geofm_dataset.json holds non-finite normalisation statistics "
                f"{bad}: every batch would be NaN. Rewrite the dataset (its statistics must "
                "exclude NaN/inf pixels) or fix mean/std there."
            )
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
        if model_args.image_size is not None and model_args.image_size != config.image_size:
            raise ArgumentError(
                f"--image_size {model_args.image_size} differs from the {config.image_size} px "
                f"that {model_args.model_name_or_path} was trained at; continued pretraining "
                f"keeps the checkpoint's size: drop --image_size or pass {config.image_size}."
            )
        check_image_size(config.image_size, getattr(data_info, "chip_size", None),
                         config.patch_size, asked=False,
                         source=f"{model_args.model_name_or_path}'s")  # fmt: skip
        for name in ("num_frames", "tubelet_size", "temporal_encoding", "location_encoding"):
            asked = getattr(model_args, name)
            if asked not in (None, getattr(GeoViTMAEConfig(), name), getattr(config, name)):
                raise ArgumentError(
                    f"--{name} {asked} differs from {model_args.model_name_or_path}'s "
                    f"{getattr(config, name)}; continued pretraining keeps the model's shape."
                )
        check_frames(config.num_frames, datasets or [("dataset", data_info)])
        config._attn_implementation = model_args.attn_implementation
        return config

    infos = [info for _, info in datasets if info is not None] or (
        [data_info] if data_info is not None else []
    )
    stored = {info.num_frames for info in infos}
    overrides = {
        "attn_implementation": model_args.attn_implementation,
        "patch_embedding": model_args.patch_embedding,
        "wavelength_embed_dim": model_args.wavelength_embed_dim,
        "wavelength_bandwidths": _use_bandwidths(model_args, infos),
        # Default: the data's frames (all datasets of a run must agree, checked below).
        "num_frames": model_args.num_frames or (min(stored) if stored else 1),
        "tubelet_size": model_args.tubelet_size,
        "temporal_encoding": model_args.temporal_encoding,
        "location_encoding": model_args.location_encoding,
        "metadata_dropout": model_args.metadata_dropout,
    }
    check_frames(overrides["num_frames"], datasets or [("dataset", data_info)])
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
    chips = [info.chip_size for _, info in datasets if info is not None] or (
        [data_info.chip_size] if data_info is not None else []
    )
    check_image_size(size, min(chips) if chips else None, patch,
                     asked=model_args.image_size is not None,
                     source=f"the {model_args.preset} preset's")  # fmt: skip
    overrides["image_size"] = size
    return GeoViTMAEConfig.from_preset(model_args.preset, **overrides)


def check_image_size(size: int, chip: int | None, patch: int, *, asked: bool, source: str) -> None:
    """A training size is never changed silently: one larger than the chips is refused."""
    if chip is None or size <= chip:
        return
    fits = (chip // patch) * patch
    what = f"--image_size {size}" if asked else f"{source} image_size {size}"
    raise ArgumentError(
        f"{what} is larger than the dataset's {chip} px chips. Pass --image_size {fits} (the "
        f"largest multiple of the patch size {patch} that fits; training crops it from each "
        f"chip at the chips' ground resolution), or write the shards with chips of at least "
        f"{size} px."
    )


def _use_bandwidths(model_args, infos) -> bool:
    """``--wavelength_bandwidths auto``: a wavelength model reads bandwidths when every dataset
    knows them (so inference, given them by the processor, matches pretraining)."""
    choice = str(model_args.wavelength_bandwidths).lower()
    if model_args.patch_embedding != "wavelength" or choice == "false":
        return False
    known = bool(infos) and all(info.band_widths() is not None for info in infos)
    if choice == "true" and not known:
        raise ArgumentError(
            "--wavelength_bandwidths true, but not every dataset knows its bands' widths "
            "(bandwidths_um in geofm_dataset.json, or a sensor in the tables): pass auto or false."
        )
    if choice not in ("auto", "true"):
        raise ArgumentError(f"--wavelength_bandwidths must be auto, true or false: found {choice}.")
    return known


def check_frames(num_frames: int, datasets) -> None:
    """Every dataset must hold at least ``num_frames`` frames per chip (picked clearest first)."""
    short = {name: info.num_frames for name, info in datasets
             if info is not None and info.num_frames < num_frames}  # fmt: skip
    if short:
        raise ArgumentError(
            f"the model takes {num_frames} frames per sample but {short} hold fewer per chip; "
            "pass --num_frames at most that, or write time-series shards with "
            "geofm-make-shards --num-frames"
        )


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
    argument_changes: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def log(self):
        return self.accelerator.print


class StopWhileWaitingForData(Exception):
    """A stop signal arrived while this rank waited for its next batch."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum} while waiting for data")
        self.signum = signum


class _StopSignal:
    """SIGTERM / SIGUSR1 (Slurm's warning before the time limit) -> checkpoint and exit.

    The flag is voted on after each forward pass. A signal that arrives while this rank waits
    for data (a stalled read) cannot wait for that vote: it interrupts the wait instead.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.waiting_for_data = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = signum
        if self.waiting_for_data:
            self.waiting_for_data = False
            raise StopWhileWaitingForData(signum)

    def next_batch(self, data_iter):
        self.waiting_for_data = True
        try:
            return next(data_iter)
        finally:
            self.waiting_for_data = False


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
    if use_cuda and bf16 and args.gradient_reduce_dtype == "bfloat16":
        # Asked for: replicated (DDP) runs all-reduce gradients in bf16. FSDP2 runs ignore this
        # handler and reduce per their mixed-precision policy (distributed.mixed_precision_policy).
        kwargs["kwargs_handlers"] = [
            DistributedDataParallelKwargs(comm_hook=DDPCommunicationHookType.BF16)
        ]
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
    removed = checkpoints.clean_partial()
    if removed:
        accelerator.print(f"removed unfinished checkpoint writes from a previous run: {removed}")
    world = accelerator.num_processes
    data_args.dataloader_num_workers, _ = loader_settings(
        accelerator.device.type, data_args.dataloader_num_workers
    )
    return Run(
        model_args=model_args,
        data_args=data_args,
        args=args,
        accelerator=accelerator,
        output_dir=output_dir,
        checkpoints=checkpoints,
        resume_path=checkpoints.resolve_resume(args.resume_from_checkpoint),
        bf16=bf16,
        rank=accelerator.process_index,
        world=world,
        global_batch=args.per_device_train_batch_size * world * args.gradient_accumulation_steps,
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


def build_processor(config: GeoViTMAEConfig, data: DataContract):
    """The exported image processor. Training crops ``image_size`` windows out of larger chips at
    the chips' own ground resolution, so inference crops the same way instead of resampling a
    chip down to ``image_size`` (which would show the model another ground resolution)."""
    if config.patch_embedding == "wavelength":
        # Takes any bands and returns their wavelengths; statistics belong to each sensor.
        return GeoViTMAEImageProcessor.from_model_config(config)
    if config.image_mean is None:
        return None
    chip = getattr(data.info, "chip_size", None)
    if chip is not None and chip > config.image_size:
        return GeoViTMAEImageProcessor.from_model_config(
            config, size=chip, crop_size=config.image_size
        )
    return GeoViTMAEImageProcessor.from_model_config(config)


def run_already_finished(run: Run) -> bool:
    """Rerunning a finished run's command (``resume_from_checkpoint: auto``) does nothing, says
    so, and leaves its export and card as they are."""
    if run.resume_path is None:
        return False
    step = json.loads((run.resume_path / TRAINER_STATE).read_text())["step"]
    if step > run.args.max_steps:
        raise ArgumentError(
            f"--max_steps {run.args.max_steps} is below the step of the checkpoint resumed from "
            f"({run.resume_path}, step {step}): raise --max_steps to continue training."
        )
    if step == run.args.max_steps and _exported_at(run.output_dir, step):
        run.log(
            f"{run.output_dir} already finished: {run.output_dir / 'final'} holds step {step} "
            f"of --max_steps {run.args.max_steps}; nothing to do (raise --max_steps to train on)."
        )
        end_training(run.accelerator)
        return True
    return False


# What must match to resume exactly: the model's shape and bands, and what places each rank in
# the data stream. Anything else (schedule, logging, checkpoint cadence...) may change, and is
# recorded.
_MODEL_KEYS = (
    "preset", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "decoder_hidden_size", "decoder_num_hidden_layers", "patch_size", "image_size",
    "num_channels", "band_names", "mask_ratio", "norm_pix_loss",
)  # fmt: skip
_DATA_KEYS = (
    "dataset_name_or_path", "dataset_revision", "train_split", "synthetic_data",
    "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "model_name_or_path",
)  # fmt: skip
_NOT_RECORDED = ("output_dir", "resume_from_checkpoint", "dry_run", "accelerate_config")


def _model_fingerprint(config) -> dict:
    return {key: getattr(config, key, None) for key in _MODEL_KEYS}


def check_resume_compatibility(run: Run, config, data: DataContract) -> None:
    """Before anything is loaded: the checkpoint must come from a run this one can continue
    exactly. Names every difference; records the allowed changes of arguments."""
    if run.resume_path is None:
        return
    state = json.loads((run.resume_path / TRAINER_STATE).read_text())
    before = state.get("arguments")
    if before is None:
        run.log(f"{run.resume_path} records no arguments (older version): not compared")
        return
    now = as_flat_dict(run.model_args, run.data_args, run.args)
    now["dataset_name_or_path"] = data.name_or_path
    problems = []
    for key, (was, found) in _differences(state.get("model", {}), _model_fingerprint(config)):
        problems.append(f"model {key}: {was!r} in the checkpoint, {found!r} now")
    for key in _DATA_KEYS:
        if key in before and before[key] != now.get(key):
            problems.append(f"{key}: {before[key]!r} in the checkpoint, {now.get(key)!r} now")
    if state.get("world_size") not in (None, run.world):
        problems.append(f"world size: {state['world_size']} in the checkpoint, {run.world} now")
    if problems:
        raise ArgumentError(
            f"Cannot resume {run.resume_path}: it was written by another run.\n  "
            + "\n  ".join(problems)
            + "\nUse another --output_dir for this run, or pass the checkpoint's values."
        )
    changes = {
        key: [before[key], now.get(key)]
        for key in sorted(set(before) | set(now))
        if key not in _NOT_RECORDED and key not in _DATA_KEYS and before.get(key) != now.get(key)
    }
    run.argument_changes = list(state.get("argument_changes", []))
    if changes:
        run.argument_changes.append({"step": state["step"], "changes": changes})
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
        run.log(f"resuming at step {state['step']} with changed arguments: {listed}")


def _differences(before: dict, now: dict):
    for key in sorted(set(before) | set(now)):
        if before.get(key) != now.get(key):
            yield key, (before.get(key), now.get(key))


# ---------------------------------------------------------------------------------- model


def build_model(config: GeoViTMAEConfig, model_args, seed: int) -> GeoViTMAEForPreTraining:
    """The model to train: the continued checkpoint's weights, or, from scratch, the model on the
    ``meta`` device: no memory until each rank materialises its own shards (prepare_model)."""
    set_seed(seed)
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
        damaged = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        if damaged:
            raise ValueError(
                f"The weights loaded from {model_args.model_name_or_path} hold NaN/inf in "
                f"{len(damaged)} tensors (first: {damaged[0]}); continuing from them would "
                "train on nothing. Use an earlier export or checkpoint."
            )
    else:
        with torch.device("meta"):
            model = GeoViTMAEForPreTraining(config)
    if model_args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    if model_args.torch_compile:
        compile_blocks(model)  # per block, before FSDP2 wraps them (torchtitan's order)
    return model


# ---------------------------------------------------------------------------------- data


def mask_noise(
    seed: int, step: int, micro: int, rank: int, shape: tuple[int, int], stream: int = 0
) -> torch.Tensor:
    """The MAE mask (``stream`` 0) or the metadata dropout draws (1) as a function of (seed,
    step, micro-batch, rank): exact on resume, where the global generator restarts."""
    generator = torch.Generator().manual_seed(
        ((seed * 1_000_003 + step) * 1_009 + micro) * 9_176 + rank + stream * 7_919_000_001
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


def loader_settings(device_type: str, num_workers: int | None) -> tuple[int, bool]:
    """(data workers per rank, pin_memory): on GPUs decoding runs in 4 workers and batches are
    pinned for asynchronous copies; on CPU the training processes own the cores."""
    on_gpu = device_type == "cuda"
    return (4 if on_gpu else 0) if num_workers is None else num_workers, on_gpu


def build_dataloader(run: Run, data: DataContract, data_args, config: GeoViTMAEConfig):
    """This rank's stream of normalised, cropped batches (or synthetic ones)."""
    run.extra["dataset"] = data.name_or_path
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
        pin_memory=loader_settings(run.accelerator.device.type, data_args.dataloader_num_workers)[
            1
        ],
        crop_size=config.image_size,
        mean=config.image_mean,
        std=config.image_std,
        revision=data_args.dataset_revision,
        on_error=data_args.on_error,
        max_error_fraction=data_args.max_error_fraction,
        device_transforms=resolve_device_transforms(
            data_args.device_transforms, run.accelerator.device
        ),
        return_masks=True,  # nodata / fill / cloud pixels are kept out of the MAE loss
        **_frames_and_metadata(config),
    )


def _frames_text(config) -> str:
    parts = [f"{config.num_frames} frames (tubelet {config.tubelet_size})"] * (
        config.num_frames > 1
    ) + [name for name, on in (("dates", config.temporal_encoding),
                               ("places", config.location_encoding)) if on]  # fmt: skip
    if parts and config.metadata_dropout:
        parts.append(f"metadata dropout {config.metadata_dropout}")
    return " | " + ", ".join(parts) if parts else ""


def _frames_and_metadata(config) -> dict:
    """The stream options a model's time-series and metadata settings ask for."""
    wanted = config.temporal_encoding or config.location_encoding
    return {"num_frames": config.num_frames, "return_metadata": bool(wanted)}


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
            **_frames_and_metadata(config),
        )
        wavelengths[name] = info.wavelengths_um
    bandwidths = {name: info.band_widths() for name, info in data.datasets}
    return MixedPretrainLoader(loaders, wavelengths, data.weights, seed=run.args.seed,
                               bandwidths=bandwidths if config.wavelength_bandwidths else None)  # fmt: skip


# ---------------------------------------------------------------------------------- optimiser


def build_optimizer(run: Run, model):
    """Shard (FSDP2/HSDP) or wrap (DDP) the model, materialising a from-scratch model shard by
    shard; then AdamW (MAE's groups) at the peak lr, built from the prepared parameters."""
    args = run.args
    model = prepare_model(run.accelerator, model, args.seed, args.gradient_reduce_dtype)
    run.peak_lr = (
        args.learning_rate
        if args.learning_rate is not None
        else scaled_learning_rate(args.base_learning_rate, run.global_batch)
    )
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.weight_decay),
        lr=run.peak_lr,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
    optimizer = run.accelerator.prepare_optimizer(optimizer)
    if run.accelerator.distributed_type.value == "FSDP":
        shard = model.vit.encoder.layers[0].mlp.fc1.weight
        mesh = shard.device_mesh
        layout = (
            f"HSDP mesh (dp_replicate={mesh.size(0)}, dp_shard={mesh.size(1)})"
            if mesh.ndim == 2
            else f"{mesh.size()} shards"
        )
        run.log(
            f"FSDP2: block weights sharded {tuple(shard.to_local().shape)} of "
            f"{tuple(shard.shape)}, {layout}"
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
        f"{', overridden' if args.learning_rate is not None else ''}) | warm-up {args.warmup_steps} | "
        f"steps {args.max_steps}\n"
        f"model {config.preset or 'custom'} {count_parameters(unwrapped) / 1e6:.1f}M params "
        f"(encoder {count_parameters(unwrapped, encoder_only=True) / 1e6:.1f}M) | "
        f"{config.num_channels} bands {config.band_names} | {config.image_size}px / patch "
        f"{config.patch_size} | mask {config.mask_ratio}{_frames_text(config)}\n"
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
    run.stop = _StopSignal()
    if accelerator.is_main_process:
        write_run_status(run.output_dir, "running", step=start_step, signal=None)


# ---------------------------------------------------------------------------------- train


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
    window = _Window(device)
    train_start, trained_images, last_loss = time.perf_counter(), 0, float("nan")
    skipped_steps = 0
    grad_norm = torch.zeros((), device=device)
    step_s = None
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
                    f"without a checkpoint. {_last_checkpoint_text(run.output_dir)}"
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
                    _diagnose_nan(
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
            step_s = elapsed * run.global_batch / window.images
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
            window = _Window(device, first_step=step + 1)
            stopping = vote.stop
        else:
            stopping = False
        if saving or stopping:
            save_start = time.perf_counter()
            save_checkpoint(run, model, loader, step, config, processor)
            if accelerator.is_main_process:
                # The batch script asks for the stop signal this long (and a margin) before
                # the time limit.
                write_run_status(
                    run.output_dir,
                    "stopped_by_signal" if stopping else "running",
                    step=step,
                    checkpoint_save_s=time.perf_counter() - save_start,
                    step_s=step_s,
                    signal=run.stop.received if stopping else None,
                )
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


def _last_checkpoint_text(output_dir: Path) -> str:
    found = list_checkpoints(output_dir)
    if not found:
        return f"No checkpoint has been written to {output_dir} yet."
    return (
        f"The last complete checkpoint is {found[-1][1]} (--resume_from_checkpoint auto "
        "resumes from it)."
    )


def _diagnose_nan(run: Run, loss: float, step: int, micro: int, input_bad: bool,
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
        f"{_last_checkpoint_text(run.output_dir)}"
    )


def _exported_at(output_dir: Path, step: int) -> bool:
    record = output_dir / "final" / "run_record.json"
    try:
        return json.loads(record.read_text()).get("steps") == step
    except (OSError, ValueError):
        return False


def _plain(tensor):
    """A clipped-gradient norm as a plain tensor (FSDP2 returns a replicated DTensor)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else torch.as_tensor(tensor)


@dataclass
class _Vote:
    nonfinite: int
    stop: bool
    mean_loss: float
    inputs_bad: bool
    weights_bad: bool


class _Window:
    """Device-side sums between two votes: no host sync until :meth:`vote`."""

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

    def vote(self, accelerator, stop, world: int) -> _Vote:
        """Collective: one all-reduce of (non-finite losses, stop signals, loss sum, bad inputs,
        bad weights)."""
        signal_flag = torch.tensor(float(stop.received is not None), device=self.nonfinite.device)
        flags = torch.stack(
            [self.nonfinite, signal_flag, self.loss_sum, self.inputs_bad, self.weights_bad]
        )
        nonfinite, stops, loss_sum, inputs_bad, weights_bad = accelerator.reduce(
            flags, reduction="sum"
        ).tolist()
        return _Vote(
            int(nonfinite),
            stops > 0,
            loss_sum / max(1, self.steps * world),
            inputs_bad > 0,
            weights_bad > 0,
        )

    def first_bad(self) -> tuple[float, int | None, int | None]:
        """(loss, step, micro-batch) of this rank's first non-finite loss in the window."""
        loss, step, micro = self.first_bad_at.tolist()
        return (loss, int(step), int(micro)) if step >= 0 else (float("nan"), None, None)


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
        # What check_resume_compatibility compares before a resume loads anything.
        "arguments": {
            **as_flat_dict(run.model_args, run.data_args, args),
            "dataset_name_or_path": run.extra.get("dataset"),
        },
        "model": _model_fingerprint(config),
        "argument_changes": run.argument_changes,
    }
    path = run.checkpoints.save(step, trainer_state, loader.state_dict())
    if args.push_to_hub:
        # Hub revisions hold loadable weights (safetensors + code), not optimiser shards.
        export_dir = path / "hub_export"
        save_pretrained_streaming(model, export_dir, write=run.pusher is not None)
        if run.pusher is not None:
            if processor is not None:
                # Without it AutoImageProcessor (and so the probe / fine-tune recipes) cannot
                # load a checkpoint revision.
                processor.save_pretrained(export_dir)
            run.pusher.push_checkpoint(export_dir, step)
        accelerator.wait_for_everyone()


# ---------------------------------------------------------------------------------- export


def export(
    run: Run, model, config, processor, data: DataContract, outcome: Outcome, loader
) -> None:
    """Consolidated safetensors weights, processor, figures, run record and card -> final/."""
    from geofm_hf.model_card import RunRecord, write_model_card

    args, accelerator, output_dir = run.args, run.accelerator, run.output_dir
    model_args, data_args = run.model_args, run.data_args
    step, wall, last_loss = outcome.step, outcome.wall_s, outcome.last_loss
    flops_img, peak_flops = run.extra["flops_img"], run.extra["peak_flops"]
    final = output_dir / "final"
    tmp = output_dir / ".tmp-final"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    # Collective: every rank gathers one tensor at a time; the main process writes.
    save_pretrained_streaming(model, tmp, write=accelerator.is_main_process)
    recon = None
    # A wavelength model needs each dataset's wavelengths; the plot takes one band set.
    if (
        args.plot_reconstructions
        and not data_args.synthetic_data
        and config.patch_embedding == "conv"
    ):
        # Collective too: the trained (sharded) model itself, not a reloaded copy.
        recon = plot_export_reconstructions(run, model, config, data, tmp)
    # Collective: each rank met its own bad shards; the record counts them all.
    skipped = _skipped_counts(loader, outcome, accelerator)
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        return
    if processor is not None:
        processor.save_pretrained(tmp)
    records = run.metrics.read() if run.metrics is not None else []
    plot_loss_curve(records, tmp / "loss_curve.png")
    with torch.device("meta"):
        described = GeoViTMAEForPreTraining(config)  # parameter counts for the record, no memory
    ips = outcome.images / wall if wall > 0 else None
    info = data.info
    record = RunRecord.from_model(
        described,
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
        skipped=skipped,
        argument_changes=run.argument_changes,
        limitations=_skipped_text(skipped) + _changes_text(run.argument_changes),
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
    summary["skipped"] = skipped
    if hasattr(loader, "stats"):
        summary["data"] = loader.stats
    atomic_write_text(output_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    accelerator.print(
        f"exported {final} (loss {last_loss:.4f}); images/s: {ips or 0:.2f}, MFU: {record.mfu}"
    )
    if run.pusher is not None:
        run.pusher.push_final(final, step=step)
        accelerator.print(f"hub: {run.pusher.close()}")
    accelerator.wait_for_everyone()


def plot_export_reconstructions(run: Run, model, config, data: DataContract, folder: Path):
    """Collective (every rank runs the forward of a sharded model); the main process draws.
    Skipped from 2B parameters up, where the figure is not worth the forward."""
    if count_parameters(run.accelerator.unwrap_model(model)) >= 2e9:
        return None
    data_args = run.data_args
    sample = make_pretrain_dataloader(
        data.name_or_path,
        split=data_args.train_split,
        batch_size=3,
        seed=run.args.seed + 1,
        crop_size=config.image_size,
        mean=config.image_mean,
        std=config.image_std,
        augment=False,
        revision=data_args.dataset_revision,
        on_error=data_args.on_error,
        max_error_fraction=data_args.max_error_fraction,
        num_frames=config.num_frames,
    )
    try:
        rgb = rgb_band_indices(config.band_names or [])
    except ValueError:
        rgb = None  # no red/green/blue bands: a grey composite of the first band
    path = folder / "reconstruction.png"
    plot_reconstructions(
        run.accelerator.unwrap_model(model),
        next(iter(sample)).to(run.accelerator.device),
        path,
        rgb,
        draw=run.accelerator.is_main_process,
    )
    return "reconstruction.png"


def _skipped_counts(loader, outcome: Outcome, accelerator) -> dict:
    """What the run did not train on, over all ranks (and their data workers), for
    summary.json, the run record and the card. Collective when several processes run."""
    stats = getattr(loader, "stats", {})
    mine = {
        "bad_shards": list(stats.get("bad_shards", [])),
        "rows_lost_to_bad_shards": int(stats.get("rows_lost_to_bad_shards", 0)),
        "batches_lost_to_bad_shards": int(stats.get("batches_lost_to_bad_shards", 0)),
    }
    ranks = gather_object([mine]) if accelerator.num_processes > 1 else [mine]
    bad = sorted({s for r in ranks for s in r["bad_shards"]})
    counts = getattr(getattr(loader, "stream", None), "counts", None)
    rows = (
        sum(counts[s] for s in bad)
        if counts is not None
        else max(r["rows_lost_to_bad_shards"] for r in ranks)
    )
    return {
        "bad_shards": bad,
        "rows_lost_to_bad_shards": int(rows),
        "batches_lost_to_bad_shards": sum(r["batches_lost_to_bad_shards"] for r in ranks),
        "steps_skipped_non_finite": outcome.skipped_steps,
    }


def _changes_text(argument_changes: list) -> list[str]:
    """One card line per resume that changed arguments: the figures hold from that step on."""
    return [
        f"Resumed at step {entry['step']} with changed arguments (in force from that step on): "
        + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in entry["changes"].items())
        + "."
        for entry in argument_changes
    ]


def _skipped_text(skipped: dict) -> list[str]:
    lines = []
    if skipped["bad_shards"]:
        lines.append(
            f"{len(skipped['bad_shards'])} unreadable shard(s) were skipped "
            f"({skipped['rows_lost_to_bad_shards']} chips not trained on)."
        )
    if skipped["steps_skipped_non_finite"]:
        lines.append(
            f"{skipped['steps_skipped_non_finite']} optimizer step(s) were skipped for a "
            "non-finite loss or gradient (--nan_policy skip)."
        )
    return lines


def _hardware(accelerator) -> str:
    device = accelerator.device
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads/process)"
    return f"{accelerator.num_processes}x {name} on {socket.gethostname() if accelerator.num_processes > 1 else 'one host'}"


if __name__ == "__main__":
    sys.exit(run_recipe(main))
