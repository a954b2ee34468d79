"""Kill and resume: a SIGKILLed 2-process run resumed with `auto` ends bit-identical to an
uninterrupted one; a kill during a checkpoint write leaves the previous checkpoint usable.

The kills are real SIGKILLs of the launch's process group, sent from outside when the run folder
shows the moment (a step logged, a checkpoint write begun): the recipe holds no fault hook."""

import pytest
import torch
from pretrain_utils import logged_step, metrics, pretrain, pretrain_killed_when
from safetensors.torch import load_file

from geofm_hf.training.checkpointing import list_checkpoints

ARGS = (
    "--max_steps",
    "12",
    "--save_steps",
    "4",
    "--warmup_steps",
    "3",
    "--plot_reconstructions",
    "false",
)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    pretrain(out, *ARGS)
    return out


def _assert_same_weights(a, b):
    wa = load_file(a / "final" / "model.safetensors")
    wb = load_file(b / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def _after_step_5(out):
    return logged_step(out) >= 5


def test_sigkill_between_checkpoints_then_auto_resume_is_bit_exact(uninterrupted, tmp_path):
    out = tmp_path / "killed"
    code, _ = pretrain_killed_when(out, _after_step_5, *ARGS)
    assert code != 0
    kept = [step for step, _ in list_checkpoints(out)]
    assert kept and kept[-1] in (4, 8), kept  # killed between checkpoints, not at the end
    assert not (out / "final").exists()
    resumed = pretrain(out, *ARGS)  # demo.yaml sets resume_from_checkpoint: auto
    assert "resumed from" in resumed.stdout and f"at step {kept[-1]}" in resumed.stdout
    _assert_same_weights(uninterrupted, out)
    # the metrics file has each step once, and the resumed losses equal the uninterrupted ones
    assert [r["step"] for r in metrics(out)] == list(range(1, 13))
    assert [r["loss"] for r in metrics(out)] == [r["loss"] for r in metrics(uninterrupted)]


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(uninterrupted, tmp_path):
    out = tmp_path / "killed_in_save"
    code, _ = pretrain_killed_when(out, lambda o: (o / ".tmp-checkpoint-000008").is_dir(), *ARGS)
    assert code != 0
    assert (out / ".tmp-checkpoint-000008").is_dir()  # the interrupted write
    assert [step for step, _ in list_checkpoints(out)] == [4]
    resumed = pretrain(out, *ARGS)
    assert "removed unfinished checkpoint writes" in resumed.stdout
    assert "at step 4" in resumed.stdout
    assert not (out / ".tmp-checkpoint-000008").exists()
    _assert_same_weights(uninterrupted, out)


def test_checkpoint_rotation_keeps_the_newest(tmp_path):
    out = tmp_path / "rotate"
    pretrain(
        out,
        "--max_steps",
        "6",
        "--save_steps",
        "1",
        "--save_total_limit",
        "2",
        "--plot_reconstructions",
        "false",
    )
    assert [step for step, _ in list_checkpoints(out)] == [5, 6]
