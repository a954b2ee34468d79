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

Continuing from an export, or resuming a checkpoint, builds on ``meta`` too: after sharding, each
rank reads only its own slices of ``model.safetensors`` (:func:`load_safetensors_shards`; the
bytes it reads and holds are ~1/world of the model), or leaves its shards uninitialised for the
checkpoint's ``load_state`` to fill. A replicated (DDP) run loads the export on rank 0 only and
DDP's construction broadcasts rank 0's parameters to the others.

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
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .._atomic import atomic_open, check_free_space

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
    accelerator,
    model: nn.Module,
    seed: int,
    reduce_dtype: str = "float32",
    *,
    weights: SafetensorsWeights | None = None,
    loaded_later: bool = False,
) -> nn.Module:
    """Shard (FSDP2/HSDP) or wrap (DDP) ``model``. A ``meta`` model is materialised per shard and
    filled from ``weights`` (an export: each rank reads its own slices), or left for a checkpoint
    to fill (``loaded_later``: ``accelerator.load_state`` follows), or else initialised from
    ``seed``. Returns the prepared model; build the optimiser from it next. Collective."""
    on_meta = any(p.is_meta for p in model.parameters())
    if (weights is not None or loaded_later) and not on_meta:
        raise ValueError("weights= and loaded_later= need a model built on the meta device.")
    if is_fsdp2(accelerator):
        model = _fsdp2_shard(accelerator, model, reduce_dtype)
        if on_meta:
            model.to_empty(device=accelerator.device)
            _fill(accelerator, model, seed, weights, loaded_later)
        return model
    if on_meta:
        model.to_empty(device=accelerator.device)
        if weights is not None and not accelerator.is_main_process:
            # Replicated: rank 0 alone reads the export. DDP's construction (init_sync, which
            # accelerate leaves on) broadcasts rank 0's parameters over these empty tensors.
            _check_finite(accelerator, weights, {})
        else:
            _fill(accelerator, model, seed, weights, loaded_later)
    return accelerator.prepare_model(model)


def _fill(accelerator, model, seed, weights, loaded_later) -> None:
    if weights is not None:
        _check_finite(accelerator, weights, load_safetensors_shards(model, weights))
    elif not loaded_later:
        init_weights(model, seed)


def prepare_optimizer(accelerator, optimizer):
    """Register an optimiser built from the prepared (sharded) parameters."""
    return accelerator.prepare_optimizer(optimizer)


@dataclass(frozen=True)
class SafetensorsWeights:
    """An export's weights: which safetensors file holds each tensor, and each tensor's shape
    (read from the files' headers only). ``source`` names the export in messages."""

    source: str
    files: dict[str, Path]
    shapes: dict[str, tuple[int, ...]]

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, source: str | None = None):
        """``folder/model.safetensors``, or the files ``model.safetensors.index.json`` maps."""
        from safetensors import safe_open

        folder = Path(folder)
        source = source or str(folder)
        index = folder / "model.safetensors.index.json"
        if (folder / "model.safetensors").is_file():
            names = None
            files = [folder / "model.safetensors"]
        elif index.is_file():
            names = json.loads(index.read_text())["weight_map"]
            files = sorted({folder / f for f in names.values()})
        else:
            raise ValueError(
                f"{source} holds no model.safetensors (nor model.safetensors.index.json): "
                "continue from a save_pretrained export of GeoViTMAEForPreTraining."
            )
        where, shapes = {}, {}
        for file in files:
            with safe_open(file, framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
                    where[name] = file
                    shapes[name] = tuple(handle.get_slice(name).get_shape())
        if names is not None and set(names) != set(where):
            raise ValueError(
                f"{index} does not match its files: {len(set(names) ^ set(where))} tensors are "
                "in one but not the other. Save the export again."
            )
        return cls(source, where, shapes)

    def check_matches(self, model: nn.Module) -> None:
        """Raise naming every tensor the model has and the files lack, the files have and the
        model lacks, or that differs in shape (an export of another model or size)."""
        expected = {canonical_name(n): tuple(t.shape) for n, t in model.state_dict().items()}
        missing = sorted(set(expected) - set(self.shapes))
        unexpected = sorted(set(self.shapes) - set(expected))
        reshaped = [
            f"{n} {self.shapes[n]} in the file, {expected[n]} in the model"
            for n in sorted(set(expected) & set(self.shapes))
            if self.shapes[n] != expected[n]
        ]
        problems = [
            f"{label} {len(names)}: {_first(names)}"
            for label, names in (
                ("missing from the export", missing),
                ("not in the model", unexpected),
                ("with another shape", reshaped),
            )
            if names
        ]
        if problems:
            raise ValueError(
                f"The weights of {self.source} do not match a GeoViTMAEForPreTraining with its "
                f"config.json: {'; '.join(problems)}. Continue from a full pretraining export "
                "(save_pretrained of GeoViTMAEForPreTraining, config and weights together)."
            )


def _first(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


@torch.no_grad()
def load_safetensors_shards(model: nn.Module, weights: SafetensorsWeights) -> dict[str, bool]:
    """Copy the export's values into the materialised ``model``; each rank reads only its own
    slice of each sharded (DTensor) parameter, and a plain tensor in full. Returns, per tensor
    read, whether this rank's part of it is finite."""
    from safetensors import safe_open
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    targets = {}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        targets.setdefault(canonical_name(name), tensor)
    finite = {}
    for file in sorted(set(weights.files.values())):
        with safe_open(file, framework="pt") as handle:
            for name in [n for n, f in weights.files.items() if f == file and n in targets]:
                target = targets[name]
                if isinstance(target, DTensor):
                    local = target.to_local()
                    shape, offset = compute_local_shape_and_global_offset(
                        target.shape, target.device_mesh, target.placements
                    )
                    if local.numel() == 0:
                        continue  # an uneven split left this rank no rows
                    region = tuple(slice(o, o + n) for o, n in zip(offset, shape))
                    part = handle.get_slice(name)[region] if region else handle.get_tensor(name)
                else:
                    local = target.data
                    part = handle.get_tensor(name)
                if part.shape != local.shape:  # copy_ would broadcast a wrong slice silently
                    raise RuntimeError(
                        f"{name}: read {tuple(part.shape)} for a local shard of "
                        f"{tuple(local.shape)} (placements {getattr(target, 'placements', None)})."
                    )
                local.copy_(part)
                finite[name] = bool(torch.isfinite(part).all())
    return finite


def _check_finite(accelerator, weights: SafetensorsWeights, finite: dict[str, bool]) -> None:
    """Collective: raise on every rank if any rank read NaN/inf, naming how many tensors."""
    names = sorted(weights.shapes)
    bad = torch.tensor(
        [0.0 if finite.get(n, True) else 1.0 for n in names], device=accelerator.device
    )
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
    damaged = [n for n, flag in zip(names, bad.tolist()) if flag]
    if damaged:
        raise ValueError(
            f"The weights loaded from {weights.source} hold NaN/inf in {len(damaged)} tensors "
            f"(first: {damaged[0]}); continuing from them would train on nothing. Use an "
            "earlier export or checkpoint."
        )


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
    if write:  # refused before any rank gathers: the file's size is known to the byte
        check_free_space(path, 8 + len(raw) + offset)
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
