"""``<output_dir>/run_status.json``: what a run is doing, for whatever restarts it.

The Slurm script reads it after each job: ``stopped_by_signal`` (a checkpoint was written
inside the signal's lead: requeue), ``finished`` (never requeue), ``running`` (the job died
mid-run: requeue within the retry budget). ``checkpoint_save_s`` and ``step_s`` are measured,
so the script can ask for its stop signal early enough to checkpoint before the time limit.
Through ``accelerate launch`` the workers' exit codes collapse to 0 or 1, so this file, not
the exit code, says how a run ended.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from geofm_hf._atomic import atomic_write_text

RUN_STATUS = "run_status.json"
STATUSES = ("running", "stopped_by_signal", "finished")


def write_run_status(output_dir: str | os.PathLike, status: str, **fields) -> None:
    """Replace the status atomically (call on the main process only); ``fields`` are merged
    over the previous file's, so a measured save time survives later updates."""
    if status not in STATUSES:
        raise ValueError(f"run status must be one of {STATUSES}: found {status!r}")
    path = Path(output_dir) / RUN_STATUS
    record = read_run_status(output_dir) or {}
    record.update(fields, status=status, updated=datetime.now(timezone.utc).isoformat())
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True))


def read_run_status(output_dir: str | os.PathLike) -> dict | None:
    """The recorded status, or None when there is none (or it cannot be read)."""
    try:
        return json.loads((Path(output_dir) / RUN_STATUS).read_text())
    except (OSError, ValueError):
        return None
