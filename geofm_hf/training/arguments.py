"""Arguments of the pretraining recipe: dataclasses read by transformers' HfArgumentParser from a
YAML file plus command-line overrides. Names follow ``TrainingArguments`` where one exists."""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
import time
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from .._errors import UserInputError


class ArgumentError(UserInputError):
    """A recipe argument (command line or YAML config) that cannot be used; names it."""


# Range of each numeric argument, shared by the pretraining and classification recipes (same
# TrainingArguments names). 0 is never a silent "use the default": it is checked like any value.
_RANGES = {
    "max_steps": ("> 0", lambda v: v > 0),
    "per_device_train_batch_size": ("> 0", lambda v: v > 0),
    "per_device_eval_batch_size": ("> 0", lambda v: v > 0),
    "gradient_accumulation_steps": ("> 0", lambda v: v > 0),
    "learning_rate": ("> 0 (or unset for the scaled default)", lambda v: v > 0),
    "base_learning_rate": ("> 0", lambda v: v > 0),
    "min_learning_rate": (">= 0", lambda v: v >= 0),
    "weight_decay": (">= 0", lambda v: v >= 0),
    "adam_beta1": ("in [0, 1)", lambda v: 0 <= v < 1),
    "adam_beta2": ("in [0, 1)", lambda v: 0 <= v < 1),
    "adam_epsilon": ("> 0", lambda v: v > 0),
    "max_grad_norm": ("> 0", lambda v: v > 0),
    "warmup_steps": (">= 0", lambda v: v >= 0),
    "logging_steps": ("> 0", lambda v: v > 0),
    "save_steps": ("> 0", lambda v: v > 0),
    "save_every_minutes": ("> 0 (or unset to save by steps only)", lambda v: v > 0),
    "ddp_timeout": ("> 0", lambda v: v > 0),
    "save_total_limit": (">= 1 (or unset to keep every checkpoint)", lambda v: v >= 1),
    "hub_retry_backoff_s": (">= 0", lambda v: v >= 0),
    "hub_close_timeout_s": (">= 0", lambda v: v >= 0),
    "dry_run_nodes": ("> 0", lambda v: v > 0),
    "image_size": ("> 0 (or unset for the preset's)", lambda v: v > 0),
    "mask_ratio": ("in (0, 1)", lambda v: 0 < v < 1),
    "dataloader_num_workers": (">= 0", lambda v: v >= 0),
    "dataloader_timeout_s": ("> 0", lambda v: v > 0),
    "synthetic_channels": ("> 0", lambda v: v > 0),
    "max_error_fraction": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "num_train_epochs": ("> 0", lambda v: v > 0),
    "warmup_epochs": (">= 0", lambda v: v >= 0),
    "layer_decay": ("in (0, 1]", lambda v: 0 < v <= 1),
    "mixup_alpha": (">= 0", lambda v: v >= 0),
    "cutmix_alpha": (">= 0", lambda v: v >= 0),
    "label_smoothing": ("in [0, 1)", lambda v: 0 <= v < 1),
}
# The probe's feature names (classification.features); fine-tuning's pooling is checked by the
# model config, which takes only cls/mean.
_FEATURE = re.compile(r"cls|mean|mean_last[1-9]\d*|auto")
_CHOICES = {
    "on_error": ("raise", "skip"),
    "nan_policy": ("stop", "skip"),
    "bf16": ("auto", "true", "false"),
    "mixed_precision": ("no", "bf16", "fp16"),
    "gradient_reduce_dtype": ("float32", "bfloat16"),
    "lr_scaling": ("auto", "linear", "sqrt"),
    "patch_embedding": ("conv", "wavelength"),
}


