"""Runs ``recipes/pretrain.py`` as ``__main__`` and prints what this rank did, for
``benchmarks/scale_harness.py`` (every counter is attached from here: the package holds no hooks).

- files opened: Python's ``open`` audit event (``open``, ``io.open``, ``os.open``, pathlib) plus
  the safetensors files the Rust reader/writer opens, under ``SCALE_OUTPUT_DIR`` (checkpoints,
  logs), ``SCALE_DATA_DIR`` (local shards) and ``HF_HOME`` (the Hub client's cache);
- Hub requests: this rank's user agent ends in ``origin/geofm-rankR`` (``HF_HUB_USER_AGENT_ORIGIN``),
  so the harness's local Hub attributes each request to a rank;
- bytes read: the stream's own ``bytes_read`` (shard bytes), and ``rchar`` of ``/proc/self/io``;
- per phase (``startup``: the dataset resolved on the main process; ``save``; ``resume``): wall
  seconds and the seconds spent inside ``torch.distributed`` calls. A phase's *work* is wall minus
  collective seconds, so rank 0's work minus the other ranks' is the rank-0-only part;
- collectives between the first and the last optimizer step, outside those phases.

Prints ``SCALE rank=R world=W key=value ...``.
"""

import os

# Before huggingface_hub is imported: it reads the origin into its constants once.
os.environ["HF_HUB_USER_AGENT_ORIGIN"] = f"geofm-rank{os.environ.get('RANK', '0')}"

import atexit
import runpy
import sys
import time
from collections import Counter, defaultdict

import safetensors
import safetensors.torch
import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run as a path by cpu_fsdp
from record import emit

ROOTS = {
    name: os.path.realpath(os.environ[var]) + os.sep
    for name, var in (("output", "SCALE_OUTPUT_DIR"), ("data", "SCALE_DATA_DIR"), ("hf", "HF_HOME"))
    if os.environ.get(var)
}
opens: Counter = Counter()
phase: list[str] = []  # the phase stack (a resume verifies inside resolve_resume)
wall: dict = defaultdict(float)
in_collectives: dict = defaultdict(float)
events: list[str] = []
loaders: list = []


def _count_open(path) -> None:
    if isinstance(path, int):
        return
    full = os.path.abspath(os.fsdecode(path))
    for name, root in ROOTS.items():
        if full.startswith(root):
            opens[name] += 1


def _audit(event, args):
    if event == "open":
        _count_open(args[0])


sys.addaudithook(_audit)


def _saving(fn):
    def wrapper(tensors, filename, *args, **kwargs):
        _count_open(filename)
        return fn(tensors, filename, *args, **kwargs)

    return wrapper


def _opening(fn):
    def wrapper(filename, *args, **kwargs):
        _count_open(filename)
        return fn(filename, *args, **kwargs)

    return wrapper


# Patched before accelerate and geofm_hf import them by name.
safetensors.torch.save_file = _saving(safetensors.torch.save_file)
safetensors.torch.safe_open = _opening(safetensors.safe_open)
safetensors.safe_open = safetensors.torch.safe_open

NAMES = (
    "all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "reduce",
    "reduce_scatter", "reduce_scatter_tensor", "broadcast", "broadcast_object_list", "barrier",
    "gather", "gather_object", "scatter", "scatter_object_list", "all_to_all",
    "all_to_all_single", "monitored_barrier",
)  # fmt: skip


def _timed_collective(name, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            if phase:
                in_collectives[phase[0]] += time.perf_counter() - start
            else:
                events.append(name)

    return wrapper


for _name in NAMES:
    if hasattr(dist, _name):
        setattr(dist, _name, _timed_collective(_name, getattr(dist, _name)))

_adamw_step = torch.optim.AdamW.step


def _step(self, *args, **kwargs):
    events.append("STEP")
    return _adamw_step(self, *args, **kwargs)


torch.optim.AdamW.step = _step


def _phase(name, fn):
    def wrapper(*args, **kwargs):
        outer = not phase
        phase.append(name)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phase.pop()
            if outer:
                wall[name] += time.perf_counter() - start

    return wrapper


from geofm_hf.data import loader as _loader  # noqa: E402
from geofm_hf.training import checkpointing, data_contract, run  # noqa: E402

checkpointing.CheckpointManager.save = _phase("save", checkpointing.CheckpointManager.save)
checkpointing.CheckpointManager.resolve_resume = _phase(
    "resume", checkpointing.CheckpointManager.resolve_resume
)
# The start-up work the main process does for every rank (dataset resolution, output checks).
data_contract.on_main_process = _phase("startup", data_contract.on_main_process)
run.on_main_process = _phase("startup", run.on_main_process)
_loader_init = _loader.PretrainLoader.__init__


def _keep_loader(self, *args, **kwargs):
    _loader_init(self, *args, **kwargs)
    loaders.append(self)


_loader.PretrainLoader.__init__ = _keep_loader


def _rchar() -> int:
    try:
        with open("/proc/self/io") as f:  # not under a counted root
            return int(dict(line.split(": ") for line in f.read().splitlines())["rchar"])
    except (OSError, KeyError, ValueError):
        return -1


@atexit.register
def _report() -> None:
    marks = [i for i, e in enumerate(events) if e == "STEP"]
    between = [e for e in events[marks[0] + 1 : marks[-1]] if e != "STEP"] if marks else []
    fields = {
        "rank": os.environ.get("RANK", "0"),
        "world": os.environ.get("WORLD_SIZE", "1"),
        "steps": len(marks),
        "collectives_between_steps": len(between),
        "opens_output": opens["output"],
        "opens_data": opens["data"],
        "opens_hf": opens["hf"],
        "stream_bytes_read": sum(int(lo.stats.get("bytes_read", 0)) for lo in loaders),
        "rchar": _rchar(),
    }
    for name in ("startup", "save", "resume"):
        fields[f"{name}_wall_s"] = f"{wall[name]:.4f}"
        fields[f"{name}_work_s"] = f"{wall[name] - in_collectives[name]:.4f}"
    emit("SCALE " + " ".join(f"{k}={v}" for k, v in fields.items()))


sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
