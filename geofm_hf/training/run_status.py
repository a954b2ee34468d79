"""``<output_dir>/run_status.json``: where a run stands, for the scheduler that relaunches it.

Through ``accelerate launch`` (torchrun) the workers' exit codes collapse to 0 or 1, so a batch
script cannot tell "stopped by a signal after a checkpoint" from "finished" by the exit code.
The run says it here instead, and ``recipes/frontier/pretrain.sbatch`` reads it to decide
whether to requeue, and how early before the time limit to ask for a checkpoint::

    {"status": "running" | "stopped_by_signal" | "finished",
     "step": 120,                  # the last step trained (the checkpoint's, after a save)
     "checkpoint_save_s": 41.5,    # wall seconds of the last checkpoint save, or null
     "step_s": 2.3,                # recent mean step time, or null
     "signal": 10,                 # the signal that stopped the run, or null
     "updated": "2025-01-01T12:00:00+00:00"}
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from geofm_hf._atomic import atomic_write_text

__all__ = ["RUN_STATUS", "read_run_status", "write_run_status"]

RUN_STATUS = "run_status.json"
_STATUSES = ("running", "stopped_by_signal", "finished")


def write_run_status(output_dir: str | Path, status: str, **fields) -> dict:
    """Write ``status`` and ``fields`` over the previous record (call on the main process only).

    Fields not given keep their previous values, so a resumed run starts with the checkpoint
    and step times its last job measured. Returns the record written.
    """
    if status not in _STATUSES:
        raise ValueError(f"run status must be one of {_STATUSES}, got {status!r}")
    record = {"step": 0, "checkpoint_save_s": None, "step_s": None, "signal": None}
    record.update(read_run_status(output_dir) or {})
    record.update(fields, status=status)
    record["updated"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(Path(output_dir) / RUN_STATUS, json.dumps(record, indent=1) + "\n")
    return record


def read_run_status(output_dir: str | Path) -> dict | None:
    """The run's last record, or None when it has written none (or it cannot be read)."""
    try:
        record = json.loads((Path(output_dir) / RUN_STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
