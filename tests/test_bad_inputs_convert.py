"""Converted checkpoints (issue 25, class 7), one table row per case, each run as
``geofm-convert`` in a subprocess: weights with NaN or infinity, and an export that would write a
processor that does not normalise (no statistics given), are refused with one line and exit 2;
``--no-normalization`` is the explicit choice of raw values. Before, both were written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from source_replicas import TimmViT

ROOT = Path(__file__).resolve().parents[1]
STATS = ["--image-mean", "0", "0", "0", "0", "--image-std", "1", "1", "1", "1"]


def _checkpoint(path, poison=None):
    torch.manual_seed(0)
    state = TimmViT(img_size=32, patch_size=8, in_chans=4, embed_dim=64, depth=2,
                    num_heads=4).state_dict()  # fmt: skip
    if poison is not None:
        key, value = poison
        state[key] = state[key].clone()
        state[key].view(-1)[3] = value
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def _convert(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "import sys; from geofm_hf.convert import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)  # fmt: skip


# Tensors are named as in the export (the converted layout).
# name -> (poisoned tensor or None, extra arguments, words the one line must hold)
REFUSED = {
    "nan_in_a_block": (("blocks.0.attn.qkv.weight", float("nan")), STATS,
                       ["encoder.layers.0.attention.qkv.weight", "NaN or infinite", "(1 of"]),
    "inf_in_patch_embed": (("patch_embed.proj.weight", float("inf")), STATS,
                           ["patch_embeddings.projection.weight", "NaN or infinite"]),
    "minus_inf_in_norm": (("norm.bias", float("-inf")), STATS, ["layernorm.bias"]),
    "no_statistics": (None, [], ["no per-band statistics", "--no-normalization"]),
    "nan_statistics": (None, ["--image-mean", "0", "nan", "0", "0", "--image-std", "1", "1",
                              "1", "1"], ["--image-mean", "finite"]),
    "inf_std": (None, ["--image-mean", "0", "0", "0", "0", "--image-std", "1", "inf", "1", "1"],
                ["--image-std", "finite"]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_bad_checkpoint_is_refused_in_one_line(name, tmp_path):
    poison, extra, words = REFUSED[name]
    ckpt = _checkpoint(tmp_path / "vit.safetensors", poison)
    result = _convert([str(ckpt), "-o", str(tmp_path / "out"), "--num-heads", "4", *extra],
                      tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra", [STATS, ["--no-normalization"]], ids=["stats", "raw"])
def test_explicit_choice_is_written(extra, tmp_path):
    ckpt = _checkpoint(tmp_path / "vit.safetensors")
    result = _convert([str(ckpt), "-o", str(tmp_path / "out"), "--num-heads", "4", *extra],
                      tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    processor = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert processor["do_normalize"] is (extra == STATS)