def check_argument_values(*parsed) -> None:
    """Raise :class:`ArgumentError` naming the first argument outside its range or choices."""
    for obj in parsed:
        for f in fields(obj):
            value = getattr(obj, f.name)
            if value is None:
                continue
            if f.name in _RANGES and isinstance(value, (int, float)):
                expected, ok = _RANGES[f.name]
                if (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
                    raise ArgumentError(f"--{f.name} must be {expected}: found {value}.")
            if f.name == "feature" and not _FEATURE.fullmatch(str(value)):
                raise ArgumentError(
                    "--feature must be 'cls', 'mean' or 'mean_lastK' (K >= 1 blocks, e.g. "
                    f"mean_last4), or 'auto' for the linear probe: found {value!r}."
                )
            if f.name in _CHOICES and value not in _CHOICES[f.name]:
                raise ArgumentError(
                    f"--{f.name} must be one of {', '.join(_CHOICES[f.name])}: found {value!r}."
                )


def _field_types(cls) -> dict[str, tuple[type, ...]]:
    """Field name -> the plain types it accepts (``None`` as ``type(None)``)."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        out[name] = tuple(typing.get_origin(a) or a for a in args)
    return out


def coerce_config_values(path, values, classes, *, keys_word: str = "arguments") -> dict:
    """Check a YAML config against the argument dataclasses: a mapping of known names whose
    values have the argument's type. YAML spellings with one obvious meaning are converted
    (``bf16: false`` -> ``"false"``, ``learning_rate: 1e-4``, which YAML reads as a string)."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ArgumentError(
            f"{path}: expected a mapping of argument names to values (name: value lines), "
            f"found {type(values).__name__} {str(values)[:80]!r}."
        )
    accepted = {}
    for cls in classes:
        accepted.update(_field_types(cls))
    unknown = sorted(str(k) for k in set(values) - set(accepted))
    if unknown:
        raise ArgumentError(
            f"{path}: unknown {keys_word} {unknown}; run with --help for the options."
        )
    out = {}
    for key, value in values.items():
        kinds = accepted[key]
        if value is None and type(None) in kinds:
            out[key] = value
        elif bool in kinds:
            if not isinstance(value, bool):
                raise ArgumentError(
                    f"{path}: {key} must be true or false: found {value!r} "
                    f"({type(value).__name__})."
                )
            out[key] = value
        elif int in kinds and isinstance(value, int) and not isinstance(value, bool):
            out[key] = value
        elif (
            float in kinds and not isinstance(value, bool) and isinstance(value, (int, float, str))
        ):
            try:
                out[key] = float(value)
            except ValueError:
                raise ArgumentError(
                    f"{path}: {key} must be a number: found {value!r} (str)."
                ) from None
        elif str in kinds and isinstance(value, bool):
            out[key] = "true" if value else "false"  # the command line's spelling
        elif (str in kinds and isinstance(value, str)) or (
            list in kinds and isinstance(value, list)
        ):
            out[key] = value
        else:
            words = {int: "an integer", float: "a number", str: "a string", list: "a list"}
            names = " or ".join(words.get(k, k.__name__) for k in kinds if k is not type(None))
            raise ArgumentError(
                f"{path}: {key} must be {names}: found {value!r} ({type(value).__name__})."
            )
    return out


def run_recipe(main) -> int:
    """Run a recipe's ``main`` for the command line and return the exit code. Bad arguments and
    bad data print one line and give 2, as argparse does for its own checks; a run stopped on a
    non-finite loss prints its diagnosis and gives 1. Anything else keeps its traceback."""
    from .._errors import _USER_OS_ERRORS, UserInputError, _one_line

    name = Path(sys.argv[0]).name
    try:
        result = main()
    # Arguments, files, bands, shards: one type for them all; and, as every console script
    # treats them (user_error_exit), a path that is not there, exists already or cannot be written.
    except (UserInputError, *_USER_OS_ERRORS) as err:
        print(f"{name}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"{name}: stopped: {err}", file=sys.stderr)
        return 1
    finally:
        # Early returns and errors leave the process group to interpreter exit.
        let_gloo_threads_finish()
    return result if isinstance(result, int) else 0


def let_gloo_threads_finish(seconds: float = 0.2) -> None:
    """Call before a gloo process group is destroyed (``end_training``, process exit).

    A gloo worker thread drops its last reference to a finished collective's tensors after the
    caller has been told it is done; when Python no longer holds those tensors, that drop needs
    the GIL. ``~ProcessGroupGloo`` waits for the worker threads while holding the GIL, so a
    destruction in that window deadlocks (seen at exit under load: rank 0 stuck for good in
    ``~AsyncAllgatherWork``). Sleeping releases the GIL and lets the threads finish first."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
        time.sleep(seconds)


def end_training(accelerator) -> None:
    """``accelerator.end_training()`` after :func:`let_gloo_threads_finish`: every recipe ends
    its run through here."""
    let_gloo_threads_finish()
    accelerator.end_training()


def check_output_dir_writable(output_dir: str | os.PathLike) -> None:
    """Create ``output_dir`` and prove it writable before any work starts (global rank 0 only:
    one probe, not one per rank); an :class:`ArgumentError` naming it otherwise."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as err:
        raise ArgumentError(
            f"--output_dir {output_dir} is not writable ({err.strerror or err}): choose a "
            "folder this user can write to."
        ) from err


@dataclass
class ModelArguments:
    preset: str = field(
        default="tiny", metadata={"help": "Size preset for a run from scratch (tiny ... vit-15b)."}
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Continue pretraining from this Hub repo id or local export."},
    )
    model_revision: str | None = field(
        default=None, metadata={"help": "Branch, tag or commit of model_name_or_path."}
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "Training crop size; default: the preset's (a size larger than the chips is refused)."
        },
    )
    mask_ratio: float | None = field(default=None, metadata={"help": "Override the config's."})
    norm_pix_loss: bool | None = field(default=None, metadata={"help": "Override the config's."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa or eager."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute block activations in backward."}
    )
    torch_compile: bool = field(
        default=False,
        metadata={"help": "torch.compile every transformer block (geofm_hf.training.compile)."},
    )
    patch_embedding: str = field(
        default="conv",
        metadata={
            "help": "conv (kernels tied to the dataset's bands) or wavelength (any sensor; "
            "needed for several datasets)."
        },
    )
    wavelength_embed_dim: int = field(
        default=128, metadata={"help": "Width of the wavelength hypernetwork's band embedding."}
    )
    wavelength_bandwidths: str = field(
        default="auto",
        metadata={
            "help": "A wavelength model also reads each band's width: auto (when every dataset "
            "knows them), true or false."
        },
    )
    num_frames: int | None = field(
        default=None,
        metadata={
            "help": "Frames per sample; default: the dataset's (1, or T for time-series "
            "shards). Fewer than stored: the clearest, in date order."
        },
    )
    tubelet_size: int = field(default=1, metadata={"help": "Frames per space-time tubelet."})
    temporal_encoding: bool = field(
        default=False, metadata={"help": "Encode each frame's date (year, day of year)."}
    )
    location_encoding: bool = field(
        default=False, metadata={"help": "Encode each chip's centre (latitude, longitude)."}
    )
    metadata_dropout: float = field(
        default=0.0,
        metadata={"help": "Probability of dropping a sample's date or place in pretraining."},
    )


