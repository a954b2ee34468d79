"""Kill and resume: a SIGKILLed 2-process run resumed with `auto` ends bit-identical to an
uninterrupted one; a kill during a checkpoint write leaves the previous checkpoint usable.

The kills are real SIGKILLs of the launch's process group, sent from outside when the run folder
shows the moment (a step logged, a checkpoint write begun): the recipe holds no fault hook."""

import pytest
import torch
from pretrain_utils import (
    CPU_FSDP_CONFIG,
    CPU_HSDP_CONFIG,
    logged_step,
    metrics,
    pretrain,
    pretrain_killed_when,
)
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


def _kill_and_resume_is_bit_exact(tmp_path, *extra, config=None, kill_after=3, timeout=900):
    """Uninterrupted run vs a run SIGKILLed after ``kill_after`` logged steps and resumed."""
    args = (*extra, "--plot_reconstructions", "false")
    whole = tmp_path / "whole"
    pretrain(whole, *args, config=config)
    cut = tmp_path / "cut"
    code, output = pretrain_killed_when(
        cut, lambda o: logged_step(o) >= kill_after, *args, config=config, timeout=timeout
    )
    assert code != 0, output[-3000:]
    kept = [step for step, _ in list_checkpoints(cut)]
    assert kept and not (cut / "final").exists(), (kept, output[-3000:])
    resumed = pretrain(cut, *args, config=config)
    assert f"at step {kept[-1]}" in resumed.stdout
    _assert_same_weights(whole, cut)
    assert [r["loss"] for r in metrics(cut)] == [r["loss"] for r in metrics(whole)]
    return resumed


def test_fsdp2_kill_and_resume_is_bit_exact(tmp_path):
    resumed = _kill_and_resume_is_bit_exact(
        tmp_path, "--max_steps", "6", "--save_steps", "2", "--warmup_steps", "2",
        "--bf16", "false", config=CPU_FSDP_CONFIG,
    )  # fmt: skip
    assert "FSDP2: block weights sharded (384, 192) of (768, 192)" in resumed.stdout


def test_hsdp_2_replicas_x_2_shards_kill_and_resume_is_bit_exact(tmp_path):
    resumed = _kill_and_resume_is_bit_exact(
        tmp_path, "--max_steps", "4", "--save_steps", "2", "--warmup_steps", "1",
        "--per_device_train_batch_size", "4", "--bf16", "false",
        config=CPU_HSDP_CONFIG, kill_after=3,
    )  # fmt: skip
    log = resumed.stdout
    # 4 processes, each block weight split over the 2-way shard dimension (not 4-way)
    assert "world size 4" in log and "(384, 192) of (768, 192)" in log, log[-3000:]
    assert "HSDP mesh (dp_replicate=2, dp_shard=2)" in log


def test_resume_with_gradient_accumulation_and_data_workers_is_bit_exact(tmp_path):
    _kill_and_resume_is_bit_exact(
        tmp_path, "--max_steps", "6", "--save_steps", "2", "--warmup_steps", "2",
        "--gradient_accumulation_steps", "2", "--dataloader_num_workers", "2",
        "--per_device_train_batch_size", "4",
    )  # fmt: skip
