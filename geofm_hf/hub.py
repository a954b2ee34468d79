"""Pushing checkpoints and exports to the Hugging Face Hub, in the background, without losing any.

:class:`HubPusher` is built on huggingface_hub: ``HfApi.run_as_future`` queues the pushes on one
worker thread that runs them in order, so training never waits for the network; each push is
``create_repo``/``create_branch`` then one ``create_commit`` (all or nothing, unlike
``upload_folder``, which commits in batches when ``hf_xet`` is installed), then ``create_tag``.
Periodic checkpoints go to the ``checkpoints`` branch tagged ``step-NNNNNN``; the final export to
``main`` tagged ``final``. (``CommitScheduler`` commits a folder on a timer, untagged: not used.)

Kept here, because huggingface_hub lacks it:

* Retries of a whole push. The library retries only the upload requests (5 retries, about 23 s)
  and not the repo, commit or tag calls; a cluster's Hub outage lasts longer. Transient failures
  (connection errors, timeouts, HTTP 408/425/429/5xx) are retried with exponential backoff while
  the pushes behind wait their turn; a push that still fails keeps its staged folder.
* Snapshots: each checkpoint is hard-linked into a staging folder when queued, so checkpoint
  rotation cannot delete a push still waiting for the Hub.
* History is never rewritten: no deletions, no force pushes, no tag moved. A tag that exists on a
  *different* commit fails with :class:`TagExistsError` (the upload stays on its branch,
  untagged); on the *same* commit it is a no-op, so re-running a push is safe.
* The summary (:meth:`HubPusher.close`): pushed, failed, retried and pending pushes, each left-over
  one logged with the ``geofm-push`` command (:func:`main`) that uploads it by hand, e.g. from a
  login node when compute nodes have no outbound network (Frontier).

The token comes from ``HF_TOKEN`` or the login cache (``huggingface_hub.get_token()``); it is
never printed or logged and is scrubbed from every error message this module emits.
:func:`resolve_model_source` maps a Hub id + revision or a local path to a local folder.
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

from ._errors import user_error_exit

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
    message: str = ""  # this and the next two are left out of the summary records
    staged: bool = False
    status: str = "pending"  # -> "pushed" | "failed"

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("message", "staged", "status")}


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or hard links not allowed
        shutil.copy2(src, dst)


class HubPusher:
    """Background, retrying, history-preserving pushes of checkpoint folders to one Hub repo.

    Create it on the main process only (the constructor refuses when ``RANK`` names another rank).

    Args:
        repo_id: ``ORG/NAME`` of the model repo (created if missing; ``private`` if so asked).
        token: a token; by default ``HF_TOKEN`` or the login cache. Never logged.
        checkpoint_branch: branch that receives periodic checkpoints.
        max_retries: retries of transient failures per push before it is reported failed.
        retry_backoff_s, max_backoff_s: first wait between retries (doubling), and the longest.
        snapshot: ``"hardlink"`` (default: the folder's files are hard-linked into a staging dir
            at enqueue time, so checkpoint rotation deleting the folder loses nothing),
            ``"copy"`` (for files rewritten in place) or ``"none"`` (upload the folder as it is
            when its turn comes; do not touch it until pushed).
        staging_dir: where snapshots go; default ``<folder's parent>/.hub_staging``.

    The Hub is ``HF_ENDPOINT`` (huggingface.co by default), as for every huggingface_hub call.
    """

    def __init__(
        self,
        repo_id: str,
        *,
        private: bool = False,
        token: str | None = None,
        checkpoint_branch: str = CHECKPOINT_BRANCH,
        max_retries: int = 20,
        retry_backoff_s: float = 5.0,
        max_backoff_s: float = 300.0,
        snapshot: str = "hardlink",
        staging_dir: str | os.PathLike | None = None,
    ):
        rank = os.environ.get("RANK")
        if rank not in (None, "", "0"):
            raise RuntimeError(
                f"HubPusher must only be created on the main process; this is RANK={rank}. "
                "Guard it with `if accelerator.is_main_process:`."
            )
        if repo_id.count("/") != 1:
            raise ValueError(f"repo_id must be 'ORG/NAME', found {repo_id!r}")
        if snapshot not in ("hardlink", "copy", "none"):
            raise ValueError(f"snapshot must be 'hardlink', 'copy' or 'none', found {snapshot!r}")
        if max_retries < 0 or retry_backoff_s < 0:
            raise ValueError("max_retries and retry_backoff_s must be >= 0")
        self._token = token or get_token()
        if not self._token:
            raise HubPushError(
                "no Hugging Face token: set HF_TOKEN or run `hf auth login` (the token needs "
                f"write access to {repo_id})"
            )
        self.repo_id, self.private, self.snapshot = repo_id, private, snapshot
        self.checkpoint_branch = checkpoint_branch
        self.max_retries, self.retry_backoff_s = max_retries, retry_backoff_s
        self.max_backoff_s = max_backoff_s
        self.staging_dir = Path(staging_dir) if staging_dir is not None else None
        self._api = HfApi(token=self._token)
        self._pushes: list[tuple[_Push, concurrent.futures.Future]] = []
        self.closed = False  # True once close() was called
        self._abort = threading.Event()

    def push_checkpoint(
        self, folder: str | os.PathLike, step: int, commit_message: str | None = None
    ):
        """Queue ``folder`` for the checkpoint branch, tagged ``step-{step:06d}``; returns at once."""
        tags = [checkpoint_tag(step)]
        message = commit_message or f"Checkpoint at step {step}"
        self._enqueue("checkpoint", folder, self.checkpoint_branch, tags, message, step)

    def push_final(
        self,
        folder: str | os.PathLike,
        commit_message: str | None = None,
        *,
        step: int | None = None,
        tag: str | None = FINAL_TAG,
        branch: str = "main",
    ):
        """Queue the final export ``folder`` for ``branch``, tagged ``tag``; returns at once.

        Queued after every checkpoint already queued, so ``main`` is updated last.
        """
        message = commit_message or "Final export" + (f" (step {step})" if step is not None else "")
        self._enqueue("final", folder, branch, [tag] if tag else [], message, step)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued push is pushed or failed; False if ``timeout`` expired first."""
        return not concurrent.futures.wait([f for _, f in self._pushes], timeout).not_done

    def close(self, timeout: float | None = None) -> dict[str, Any]:
        """Drain (up to ``timeout`` seconds), stop and return :meth:`summary`.

        Pushes still pending after ``timeout`` keep their staged folders and are listed in the
        summary and the log with the ``geofm-push`` command that uploads them later. Close before
        the program ends: huggingface_hub's worker thread is joined at exit, so pushes left queued
        would run, retries included, before the interpreter can exit.
        """
        self.closed = True
        if not self.wait(timeout):
            self._abort.set()  # the push in progress stops at its next retry; the rest never start
            for _, future in self._pushes:
                future.cancel()
            concurrent.futures.wait([f for _, f in self._pushes], 60)
        summary = self.summary()
        for p in summary["pending"] + summary["failed"]:
            logger.warning(
                f"hub push not done ({p['kind']} step={p['step']}): staged at {p['folder']}; "
                f"push it later with: geofm-push {p['folder']} {self.repo_id} --branch "
                f"{p['revision']}" + "".join(f" --revision-tag {t}" for t in p["tags"])
            )
        counts = ", ".join(
            f"{len(summary[k])} {k}" for k in ("pushed", "failed", "retried", "pending")
        )
        logger.info(f"hub push summary for {self.repo_id}: {counts}")
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

    def _enqueue(self, kind, folder, branch, tags, message, step):
        src = Path(folder)
        if not src.is_dir():
            raise FileNotFoundError(f"cannot push {src}: not a directory")
        if not any(p.is_file() for p in src.rglob("*")):
            raise ValueError(f"cannot push {src}: the folder has no files")
        if self.closed:
            raise RuntimeError("HubPusher is closed; create a new one")
        push = _Push(kind, step, str(src), str(src), branch, tags, message=message)
        if self.snapshot != "none":
            root = self.staging_dir or src.resolve().parent / ".hub_staging"
            name = f"{kind}-{step:06d}" if step is not None else kind
            push.folder, push.staged = str(root / f"{name}-{uuid.uuid4().hex[:8]}"), True
            copy = shutil.copy2 if self.snapshot == "copy" else _link_or_copy
            shutil.copytree(
                src, push.folder, ignore=shutil.ignore_patterns(".git"), copy_function=copy
            )
        self._pushes.append((push, self._api.run_as_future(self._push, push)))
        logger.info(
            f"queued hub push of {src} ({kind}) -> {self.repo_id}@{branch} {' '.join(tags)}"
        )

    def _push(self, push: _Push) -> None:
        """Runs on the worker thread: retries transient failures; never raises."""
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
                    logger.warning(
                        f"hub push {what} failed (attempt {push.attempts}/{self.max_retries + 1}), "
                        f"retrying in {wait:.1f}s: {push.error}"
                    )
                    self._abort.wait(wait)
                    continue
                push.status = "failed"
                logger.error(
                    f"hub push {what} failed for good after {push.attempts} attempt(s) "
                    f"({'retries exhausted' if transient else 'not retryable'}); the files stay "
                    f"in {push.folder}: {push.error}"
                )
                return
            push.status, push.error = "pushed", None
            if push.staged:
                shutil.rmtree(push.folder, ignore_errors=True)
            logger.info(f"pushed {push.source} -> {what} commit {push.commit_sha}")
            return

    def _attempt(self, push: _Push) -> None:
        api = self._api
        if push.commit_sha is None:
            # Cheap, unretried requests first: they fail fast when the Hub is unreachable, where
            # the upload's own backoff would sleep ~23 s before giving the error back.
            api.create_repo(self.repo_id, private=self.private, exist_ok=True)
            if push.revision != "main":
                api.create_branch(self.repo_id, branch=push.revision, exist_ok=True)
            files = sorted(p for p in Path(push.folder).rglob("*") if p.is_file())
            operations = [
                CommitOperationAdd(p.relative_to(push.folder).as_posix(), p) for p in files
            ]
            # Unchanged files are skipped; a re-sent identical push returns the branch head
            # instead of a new commit, which makes retries idempotent.
            info = api.create_commit(
                self.repo_id,
                operations=operations,
                commit_message=push.message,
                revision=push.revision,
            )
            push.commit_sha = info.oid
        for tag in (t for t in push.tags if t not in push.tags_created):
            try:
                api.create_tag(self.repo_id, tag=tag, revision=push.commit_sha)
            except HfHubHTTPError as e:
                if e.response is None or e.response.status_code != 409:
                    raise
                refs = api.list_repo_refs(self.repo_id)
                target = next((t.target_commit for t in refs.tags if t.name == tag), None)
                if target != push.commit_sha:  # same commit: an earlier attempt's lost answer
                    raise TagExistsError(
                        f"tag {tag!r} already exists on {self.repo_id} at commit {target}; tags "
                        f"are never moved. The upload is commit {push.commit_sha} on branch "
                        f"{push.revision!r} (untagged). Push again with another tag name."
                    ) from None
            push.tags_created.append(tag)


