"""Helpers to run recipes/pretrain.py under `accelerate launch` with 2 CPU processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_CONFIG = ROOT / "accelerate_configs" / "cpu.yaml"
_PORT = [29600 + (os.getpid() % 200) * 2]


def launch(script, *args, env=None, timeout=600, check=True) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file cpu.yaml SCRIPT ARGS` in its own process group."""
    _PORT[0] += 1  # a fresh port per launch: a killed run can leave the previous one in TIME_WAIT
    full_env = {**os.environ, **(env or {})}
    for name in ("GEOFM_CPU_FSDP", "GEOFM_FAULT_INJECT"):
        if name not in (env or {}):
            full_env.pop(name, None)
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(CPU_CONFIG),
        "--main_process_port", str(_PORT[0]),
        str(script), *map(str, args),
    ]  # fmt: skip
    result = subprocess.run(
        cmd,
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,  # fault injection kills this whole group, like a node failure
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"launch failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result


def pretrain(output_dir, *extra, env=None, check=True) -> subprocess.CompletedProcess:
    return launch(
        ROOT / "recipes" / "pretrain.py",
        "--config", ROOT / "recipes" / "configs" / "demo.yaml",
        "--output_dir", output_dir,
        "--report_to", "none",
        "--per_device_train_batch_size", "8",
        "--logging_steps", "1",
        *extra,
        env=env,
        check=check,
    )  # fmt: skip


def metrics(output_dir) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
