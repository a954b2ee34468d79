"""Start-up at scale (issue 23 item 8): the main process resolves the dataset (commit,
geofm_dataset.json, shard list) once and broadcasts it, so a pretraining job streaming from the
Hub makes the same metadata requests at 4 processes as at 2, and every rank reads one commit."""

from __future__ import annotations

import re

import pytest
from huggingface_hub import HfApi
from pretrain_hub_helpers import module_hub  # noqa: F401
from pretrain_utils import pretrain

from geofm_hf.data import sample_dataset_path

REPO = "geofm-test/s2-sample"
RUN = ("--dataset_name_or_path", REPO, "--max_steps", "2", "--per_device_train_batch_size", "2",
       "--save_steps", "100", "--plot_reconstructions", "false", "--warmup_steps", "1")  # fmt: skip
_DATA = re.compile(r"/datasets/" + re.escape(REPO) + r"/resolve/([^/]+)/data/")


@pytest.fixture(scope="module")
def requests_by_world(module_hub, tmp_path_factory):  # noqa: F811
    HfApi().create_repo(REPO, repo_type="dataset")
    HfApi().upload_folder(folder_path=sample_dataset_path(), repo_id=REPO, repo_type="dataset")
    seen = {}
    for world in (2, 4):
        module_hub.requests.clear()
        pretrain(tmp_path_factory.mktemp(f"w{world}") / "run", *RUN, env=module_hub.env,
                 launch_args=("--num_processes", str(world)))  # fmt: skip
        seen[world] = [r.path for r in module_hub.requests]
    return seen


def _metadata(paths: list[str]) -> list[str]:
    """API calls and metadata files: everything but the shards' own bytes."""
    return [p for p in paths if not _DATA.search(p)]


def test_metadata_requests_per_job_do_not_grow_with_processes(requests_by_world):
    two, four = (_metadata(requests_by_world[w]) for w in (2, 4))
    assert two, "the run made no Hub request: it did not stream from the local Hub"
    assert len(four) <= len(two), (len(two), len(four), sorted(set(four) - set(two)))
    # One commit resolution per job, not one per rank.
    assert sum("/api/datasets/" in p for p in four) == 1, four


def test_every_rank_reads_the_commit_resolved_once(requests_by_world):
    for world, paths in requests_by_world.items():
        revisions = {m.group(1) for p in paths if (m := _DATA.search(p))}
        assert len(revisions) == 1 and re.fullmatch(r"[0-9a-f]{40}", next(iter(revisions))), (
            world,
            revisions,
        )
