"""Damaged checkpoints, one table row per case: every file's hash is in the COMPLETE marker and
verified on resume; ``auto`` falls back to the previous verified checkpoint with a warning naming
the damaged one; an explicit damaged path is a clear error naming the file."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from geofm_hf.training.checkpointing import (
    COMPLETE,
    CheckpointManager,
    list_checkpoints,
    resolve_resume,
    verify_checkpoint,
)


@pytest.fixture
def run_dir(tmp_path):
    """A run folder with complete checkpoints at steps 1 and 2 of a small real model."""
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 4))
    optimizer = torch.optim.AdamW(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    manager = CheckpointManager(accelerator, tmp_path, limit=None)
    for step in (1, 2):
        model(torch.randn(2, 16)).sum().backward()
        optimizer.step()
        manager.save(step, {"step": step, "world_size": 1}, {"consumed": step})
    yield tmp_path, manager, model
    AcceleratorState._reset_state(reset_partial_state=True)


def _weights(checkpoint):
    (path,) = checkpoint.glob("model*.safetensors")
    return path


def _truncate(checkpoint):
    path = _weights(checkpoint)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path.name


def _flip_byte(checkpoint):
    path = _weights(checkpoint)
    data = bytearray(path.read_bytes())
    data[len(data) - 7] ^= 0x01  # inside the last tensor's values: loads without error
    path.write_bytes(bytes(data))
    return path.name


def _delete_optimizer(checkpoint):
    (path,) = checkpoint.glob("optimizer*")
    path.unlink()
    return path.name


def _truncate_trainer_state(checkpoint):
    path = checkpoint / "trainer_state.json"
    path.write_text(path.read_text()[:5])
    return path.name


def _damage_marker(checkpoint):
    (checkpoint / COMPLETE).write_text("{not json")
    return COMPLETE


DAMAGE = {
    "truncated_weights": (_truncate, "truncated"),
    "flipped_byte_in_weights": (_flip_byte, "SHA-256"),
    "missing_optimizer_file": (_delete_optimizer, "missing"),
    "truncated_trainer_state": (_truncate_trainer_state, "truncated"),
    "damaged_marker": (_damage_marker, "damaged marker"),
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_auto_falls_back_to_previous_verified_with_a_warning(name, run_dir, caplog):
    out, _, _ = run_dir
    (_, older), (_, newest) = list_checkpoints(out)
    damage, word = DAMAGE[name]
    file = damage(newest)
    with caplog.at_level(logging.WARNING, logger="geofm_hf.training.checkpointing"):
        assert resolve_resume(out, "auto") == older
    (message,) = [r.getMessage() for r in caplog.records]
    assert newest.name in message and file in message and word in message


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_explicit_damaged_checkpoint_is_a_clear_error(name, run_dir):
    out, _, _ = run_dir
    newest = list_checkpoints(out)[-1][1]
    damage, word = DAMAGE[name]
    file = damage(newest)
    with pytest.raises(ValueError, match="is damaged") as err:
        resolve_resume(out, str(newest))
    assert file in str(err.value) and word in str(err.value)


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(run_dir):
    out, _, _ = run_dir
    for _, path in list_checkpoints(out):
        _truncate(path)
    with pytest.raises(ValueError, match=r"every checkpoint .* is damaged"):
        resolve_resume(out, "auto")


def test_intact_checkpoints_verify_and_resume(run_dir):
    out, manager, _ = run_dir
    newest = list_checkpoints(out)[-1][1]
    marker = json.loads((newest / COMPLETE).read_text())
    assert marker["step"] == 2 and any(f.startswith("model") for f in marker["files"])
    assert verify_checkpoint(newest) is None
    assert manager.resolve_resume("auto") == newest
    trainer_state, data_state = manager.load(newest)
    assert trainer_state["step"] == 2 and data_state == {"consumed": 2}


def test_marker_of_an_older_version_still_resumes(run_dir):
    out, _, _ = run_dir
    newest = list_checkpoints(out)[-1][1]
    (newest / COMPLETE).write_text("2\n")  # what versions before the hashes wrote
    assert resolve_resume(out, "auto") == newest


def test_load_error_names_the_checkpoint(run_dir):
    out, manager, _ = run_dir
    newest = list_checkpoints(out)[-1][1]
    _truncate(newest)
    (newest / COMPLETE).write_text("2\n")  # unverifiable: the loader itself meets the damage
    with pytest.raises(RuntimeError, match=f"cannot load checkpoint {newest}"):
        manager.load(newest)


# ------------------------------------------------- a folder of incomplete checkpoints only


def _unmarked(out, name="checkpoint-000010"):
    (out / name).mkdir(parents=True)
    (out / name / "model.safetensors").write_bytes(b"partial")  # no COMPLETE marker


def _cut_short(out, name=".tmp-checkpoint-000020"):
    _unmarked(out, name)


def _marker_deleted_from_two(out):
    _unmarked(out, "checkpoint-000010")
    _unmarked(out, "checkpoint-000020")


def _cut_short_beside_unmarked(out):
    _unmarked(out)
    _cut_short(out)


def _six_unmarked(out):
    for step in range(1, 7):
        _unmarked(out, f"checkpoint-{step:06d}")


# (case, --resume_from_checkpoint, names the line must hold)
STARTING_OVER = [
    (_unmarked, "auto", ["only 1 incomplete", "checkpoint-000010"]),
    (
        _marker_deleted_from_two,
        "auto",
        ["only 2 incomplete", "checkpoint-000010, checkpoint-000020"],
    ),
    (_cut_short_beside_unmarked, "auto", [".tmp-checkpoint-000020", "checkpoint-000010"]),
    (_six_unmarked, "auto", ["only 6 incomplete", "checkpoint-000005 and 1 more"]),
    (_unmarked, "", ["only 1 incomplete", "checkpoint-000010"]),
]


@pytest.mark.parametrize("case, resume, words", STARTING_OVER,
                         ids=[f"{c[0].__name__[1:]}-{c[1] or 'none'}" for c in STARTING_OVER])  # fmt: skip
def test_starting_over_a_folder_of_incomplete_checkpoints_says_so(tmp_path, capsys, case, resume,
                                                                   words):  # fmt: skip
    from geofm_hf.training.arguments import parse_arguments
    from geofm_hf.training.run import start_run

    out = tmp_path / "run"
    case(out)
    argv = ["--output_dir", str(out), "--resume_from_checkpoint", resume, "--max_steps", "2"]
    try:
        run = start_run(*parse_arguments(argv))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert run.resume_path is None
    lines = [line for line in capsys.readouterr().out.splitlines() if "incomplete" in line]
    assert len(lines) == 1, lines
    assert str(out) in lines[0] and lines[0].endswith("starting from step 0"), lines[0]
    for word in words:
        assert word in lines[0], lines[0]


def test_resuming_a_complete_checkpoint_says_nothing_of_starting_over(run_dir, capsys):
    from geofm_hf.training.arguments import parse_arguments
    from geofm_hf.training.run import start_run

    out, _, _ = run_dir
    _unmarked(out, "checkpoint-000003")  # a newer write cut short beside complete ones
    AcceleratorState._reset_state(reset_partial_state=True)
    argv = ["--output_dir", str(out), "--resume_from_checkpoint", "auto", "--max_steps", "4"]
    run = start_run(*parse_arguments(argv))
    assert run.resume_path == out / "checkpoint-000002"
    assert "starting from step 0" not in capsys.readouterr().out
