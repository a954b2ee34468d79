"""Per-block ``torch.compile`` (as torchtitan does), compatible with activation checkpointing
and FSDP2.

Each transformer block's ``forward`` is compiled in place, not the whole model and not the
block object:

* one graph per block *shape* (encoder, decoder), reused by every block of that shape -- dynamo
  inlines ``nn.Module`` parameters as graph inputs (``inline_inbuilt_nn_modules``), so 48 blocks
  cost one compilation, not 48;
* the module tree, its class and its ``state_dict`` keys are unchanged (``torch.compile(module)``
  would prefix every key with ``_orig_mod.``, breaking checkpoints and ``save_pretrained``);
* module hooks stay outside the compiled code: FSDP2's all-gather / reshard hooks, registered by
  ``fully_shard`` (accelerate's ``prepare``) before or after this call, run eagerly around it,
  and the graph breaks that FSDP1's flat parameters cause do not arise;
* activation checkpointing (``GeoViTMAEStack`` recomputes ``layer.__call__``) recomputes the
  compiled forward; autocast is traced into the graph.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["compile_blocks", "compiled_block_count"]

_MARK = "_geofm_compiled_forward"


def _blocks(model: nn.Module, block_class: str) -> list[nn.Module]:
    return [
        m for m in model.modules() if type(m).__name__ == block_class or _is_fsdp_of(m, block_class)
    ]


def _is_fsdp_of(module: nn.Module, block_class: str) -> bool:
    # fully_shard swaps the class for "FSDP<Name>"; the original is its second base.
    return any(base.__name__ == block_class for base in type(module).__mro__[1:])


def compile_blocks(
    model: nn.Module,
    *,
    block_class: str = "GeoViTMAELayer",
    backend: str = "inductor",
    mode: str | None = None,
    fullgraph: bool = True,
    dynamic: bool | None = False,
    options: dict[str, Any] | None = None,
) -> int:
    """Compile the ``forward`` of every ``block_class`` module of ``model`` in place.

    Returns the number of blocks compiled. Calling it again leaves already compiled blocks as
    they are. ``fullgraph=True`` makes a graph break inside a block an error instead of a silent
    slowdown. ``dynamic=False``: a new batch or token count recompiles once rather than running
    a slower shape-generic kernel for ever. Raises ``ValueError`` when the model has no such
    block (compiling nothing would silently run eager).
    """
    blocks = _blocks(model, block_class)
    if not blocks:
        found = sorted({type(m).__name__ for m in model.modules()})[:12]
        raise ValueError(
            f"compile_blocks: no {block_class} module in {type(model).__name__} (found "
            f"{', '.join(found)}...). Pass block_class= the model's transformer block."
        )
    count = 0
    for block in blocks:
        if getattr(block, _MARK, False):
            continue
        block.forward = torch.compile(
            block.forward,
            backend=backend,
            mode=mode,
            fullgraph=fullgraph,
            dynamic=dynamic,
            options=options,
        )
        setattr(block, _MARK, True)
        count += 1
    return count


def compiled_block_count(model: nn.Module, block_class: str = "GeoViTMAELayer") -> int:
    """How many ``block_class`` modules of ``model`` run a compiled forward."""
    return sum(bool(getattr(b, _MARK, False)) for b in _blocks(model, block_class))
