"""Atomic, rotating training checkpoints with exact resume.

Layout of ``OUTPUT_DIR``::

    checkpoint-000500/          complete checkpoints (accelerate state + our JSON)
        COMPLETE                written last: a folder without it is never resumed from; JSON
                                with the size and SHA-256 of every other file, verified on resume
        trainer_state.json      step, world size, seed, metrics position
        data_state_rank{r}.json each rank's position in the data stream
        model*/optimizer*/...   accelerate.save_state (model weights as safetensors or DCP shards)
    .tmp-checkpoint-000500/     a write in progress; renamed to checkpoint-000500 when complete

A kill at any moment leaves either the previous complete checkpoint or the new one, never a
half-written folder under a complete name. A checkpoint damaged later (truncated, a flipped
byte) fails verification on resume; ``auto`` then falls back to the previous verified one. Rotation only removes complete checkpoints older than
the newest ``save_total_limit``; it never touches the final export.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from .._atomic import atomic_write_text, fsync_path

logger = logging.getLogger(__name__)

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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file under ``folder`` (relative POSIX paths)."""
    return {
        path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != COMPLETE
    }


def verify_checkpoint(path: str | os.PathLike) -> str | None:
    """``None`` when every file listed in the ``COMPLETE`` marker has its recorded size and hash;
    otherwise what is wrong, naming the file. Markers of older versions (a bare step number)
    list no files and pass."""
    path = Path(path)
    marker = path / COMPLETE
    if not marker.is_file():
        return f"{path} has no {COMPLETE} marker (an unfinished write)"
    try:
        recorded = json.loads(marker.read_text())
    except ValueError:
        return f"{marker} is not valid JSON (damaged marker)"
    if not isinstance(recorded, dict):
        return None  # an older marker: nothing recorded to verify against
    for name, expected in sorted(recorded.get("files", {}).items()):
        file = path / name
        if not file.is_file():
            return f"{file} is missing"
        size = file.stat().st_size
        if size != expected["bytes"]:
            return f"{file} has {size} bytes, {expected['bytes']} were written (truncated?)"
        if _sha256(file) != expected["sha256"]:
            return f"{file} does not match the SHA-256 recorded when it was written (corrupted)"
    return None


def resolve_resume(output_dir: str | os.PathLike, resume: str | None) -> Path | None:
    """``None``/``""`` -> fresh start; ``"auto"`` -> newest complete checkpoint that verifies
    (a damaged newer one is named in a warning and skipped), or fresh when there is none;
    a path -> that checkpoint, which must be complete and verify.

    Reads every file of the candidates: call it on one process and share the answer
    (:meth:`CheckpointManager.resolve_resume`)."""
    if not resume:
        return None
    if resume == "auto":
        damaged = []
        for _, path in reversed(list_checkpoints(output_dir)):
            problem = verify_checkpoint(path)
            if problem is None:
                return path
            damaged.append(path.name)
            logger.warning(
                "not resuming from %s: %s; falling back to the previous checkpoint", path, problem
            )
        if damaged:
            raise ValueError(
                f"resume_from_checkpoint=auto: every checkpoint in {output_dir} is damaged "
                f"({', '.join(damaged)}; see the warnings above). Delete them to start afresh "
                "or restore one from a backup."
            )
        return None
    path = Path(resume)
    if not (path / COMPLETE).is_file():
        raise ValueError(
            f"resume_from_checkpoint={resume!r} is not a complete checkpoint: expected a folder "
            f"holding a {COMPLETE} marker, found {'no such folder' if not path.exists() else 'none'}."
        )
    problem = verify_checkpoint(path)
    if problem is not None:
        raise ValueError(
            f"resume_from_checkpoint={resume!r} is damaged: {problem}. Resume from an earlier "
            "checkpoint (or --resume_from_checkpoint auto, which skips damaged ones)."
        )
    return path


def write_json_atomic(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True), fsync=True)


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
            # Last, with every file's hash: resume verifies them (a truncated or bit-flipped
            # weight file must not load silently).
            write_json_atomic(tmp / COMPLETE, {"step": step, "files": file_manifest(tmp)})
            if final.exists():  # a re-save of the same step (e.g. signal right after a save)
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync_path(self.output_dir)
            self._rotate()
        acc.wait_for_everyone()
        return final

    def resolve_resume(self, resume: str | None) -> Path | None:
        """Collective :func:`resolve_resume`: the main process reads and verifies the
        checkpoint files once, every rank gets its answer (or its error)."""
        from accelerate.utils import broadcast_object_list

        answer: list[Any] = [None]
        if self.accelerator.is_main_process:
            try:
                found = resolve_resume(self.output_dir, resume)
                answer = [("ok", None if found is None else str(found))]
            except ValueError as err:
                answer = [("error", str(err))]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(answer)
        status, value = answer[0]
        if status == "error":
            raise ValueError(value)
        return None if value is None else Path(value)

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
        try:
            acc.load_state(str(path))
        except Exception as err:  # safetensors/torch errors name no path
            raise RuntimeError(
                f"cannot load checkpoint {path}: {type(err).__name__}: {err}. Resume from an "
                "earlier checkpoint or start afresh."
            ) from err
        data_state = json.loads((path / f"data_state_rank{acc.process_index}.json").read_text())
        return trainer_state, data_state
