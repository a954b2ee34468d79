"""recipes/frontier/pretrain.sbatch itself, submitted to a real one-node Slurm cluster on CPUs.

``scripts/start_test_slurm.sh`` starts the cluster (CI runs it first); where Slurm is not there
the test skips and says so (and never submits to a cluster it did not start). The job's time
limit is shorter than the run: the batch script's watcher signals the run ahead of the limit by
the checkpoint time the run measured, the run saves and exits, the job requeues itself, resumes
from the checkpoint and finishes. Its losses must equal an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time

import pytest
from pretrain_utils import CPU_CONFIG, ROOT, metrics, pretrain

SBATCH = ROOT / "recipes" / "frontier" / "pretrain.sbatch"
# The first checkpoint (step 10) gives the watcher its measurement; the first job is stopped
# right after it, however fast this machine, and the requeued job trains the rest.
ARGS = ("--max_steps", "100", "--save_steps", "10", "--logging_steps", "1")
DONE = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}


def _slurm_unavailable() -> str | None:
    if shutil.which("sbatch") is None:
        return "Slurm is not installed (no sbatch): run `bash scripts/start_test_slurm.sh` as root"
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-p", "batch", "-o", "%t"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.split()  # fmt: skip
    except (subprocess.SubprocessError, OSError) as err:
        return f"Slurm is not running ({err}): run `bash scripts/start_test_slurm.sh` as root"
    if not {"idle", "mix", "alloc"} & set(states):
        return f"no usable node in Slurm partition batch (states {states}): see scripts/start_test_slurm.sh"
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    if not re.search(r"^ClusterName\s*=\s*geofm-test$", config, re.M):
        return "this Slurm is not the test cluster of scripts/start_test_slurm.sh: not submitting"
    return None


def _job(job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def slurm():
    reason = _slurm_unavailable()
    if reason:
        pytest.skip(reason)


def _run_job(
    tmp_path, recipe_args, env=(), sbatch_options=(), on_requeue=None, timeout=480
) -> tuple[dict, str]:
    """Submit the sbatch (2 CPU processes, a 2-minute limit) and wait for its last state, calling
    ``on_requeue(job_id)`` once the job has been requeued. Returns (scontrol's record of the
    job, its log)."""
    log = tmp_path / "job.log"
    full_env = {
        **os.environ,
        "GEOFM_ACCELERATE_CONFIG": str(CPU_CONFIG),
        "GEOFM_OUTPUT_DIR": str(tmp_path / "slurm_run"),
        "GEOFM_PROCS_PER_NODE": "2",
        "GEOFM_CPUS_PER_TASK": "2",
        "GEOFM_GPUS_PER_NODE": "0",
        "GEOFM_MAIN_ADDR": "127.0.0.1",
        "GEOFM_MAIN_PORT": str(_free_port()),
        "HF_HOME": str(tmp_path / "hf_home"),
        **dict(env),
    }
    sbatch = [
        "sbatch", "--parsable", "-N", "1", "-t", "2", "--exclusive", "--gpus-per-node=0",
        "--signal=B:USR1@1", "-J", "geofm-slurm-test", "-o", str(log), *sbatch_options,
        str(SBATCH),
        "--config", str(ROOT / "recipes" / "configs" / "demo.yaml"),
        "--report_to", "none", "--per_device_train_batch_size", "8", *recipe_args,
    ]  # fmt: skip
    job_id = subprocess.run(
        sbatch, cwd=ROOT, env=full_env, capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        deadline = time.monotonic() + timeout
        while (job := _job(job_id))["JobState"] not in DONE:
            assert time.monotonic() < deadline, (
                f"job {job_id} not done: {job}\n{log.read_text(errors='replace')}"
            )
            if on_requeue is not None and int(job["Restarts"]) > 0:
                on_requeue(job_id)
                on_requeue = None
            time.sleep(1)
    finally:
        subprocess.run(["scancel", job_id], check=False)
    # Two processes write to the log at once: a multi-byte character may be cut in two.
    return job, log.read_text(errors="replace")


def _give_time(job_id: str) -> None:
    # Raising a time limit takes Slurm's operator (root on the test cluster).
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=10"], check=True)


def test_time_limit_signal_checkpoint_requeue_resume_finish(slurm, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("raises the requeued job's time limit: run as root (the test cluster's admin)")
    out = tmp_path / "slurm_run"
    # The watcher, not Slurm's --signal backstop (1 s, at most 30 s early), stops the run. Its
    # lead (2 min) is the whole time limit, so it signals as soon as the run has timed its first
    # checkpoint; the requeued job gets 10 minutes and finishes.
    job, text = _run_job(
        tmp_path,
        ARGS,
        env={"GEOFM_MIN_SIGNAL_LEAD_S": "120", "GEOFM_WATCH_INTERVAL_S": "1"},
        on_requeue=_give_time,
    )

    assert job["JobState"] == "COMPLETED", text
    # First job: the watcher's signal, the checkpoint, the requeue.
    assert re.search(r"s left, measured lead \d+ s", text), text
    assert "USR1 (measured lead): asking the training processes to checkpoint" in text
    stopped_at = [int(s) for s in re.findall(r"checkpoint written at step (\d+), exiting", text)]
    assert stopped_at and 10 <= stopped_at[0] < 100, text
    assert f"stopped by signal at step {stopped_at[0]}, checkpoint written: requeueing" in text
    # Requeued job: resumes where the first stopped, finishes, does not requeue again.
    assert int(job["Restarts"]) == 1 and "restart count 1" in text, text
    assert re.search(rf"resumed from \S+checkpoint-0*{stopped_at[0]} at step {stopped_at[0]}", text)
    assert "not requeueing (run status finished" in text, text
    requeues = (out / "slurm_requeues.log").read_text().splitlines()
    assert len(requeues) == int(job["Restarts"]) and all("reason=signal" in r for r in requeues)
    status = json.loads((out / "run_status.json").read_text())
    assert status["status"] == "finished" and status["step"] == 100
    assert status["checkpoint_save_s"] > 0 and status["step_s"] > 0

    pretrain(tmp_path / "whole", *ARGS)
    assert [(r["step"], r["loss"]) for r in metrics(out)] == [
        (r["step"], r["loss"]) for r in metrics(tmp_path / "whole")
    ]


def test_a_failing_run_requeues_within_its_budget(slurm, tmp_path):
    # Fails at argument parsing in every job: requeued once (the budget), then left failed.
    job, text = _run_job(
        tmp_path, ["--max_steps", "-1"], env={"GEOFM_MAX_REQUEUES": "1"}, timeout=240
    )
    assert job["JobState"] == "FAILED", text
    assert int(job["Restarts"]) == 1, text
    assert "requeueing job" in text and "(failure 1 of 1)" in text, text
    assert "1 failure requeue(s) already (GEOFM_MAX_REQUEUES 1): not requeueing" in text, text


@pytest.mark.slow
def test_a_run_killed_at_the_time_limit_requeues_and_resumes(slurm, tmp_path):
    # No stop before the limit: Slurm's warning is a signal bash ignores (URG) and the watcher
    # sleeps past the job's end. Slurm's SIGTERM at the limit is the first the job hears of it.
    args = ("--max_steps", "200", "--save_steps", "10", "--logging_steps", "1")
    job, text = _run_job(
        tmp_path,
        args,
        env={"GEOFM_WATCH_INTERVAL_S": "600"},
        sbatch_options=("-t", "1", "--signal=B:URG@1"),
    )
    assert job["JobState"] == "COMPLETED", text
    assert int(job["Restarts"]) >= 1, text
    assert "DUE TO TIME LIMIT" in text, text
    assert "killed at the time limit; requeueing job" in text, text
    assert "not requeueing (run status finished" in text, text

    pretrain(tmp_path / "whole", *args)
    out = tmp_path / "slurm_run"
    assert [(r["step"], r["loss"]) for r in metrics(out)] == [
        (r["step"], r["loss"]) for r in metrics(tmp_path / "whole")
    ]