@dataclass
class DataArguments:
    dataset_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset repo id or local folder of shards; several, comma-separated, "
            "are mixed one band set per batch (needs --patch_embedding wavelength); default: "
            "bundled sample."
        },
    )
    dataset_weights: str | None = field(
        default=None,
        metadata={"help": "Comma-separated sampling weight per dataset; default: dataset sizes."},
    )
    dataset_revision: str | None = field(default=None, metadata={"help": "Dataset revision."})
    train_split: str = field(default="train")
    dataloader_num_workers: int | None = field(
        default=None,
        metadata={"help": "Data worker processes per rank; default: 4 on GPUs, 0 on CPU."},
    )
    dataloader_timeout_s: float = field(
        default=600.0,
        metadata={
            "help": "Seconds a rank waits for a data worker's batch before it stops the run with "
            "an error naming the rank and shard (a stalled Hub or file read must not hang the "
            "job); with data workers only."
        },
    )
    synthetic_data: bool = field(
        default=False,
        metadata={"help": "Random tensors instead of data (throughput runs, as in the paper)."},
    )
    synthetic_channels: int = field(default=13)
    on_error: str = field(default="raise", metadata={"help": "raise or skip bad shards."})
    max_error_fraction: float = field(default=0.05)
    device_transforms: str = field(
        default="auto",
        metadata={
            "help": "Flip/rotate/normalise uint16 batches on the device (auto: on GPUs only)."
        },
    )


