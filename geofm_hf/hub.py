"""Pushing checkpoints and exports to the Hugging Face Hub, in the background, without losing any.

* :class:`HubPusher` queues pushes on ``HfApi.run_as_future``, whose single worker thread runs them
  one at a time in the order queued, so training never waits for the network. Periodic
  checkpoints go to a branch (``checkpoints``, made with ``create_branch``) as one
  ``create_commit`` each, tagged ``step-NNNNNN`` with ``create_tag``; the final export goes to
  ``main`` (tag ``final``).
* What huggingface_hub lacks is kept here: its own retries (``http_backoff``) cover only the upload
  requests, five times within ~25 s, while the repo, branch, commit and tag calls are not retried.
  So a whole push is retried on transient failures (connection refused, timeouts, HTTP
  408/425/429/5xx) with our backoff, for as long as a cluster's Hub outage may last; the pushes
  behind it wait their turn. A push that still fails keeps its staged folder and is listed in
  :meth:`HubPusher.close`'s summary with the ``geofm-push`` command that uploads it by hand.
* Not ``upload_folder``: with ``hf_xet`` installed it commits a folder in several batches, so an
  interrupted push would leave half a checkpoint as the branch head; one ``create_commit`` is
  all or nothing. Not ``CommitScheduler``: it commits a folder on a timer, untagged.
* History is never rewritten: no deletions, no force pushes, no branch or tag deleted or moved.
  A tag that exists on a *different* commit fails with :class:`TagExistsError` (the new commit
  stays on its branch, untagged); on the *same* commit it is a no-op, so re-running a push is safe.
* ``geofm-push`` (:func:`main`) pushes an existing export folder, for clusters whose compute
  nodes have no outbound network (Frontier).
* :func:`resolve_model_source` maps a Hub id + revision or a local path to a local folder; it
  honours ``HF_HUB_OFFLINE=1`` (served from the cache).

The token comes from ``HF_TOKEN`` or the login cache (``huggingface_hub.get_token()``); it is
never printed or logged and is scrubbed from every error message this module emits.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import os
import shutil
import sys
import threading
import uuid
from dataclasses import asdict, dataclass, field
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
class _Push:
    """One queued push; every field but the last three is its summary record."""

    kind: str  # "checkpoint" | "final"
    step: int | None
    source: str
    folder: str  # what is uploaded: a staged snapshot of source, or source itself
    revision: str
    tags: list[str]
    tags_created: list[str] = field(default_factory=list)
    commit_sha: str | None = None
    attempts: int = 0
    error: str | None = None
    message: str = ""
    staged: bool = False
    status: str = "pending"  # -> "pushed" | "failed"

    def record(self) -> dict[str, Any]:
        record = asdict(self)
        for key in ("message", "staged", "status"):
            del record[key]
        return record


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or hard links not allowed
        shutil.copy2(src, dst)


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
        self.repo_id, self.repo_type, self.private = repo_id, repo_type, private
        self.checkpoint_branch = checkpoint_branch
        self.max_retries, self.retry_backoff_s = max_retries, retry_backoff_s
        self.max_backoff_s = max_backoff_s
        self.snapshot = snapshot
        self.staging_dir = Path(staging_dir) if staging_dir is not None else None
        self.log = log or logger
        self._token = token
        self._api = HfApi(endpoint=endpoint, token=token)
        self._pushes: list[tuple[_Push, concurrent.futures.Future]] = []
        self._closed = False
        self._abort = threading.Event()

    def __repr__(self) -> str:  # no token in reprs
        pending = sum(not future.done() for _, future in self._pushes)
        return f"HubPusher(repo_id={self.repo_id!r}, pending={pending})"

    # ------------------------------------------------------------------ public API
    def push_checkpoint(
        self, folder: str | os.PathLike, step: int, commit_message: str | None = None
    ):
        """Queue ``folder`` for the checkpoint branch, tagged ``step-{step:06d}``; returns at once."""
        message = commit_message or f"Checkpoint at step {step}"
        self._enqueue(
            "checkpoint", folder, self.checkpoint_branch, [checkpoint_tag(step)], message, step
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
        message = commit_message or (
            f"Final export (step {step})" if step is not None else "Final export"
        )
        self._enqueue("final", folder, branch, [tag] if tag else [], message, step)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued push is pushed or failed; False if ``timeout`` expired first."""
        futures = [future for _, future in self._pushes]
        return not concurrent.futures.wait(futures, timeout).not_done

    def close(self, timeout: float | None = None) -> dict[str, Any]:
        """Drain (up to ``timeout`` seconds), stop and return :meth:`summary`.

        Pushes still pending after ``timeout`` keep their staged folders and are listed in the
        summary and the log with the ``geofm-push`` command that uploads them later.
        """
        self._closed = True
        if not self.wait(timeout):
            self._abort.set()  # the push in progress stops at its next retry
            for _, future in self._pushes:
                future.cancel()
            concurrent.futures.wait([future for _, future in self._pushes], 60)
        summary = self.summary()
        for push in summary["pending"] + summary["failed"]:
            self.log.warning(
                "hub push not done (%s step=%s): staged at %s; push it later with: "
                "geofm-push %s %s --branch %s%s",
                push["kind"],
                push["step"],
                push["folder"],
                push["folder"],
                self.repo_id,
                push["revision"],
                "".join(f" --revision-tag {t}" for t in push["tags"]),
            )
        self.log.info(
            "hub push summary for %s: %d pushed, %d failed, %d retried, %d pending",
            self.repo_id,
            *(len(summary[k]) for k in ("pushed", "failed", "retried", "pending")),
        )
        return summary

    def summary(self) -> dict[str, Any]:
        """``{"pushed", "failed", "retried", "pending"}``: lists of push records (revision, tags,
        commit sha, attempts, error). ``retried`` lists every push that needed more than one try."""
        pushes = [push for push, _ in self._pushes]
        return {
            "repo_id": self.repo_id,
            **{s: [p.record() for p in pushes if p.status == s] for s in ("pushed", "failed")},
            "retried": [p.record() for p in pushes if p.attempts > 1],
            "pending": [p.record() for p in pushes if p.status == "pending"],
        }

    # ------------------------------------------------------------------ internals
    def _enqueue(self, kind, folder, branch, tags, message, step):
        src = Path(folder)
        if not src.is_dir():
            raise FileNotFoundError(f"cannot push {src}: not a directory")
        if not any(p.is_file() for p in src.rglob("*")):
            raise ValueError(f"cannot push {src}: the folder has no files")
        if self._closed:
            raise RuntimeError("HubPusher is closed; create a new one")
        target = src
        if self.snapshot != "none":
            root = self.staging_dir or src.resolve().parent / ".hub_staging"
            name = f"{kind}-{step:06d}" if step is not None else kind
            target = root / f"{name}-{uuid.uuid4().hex[:8]}"
            copy = shutil.copy2 if self.snapshot == "copy" else _link_or_copy
            shutil.copytree(src, target, ignore=shutil.ignore_patterns(".git"), copy_function=copy)
        push = _Push(kind, step, str(src), str(target), branch, tags, message=message)
        push.staged = self.snapshot != "none"
        self._pushes.append((push, self._api.run_as_future(self._push, push)))
        self.log.info(
            "queued hub push of %s (%s) -> %s@%s %s",
            src,
            kind,
            self.repo_id,
            branch,
            " ".join(tags),
        )

    def _push(self, push: _Push) -> None:
        """Runs on the worker thread; retries transient failures, never raises."""
        what = f"{self.repo_id}@{push.revision} {' '.join(push.tags)}"
        while not self._abort.is_set():
            push.attempts += 1
            try:
                self._attempt(push)
            except Exception as e:  # classified below; the worker must survive anything
                push.error = f"{type(e).__name__}: {e}".replace(self._token, "<token>")
                transient = _is_transient(e)
                if transient and push.attempts <= self.max_retries:
                    wait = min(self.max_backoff_s, self.retry_backoff_s * 2 ** (push.attempts - 1))
                    self.log.warning(
                        "hub push %s failed (attempt %d/%d), retrying in %.1fs: %s",
                        what,
                        push.attempts,
                        self.max_retries + 1,
                        wait,
                        push.error,
                    )
                    self._abort.wait(wait)
                    continue
                push.status = "failed"
                self.log.error(
                    "hub push %s failed for good after %d attempt(s) (%s); the files stay in %s: %s",
                    what,
                    push.attempts,
                    "retries exhausted" if transient else "not retryable",
                    push.folder,
                    push.error,
                )
                return
            push.status, push.error = "pushed", None
            if push.staged:
                shutil.rmtree(push.folder, ignore_errors=True)
            self.log.info(
                "pushed %s -> %s commit %s (attempt %d)",
                push.source,
                what,
                push.commit_sha,
                push.attempts,
            )
            return

    def _attempt(self, push: _Push) -> None:
        api, repo = self._api, dict(repo_id=self.repo_id, repo_type=self.repo_type)
        if push.commit_sha is None:
            # Cheap requests that also fail fast when the Hub is unreachable (the upload's own
            # backoff would sleep ~25 s before giving the error back to us).
            api.create_repo(**repo, private=self.private, exist_ok=True)
            if push.revision != "main":
                api.create_branch(**repo, branch=push.revision, exist_ok=True)
            folder = Path(push.folder)
            operations = [
                CommitOperationAdd(p.relative_to(folder).as_posix(), str(p))
                for p in sorted(folder.rglob("*"))
                if p.is_file()
            ]
            # Unchanged files are skipped; a re-sent identical push returns the branch head
            # instead of a new commit, which makes retries idempotent.
            info = api.create_commit(
                **repo, operations=operations, commit_message=push.message, revision=push.revision
            )
            push.commit_sha = info.oid
        for tag in push.tags:
            if tag not in push.tags_created:
                self._tag(push, tag)
                push.tags_created.append(tag)

    def _tag(self, push: _Push, tag: str) -> None:
        repo = dict(repo_id=self.repo_id, repo_type=self.repo_type)
        try:
            self._api.create_tag(**repo, tag=tag, revision=push.commit_sha)
        except HfHubHTTPError as e:
            if e.response is None or e.response.status_code != 409:
                raise
            refs = self._api.list_repo_refs(**repo)
            target = next((t.target_commit for t in refs.tags if t.name == tag), None)
            if target == push.commit_sha:
                return  # created by an earlier attempt whose answer was lost
            raise TagExistsError(
                f"tag {tag!r} already exists on {self.repo_id} at commit {target}; tags are never "
                f"moved. The upload is commit {push.commit_sha} on branch {push.revision!r} "
                "(untagged). Push again with another tag name."
            ) from None


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, HubPushError):
        return False
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else None
        return status is None or status in _TRANSIENT_STATUS
    return isinstance(e, (_httpx.TransportError, ConnectionError, TimeoutError))


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
    message = args.commit_message or f"Upload {folder.name} with geofm-push"
    pusher._enqueue("final", folder, args.branch, tags, message, None)
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