def _is_transient(e: BaseException) -> bool:
    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else None
        return status is None or status in _TRANSIENT_STATUS
    return isinstance(e, (_httpx.TransportError, ConnectionError, TimeoutError))


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


@user_error_exit("geofm-push")
def main(argv: list[str] | None = None) -> int:
    """``geofm-push FOLDER ORG/NAME [--branch B] [--revision-tag T] [--private] [--commit-message M]``."""
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
    p.add_argument("--revision-tag", action="append", default=[], help="tag (repeatable)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--commit-message", default=None)
    p.add_argument("--max-retries", type=int, default=5)
    p.add_argument("--retry-backoff-s", type=float, default=2.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from geofm_hf.model_card import RUN_RECORD_NAME, write_model_card

    folder = Path(args.folder)
    problem = None
    if not folder.is_dir():
        problem = "is not a directory"
    elif not (folder / "config.json").is_file():
        problem = "has no config.json; expected a `save_pretrained` export folder"
    elif not (folder / "README.md").is_file() and not (folder / RUN_RECORD_NAME).is_file():
        problem = (
            f"has neither README.md (model card) nor {RUN_RECORD_NAME} to render one from; "
            "write the card first (geofm_hf.model_card.write_model_card)"
        )
    if problem:
        print(f"geofm-push: {folder} {problem}", file=sys.stderr)
        return 2
    if not (folder / "README.md").is_file():
        logger.info(f"rendered the model card {write_model_card(folder)} from {RUN_RECORD_NAME}")
    try:  # the folder is uploaded as it is: nothing else writes to it meanwhile
        pusher = HubPusher(
            args.repo_id,
            private=args.private,
            max_retries=args.max_retries,
            retry_backoff_s=args.retry_backoff_s,
            snapshot="none",
        )
    except (HubPushError, ValueError, RuntimeError) as e:
        print(f"geofm-push: {e}", file=sys.stderr)
        return 2
    message = args.commit_message or f"Upload {folder.name} with geofm-push"
    pusher._enqueue("final", folder, args.branch, args.revision_tag, message, None)
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
