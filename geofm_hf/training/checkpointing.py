"""Atomic, rotating training checkpoints with exact resume.

Layout of ``OUTPUT_DIR``::

    checkpoint-000500/          complete checkpoints (accelerate state + our JSON)
        COMPLETE                written last: a folder without it is never resumed from; JSON
                                with the size and SHA-256 of every other file, verified on resume
        trainer_state.json      step, world size, seed, metrics position
        data_state_rank{r}.json each rank's position in the data stream (at another world
                                size every rank reads rank 0's; the rest of its epoch is re-split)
        model*/optimizer*/...   accelerate.save_state (model weights as safetensors or DCP shards)
    .tmp-checkpoint-000500/     a write in progress; renamed to checkpoint-000500 when complete

A kill at any moment leaves either the previous complete checkpoint or the new one, never a
half-written folder under a complete name. A checkpoint damaged later (truncated, a flipped
byte) fails verification on resume; ``auto`` then falls back to the previous verified one. Rotation only removes complete checkpoints older than
the newest ``save_total_limit``; it never touches the final export.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

from .._atomic import atomic_write_text, free_bytes, fsync_path, is_disk_full
from .._errors import DiskFullError

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint-(\d+)$")
COMPLETE = "COMPLETE"
_DELETING = ".deleting-"
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


def incomplete_checkpoints(output_dir: str | os.PathLike) -> list[str]:
    """Names of the checkpoint folders in ``output_dir`` that can never be resumed from: writes
    cut short (``.tmp-checkpoint-*``) and ``checkpoint-*`` folders without a ``COMPLETE`` marker
    (copied in part, or written by hand), sorted."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    return sorted(
        child.name
        for child in root.iterdir()
        if child.is_dir()
        and (
            child.name.startswith(".tmp-checkpoint-")
            or (_NAME.match(child.name) and not (child / COMPLETE).is_file())
        )
    )


