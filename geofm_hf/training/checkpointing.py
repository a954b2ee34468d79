"""Atomic, rotating training checkpoints with exact resume.

Layout of ``OUTPUT_DIR``::

    checkpoint-000500/          complete checkpoints (accelerate state + our JSON)
        COMPLETE                written last: a folder without it is never resumed from
        trainer_state.json      step, world size, seed, metrics position
        data_state_rank{r}.json each rank's position in the data stream
        model*/optimizer*/...   accelerate.save_state (model weights as safetensors or DCP shards)
    .tmp-checkpoint-000500/     a write in progress; renamed to checkpoint-000500 when complete

A kill at any moment leaves either the previous complete checkpoint or the new one, never a
half-written folder under a complete name. Rotation only removes complete checkpoints older than
the newest ``save_total_limit``; it never touches the final export.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^checkpoint-(\d+)$")
COMPLETE = "COMPLETE"
TRAINER_STATE = "trainer_state.json"


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:06d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _NAME.match(child.name)
        if match and (child / COMPLETE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def resolve_resume(output_dir: str | os.PathLike, resume: str | None) -> Path | None:
    """``None``/``""`` -> fresh start; ``"auto"`` -> newest complete checkpoint (or fresh);
    a path -> that checkpoint, which must be complete."""
    if not resume:
        return None
    if resume == "auto":
        found = list_checkpoints(output_dir)
        return found[-1][1] if found else None
    path = Path(resume)
    if not (path / COMPLETE).is_file():
        raise ValueError(
            f"resume_from_checkpoint={resume!r} is not a complete checkpoint: expected a folder "
            f"holding a {COMPLETE} marker, found {'no such folder' if not path.exists() else 'none'}."
        )
    return path


def write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointManager:
    """Saves ``accelerator.save_state`` checkpoints atomically and keeps the newest ``limit``."""

    def __init__(self, accelerator, output_dir: str | os.PathLike, limit: int | None) -> None:
        self.accelerator = accelerator
        self.output_dir = Path(output_dir)
        self.limit = limit

    def clean_partial(self) -> list[str]:
        """Removes ``.tmp-checkpoint-*`` left by a killed run (main process). Returns names."""
        removed = []
        if self.accelerator.is_main_process and self.output_dir.is_dir():
            for child in self.output_dir.iterdir():
                if child.name.startswith(".tmp-checkpoint-"):
                    shutil.rmtree(child, ignore_errors=True)
                    removed.append(child.name)
        self.accelerator.wait_for_everyone()
        return removed

    def save(self, step: int, trainer_state: dict, data_state: dict) -> Path:
        """Collective: every rank calls it. Returns the complete checkpoint's path."""
        acc = self.accelerator
        final = self.output_dir / checkpoint_name(step)
        tmp = self.output_dir / f".tmp-{checkpoint_name(step)}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        write_json_atomic(tmp / f"data_state_rank{acc.process_index}.json", data_state)
        acc.wait_for_everyone()  # every rank's shards are on disk past this point
        if acc.is_main_process:
            write_json_atomic(tmp / TRAINER_STATE, trainer_state)
            (tmp / COMPLETE).write_text(f"{step}\n")
            if final.exists():  # a re-save of the same step (e.g. signal right after a save)
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.output_dir)
            self._rotate()
        acc.wait_for_everyone()
        return final

    def _rotate(self) -> None:
        if not self.limit:
            return
        complete = list_checkpoints(self.output_dir)
        for _, path in complete[: max(0, len(complete) - self.limit)]:
            shutil.rmtree(path, ignore_errors=True)

    def load(self, path: Path) -> tuple[dict, dict]:
        """Collective: restores accelerate state; returns (trainer_state, this rank's data state)."""
        acc = self.accelerator
        trainer_state = json.loads((path / TRAINER_STATE).read_text())
        if trainer_state["world_size"] != acc.num_processes:
            raise ValueError(
                f"Checkpoint {path} was written by {trainer_state['world_size']} processes, this "
                f"run has {acc.num_processes}: the data stream's position is per rank, so exact "
                "resume needs the same world size."
            )
        acc.load_state(str(path))
        data_state = json.loads((path / f"data_state_rank{acc.process_index}.json").read_text())
        return trainer_state, data_state