@dataclass
class PretrainingArguments:
    output_dir: str = field(default="outputs/pretrain")
    max_steps: int = field(default=300)
    per_device_train_batch_size: int = field(default=32)
    gradient_accumulation_steps: int = field(default=1)
    learning_rate: float | None = field(
        default=None,
        metadata={"help": "Absolute peak lr; default: base_learning_rate scaled by --lr_scaling."},
    )
    base_learning_rate: float = field(default=1.5e-4)
    lr_scaling: str = field(
        default="auto",
        metadata={
            "help": "How the peak lr follows the global batch: auto (linear x batch/256 up to "
            "4,096, square root above, refused past 65,536), linear or sqrt."
        },
    )
    min_learning_rate: float = field(default=0.0)
    weight_decay: float = field(default=0.05)
    adam_beta1: float = field(default=0.9)
    adam_beta2: float = field(default=0.95)
    adam_epsilon: float = field(default=1e-8)
    max_grad_norm: float = field(default=1.0)
    warmup_steps: int = field(default=20)
    bf16: str = field(
        default="auto",
        metadata={"help": "auto (bf16 autocast where the hardware has it), true or false."},
    )
    gradient_reduce_dtype: str = field(
        default="float32",
        metadata={
            "help": "float32 or bfloat16: dtype of the gradient reduction in bf16 runs (FSDP2 "
            "reduce-scatter, DDP all-reduce). float32 is exact to the ranks' sum; bfloat16 halves "
            "the traffic."
        },
    )
    cpu_release_freed_memory: bool = field(
        default=True,
        metadata={
            "help": "On CPU ranks, pin glibc's mmap threshold so that freed tensors return to the "
            "OS (geofm_hf.training.host_memory); false keeps glibc's dynamic threshold."
        },
    )
    seed: int = field(default=0)
    logging_steps: int = field(default=10)
    save_steps: int = field(default=100)
    save_every_minutes: float | None = field(
        default=None,
        metadata={
            "help": "Also checkpoint when this many minutes have passed since the last checkpoint "
            "(rank 0's clock, agreed on by every rank within one step); unset: by steps only."
        },
    )
    ddp_timeout: int = field(
        default=1800,
        metadata={
            "help": "Seconds a collective may wait for the slowest rank before the process group "
            "fails the job (torch's default watchdog is 10 minutes; a checkpoint of a 15B model "
            "on Lustre can take longer)."
        },
    )
    save_total_limit: int | None = field(default=3)
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "auto (newest complete checkpoint) or a checkpoint path."}
    )
    allow_global_batch_change: bool = field(
        default=False,
        metadata={
            "help": "On resume, accept a global batch (per-device batch x world size x "
            "accumulation) other than the checkpoint's; the LR schedule then counts steps of "
            "another size."
        },
    )
    nan_policy: str = field(default="stop", metadata={"help": "stop or skip on NaN/inf loss."})
    report_to: str = field(default="tensorboard", metadata={"help": "accelerate tracker, or none."})
    push_to_hub: bool = field(default=False)
    hub_model_id: str | None = field(default=None)
    hub_private_repo: bool = field(default=False)
    hub_retry_backoff_s: float = field(
        default=5.0,
        metadata={"help": "First wait before retrying a failed push; doubles up to 5 minutes."},
    )
    hub_close_timeout_s: float = field(
        default=900.0,
        metadata={
            "help": "At the end of a run, wait at most this long for queued pushes (the rest stay "
            "staged, logged with the geofm-push command that uploads them); below --ddp_timeout."
        },
    )
    plot_reconstructions: bool = field(default=True)
    dry_run: bool = field(
        default=False,
        metadata={"help": "Build on the meta device and print the plan; no training."},
    )
    dry_run_nodes: int = field(default=1)
    accelerate_config: str | None = field(
        default=None,
        metadata={"help": "Accelerate config to plan with in --dry_run (default: the launch's)."},
    )


ARGUMENT_CLASSES = (ModelArguments, DataArguments, PretrainingArguments)


def parse_arguments(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, PretrainingArguments]:
    """``--config run.yaml`` supplies defaults; any other ``--flag value`` overrides them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    parser.add_argument("--config", default=None, help="YAML file of arguments")
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ArgumentError("--config needs a YAML file: found none.")
        path = argv[i + 1]
        try:
            with open(path) as handle:
                raw = yaml.safe_load(handle)
        except OSError as err:
            raise ArgumentError(f"--config {path}: cannot read it: {err.strerror}.") from err
        except yaml.YAMLError as err:
            raise ArgumentError(f"--config {path} is not valid YAML: {err}") from err
        parser.set_defaults(**coerce_config_values(path, raw, ARGUMENT_CLASSES))
    outputs = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    # outputs: the three dataclasses, a namespace holding --config, the unparsed strings.
    model_args, data_args, train_args = outputs[:3]
    if outputs[-1]:
        raise ArgumentError(f"Unknown command-line arguments: {outputs[-1]}")
    train_args.bf16 = train_args.bf16.lower()
    check_argument_values(model_args, data_args, train_args)
    if train_args.push_to_hub and not train_args.hub_model_id:
        raise ArgumentError("push_to_hub needs hub_model_id (ORG/NAME): found none.")
    if train_args.push_to_hub and _hub_offline():
        # Not a transient failure: every push would retry for an hour while all other ranks
        # wait for the main process in a barrier.
        raise ArgumentError(
            "--push_to_hub true, but HF_HUB_OFFLINE is set (recipes/frontier/env.sh sets it for "
            "compute nodes): no push can succeed. Drop --push_to_hub and push the exports from a "
            "node with network access (geofm-push), or unset HF_HUB_OFFLINE."
        )
    if train_args.push_to_hub and train_args.hub_close_timeout_s >= train_args.ddp_timeout:
        raise ArgumentError(
            f"--hub_close_timeout_s {train_args.hub_close_timeout_s:g} must be below "
            f"--ddp_timeout {train_args.ddp_timeout}: the other ranks wait for the final push in "
            "a collective that times out first. Lower the first or raise the second."
        )
    return model_args, data_args, train_args


def _hub_offline() -> bool:
    """huggingface_hub's own reading of HF_HUB_OFFLINE (1/ON/YES/TRUE), at call time."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def as_flat_dict(*args) -> dict:
    out: dict = {}
    for a in args:
        out.update(asdict(a))
    return out
