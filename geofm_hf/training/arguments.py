"""Arguments of the pretraining recipe: dataclasses read by transformers' HfArgumentParser from a
YAML file plus command-line overrides. Names follow ``TrainingArguments`` where one exists."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field

import yaml
from transformers import HfArgumentParser


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
        metadata={"help": "Training crop size; default: the preset's, capped to the chip size."},
    )
    mask_ratio: float | None = field(default=None, metadata={"help": "Override the config's."})
    norm_pix_loss: bool | None = field(default=None, metadata={"help": "Override the config's."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "sdpa or eager."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute block activations in backward."}
    )


@dataclass
class DataArguments:
    dataset_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset repo id or local folder of shards; default: bundled sample."
        },
    )
    dataset_revision: str | None = field(default=None, metadata={"help": "Dataset revision."})
    train_split: str = field(default="train")
    dataloader_num_workers: int | None = field(
        default=None,
        metadata={"help": "Data worker processes per rank; default: 4 on GPUs, 0 on CPU."},
    )
    synthetic_data: bool = field(
        default=False,
        metadata={"help": "Random tensors instead of data (throughput runs, as in the paper)."},
    )
    synthetic_channels: int = field(default=13)
    on_error: str = field(default="raise", metadata={"help": "raise or skip bad shards."})
    max_error_fraction: float = field(default=0.05)


@dataclass
class PretrainingArguments:
    output_dir: str = field(default="outputs/pretrain")
    max_steps: int = field(default=300)
    per_device_train_batch_size: int = field(default=32)
    gradient_accumulation_steps: int = field(default=1)
    learning_rate: float | None = field(
        default=None,
        metadata={"help": "Absolute peak lr; default: base_learning_rate * global_batch / 256."},
    )
    base_learning_rate: float = field(default=1.5e-4)
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
    seed: int = field(default=0)
    logging_steps: int = field(default=10)
    save_steps: int = field(default=100)
    save_total_limit: int | None = field(default=3)
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "auto (newest complete checkpoint) or a checkpoint path."}
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
        with open(argv[i + 1]) as handle:
            values = yaml.safe_load(handle) or {}
        known = {f for cls in ARGUMENT_CLASSES for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{argv[i + 1]}: unknown arguments {unknown}.")
        parser.set_defaults(**values)
    outputs = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    # outputs: the three dataclasses, a namespace holding --config, the unparsed strings.
    model_args, data_args, train_args = outputs[:3]
    if outputs[-1]:
        raise ValueError(f"Unknown command-line arguments: {outputs[-1]}")
    if train_args.nan_policy not in ("stop", "skip"):
        raise ValueError(f"nan_policy must be 'stop' or 'skip': found {train_args.nan_policy!r}.")
    if train_args.bf16 not in ("auto", "true", "false"):
        raise ValueError(f"bf16 must be auto, true or false: found {train_args.bf16!r}.")
    if train_args.push_to_hub and not train_args.hub_model_id:
        raise ValueError("push_to_hub needs hub_model_id (ORG/NAME): found none.")
    return model_args, data_args, train_args


def as_flat_dict(*args) -> dict:
    out: dict = {}
    for a in args:
        out.update(asdict(a))
    return out
