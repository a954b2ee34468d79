"""The model and optimiser of a pretraining run: from an export or on the meta device, then
sharded or wrapped by the launch config, with AdamW at the run's peak learning rate."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from accelerate.utils import (
    set_seed,
)
from transformers import AutoModelForPreTraining

from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining
from geofm_hf.training.compile import compile_blocks
from geofm_hf.training.distributed import prepare_model
from geofm_hf.training.optim import (
    parameter_groups,
)

if TYPE_CHECKING:
    from geofm_hf.training.run import Run


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


def build_optimizer(run: Run, model):
    """Shard (FSDP2/HSDP) or wrap (DDP) the model, materialising a from-scratch model shard by
    shard; then AdamW (MAE's groups) at the run's peak lr (decided by :func:`start_run`), built
    from the prepared parameters."""
    args = run.args
    model = prepare_model(run.accelerator, model, args.seed, args.gradient_reduce_dtype)
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