def starting_over_message(output_dir: str | os.PathLike, incomplete: list[str]) -> str:
    """The one line a run starting from step 0 prints when ``output_dir`` held only incomplete
    checkpoints: training over them silently would look like a resume that lost its progress."""
    shown = ", ".join(incomplete[:5])
    if len(incomplete) > 5:
        shown += f" and {len(incomplete) - 5} more"
    return (
        f"{output_dir} holds no complete checkpoint, only {len(incomplete)} incomplete one(s) "
        f"({shown}; no {COMPLETE} marker: a write cut short or a partial copy): "
        "starting from step 0"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_checkpoint(path: str | os.PathLike) -> str | None:
    """``None`` when every file listed in the ``COMPLETE`` marker has its recorded size and hash;
    otherwise what is wrong, naming the file. Markers of older versions (a bare step number)
    list no files and pass. One process reads everything: :class:`CheckpointManager` splits
    the same check across ranks."""
    path = Path(path)
    recorded = _read_marker(path)
    if isinstance(recorded, str):
        return recorded
    for name, expected in sorted(recorded.items()):
        problem = _check_file(path / name, expected)
        if problem is not None:
            return problem
    return None


def _read_marker(path: Path) -> dict[str, dict[str, Any]] | str:
    """The marker's ``{file: {bytes, sha256}}`` (empty for an older marker), or what is wrong."""
    marker = path / COMPLETE
    if not marker.is_file():
        return f"{path} has no {COMPLETE} marker (an unfinished write)"
    try:
        recorded = json.loads(marker.read_text())
    except ValueError:
        return f"{marker} is not valid JSON (damaged marker)"
    if not isinstance(recorded, dict):
        return {}  # an older marker: nothing recorded to verify against
    return recorded.get("files", {})


def _check_file(file: Path, expected: dict[str, Any]) -> str | None:
    if not file.is_file():
        return f"{file} is missing"
    size = file.stat().st_size
    if size != expected["bytes"]:
        return f"{file} has {size} bytes, {expected['bytes']} were written (truncated?)"
    if _sha256(file) != expected["sha256"]:
        return f"{file} does not match the SHA-256 recorded when it was written (corrupted)"
    return None


def share_by_size(sizes: dict[str, int], world: int) -> list[list[str]]:
    """Files split into ``world`` lists of near-equal bytes (largest first, each to the least
    loaded rank): no rank hashes much more than ``total / world`` plus its largest file."""
    loads = [(0, r) for r in range(world)]
    heapq.heapify(loads)
    shares: list[list[str]] = [[] for _ in range(world)]
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        load, rank = heapq.heappop(loads)
        shares[rank].append(name)
        heapq.heappush(loads, (load + sizes[name], rank))
    return shares


def resolve_resume(
    output_dir: str | os.PathLike,
    resume: str | None,
    verify=verify_checkpoint,
    candidates: list[Path] | None = None,
    warn: bool = True,
) -> Path | None:
    """``None``/``""`` -> fresh start; ``"auto"`` -> newest complete checkpoint that verifies
    (a damaged newer one is named in a warning and skipped), or fresh when there is none;
    a path -> that checkpoint, which must be complete and verify.

    ``verify`` reads the candidates' files (one process by default); ``candidates`` (newest
    last) replaces the folder's listing. :meth:`CheckpointManager.resolve_resume` passes a
    verification split across ranks and rank 0's listing, so every rank decides alike."""
    if not resume:
        return None
    if resume == "auto":
        found = (
            candidates if candidates is not None else [p for _, p in list_checkpoints(output_dir)]
        )
        damaged = []
        for path in reversed(found):
            problem = verify(path)
            if problem is None:
                return path
            damaged.append(path.name)
            if warn:
                logger.warning(
                    "not resuming from %s: %s; falling back to the previous checkpoint",
                    path,
                    problem,
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
    problem = verify(path)
    if problem is not None:
        raise ValueError(
            f"resume_from_checkpoint={resume!r} is damaged: {problem}. Resume from an earlier "
            "checkpoint (or --resume_from_checkpoint auto, which skips damaged ones)."
        )
    return path


def write_json_atomic(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True), fsync=True)


class CheckpointManager:
    """Saves ``accelerate.save_state`` checkpoints atomically and keeps the newest ``limit``.

    At thousands of ranks the per-rank cost stays flat: every rank hashes (on save) or verifies
    (on resume) about ``1 / world`` of the checkpoint's bytes, assigned by rank 0 from one
    listing and scattered, and only the manifests travel back; old checkpoints are renamed out
    of the way at once and deleted by a background thread of rank 0 while training goes on.
    """

    def __init__(self, accelerator, output_dir: str | os.PathLike, limit: int | None) -> None:
        self.accelerator = accelerator
        self.output_dir = Path(output_dir)
        self.limit = limit
        self._deletions: list[threading.Thread] = []

    @property
    def _world(self) -> int:
        return self.accelerator.num_processes

    def clean_partial(self) -> list[str]:
        """Removes ``.tmp-checkpoint-*`` left by a killed run and ``.deleting-*`` left by an
        interrupted rotation (main process). Returns names."""
        removed = []
        if self.accelerator.is_main_process and self.output_dir.is_dir():
            for child in self.output_dir.iterdir():
                if child.name.startswith((".tmp-checkpoint-", _DELETING)):
                    shutil.rmtree(child, ignore_errors=True)
                    removed.append(child.name)
        self.accelerator.wait_for_everyone()
        return removed

    def save(self, step: int, trainer_state: dict, data_state: dict, extra=None) -> Path:
        """Collective: every rank calls it. Returns the complete checkpoint's path. ``extra``
        (a function of the folder being written) adds files on the main process, hashed and
        swapped in with the rest."""
        acc = self.accelerator
        final = self.output_dir / checkpoint_name(step)
        tmp = self.output_dir / f".tmp-{checkpoint_name(step)}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        need = self._check_space()
        if acc.is_main_process:
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        try:
            self._write(step, tmp, trainer_state, data_state, extra)
        except Exception as err:
            if not is_disk_full(err, self.output_dir):
                raise
            # The unfinished folder would only be removed at the next start; the room it
            # takes is what the user is about to look for.
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            raise DiskFullError(self.output_dir, max(need - free_bytes(self.output_dir), 0)
                                or None) from err  # fmt: skip
        if acc.is_main_process:
            if final.exists():  # a re-save of the same step (e.g. signal right after a save)
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync_path(self.output_dir)
            self._rotate()
        acc.wait_for_everyone()
        return final

    def _check_space(self) -> int:
        """Collective: the bytes a checkpoint takes (the newest complete one's size, else this
        process's model and optimiser tensors), refused up front with a :class:`DiskFullError`
        when the output folder has less free. Rank 0 decides for all (one file system)."""
        acc = self.accelerator
        verdict: list[Any] = [None]
        if acc.is_main_process:
            need = _checkpoint_bytes(self.output_dir) or _state_bytes(acc)
            free = free_bytes(self.output_dir)
            verdict = [(need, free)]
        if self._world > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(verdict)
        need, free = verdict[0]
        if need > free:
            raise DiskFullError(self.output_dir, need - free)
        return need

    def _write(self, step: int, tmp: Path, trainer_state: dict, data_state: dict, extra) -> None:
        """Collective: every file of the checkpoint into ``tmp``, the ``COMPLETE`` marker last."""
        acc = self.accelerator
        acc.save_state(str(tmp), safe_serialization=True)
        write_json_atomic(tmp / f"data_state_rank{acc.process_index}.json", data_state)
        if acc.is_main_process:
            write_json_atomic(tmp / TRAINER_STATE, trainer_state)
            if extra is not None:
                extra(tmp)
        acc.wait_for_everyone()  # every rank's shards are on disk past this point
        # Last, with every file's hash: resume verifies them (a truncated or bit-flipped weight
        # file must not load silently). Each rank hashes its share.
        sizes = _sizes(tmp) if acc.is_main_process else None
        mine = self._scatter(None if sizes is None else share_by_size(sizes, self._world))
        manifest = {name: {"bytes": (tmp / name).stat().st_size, "sha256": _sha256(tmp / name)}
                    for name in mine}  # fmt: skip
        manifests = self._gather(manifest)
        if acc.is_main_process:
            files = {k: v for part in manifests for k, v in part.items()}
            write_json_atomic(tmp / COMPLETE, {"step": step, "files": dict(sorted(files.items()))})

    def resolve_resume(self, resume: str | None) -> Path | None:
        """Collective :func:`resolve_resume`: rank 0 lists the candidates and reads their
        markers, every rank verifies its share of their files, every rank gets the answer (or
        the error)."""
        from accelerate.utils import broadcast_object_list

        listing: list[Any] = [None]
        if self.accelerator.is_main_process and resume == "auto":
            listing = [[str(p) for _, p in list_checkpoints(self.output_dir)]]
        if self._world > 1:
            broadcast_object_list(listing)
        candidates = None if listing[0] is None else [Path(p) for p in listing[0]]
        return resolve_resume(self.output_dir, resume, self._verify, candidates,
                              warn=self.accelerator.is_main_process)  # fmt: skip

    def close(self) -> None:
        """Wait for background deletions of rotated-out checkpoints (main process)."""
        for thread in self._deletions:
            thread.join()
        self._deletions.clear()

    def _verify(self, path: Path) -> str | None:
        """Collective :func:`verify_checkpoint`: each rank checks about ``1 / world`` of the
        bytes; the first problem in file-name order, as one process would report it."""
        acc = self.accelerator
        if self._world == 1:
            return verify_checkpoint(path)
        share: list[Any] = [None]
        if acc.is_main_process:
            recorded = _read_marker(path)
            share = [recorded]
        # The marker's own problem (or none) first: every rank must leave together.
        problem_or_files = self._broadcast_marker_status(share[0])
        if problem_or_files is not None:
            return problem_or_files
        expected = share[0] if acc.is_main_process else None
        sizes = None if expected is None else {n: e["bytes"] for n, e in expected.items()}
        shares = None if sizes is None else share_by_size(sizes, self._world)
        mine = self._scatter(
            None if shares is None else [{n: expected[n] for n in s} for s in shares]
        )
        problems = {name: _check_file(path / name, e) for name, e in sorted(mine.items())}
        found = self._gather({n: p for n, p in problems.items() if p is not None})
        answer: list[Any] = [None]
        if acc.is_main_process:
            merged = {k: v for part in found for k, v in part.items()}
            answer = [merged[min(merged)] if merged else None]
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(answer)
        return answer[0]

    def _broadcast_marker_status(self, recorded) -> str | None:
        from accelerate.utils import broadcast_object_list

        status: list[Any] = [recorded if isinstance(recorded, str) else None]
        broadcast_object_list(status)
        return status[0]

    def _scatter(self, per_rank: list | None):
        """Rank 0's ``per_rank[r]`` to rank ``r``: each rank receives only its own share."""
        if self._world == 1:
            return per_rank[0]
        import torch.distributed as dist

        received: list[Any] = [None]
        dist.scatter_object_list(received, per_rank if self.accelerator.is_main_process else None,
                                 src=0)  # fmt: skip
        return received[0]

    def _gather(self, mine) -> list | None:
        """Every rank's ``mine`` on rank 0 (None elsewhere)."""
        if self._world == 1:
            return [mine]
        import torch.distributed as dist

        out = [None] * self._world if self.accelerator.is_main_process else None
        dist.gather_object(mine, out, dst=0)
        return out

    def _rotate(self) -> None:
        """Rename the checkpoints past ``limit`` out of the listing at once (a rename is
        atomic: nothing can resume from a half-deleted folder), delete them in the background."""
        if not self.limit:
            return
        complete = list_checkpoints(self.output_dir)
        doomed = []
        for _, path in complete[: max(0, len(complete) - self.limit)]:
            target = path.with_name(f"{_DELETING}{path.name}")
            os.replace(path, target)
            doomed.append(target)
        if doomed:
            thread = threading.Thread(
                target=lambda: [shutil.rmtree(p, ignore_errors=True) for p in doomed],
                name="geofm-checkpoint-rotation",
                daemon=True,
            )
            thread.start()
            self._deletions = [t for t in self._deletions if t.is_alive()] + [thread]

    def load(self, path: Path) -> tuple[dict, dict]:
        """Collective: restores accelerate state; returns (trainer_state, this rank's data state)."""
        acc = self.accelerator
        trainer_state = json.loads((path / TRAINER_STATE).read_text())
        try:
            acc.load_state(str(path))
        except Exception as err:  # safetensors/torch errors name no path
            raise RuntimeError(
                f"cannot load checkpoint {path}: {type(err).__name__}: {err}. Resume from an "
                "earlier checkpoint or start afresh."
            ) from err
        # At another world size every rank reads rank 0's position: ranks step in lock-step, so
        # it fixes every old rank's, and the loader re-splits the rest of the epoch from it.
        # Model and optimiser shards were resharded above by torch.distributed.checkpoint's
        # metadata; accelerate skips the RNG files of ranks the saving run did not have (the
        # recipe's randomness is a function of seed, step and rank, so none is needed).
        rank = acc.process_index if trainer_state["world_size"] == acc.num_processes else 0
        data_state = json.loads((path / f"data_state_rank{rank}.json").read_text())
        return trainer_state, data_state


def _checkpoint_bytes(output_dir: Path) -> int:
    """The size of the newest complete checkpoint, from its marker (0 when there is none): the
    next one, of the same model and optimiser, takes as much."""
    found = list_checkpoints(output_dir)
    recorded = _read_marker(found[-1][1]) if found else {}
    return 0 if isinstance(recorded, str) else sum(e["bytes"] for e in recorded.values())


def _state_bytes(accelerator) -> int:
    """Bytes of this process's model parameters and buffers and optimiser state (a sharded
    tensor counts its local shard): about what a first checkpoint writes, at least."""
    import torch

    def local(t):
        return t.to_local() if hasattr(t, "to_local") else t

    tensors = [local(t) for m in accelerator._models for t in (*m.parameters(), *m.buffers())]
    for opt in accelerator._optimizers:
        for state in getattr(opt, "optimizer", opt).state.values():
            tensors += [local(v) for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _sizes(folder: Path) -> dict[str, int]:
    """Relative POSIX path -> bytes of every file under ``folder`` but the marker."""
    return {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != COMPLETE
    }
