"""The one place this package works around accelerate's CPU behaviour, for FSDP tests on CPU.

accelerate (1.15) only turns FSDP on for accelerator device types: launched on CPU its state is
MULTI_CPU and an FSDP config silently becomes DDP (``ACCELERATE_USE_CPU=1``) or independent
non-distributed processes (``use_cpu: true``). To test real sharding on CPU-only CI, we set the
shared state's type to MULTI_GPU *after* the gloo process group exists and *before*
``Accelerator()`` is built; accelerate's FSDP2 path then shards over gloo, saves and loads
sharded state, and gathers full weights. FSDP1 crashes on CPU full-state gathers, so this is
FSDP2 only. It is for tests: on GPUs and on Frontier, the accelerate config turns FSDP on.

Enabled by ``GEOFM_CPU_FSDP=1`` in the environment of the launched processes.
"""

from __future__ import annotations

import os

ENV_FLAG = "GEOFM_CPU_FSDP"


def requested() -> bool:
    return os.environ.get(ENV_FLAG, "0") == "1"


def fsdp2_plugin_for_cpu(wrap_class: str = "GeoViTMAELayer", reshard_after_forward: bool = True):
    """Prepare accelerate's shared state for FSDP2 on CPU and return the plugin to pass on."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if torch.cuda.is_available():
        raise RuntimeError(f"{ENV_FLAG}=1 is for CPU-only test machines; this one has a GPU.")
    state = PartialState(cpu=True)
    if state.num_processes < 2:
        raise RuntimeError(
            f"{ENV_FLAG}=1 needs at least 2 launched processes to shard; found "
            f"{state.num_processes}. Launch with accelerate_configs/cpu.yaml."
        )
    state.distributed_type = DistributedType.MULTI_GPU
    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=[wrap_class],
        state_dict_type="SHARDED_STATE_DICT",
        reshard_after_forward=reshard_after_forward,
    )
