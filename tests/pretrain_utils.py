"""Helpers to run recipes/pretrain.py under `accelerate launch` with CPU processes.

Tests drive the recipe from outside, as a user or a scheduler would: launch configs pick DDP,
FSDP2 or HSDP (FSDP on CPU goes through the ``geofm_hf.training.cpu_fsdp`` launcher module), and
node failures are real SIGKILLs of the launch's process group, sent when the run folder shows the
moment to strike.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
CPU_CONFIG = ROOT / "accelerate_configs" / "cpu.yaml"
CPU_FSDP_CONFIG = ROOT / "tests" / "configs" / "cpu_fsdp.yaml"
CPU_HSDP_CONFIG = ROOT / "tests" / "configs" / "cpu_hsdp.yaml"
_PORT = [29600 + (os.getpid() % 200) * 2]


def _command(script, args, config=None, port=True, launch_args=()) -> list[str]:
    config = Path(config or CPU_CONFIG)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    cmd += [str(a) for a in launch_args]
    if port:
        _PORT[0] += 1  # a fresh port per launch: a killed run can leave one in TIME_WAIT
        cmd += ["--main_process_port", str(_PORT[0])]
    if config != CPU_CONFIG:
        # FSDP/HSDP on CPU: the test-only launcher module turns accelerate's FSDP path on.
        cmd += ["-m", "geofm_hf.training.cpu_fsdp"]
    return [*cmd, str(script), *map(str, args)]


def _env(env):
    full_env = {**os.environ, **(env or {})}
    full_env.pop("GEOFM_CPU_FSDP", None)
    return full_env


def launch(
    script, *args, env=None, timeout=600, check=True, config=None, launch_args=()
) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file CONFIG SCRIPT ARGS` in its own process group."""
    result = subprocess.run(
        _command(script, args, config, launch_args=launch_args),
        cwd=ROOT,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"launch failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result


def _pretrain_args(output_dir, extra):
    return [
        "--config", ROOT / "recipes" / "configs" / "demo.yaml",
        "--output_dir", output_dir,
        "--report_to", "none",
        "--per_device_train_batch_size", "8",
        "--logging_steps", "1",
        *extra,
    ]  # fmt: skip


def pretrain(
    output_dir, *extra, env=None, check=True, config=None, launch_args=()
) -> subprocess.CompletedProcess:
    return launch(
        ROOT / "recipes" / "pretrain.py",
        *_pretrain_args(output_dir, extra),
        env=env,
        check=check,
        config=config,
        launch_args=launch_args,
    )


def pretrain_killed_when(output_dir, ready, *extra, config=None, timeout=600, poll_s=0.001):
    """Start a pretraining run and SIGKILL its whole process group (a node failure) as soon as
    ``ready(output_dir)`` is true. Returns (the killed launch's exit code, its output)."""
    output_dir = Path(output_dir)
    proc = subprocess.Popen(
        _command(ROOT / "recipes" / "pretrain.py", _pretrain_args(output_dir, extra), config),
        cwd=ROOT,
        env=_env(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready(output_dir):
                break
            time.sleep(poll_s)
    finally:
        kill_tree(proc.pid)
        output = proc.communicate()[0]
    return proc.returncode, output


def kill_tree(pid: int) -> None:
    """SIGKILL a launcher and every process under it (torchrun starts its workers in their own
    sessions, so the launcher's process group does not hold them)."""
    try:
        root = psutil.Process(pid)
        victims = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.send_signal(signal.SIGKILL)


def records(text: str, tag: str) -> list[str]:
    """Lines starting with ``tag`` that ranks wrote with ``tests/workers/record.emit``.

    Found anywhere in a line, as a rank's record may follow another rank's unterminated output
    (a tqdm "\\r" bar), and ended at another record's tag too, in case one ran into another.
    """
    return re.findall(rf"{re.escape(tag)} (?:(?!{re.escape(tag)} )[^\r\n])*", text)


def metrics(output_dir) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def logged_step(output_dir) -> int:
    """The newest step in metrics.jsonl (0 when none yet); tolerant of a line being written."""
    try:
        lines = (Path(output_dir) / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in reversed(lines):
        try:
            return json.loads(line)["step"]
        except (ValueError, KeyError):
            continue
    return 0
