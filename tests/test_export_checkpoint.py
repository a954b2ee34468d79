"""geofm-export (issue 23 item 10): a training checkpoint, FSDP2-sharded or replicated, becomes
the same loadable export the run's final/ holds, on one process away from the job."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from pretrain_utils import CPU_CONFIG, CPU_FSDP_CONFIG, pretrain
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel

import geofm_hf  # noqa: F401 - registers the Auto classes

FAST = ("--max_steps", "2", "--save_steps", "2", "--plot_reconstructions", "false",
        "--warmup_steps", "1", "--resume_from_checkpoint", "auto")  # fmt: skip


def _export(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geofm_hf.training.export_checkpoint", *map(str, args)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize("config", [CPU_FSDP_CONFIG, CPU_CONFIG], ids=["fsdp2", "ddp"])
def test_a_checkpoint_exports_the_weights_of_the_runs_final_export(config, tmp_path):
    out = tmp_path / "run"
    pretrain(out, *FAST, config=config)
    result = _export(out / "checkpoint-000002", "-o", tmp_path / "export")
    assert result.returncode == 0, result.stderr[-3000:]
    exported = load_file(tmp_path / "export" / "model.safetensors")
    final = load_file(out / "final" / "model.safetensors")
    assert exported.keys() == final.keys()
    for name, tensor in final.items():
        assert torch.equal(exported[name], tensor), name
    model = AutoModel.from_pretrained(tmp_path / "export")  # config, code and weights load
    processor = AutoImageProcessor.from_pretrained(tmp_path / "export")
    assert processor.band_names == model.config.band_names
    assert "geofm-export" in (tmp_path / "export" / "README.md").read_text()


@pytest.mark.parametrize(
    "case, expected",
    [
        ("not_a_checkpoint", "is not a complete training checkpoint"),
        ("damaged", "is damaged"),
        ("no_weights", "holds neither model.safetensors nor pytorch_model_fsdp_0"),
    ],
)
def test_bad_checkpoints_are_one_line_and_exit_2(case, expected, tmp_path):
    folder = tmp_path / "checkpoint-000001"
    folder.mkdir()
    if case != "not_a_checkpoint":
        (folder / "config.json").write_text("{}")
        (folder / "COMPLETE").write_text(
            '{"step": 1, "files": {"config.json": {"bytes": 99, "sha256": "0"}}}'
        )
    if case == "damaged":
        (folder / "model.safetensors").write_bytes(b"x")
    result = _export(folder, "-o", tmp_path / "export")
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "export").exists()
