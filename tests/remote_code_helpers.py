"""Running an export's remote code the way a user without geofm_hf does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def run_isolated(script: str, tmp_path: Path, python: str | os.PathLike = sys.executable) -> dict:
    """Run ``script`` with ``python -I`` (no PYTHONPATH, no user site, no script folder on
    ``sys.path``), offline, with transformers' module cache in ``tmp_path``; returns the JSON
    object the script prints last."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run([str(python), "-I", "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
