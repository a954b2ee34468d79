"""The one place this package works around accelerate's CPU behaviour, for FSDP tests on CPU.

accelerate (1.15) only turns FSDP on for accelerator device types: launched on CPU its state is
MULTI_CPU and an FSDP config silently becomes DDP (``ACCELERATE_USE_CPU=1``) or independent
non-distributed processes (``use_cpu: true``). To test real sharding on CPU-only CI, we set the
shared state's type to MULTI_GPU *after* the gloo process group exists and *before*
``Accelerator()`` is built; accelerate's FSDP2 path then shards over gloo, saves and loads
sharded state, and gathers full weights. FSDP1 crashes on CPU full-state gathers, so this is
FSDP2 only. It is for tests: on GPUs and on Frontier, the accelerate config turns FSDP on.

The recipes know nothing of it. A test launches a script through this module, with an FSDP
accelerate config (``distributed_type: FSDP``, ``fsdp_version: 2``), as a launcher would::

    accelerate launch --config_file tests/configs/cpu_fsdp.yaml \
        -m geofm_hf.training.cpu_fsdp recipes/pretrain.py --config ...

The launched script's ``Accelerator()`` then reads the FSDP plugin (and any HSDP parallelism
config) from the environment ``accelerate launch`` set, exactly as on GPUs.
"""

from __future__ import annotations

import runpy
import sys


def enable() -> None:
    """Make accelerate's shared state take the FSDP path on this CPU-only machine."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    if torch.cuda.is_available():
        raise RuntimeError("geofm_hf.training.cpu_fsdp is for CPU-only test machines.")
    state = PartialState(cpu=True)
    if state.num_processes < 2:
        raise RuntimeError(
            f"FSDP on CPU needs at least 2 launched processes to shard; found "
            f"{state.num_processes}."
        )
    state.distributed_type = DistributedType.MULTI_GPU


def fsdp2_plugin_for_cpu(wrap_class: str = "GeoViTMAELayer", reshard_after_forward: bool = True):
    """:func:`enable`, and an FSDP2 plugin for scripts that build their Accelerator by hand."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    enable()
    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=[wrap_class],
        state_dict_type="SHARDED_STATE_DICT",
        reshard_after_forward=reshard_after_forward,
    )


def _launch(argv: list[str]) -> None:
    """``python -m geofm_hf.training.cpu_fsdp SCRIPT ARGS``: enable, then run SCRIPT as main."""
    if not argv:
        raise SystemExit("usage: python -m geofm_hf.training.cpu_fsdp SCRIPT [ARGS...]")
    enable()
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    _launch(sys.argv[1:])
