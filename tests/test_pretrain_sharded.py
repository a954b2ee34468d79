"""Item 2 of issue 16: a from-scratch model is built on ``meta``, sharded, and materialised per
shard; its initial full weights are the same at 1 and 2 processes; exports stream 0644 files."""

import stat
import subprocess
import sys

import torch
from pretrain_utils import CPU_FSDP_CONFIG, ROOT, launch, records
from safetensors.torch import load_file

WORKER = ROOT / "tests" / "workers" / "initial_weights.py"


def _lines(text):
    return records(text, "INITIAL_WEIGHTS")


def _fields(line):
    return dict(item.split("=") for item in line.split()[1:])


def test_initial_weights_are_the_same_at_one_and_two_fsdp2_processes(tmp_path):
    alone = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path / "one")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    sharded = launch(WORKER, tmp_path / "two", config=CPU_FSDP_CONFIG)

    (one,) = [_fields(line) for line in _lines(alone.stdout)]
    two = [_fields(line) for line in _lines(sharded.stdout)]
    assert one["world"] == "1" and one["built_on_meta"] == "True"
    assert len(two) == 2 and all(f["type"] == "FSDP" and f["built_on_meta"] == "True" for f in two)
    # each rank allocated about half of the model, never all of it
    full = int(two[0]["full"])
    assert all(int(f["local"]) < 0.55 * full for f in two), two
    assert sum(int(f["local"]) for f in two) == full

    a = load_file(tmp_path / "one" / "initial" / "model.safetensors")
    b = load_file(tmp_path / "two" / "initial" / "model.safetensors")
    assert a.keys() == b.keys() and len(a) > 50
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # a real init, not zeros or uninitialised memory
    qkv = a["vit.encoder.layers.0.attention.qkv.weight"]
    assert torch.isfinite(qkv).all() and 0.01 < qkv.std() < 0.2
    assert torch.equal(a["vit.encoder.layers.0.layernorm_before.weight"], torch.ones(192))

    # streamed weights are written like every other file of the export (0644 under umask 022)
    modes = {
        p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "two" / "initial").iterdir()
    }
    assert modes["model.safetensors"] == modes["config.json"] == 0o644, modes


def test_bf16_runs_reduce_gradients_in_fp32_unless_asked(tmp_path):
    """FSDP2 MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32) by default, as torchtitan
    (accelerate's own default reduces in bf16); bf16 reduction only on request."""
    policies = {}
    for reduce in ("float32", "bfloat16"):
        result = launch(
            WORKER, tmp_path / reduce, "--bf16", "true", "--gradient_reduce_dtype", reduce,
            config=CPU_FSDP_CONFIG,
        )  # fmt: skip
        policies[reduce] = {
            (f["param_dtype"], f["reduce_dtype"]) for f in map(_fields, _lines(result.stdout))
        }
    assert policies["float32"] == {("torch.bfloat16", "torch.float32")}
    assert policies["bfloat16"] == {("torch.bfloat16", "torch.bfloat16")}
