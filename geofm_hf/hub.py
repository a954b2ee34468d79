"""Pushing checkpoints and exports to the Hugging Face Hub, in the background, without losing any.

* :class:`HubPusher` queues pushes and uploads them from one worker thread, so training never
  waits for the network. Periodic checkpoints go to a branch (``checkpoints``) and each resulting
  commit is tagged ``step-NNNNNN``; the final export goes to ``main`` (tag ``final``). Transient
  failures (connection refused, timeouts, HTTP 408/429/5xx) are retried with exponential backoff,
  in order; a push that still fails keeps its staged folder on disk and is reported in
  :meth:`HubPusher.summary` with the command that pushes it by hand.
* History is never rewritten: no file or folder deletions, no force pushes, no branch or tag is
  deleted or moved. Pushing a tag name that already exists on a *different* commit fails with
  :class:`TagExistsError` (the new commit stays on its branch, untagged); on the *same* commit it
  is a no-op, so re-running a push is safe.
* ``geofm-push`` (:func:`main`) pushes an existing export folder, for clusters whose compute
  nodes have no outbound network (Frontier).
* :func:`resolve_model_source` maps a Hub id + revision or a local path to a local folder; it
  honours ``HF_HUB_OFFLINE=1`` (served from the cache).

The token comes from ``HF_TOKEN`` or the login cache (``huggingface_hub.get_token()``); it is
never printed or logged and is scrubbed from every error message this module emits.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, HfApi, get_token, snapshot_download
from huggingface_hub.errors import HfHubHTTPError

try:  # huggingface_hub >= 2 ships httpx2; 1.x used httpx
    import httpx2 as _httpx
except ImportError:  # pragma: no cover
    import httpx as _httpx

logger = logging.getLogger(__name__)

CHECKPOINT_BRANCH = "checkpoints"
FINAL_TAG = "final"
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


class HubPushError(RuntimeError):
    """A push that cannot succeed by retrying (bad token, tag conflict, missing folder...)."""


class TagExistsError(HubPushError):
    """The tag already exists on another commit; tags are never moved."""


def checkpoint_tag(step: int) -> str:
    """The tag name of the checkpoint pushed at optimizer step ``step``: ``step-000500``."""
    if step < 0:
        raise ValueError(f"step must be >= 0, found {step}")
    return f"step-{step:06d}"


@dataclass
class _Job:
    kind: str  # "checkpoint" | "final"
    source: str
    folder: Path  # what is uploaded (a staged snapshot of source, or source itself)
    staged: bool
    branch: str
    tags: list[str]
    commit_message: str
    step: int | None
    attempts: int = 0
    commit_sha: str | None = None
    tags_done: list[str] = field(default_factory=list)
    error: str | None = None
    status: str = "pending"
    next_try: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "step": self.step,
            "source": self.source,
            "folder": str(self.folder),
            "revision": self.branch,
            "tags": list(self.tags),
            "tags_created": list(self.tags_done),
            "commit_sha": self.commit_sha,
            "attempts": self.attempts,
            "error": self.error,
        }


class HubPusher:
    """Background, retrying, history-preserving pushes of checkpoint folders to one Hub repo.

    Create it on the main process only (the recipe guards this with
    ``accelerator.is_main_process``; the constructor refuses when ``RANK`` names another rank).

    Args:
        repo_id: ``ORG/NAME`` of the model repo (created if missing).
        repo_type: Hub repo type, ``"model"`` by default.
        private: create the repo private (ignored when it already exists).
        token: a token; by default ``HF_TOKEN`` or the login cache. Never logged.
        checkpoint_branch: branch that receives periodic checkpoints.
        max_retries: retries of transient failures per push before it is reported failed.
        retry_backoff_s: first wait between retries; doubles up to ``max_backoff_s``.
        max_backoff_s: longest wait between two retries.
        snapshot: ``"hardlink"`` (default: the folder's files are hard-linked into a staging dir
            at enqueue time, so checkpoint rotation deleting the folder loses nothing),
            ``"copy"`` (full copy, for files rewritten in place) or ``"none"`` (upload the folder
            as it is when the worker gets to it; do not touch it until pushed).
        staging_dir: where snapshots go; default ``<folder's parent>/.hub_staging``.
        log: logger for progress lines.
        endpoint: Hub URL; default ``HF_ENDPOINT`` / huggingface.co.
    """

    def __init__(
        self,
        repo_id: str,
        *,
        repo_type: str = "model",
        private: bool = False,
        token: str | None = None,
        checkpoint_branch: str = CHECKPOINT_BRANCH,
        max_retries: int = 20,
        retry_backoff_s: float = 5.0,
        max_backoff_s: float = 300.0,
        snapshot: str = "hardlink",
        staging_dir: str | os.PathLike | None = None,
        log: logging.Logger | None = None,
        endpoint: str | None = None,
    ):
        rank = os.environ.get("RANK")
        if rank not in (None, "", "0"):
            raise RuntimeError(
                f"HubPusher must only be created on the main process; this is RANK={rank}. "
                "Guard it with `if accelerator.is_main_process:`."
            )
        if "/" not in repo_id or repo_id.count("/") != 1:
            raise ValueError(f"repo_id must be 'ORG/NAME', found {repo_id!r}")
        if snapshot not in ("hardlink", "copy", "none"):
            raise ValueError(f"snapshot must be 'hardlink', 'copy' or 'none', found {snapshot!r}")
        if max_retries < 0 or retry_backoff_s < 0:
            raise ValueError("max_retries and retry_backoff_s must be >= 0")
        token = token or get_token()
        if not token:
            raise HubPushError(
                "no Hugging Face token: set HF_TOKEN or run `hf auth login` (the token needs "
                f"write access to {repo_id})"
            )
        self.repo_id = repo_id
        self.repo_type = repo_type
        self.private = private
        self.checkpoint_branch = checkpoint_branch
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.max_backoff_s = max_backoff_s
        self.snapshot = snapshot
        self.staging_dir = Path(staging_dir) if staging_dir is not None else None
        self.log = log or logger
        self._token = token
        self._api = HfApi(endpoint=endpoint, token=token)
        self._queue: collections.deque[_Job] = collections.deque()
        self._done: list[_Job] = []
        self._cond = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self._repo_ready = False
        self._branches_ready: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="geofm-hub-pusher", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:  # no token in reprs
        return f"HubPusher(repo_id={self.repo_id!r}, pending={len(self._queue)})"

    # ------------------------------------------------------------------ public API
    def push_checkpoint(
        self, folder: str | os.PathLike, step: int, commit_message: str | None = None
    ):
        """Queue ``folder`` for the checkpoint branch, tagged ``step-{step:06d}``; returns at once."""
        tag = checkpoint_tag(step)
        self._enqueue(
            "checkpoint",
            folder,
            branch=self.checkpoint_branch,
            tags=[tag],
            message=commit_message or f"Checkpoint at step {step}",
            step=step,
        )

    def push_final(
        self,
        folder: str | os.PathLike,
        commit_message: str | None = None,
        *,
        step: int | None = None,
        tag: str | None = FINAL_TAG,
        branch: str = "main",
    ):
        """Queue the final export ``folder`` for ``branch`` (``main``), tagged ``tag``; returns at once.

        Queued after any checkpoint already queued, so ``main`` is updated last.
        """
        msg = commit_message or (
            f"Final export (step {step})" if step is not None else "Final export"
        )
        self._enqueue(
            "final", folder, branch=branch, tags=[tag] if tag else [], message=msg, step=step
        )

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued push is pushed or failed; False if ``timeout`` expired first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining if remaining is not None else 1.0)
        return True

    def close(self, timeout: float | None = None) -> dict[str, Any]:
        """Drain (up to ``timeout`` seconds), stop the worker and return :meth:`summary`.

        Pushes still pending after ``timeout`` keep their staged folders and are listed in the
        summary and the log with the ``geofm-push`` command that uploads them later.
        """
        drained = self.wait(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if not drained:
            self._abort.set()
        self._thread.join(timeout=None if drained else 60)
        summary = self.summary()
        for job in summary["pending"] + summary["failed"]:
            self.log.warning(
                "hub push not done (%s step=%s): staged at %s; push it later with: "
                "geofm-push %s %s --branch %s%s",
                job["kind"],
                job["step"],
                job["folder"],
                job["folder"],
                self.repo_id,
                job["revision"],
                "".join(f" --revision-tag {t}" for t in job["tags"]),
            )
        self.log.info(
            "hub push summary for %s: %d pushed, %d failed, %d retried, %d pending",
            self.repo_id,
            len(summary["pushed"]),
            len(summary["failed"]),
            len(summary["retried"]),
            len(summary["pending"]),
        )
        return summary

    def summary(self) -> dict[str, Any]:
        """``{"pushed", "failed", "retried", "pending"}``: lists of push records (revision, tags,
        commit sha, attempts, error). ``retried`` lists every push that needed more than one try."""
        with self._cond:
            done = list(self._done)
            pending = list(self._queue)
        return {
            "repo_id": self.repo_id,
            "pushed": [j.as_dict() for j in done if j.status == "pushed"],
            "failed": [j.as_dict() for j in done if j.status == "failed"],
            "retried": [j.as_dict() for j in done + pending if j.attempts > 1],
            "pending": [j.as_dict() for j in pending],
        }

    # ------------------------------------------------------------------ internals
    def _enqueue(self, kind, folder, *, branch, tags, message, step):
        src = Path(folder)
        if not src.is_dir():
            raise FileNotFoundError(f"cannot push {src}: not a directory")
        if not any(p.is_file() for p in src.rglob("*")):
            raise ValueError(f"cannot push {src}: the folder has no files")
        with self._cond:
            if self._closing:
                raise RuntimeError("HubPusher is closed; create a new one")
        staged = self.snapshot != "none"
        target = self._stage(src, kind, step) if staged else src
        job = _Job(kind, str(src), target, staged, branch, tags, message, step)
        with self._cond:
            self._queue.append(job)
            self._cond.notify_all()
        self.log.info(
            "queued hub push of %s (%s) -> %s@%s %s",
            src,
            kind,
            self.repo_id,
            branch,
            " ".join(tags),
        )

    def _stage(self, src: Path, kind: str, step: int | None) -> Path:
        root = self.staging_dir or src.resolve().parent / ".hub_staging"
        name = f"{kind}-{step:06d}" if step is not None else kind
        dst = root / f"{name}-{uuid.uuid4().hex[:8]}"
        for path in sorted(src.rglob("*")):
            if not path.is_file() or ".git" in path.relative_to(src).parts:
                continue
            out = dst / path.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            if self.snapshot == "hardlink":
                try:
                    os.link(path, out)
                    continue
                except OSError:  # other filesystem, or links not allowed: copy instead
                    pass
            shutil.copy2(path, out)
        return dst

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "<token>") if self._token else text

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or self._abort.is_set():
                    return
                job = self._queue[0]
            delay = job.next_try - time.monotonic()
            if delay > 0 and self._abort.wait(delay):
                return
            job.attempts += 1
            try:
                self._attempt(job)
            except Exception as e:  # classified below; the worker must survive anything
                msg = self._scrub(f"{type(e).__name__}: {e}")
                transient = _is_transient(e)
                if transient and job.attempts <= self.max_retries:
                    wait = min(self.max_backoff_s, self.retry_backoff_s * 2 ** (job.attempts - 1))
                    job.next_try = time.monotonic() + wait
                    job.error = msg
                    self.log.warning(
                        "hub push %s@%s %s failed (attempt %d/%d), retrying in %.1fs: %s",
                        self.repo_id,
                        job.branch,
                        " ".join(job.tags),
                        job.attempts,
                        self.max_retries + 1,
                        wait,
                        msg,
                    )
                    continue
                job.status, job.error = "failed", msg
                self.log.error(
                    "hub push %s@%s %s failed for good after %d attempt(s) (%s); "
                    "the files stay in %s: %s",
                    self.repo_id,
                    job.branch,
                    " ".join(job.tags),
                    job.attempts,
                    "retries exhausted" if transient else "not retryable",
                    job.folder,
                    msg,
                )
            else:
                job.status, job.error = "pushed", None
                if job.staged:
                    shutil.rmtree(job.folder, ignore_errors=True)
                self.log.info(
                    "pushed %s -> %s@%s commit %s tags [%s] (attempt %d)",
                    job.source,
                    self.repo_id,
                    job.branch,
                    job.commit_sha,
                    ", ".join(job.tags_done),
                    job.attempts,
                )
            with self._cond:
                self._queue.popleft()
                self._done.append(job)
                self._cond.notify_all()

    def _attempt(self, job: _Job) -> None:
        api = self._api
        if not self._repo_ready:
            api.create_repo(
                self.repo_id, repo_type=self.repo_type, private=self.private, exist_ok=True
            )
            self._repo_ready = True
        if job.commit_sha is None:
            if job.branch not in self._branches_ready:
                if job.branch != "main":
                    api.create_branch(
                        self.repo_id, branch=job.branch, repo_type=self.repo_type, exist_ok=True
                    )
                self._branches_ready.add(job.branch)
            # A cheap request that fails fast when the Hub is unreachable (the upload's own
            # backoff would otherwise sleep ~20 s before giving the error back to us).
            api.repo_info(self.repo_id, repo_type=self.repo_type, revision=job.branch)
            operations = [
                CommitOperationAdd(
                    path_in_repo=p.relative_to(job.folder).as_posix(), path_or_fileobj=str(p)
                )
                for p in sorted(job.folder.rglob("*"))
                if p.is_file()
            ]
            # One commit per push (not upload_folder's multi-commit pipeline), so the tag names
            # exactly the uploaded state. Unchanged files are skipped; a re-sent identical push
            # returns the branch head instead of a new commit, which makes retries idempotent.
            info = api.create_commit(
                self.repo_id,
                operations=operations,
                commit_message=job.commit_message,
                repo_type=self.repo_type,
                revision=job.branch,
            )
            job.commit_sha = info.oid
        for tag in job.tags:
            if tag in job.tags_done:
                continue
            self._tag(job, tag)
            job.tags_done.append(tag)

    def _tag(self, job: _Job, tag: str) -> None:
        try:
            self._api.create_tag(
                self.repo_id, tag=tag, revision=job.commit_sha, repo_type=self.repo_type
            )
        except HfHubHTTPError as e:
            if e.response is None or e.response.status_code != 409:
                raise
            refs = self._api.list_repo_refs(self.repo_id, repo_type=self.repo_type)
            target = next((t.target_commit for t in refs.tags if t.name == tag), None)
            if target == job.commit_sha:
                return  # created by an earlier attempt whose answer was lost
            raise TagExistsError(
                f"tag {tag!r} already exists on {self.repo_id} at commit {target}; tags are never "
                f"moved. The upload is commit {job.commit_sha} on branch {job.branch!r} (untagged). "
                "Push again with another tag name."
            ) from None


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, HubPushError):
        return False
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else None
        return status is None or status in _TRANSIENT_STATUS
    if isinstance(e, _httpx.TransportError):
        return True
    return isinstance(e, (ConnectionError, TimeoutError))


# ---------------------------------------------------------------------- downloads
def resolve_model_source(name_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder for a Hub repo id (at ``revision``) or a local path.

    Everything that takes a model in this package passes ``name_or_path`` and ``revision`` on to
    ``from_pretrained``, which already handles Hub ids, local folders and the offline cache; this
    helper is for code that needs the files themselves (e.g. ``run_record.json``). With
    ``HF_HUB_OFFLINE=1`` a previously downloaded revision is served from the cache.
    """
    path = Path(name_or_path)
    if path.is_dir():
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} was given for the local folder {path}; revisions apply to "
                "Hub repo ids only"
            )
        return path
    name = str(name_or_path)
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise ValueError(
            f"{name!r} is neither an existing local folder nor a Hub repo id 'ORG/NAME'"
        )
    return Path(snapshot_download(name, revision=revision))


