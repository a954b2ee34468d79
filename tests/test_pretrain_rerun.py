"""Rerunning a pretraining command over a folder that holds an earlier run (issue 24 item 6,
issue 25 item 12): without --resume_from_checkpoint it is refused, naming both choices, and
nothing is touched; a folder whose checkpoints are all unfinished says so as it starts over."""

from __future__ import annotations

from pretrain_utils import pretrain

from geofm_hf.training.checkpointing import list_checkpoints

FAST = ("--max_steps", "2", "--save_steps", "1", "--plot_reconstructions", "false",
        "--warmup_steps", "1")  # fmt: skip


def test_rerun_without_resume_over_checkpoints_is_refused_naming_both_choices(tmp_path):
    out = tmp_path / "run"
    pretrain(out, *FAST, "--resume_from_checkpoint", "")
    metrics = (out / "metrics.jsonl").read_bytes()
    before = list_checkpoints(out)
    again = pretrain(out, *FAST, "--resume_from_checkpoint", "", check=False)
    # Each rank exits 2 with one line (the launcher then reports the failed workers).
    assert again.returncode != 0
    before_error, _, error = again.stderr.partition("pretrain.py: error: ")
    line = error.splitlines()[0]
    assert "holds 2 checkpoint(s) of an earlier run (newest checkpoint-000002)" in line
    assert "--resume_from_checkpoint auto" in line and "another --output_dir" in line
    assert "Traceback" not in before_error[-2000:]
    assert (out / "metrics.jsonl").read_bytes() == metrics and list_checkpoints(out) == before
    # The first of the two choices: the same command with auto continues (here: is done).
    assert "already finished" in pretrain(out, *FAST, "--resume_from_checkpoint", "auto").stdout


def test_a_folder_of_unfinished_checkpoint_writes_is_named_when_starting_over(tmp_path):
    out = tmp_path / "run"
    (out / ".tmp-checkpoint-000003").mkdir(parents=True)
    (out / ".tmp-checkpoint-000003" / "model.safetensors").write_bytes(b"partial")
    result = pretrain(out, *FAST, "--resume_from_checkpoint", "auto")
    assert "holds no complete checkpoint, only 1 incomplete one(s) (.tmp-checkpoint-000003;" in (
        result.stdout
    )
    assert "starting from step 0" in result.stdout
    assert not (out / ".tmp-checkpoint-000003").exists()
