"""The mission's data path end to end over HTTP: rasters -> ``geofm-make-shards --push-to-hub``
to the local Hub (tests/hubserver.py) -> two processes streaming the repo id, with the bytes the
server sent counted per file; a 5xx while streaming; a reader killed mid-epoch and resumed."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
from pretrain_hub_helpers import module_hub  # noqa: F401
from rasterio.transform import from_origin

from geofm_hf.data import make_pretrain_dataloader
from geofm_hf.data.cli import main as make_shards

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "workers" / "stream_reader.py"
REPO = "geofm-test/scene-shards"
CHIPS = 121  # 352 x 352 px in 32 px chips
ROWS_PER_SHARD = 4  # -> 31 shards: not a multiple of 2 readers


@pytest.fixture(scope="module")
def pushed(module_hub, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(0)
    profile = dict(driver="GTiff", width=352, height=352, count=4, dtype="uint16",
                   crs="EPSG:32633", transform=from_origin(500000, 5600000, 10, 10))  # fmt: skip
    with rasterio.open(folder / "scene.tif", "w", **profile) as dst:
        dst.write(rng.integers(1, 4000, (4, 352, 352), dtype=np.uint16))
        for i, band in enumerate(["B02", "B03", "B04", "B08"], 1):
            dst.set_band_description(i, band)
    code = make_shards([str(folder / "scene.tif"), "-o", str(folder / "shards"),
                        "--chip-size", "32", "--rows-per-shard", str(ROWS_PER_SHARD),
                        "--sensor", "sentinel2-l1c", "--push-to-hub", REPO])  # fmt: skip
    assert code == 0
    files = module_hub.repo(REPO, "dataset").files_at("main")
    shards = {k: len(v) for k, v in files.items() if k.startswith("data/train-")}
    assert len(shards) == math.ceil(CHIPS / ROWS_PER_SHARD) == 31
    where = {chip: name for name in shards
             for chip in pq.read_table(folder / "shards" / name).column("chip_id").to_pylist()}  # fmt: skip
    return module_hub, shards, where


def _served(hub) -> dict[str, int]:
    """Bytes the server sent per shard file (path inside the repo)."""
    prefix = f"{REPO}/"
    return {k[len(prefix) :]: v for k, v in hub.bytes_served.items()
            if k.startswith(prefix + "data/")}  # fmt: skip


def _reader(hub, out, rank, *extra):
    env = {**os.environ, **hub.env, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(WORKER), REPO, str(out), "--rank", str(rank), "--world-size", "2",
           *map(str, extra)]  # fmt: skip
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=120):
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]


def test_two_processes_fetch_the_split_once_per_epoch(pushed, tmp_path):
    hub, shards, _ = pushed
    hub.bytes_served.clear()
    procs = [_reader(hub, tmp_path / f"rank{r}.json", r) for r in range(2)]
    for proc in procs:
        _finish(proc)
    ids = [[i for batch in json.loads((tmp_path / f"rank{r}.json").read_text())["ids"] for i in batch]
           for r in range(2)]  # fmt: skip
    # 121 chips over 2 readers: 60 each, 10 batches of 6; disjoint, one chip left for balance.
    assert len(ids[0]) == len(ids[1]) == 60
    assert not set(ids[0]) & set(ids[1]) and len(set(ids[0]) | set(ids[1])) == 120
    served = _served(hub)
    ratio = sum(served.values()) / sum(shards.values())
    print(f"served {sum(served.values())} B for a {sum(shards.values())} B train split "
          f"({len(shards)} shards, 2 processes, 1 epoch): {ratio:.3f}x")  # fmt: skip
    # Each stretch is half the shuffled shard sequence: one shard, at the cut, is read by both.
    assert ratio <= 1.1, (ratio, served)
    assert set(served) <= set(shards) and len(served) >= len(shards) - 1


def test_a_5xx_while_streaming_is_retried(pushed, monkeypatch):
    hub, _, _ = pushed

    def batches():
        loader = make_pretrain_dataloader(REPO, batch_size=6, seed=5, rank=1, world_size=2,
                                          return_chip_ids=True)  # fmt: skip
        return [next(it) for it in [iter(loader)] for _ in range(4)]

    reference = batches()
    # Shards are read by exact range GETs after one HEAD for their size (no listing, no API
    # call): the first failure hits a HEAD, the next two a HEAD and a range GET; all retried.
    hub.set_failure("http500", count=1, match="/resolve/")
    first = batches()
    assert hub._failure is None  # the failure was served
    hub.set_failure("http500", count=2, match="/resolve/")
    second = batches()
    assert hub._failure is None
    for got in (first, second):
        for (x, ids), (want_x, want_ids) in zip(got, reference):
            assert ids == want_ids and torch.equal(x, want_x)


def test_an_outage_stops_the_run_instead_of_skipping_shards(pushed, monkeypatch):
    hub, _, _ = pushed
    monkeypatch.setattr(time, "sleep", lambda s: None)  # the HTTP client's backoff waits
    loader = make_pretrain_dataloader(REPO, batch_size=6, seed=5, on_error="skip")
    hub.set_failure("http500", match="/resolve/")  # every data request, past all retries
    try:
        with pytest.raises(ConnectionError, match="could not be fetched after retries"):
            next(iter(loader))
    finally:
        hub.set_failure(None)
    assert "bad_shards" not in loader.stream.stats  # an outage is not bad data


def test_resume_after_a_kill_fetches_only_what_it_still_needs(pushed, tmp_path):
    hub, shards, where = pushed
    out = tmp_path / "rank0.json"
    loader = make_pretrain_dataloader(REPO, batch_size=6, seed=5, rank=0, world_size=2,
                                      return_chip_ids=True, check_shards=False)  # fmt: skip
    want = [ids for _, (_, ids) in zip(range(loader.batches_per_epoch), loader)]
    hub.bytes_served.clear()
    proc = _reader(hub, out, 0, "--hang-after", 6)
    deadline = time.time() + 120
    while time.time() < deadline:
        if out.exists() and len(json.loads(out.read_text())["ids"]) >= 6:
            break
        assert proc.poll() is None, proc.stderr.read()[-4000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()  # reaps it and closes its stderr pipe
    before = _served(hub)
    hub.bytes_served.clear()
    _finish(_reader(hub, out, 0, "--resume"))
    after = _served(hub)
    got = json.loads(out.read_text())["ids"]
    assert got == want  # the same chips, in the same order, as the uninterrupted run
    # Shards holding the chips of batches 7-10 are all it needs (one of them was being read
    # when the kill came); the ones only batches 1-6 needed are not fetched again.
    need = {where[i] for ids in want[6:] for i in ids}
    done = {where[i] for ids in want[:6] for i in ids} - need
    assert set(after) <= {f for f in shards if f in need} and not set(after) & done
    assert sum(after.values()) < sum(before.values())


def test_every_read_is_pinned_to_the_commit_resolved_at_start(pushed, tmp_path):
    hub, shards, _ = pushed
    from huggingface_hub import HfApi

    repo = "geofm-test/pinned"
    api = HfApi()
    api.create_repo(repo, repo_type="dataset")
    snapshot = hub.repo(REPO, "dataset").files_at("main")
    for name, content in snapshot.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    api.upload_folder(folder_path=tmp_path, repo_id=repo, repo_type="dataset")
    want = [ids for _, (_, ids) in zip(range(3), _ids_loader(repo))]
    loader = _ids_loader(repo)
    # The repo moves on while the run streams: the full shards of main swap their chips.
    full = sorted(shards)[:-1]  # the last shard holds 1 chip, the others 4
    swapped = {name: snapshot[other] for name, other in zip(full, reversed(full))}
    api.upload_folder(folder_path=_folder_of(tmp_path / "next", swapped), repo_id=repo,
                      repo_type="dataset")  # fmt: skip
    assert hub.repo(repo, "dataset").files_at("main")[full[0]] != snapshot[full[0]]
    assert [ids for _, (_, ids) in zip(range(3), loader)] == want


def _ids_loader(repo):
    return make_pretrain_dataloader(repo, batch_size=6, seed=5, rank=1, world_size=2,
                                    return_chip_ids=True)  # fmt: skip


def _folder_of(path, files: dict[str, bytes]):
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(content)
    return path