# ---------------------------------------------------------------------- CLI
def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="geofm-push",
        description=(
            "Push an export folder (a save_pretrained dir with its model card README.md) to a "
            "Hub repo, e.g. from a login node after a run on compute nodes without outbound "
            "network. The token comes from HF_TOKEN or `hf auth login`, never from the command "
            "line. Existing history is never rewritten; an existing tag is never moved."
        ),
    )
    p.add_argument("folder", help="export folder (config.json, model.safetensors, README.md ...)")
    p.add_argument("repo_id", help="target repo ORG/NAME (created if missing)")
    p.add_argument("--branch", default="main", help="branch to commit to (default: main)")
    p.add_argument(
        "--revision-tag",
        action="append",
        default=None,
        help="tag for the new commit (repeatable); default: none",
    )
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--commit-message", default=None)
    p.add_argument("--max-retries", type=int, default=5)
    p.add_argument("--retry-backoff-s", type=float, default=2.0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``geofm-push FOLDER ORG/NAME [--branch B] [--revision-tag T] [--private] [--commit-message M]``."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    folder = Path(args.folder)
    if not folder.is_dir():
        print(f"geofm-push: {folder} is not a directory", file=sys.stderr)
        return 2
    if not (folder / "config.json").is_file():
        print(
            f"geofm-push: {folder} has no config.json; expected a `save_pretrained` export folder",
            file=sys.stderr,
        )
        return 2
    if not (folder / "README.md").is_file():
        from geofm_hf.model_card import RUN_RECORD_NAME, write_model_card

        if not (folder / RUN_RECORD_NAME).is_file():
            print(
                f"geofm-push: {folder} has neither README.md (model card) nor {RUN_RECORD_NAME} to "
                "render one from; write the card first (geofm_hf.model_card.write_model_card)",
                file=sys.stderr,
            )
            return 2
        path = write_model_card(folder)
        logger.info("rendered the model card %s from %s", path, RUN_RECORD_NAME)
    try:
        pusher = HubPusher(
            args.repo_id,
            private=args.private,
            max_retries=args.max_retries,
            retry_backoff_s=args.retry_backoff_s,
            # The CLI uploads the folder as it is: nothing else writes to it meanwhile.
            snapshot="none",
        )
    except (HubPushError, ValueError, RuntimeError) as e:
        print(f"geofm-push: {e}", file=sys.stderr)
        return 2
    tags = args.revision_tag or []
    pusher._enqueue(
        "final",
        folder,
        branch=args.branch,
        tags=tags,
        message=args.commit_message or f"Upload {folder.name} with geofm-push",
        step=None,
    )
    summary = pusher.close()
    print(json.dumps(summary, indent=2))
    return 0 if summary["pushed"] and not summary["failed"] and not summary["pending"] else 1


__all__ = [
    "CHECKPOINT_BRANCH",
    "FINAL_TAG",
    "HubPushError",
    "HubPusher",
    "TagExistsError",
    "checkpoint_tag",
    "main",
    "resolve_model_source",
]
