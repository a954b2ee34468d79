"""Sharded model life cycle, as torchtitan does it: build on ``meta``, shard, materialise and
initialise each rank's shard, and stream the full weights out one tensor at a time.

No rank ever holds the whole fp32 model while training a model from scratch under FSDP2:

1. :func:`prepare_model` shards the ``meta`` model with accelerate's own FSDP2 wrapping (the launch
   config's wrap policy, activation checkpointing, HSDP mesh and mixed-precision policy), then
   allocates only this rank's shards (``to_empty``) and initialises them (:func:`init_weights`).
2. The optimiser is built afterwards from the sharded parameters themselves, and registered with
   ``accelerator.prepare_optimizer``: no parameter remapping.
3. :func:`save_pretrained_streaming` writes ``model.safetensors`` while gathering one tensor at a
   time; the writing rank holds at most one full tensor.

Initialisation is a function of ``(seed, module name)`` only: each module's parameters are drawn
at full size from their own seeded generator with the model's ``_init_weights``, and each rank
keeps its slice. The initial full weights are therefore identical at any world size, sharding
layout or wrapping order (tested at 1 and 2 processes).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from pathlib import Path

import torch
from torch import nn

from .._atomic import atomic_open

_WRAPPED = "_checkpoint_wrapped_module."
_SAFETENSORS_DTYPES = {
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def canonical_name(name: str) -> str:
    """A parameter/module name without activation-checkpoint wrappers (as saved on disk)."""
    return name.replace(_WRAPPED, "")


def is_fsdp2(accelerator) -> bool:
    return getattr(accelerator, "is_fsdp2", False)


REDUCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def mixed_precision_policy(accelerator, reduce_dtype: str = "float32"):
    """FSDP2's policy for a bf16 run: bf16 parameters in compute, gradients reduced in
    ``reduce_dtype`` (fp32 by default, as torchtitan: a bf16 reduce-scatter over hundreds of ranks
    sums in 8 mantissa bits). None for an fp32 run."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if reduce_dtype not in REDUCE_DTYPES:
        raise ValueError(
            f"gradient_reduce_dtype must be one of {sorted(REDUCE_DTYPES)}: found {reduce_dtype!r}."
        )
    if accelerator.mixed_precision != "bf16":
        return None
    return MixedPrecisionPolicy(
        param_dtype=torch.bfloat16, reduce_dtype=REDUCE_DTYPES[reduce_dtype]
    )


def _fsdp2_shard(accelerator, model: nn.Module, reduce_dtype: str) -> nn.Module:
    """accelerate's FSDP2 wrapping (policy, AC, mesh) with our mixed-precision policy and without
    its optimiser remapping; on a ``meta`` model nothing is allocated."""
    from accelerate.utils.fsdp_utils import fsdp2_apply_ac, fsdp2_prepare_model

    plugin = accelerator.state.fsdp_plugin
    # accelerate's bf16 default reduces gradients in bf16; ours is the explicit policy.
    plugin.mixed_precision_policy = mixed_precision_policy(accelerator, reduce_dtype)
    on_meta = any(p.is_meta for p in model.parameters())
    if on_meta:
        # Each rank initialises its own shards: nothing to broadcast from rank 0.
        plugin.cpu_ram_efficient_loading = False
    plugin.set_auto_wrap_policy(model)
    if plugin.activation_checkpointing:
        model = fsdp2_apply_ac(accelerator, model)
    model = fsdp2_prepare_model(accelerator, model)
    # accelerate's save_state / load_state / get_state_dict find the model here.
    accelerator._models.append(model)
    return model


def prepare_model(
    accelerator, model: nn.Module, seed: int, reduce_dtype: str = "float32"
) -> nn.Module:
    """Shard (FSDP2/HSDP) or wrap (DDP) ``model``; a ``meta`` model is materialised per shard and
    initialised from ``seed``. Returns the prepared model; build the optimiser from it next."""
    on_meta = any(p.is_meta for p in model.parameters())
    if is_fsdp2(accelerator):
        model = _fsdp2_shard(accelerator, model, reduce_dtype)
        if on_meta:
            model.to_empty(device=accelerator.device)
            init_weights(model, seed)
        return model
    if on_meta:
        model.to_empty(device=accelerator.device)
        init_weights(model, seed)
    return accelerator.prepare_model(model)


