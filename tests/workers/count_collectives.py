"""Runs ``recipes/pretrain.py`` as ``__main__``, counting the ``torch.distributed`` collectives this
process issues between its first and its last optimizer step.

DDP's gradient all-reduce runs in its C++ reducer and is not seen here: what is counted is every
other collective (votes, logging, barriers). Prints ``COLLECTIVES rank=R steps=S between=N names``.
"""

import atexit
import os
import runpy
import sys

import torch
import torch.distributed as dist
from record import emit

NAMES = (
    "all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "reduce",
    "reduce_scatter", "reduce_scatter_tensor", "broadcast", "broadcast_object_list", "barrier",
    "gather", "gather_object", "scatter", "all_to_all", "all_to_all_single", "monitored_barrier",
)  # fmt: skip
events: list[str] = []


def _counted(name, fn):
    def wrapper(*args, **kwargs):
        events.append(name)
        return fn(*args, **kwargs)

    return wrapper


for _name in NAMES:
    if hasattr(dist, _name):
        setattr(dist, _name, _counted(_name, getattr(dist, _name)))

_adamw_step = torch.optim.AdamW.step


def _step(self, *args, **kwargs):
    events.append("STEP")
    return _adamw_step(self, *args, **kwargs)


torch.optim.AdamW.step = _step


@atexit.register
def _report() -> None:
    marks = [i for i, e in enumerate(events) if e == "STEP"]
    between = events[marks[0] + 1 : marks[-1]] if marks else []
    collectives = [e for e in between if e != "STEP"]
    emit(
        f"COLLECTIVES rank={os.environ.get('RANK', '0')} steps={len(marks)} "
        f"between={len(collectives)} {','.join(collectives)}"
    )


sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
