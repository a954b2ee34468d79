"""The model and optimiser of a pretraining run: built on the meta device, then sharded or
wrapped by the launch config and materialised per shard (from the continued export, for the
resumed checkpoint, or initialised), with AdamW at the run's peak learning rate."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from accelerate.utils import (
    set_seed,
)

from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining
from geofm_hf.hub import resolve_model_source
from geofm_hf.training.compile import compile_blocks
from geofm_hf.training.distributed import SafetensorsWeights, is_fsdp2, prepare_model
from geofm_hf.training.optim import (
    parameter_groups,
)

if TYPE_CHECKING:
    from geofm_hf.training.run import Run


def build_model(run: Run, config: GeoViTMAEConfig):
    """The model to train, built on the ``meta`` device (no memory until each rank materialises
    its own shards in :func:`build_optimizer`), and the export's weights it continues from.

    Returns ``(model, weights)``: ``weights`` is the continued export's
    :class:`~geofm_hf.training.distributed.SafetensorsWeights`, checked against the model's
    tensors; None from scratch and when resuming a checkpoint (its ``load_state`` fills the
    model: reading the export or initialising first would be work thrown away).
    """
    model_args = run.model_args
    set_seed(run.args.seed)
    with torch.device("meta"):
        model = GeoViTMAEForPreTraining(config)
    weights = None
    if model_args.model_name_or_path and run.resume_path is None:
        weights = _export_weights(run, config, model)
    if model_args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    if model_args.torch_compile:
        compile_blocks(model)  # per block, before FSDP2 wraps them (torchtitan's order)
    return model, weights


def _export_weights(run: Run, config: GeoViTMAEConfig, model) -> SafetensorsWeights:
    """The continued export's safetensors files (a Hub repo id is downloaded once per node, its
    local main process first), after checking they hold this model's tensors and nothing else."""
    name = run.model_args.model_name_or_path
    architectures = getattr(config, "architectures", None) or []
    if architectures and "GeoViTMAEForPreTraining" not in architectures:
        raise ValueError(
            f"{name} holds a {architectures[0]}; continuing pretraining needs a "
            "GeoViTMAEForPreTraining checkpoint."
        )
    with run.accelerator.local_main_process_first():
        folder = resolve_model_source(name, run.model_args.model_revision)
    weights = SafetensorsWeights.from_folder(folder, source=name)
    weights.check_matches(model)
    return weights


def build_optimizer(run: Run, model, weights: SafetensorsWeights | None = None):
    """Shard (FSDP2/HSDP) or wrap (DDP) the model, materialising it shard by shard: each rank
    reads its slices of the continued export's ``weights``, leaves them for the resumed
    checkpoint, or initialises a from-scratch model. Then AdamW (MAE's groups) at the run's
    peak lr (decided by :func:`start_run`), built from the prepared parameters."""
    args = run.args
    model = prepare_model(
        run.accelerator,
        model,
        args.seed,
        args.gradient_reduce_dtype,
        weights=weights,
        loaded_later=run.resume_path is not None,
    )
    if weights is not None:
        how = (
            "each rank read only its own shards"
            if is_fsdp2(run.accelerator)
            else "rank 0 read them, DDP broadcast them"
        )
        run.log(f"weights from {weights.source} ({how})")
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