def prepare_optimizer(accelerator, optimizer):
    """Register an optimiser built from the prepared (sharded) parameters."""
    return accelerator.prepare_optimizer(optimizer)


def _module_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(canonical_name(name).encode())) % (2**63 - 1)


@torch.no_grad()
def init_weights(model: nn.Module, seed: int) -> None:
    """Initialise every parameter of ``model`` in place (sharded or not) with the model's own
    ``_init_weights``, as a function of ``(seed, module name)`` only."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    root = model
    while not hasattr(root, "_init_weights") and hasattr(root, "module"):
        root = root.module  # DDP and friends
    for name, module in model.named_modules():
        own = {k: p for k, p in module._parameters.items() if p is not None}
        if not own:
            continue
        # Full-size scratch tensors, NaN until the initialiser writes them: a parameter that no
        # initialiser covers fails loudly instead of training from uninitialised memory.
        scratch = {
            k: nn.Parameter(torch.full(p.shape, float("nan"), dtype=p.dtype, device="cpu"))
            for k, p in own.items()
        }
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_module_seed(seed, name))
            module._parameters.update(scratch)
            try:
                root._init_weights(module)
            finally:
                module._parameters.update(own)
        for key, param in own.items():
            full = scratch[key].data
            if torch.isnan(full).any():
                raise RuntimeError(
                    f"No initialiser covers {canonical_name(name)}.{key} "
                    f"({type(module).__name__}): add it to _init_weights."
                )
            if isinstance(param, DTensor):
                local = distribute_tensor(
                    full, param.device_mesh, param.placements, src_data_rank=None
                ).to_local()
                param.to_local().copy_(local)
            else:
                param.data.copy_(full)


def _state_entries(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(name as saved, tensor) for every entry of the state dict; DTensors stay sharded."""
    seen = {}
    for name, tensor in model.state_dict().items():
        seen.setdefault(canonical_name(name), tensor)
    return list(seen.items())


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """Collective for a DTensor: its full value on every rank of its mesh."""
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, DTensor):
        return tensor.full_tensor()
    return tensor


def save_safetensors_streaming(model: nn.Module, path: str | os.PathLike, write: bool) -> None:
    """Collective: writes ``path`` (on the rank with ``write``) as safetensors, gathering and
    writing one tensor at a time. The header is known up front (names, dtypes, shapes).

    Every rank takes part in each gather; only the writing rank writes, to a temporary file
    beside ``path`` that is fsynced and renamed into place after the last tensor (on an error
    it is removed and ``path`` stays as it was)."""
    entries = _state_entries(model)
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, tensor in entries:
        if tensor.dtype not in _SAFETENSORS_DTYPES:
            raise TypeError(f"{name}: dtype {tensor.dtype} has no safetensors code here.")
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    # The writing rank streams into a temporary file that replaces ``path`` once the last byte
    # is on disk: a crash mid-export leaves the earlier file (or none), never a truncated one.
    sink = atomic_open(path, fsync=True) if write else contextlib.nullcontext()
    with sink as handle:
        if handle is not None:
            handle.write(struct.pack("<Q", len(raw)))
            handle.write(raw)
        for _, tensor in entries:
            full = _full(tensor)  # every rank takes part in the gather
            if handle is not None:
                data = full.detach().to("cpu").contiguous()
                handle.write(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
            del full


def save_pretrained_streaming(model: nn.Module, save_directory: str | os.PathLike, write: bool):
    """Collective: what ``save_pretrained`` writes (config, remote code, safetensors weights),
    with the weights streamed by :func:`save_safetensors_streaming`. Files are 0644 (umask)."""
    unwrapped = model
    while hasattr(unwrapped, "module") and not hasattr(unwrapped, "config"):
        unwrapped = unwrapped.module
    save_directory = Path(save_directory)
    if write:
        save_directory.mkdir(parents=True, exist_ok=True)
        config = unwrapped.config
        from geofm_hf.modeling_geofm import write_remote_code

        config.architectures = [type(unwrapped).__name__.removeprefix("FSDP")]
        config.dtype = "float32"
        # The same remote code (every head, the pipeline) as save_pretrained writes.
        write_remote_code(config, save_directory)
        config.save_pretrained(save_directory)
    save_safetensors_streaming(unwrapped, save_directory / "model.safetensors", write)
