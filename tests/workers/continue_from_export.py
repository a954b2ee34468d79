"""Runs the pretraining recipe (``geofm_hf.training.pretrainer.pretrain``) with spies installed
from outside, and reports what each rank read and held once the model was ready.

    continue_from_export.py REFERENCE [recipe arguments...]

Spies (the recipe holds no test hook; these wrap library functions it calls):

- every tensor that ``safetensors.safe_open`` hands out (``get_tensor``, ``get_slice(...)[...]``)
  is counted in bytes, per rank; header reads (names, shapes) are not;
- calls of ``init_weights`` (the seeded initialisation) and of transformers' ``from_pretrained``;
- after ``resume`` (the model is then as training starts from it), every parameter is gathered
  in full and compared with the tensor of the same name in REFERENCE (a safetensors file).

Prints ``CONTINUE rank=R world=W read=B total=T init_calls=N from_pretrained_calls=N
equal=E of=P max_abs_diff=D``, where T is the total size of REFERENCE's tensors.
"""

import sys
from pathlib import Path

import safetensors
import safetensors.torch
import torch
import transformers

sys.path.insert(0, str(Path(__file__).parent))  # run as a path by the cpu_fsdp launcher
from record import emit

from geofm_hf.training import distributed, pretrainer

calls = {"read": 0, "init_weights": 0, "from_pretrained": 0}
_safe_open = safetensors.safe_open


def _counted(tensor):
    calls["read"] += tensor.numel() * tensor.element_size()
    return tensor


class _Slice:
    def __init__(self, inner):
        self._inner = inner

    def __getitem__(self, index):
        return _counted(self._inner[index])

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _Handle:
    def __init__(self, *args, **kwargs):
        self._inner = _safe_open(*args, **kwargs)

    def __enter__(self):
        self._inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)

    def get_tensor(self, name):
        return _counted(self._inner.get_tensor(name))

    def get_slice(self, name):
        return _Slice(self._inner.get_slice(name))

    def __getattr__(self, name):
        return getattr(self._inner, name)


# Every module that took its own reference (transformers' loaders do) reads through the spy too.
for _module in [safetensors, *list(sys.modules.values())]:
    if getattr(_module, "safe_open", None) is _safe_open and _module is not safetensors.torch:
        _module.safe_open = _Handle

_init_weights = distributed.init_weights


def _spied_init_weights(*args, **kwargs):
    calls["init_weights"] += 1
    return _init_weights(*args, **kwargs)


distributed.init_weights = _spied_init_weights

_from_pretrained = transformers.PreTrainedModel.from_pretrained.__func__


def _spied_from_pretrained(cls, *args, **kwargs):
    calls["from_pretrained"] += 1
    return _from_pretrained(cls, *args, **kwargs)


transformers.PreTrainedModel.from_pretrained = classmethod(_spied_from_pretrained)

prepared = {}
_build_optimizer = pretrainer.build_optimizer


def _keep_model(run, model, *rest):
    prepared["run"] = run
    prepared["model"], optimizer = _build_optimizer(run, model, *rest)
    return prepared["model"], optimizer


pretrainer.build_optimizer = _keep_model

_resume = pretrainer.resume


def _compare_after(run, loader):
    step = _resume(run, loader)
    read = calls["read"]  # before this worker's own read of REFERENCE below
    reference = safetensors.torch.load_file(REFERENCE)  # not counted: its own safe_open
    equal, count, max_diff = 0, 0, 0.0
    model = prepared["model"]
    for name, param in model.named_parameters():
        full = param.full_tensor() if hasattr(param, "full_tensor") else param.detach()
        key = distributed.canonical_name(name).removeprefix("module.")
        expected = reference[key]
        count += 1
        equal += torch.equal(full.cpu(), expected)
        max_diff = max(max_diff, (full.cpu() - expected).abs().max().item())
    total = sum(t.numel() * t.element_size() for t in reference.values())
    emit(
        f"CONTINUE rank={run.rank} world={run.world} read={read} total={total} "
        f"init_calls={calls['init_weights']} from_pretrained_calls={calls['from_pretrained']} "
        f"equal={equal} of={count} max_abs_diff={max_diff:.3g}"
    )
    return step


pretrainer.resume = _compare_after

REFERENCE = sys.argv[1]
if __name__ == "__main__":
    sys.exit(pretrainer.pretrain(sys.argv[2:]))
