"""Hub round trip against the local fake Hub (tests/hubserver.py) with the real huggingface_hub client.

Covers: checkpoint and final pushes as tagged revisions; download of a revision through the Auto
classes; remote code without geofm_hf; offline loading from the cache; the server failing (HTTP
500, or gone) during a run; tags never moved and history never rewritten; the token never logged.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError

from geofm_hf.hub import HubPusher, HubPushError, TagExistsError, main, resolve_model_source
from geofm_hf.model_card import RUN_RECORD_NAME, RunRecord

REPO = "geofm-test/tiny-mae"
FAST = {"retry_backoff_s": 0.05, "max_backoff_s": 0.2}


def _folder(path, files: dict[str, bytes]):
    path.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(content)
    return path


def _ckpt(tmp_path, step: int):
    return _folder(
        tmp_path / f"checkpoint-{step}",
        {
            "weights.bin": bytes([step]) * 1000,
            "state/step.json": json.dumps({"step": step}).encode(),
        },
    )


def _tiny_export(path, seed: int):
    from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining, GeoViTMAEImageProcessor

    torch.manual_seed(seed)
    config = GeoViTMAEConfig.from_preset(
        "tiny",
        band_names=["B02", "B03", "B04", "B08"],
        image_mean=[0.1, 0.2, 0.3, 0.4],
        image_std=[1.0, 1.0, 1.0, 1.0],
    )
    model = GeoViTMAEForPreTraining(config).eval()
    model.save_pretrained(path)
    GeoViTMAEImageProcessor.from_model_config(config).save_pretrained(path)
    return model


def _files_at(hub, revision, repo=REPO):
    return hub.repo(repo).files_at(revision)


def test_server_checks_the_token(local_hub):
    with pytest.raises(HfHubHTTPError) as e:
        HfApi(token="hf_wrong").whoami()
    assert e.value.response.status_code == 401
    assert HfApi().whoami()["name"] == "fake-user"
    assert local_hub.requests[-1].headers["authorization"] == f"Bearer {local_hub.token}"


def test_checkpoints_and_final_are_tagged_revisions(local_hub, tmp_path):
    pusher = HubPusher(REPO, **FAST)
    folders = {step: _ckpt(tmp_path, step) for step in (10, 20, 30)}
    for step, folder in folders.items():
        pusher.push_checkpoint(folder, step)
    # Checkpoint rotation deletes folders while pushes are queued: the snapshot keeps them.
    import shutil

    shutil.rmtree(folders[10])
    final = _folder(
        tmp_path / "final",
        {"weights.bin": b"final" * 10, "README.md": b"---\nlicense: mit\n---\n# x\n"},
    )
    pusher.push_final(final, "Final export", step=30)
    summary = pusher.close(timeout=60)

    assert [j["tags"] for j in summary["pushed"]] == [
        ["step-000010"],
        ["step-000020"],
        ["step-000030"],
        ["final"],
    ]
    assert summary["failed"] == summary["pending"] == summary["retried"] == []
    repo = local_hub.repo(REPO)
    for job in summary["pushed"][:3]:
        step = job["step"]
        assert job["revision"] == "checkpoints"
        assert repo.tags[f"step-{step:06d}"] == job["commit_sha"]
        files = repo.commits[job["commit_sha"]].files
        assert files["weights.bin"] == bytes([step]) * 1000
        assert json.loads(files["state/step.json"]) == {"step": step}
    # Each checkpoint is its own commit on the branch, in order, on top of the repo's first commit.
    history = [c.sha for c in repo.history(repo.branches["checkpoints"])]
    assert history[:3] == [j["commit_sha"] for j in reversed(summary["pushed"][:3])]
    assert repo.branches["main"] == repo.tags["final"] == summary["pushed"][3]["commit_sha"]
    assert "weights.bin" in _files_at(local_hub, "final") and "state/step.json" not in _files_at(
        local_hub, "main"
    )
    assert local_hub.deletions == []
    assert not any(r.method == "DELETE" for r in local_hub.requests)
    # Staged snapshots are removed once pushed.
    assert not list((tmp_path / ".hub_staging").glob("*"))


def test_download_revision_through_auto_classes_and_offline(local_hub, tmp_path, monkeypatch):
    from transformers import AutoImageProcessor, AutoModelForPreTraining

    models = {}
    pusher = HubPusher(REPO, **FAST)
    for step, seed in ((1, 0), (2, 1)):
        models[step] = _tiny_export(tmp_path / f"ckpt-{step}", seed)
        pusher.push_checkpoint(tmp_path / f"ckpt-{step}", step)
    summary = pusher.close(timeout=120)
    assert len(summary["pushed"]) == 2, summary
    sha1 = summary["pushed"][0]["commit_sha"]
    x = torch.randn(2, 4, 64, 64)
    noise = torch.rand(2, 64)

    def logits(model):
        with torch.no_grad():
            return model(x, noise=noise).logits

    for revision in ("step-000001", sha1):
        loaded = AutoModelForPreTraining.from_pretrained(REPO, revision=revision).eval()
        torch.testing.assert_close(logits(loaded), logits(models[1]))
    latest = AutoModelForPreTraining.from_pretrained(REPO, revision="checkpoints").eval()
    torch.testing.assert_close(logits(latest), logits(models[2]))
    assert not torch.allclose(logits(latest), logits(models[1]))
    processor = AutoImageProcessor.from_pretrained(REPO, revision=sha1)
    assert list(processor.band_names) == ["B02", "B03", "B04", "B08"]

    # Offline: the Hub is gone and HF_HUB_OFFLINE=1; the cached revision still loads.
    local_hub.set_failure("down")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    n_requests = len(local_hub.requests)
    offline = AutoModelForPreTraining.from_pretrained(REPO, revision=sha1).eval()
    torch.testing.assert_close(logits(offline), logits(models[1]))
    assert (resolve_model_source(REPO, revision=sha1) / "config.json").is_file()
    assert len(local_hub.requests) == n_requests  # nothing even tried the network
    with pytest.raises(ValueError, match="revisions apply to Hub repo ids only"):
        resolve_model_source(tmp_path / "ckpt-1", revision="main")


def test_remote_code_loads_without_geofm_hf(local_hub, tmp_path):
    model = _tiny_export(tmp_path / "export", seed=3)
    pusher = HubPusher(REPO, **FAST)
    pusher.push_final(tmp_path / "export", tag="v1")
    sha = pusher.close(timeout=60)["pushed"][0]["commit_sha"]
    expected = float(sum(p.detach().double().sum() for p in model.parameters()))

    code = textwrap.dedent(
        f"""
        import importlib.abc, importlib.util, sys

        class _Block(importlib.abc.MetaPathFinder):
            # geofm_hf is installed (editable) here; hide it like on a machine without it.
            def find_spec(self, name, path=None, target=None):
                if name == "geofm_hf" or name.startswith("geofm_hf."):
                    raise ModuleNotFoundError(name)
                return None

        sys.meta_path.insert(0, _Block())
        try:
            importlib.util.find_spec("geofm_hf")
            raise SystemExit("geofm_hf is still importable")
        except ModuleNotFoundError:
            pass
        from transformers import AutoImageProcessor, AutoModelForPreTraining
        m = AutoModelForPreTraining.from_pretrained({REPO!r}, trust_remote_code=True, revision={sha!r})
        assert type(m).__module__.startswith("transformers_modules"), type(m).__module__
        assert not any(k.startswith("geofm_hf") for k in sys.modules)
        AutoImageProcessor.from_pretrained({REPO!r}, trust_remote_code=True, revision={sha!r})
        print("SUM", float(sum(p.double().sum() for p in m.parameters())))
        """
    )
    env = {"PATH": "/usr/bin:/bin", **local_hub.env}
    out = subprocess.run(
        [sys.executable, "-I", "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = float(out.stdout.split("SUM")[-1])
    assert got == pytest.approx(expected, rel=1e-9)
    assert local_hub.token not in out.stdout + out.stderr


def test_http_500_is_retried_and_nothing_is_lost(local_hub, tmp_path):
    HfApi().create_repo(REPO)  # so the failures land on the pushes themselves
    local_hub.set_failure("http500", count=4)
    pusher = HubPusher(REPO, max_retries=10, **FAST)
    for step in (1, 2, 3):
        pusher.push_checkpoint(_ckpt(tmp_path, step), step)
    summary = pusher.close(timeout=120)
    assert [j["step"] for j in summary["pushed"]] == [1, 2, 3]
    assert summary["failed"] == [] and summary["pending"] == []
    assert summary["retried"] and summary["retried"][0]["attempts"] > 1
    assert sorted(local_hub.repo(REPO).tags) == ["step-000001", "step-000002", "step-000003"]


def test_server_gone_during_training_then_back(local_hub, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    pusher = HubPusher(REPO, max_retries=50, **FAST)
    pusher.push_checkpoint(_ckpt(tmp_path, 1), 1)
    assert pusher.wait(timeout=60)
    local_hub.set_failure("down")

    # "Training" goes on while the Hub is unreachable: enqueueing never blocks on the network.
    t0 = time.monotonic()
    for step in (2, 3, 4):
        pusher.push_checkpoint(_ckpt(tmp_path, step), step)
    assert time.monotonic() - t0 < 2.0
    time.sleep(0.5)
    mid = pusher.summary()
    assert [j["step"] for j in mid["pending"]] == [2, 3, 4]
    assert mid["pending"][0]["attempts"] >= 1 and mid["pending"][0]["error"]

    threading.Timer(0.5, local_hub.set_failure, args=(None,)).start()
    summary = pusher.close(timeout=120)
    assert [j["step"] for j in summary["pushed"]] == [1, 2, 3, 4]
    assert summary["failed"] == [] and summary["pending"] == []
    assert [j["step"] for j in summary["retried"]] == [2]  # the others queued behind it
    repo = local_hub.repo(REPO)
    for j in summary["pushed"]:
        assert (
            repo.commits[repo.tags[f"step-{j['step']:06d}"]].files["weights.bin"]
            == bytes([j["step"]]) * 1000
        )
    assert (
        "retrying in" in caplog.text and "4 pushed, 0 failed, 1 retried, 0 pending" in caplog.text
    )


def test_pushes_left_pending_are_reported_with_their_files(local_hub, tmp_path, caplog):
    local_hub.set_failure("down")
    pusher = HubPusher(REPO, max_retries=1000, **FAST)
    pusher.push_checkpoint(_ckpt(tmp_path, 7), 7)
    summary = pusher.close(timeout=0.5)
    assert summary["pushed"] == [] and len(summary["pending"]) == 1
    staged = summary["pending"][0]["folder"]
    assert (tmp_path / ".hub_staging").exists() and staged.startswith(
        str(tmp_path / ".hub_staging")
    )
    from pathlib import Path

    assert (Path(staged) / "weights.bin").read_bytes() == bytes([7]) * 1000
    assert (
        f"geofm-push {staged} {REPO} --branch checkpoints --revision-tag step-000007" in caplog.text
    )


def test_tags_are_never_moved(local_hub, tmp_path):
    api = HfApi()
    api.create_repo(REPO)
    first = local_hub.repo(REPO).branches["main"]
    api.create_tag(REPO, tag="step-000005", revision=first)

    pusher = HubPusher(REPO, **FAST)
    pusher.push_checkpoint(_ckpt(tmp_path, 5), 5)
    final = _folder(tmp_path / "final", {"w.bin": b"1"})
    pusher.push_final(final)
    pusher.push_final(final)  # same content and tag again: idempotent, not an error
    summary = pusher.close(timeout=60)

    assert len(summary["failed"]) == 1
    failed = summary["failed"][0]
    assert "TagExistsError" in failed["error"] and "never moved" in failed["error"]
    assert failed["attempts"] == 1 and failed["commit_sha"]  # not retried; upload kept on branch
    repo = local_hub.repo(REPO)
    assert repo.tags["step-000005"] == first
    assert repo.branches["checkpoints"] == failed["commit_sha"]
    assert [j["commit_sha"] for j in summary["pushed"]] == [repo.tags["final"]] * 2
    assert local_hub.deletions == []
    assert issubclass(TagExistsError, HubPushError)


def test_token_is_never_logged_or_written(local_hub, tmp_path, caplog, capsys, monkeypatch):
    caplog.set_level(logging.DEBUG)
    token = local_hub.token
    local_hub.set_failure("http500", count=2)
    pusher = HubPusher(REPO, **FAST)
    pusher.push_checkpoint(_ckpt(tmp_path, 1), 1)
    assert repr(pusher).find(token) == -1
    pusher.close(timeout=60)
    # A rejected token: the failure is logged, the (wrong) token is not.
    bad = "hf_bad_" + "x" * 20
    bad_pusher = HubPusher(REPO, token=bad, **FAST)
    bad_pusher.push_checkpoint(_ckpt(tmp_path, 2), 2)
    failed = bad_pusher.close(timeout=60)["failed"]
    assert failed and "401" in failed[0]["error"]
    # The CLI prints its summary.
    export = _folder(
        tmp_path / "export", {"config.json": b"{}", "README.md": b"---\nlicense: mit\n---\n"}
    )
    assert main([str(export), REPO, "--branch", "main", "--revision-tag", "cli"]) == 0

    out = capsys.readouterr()
    for secret in (token, bad):
        assert secret not in caplog.text
        assert secret not in out.out + out.err
        for path in tmp_path.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
    # ...while every request did carry it.
    authed = [r for r in local_hub.requests if r.path != "/api/validate-yaml"]
    assert authed and all(
        r.headers.get("authorization") in (f"Bearer {token}", f"Bearer {bad}") for r in authed
    )


def test_geofm_push_cli_renders_card_and_tags(local_hub, tmp_path, capsys):
    export = tmp_path / "final"
    _tiny_export(export, seed=4)
    RunRecord(preset="tiny", steps=10, repo_id=REPO, license="apache-2.0").save(
        export / RUN_RECORD_NAME
    )
    rc = main(
        [str(export), REPO, "--revision-tag", "v0.1", "--private", "--commit-message", "demo"]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    sha = summary["pushed"][0]["commit_sha"]
    repo = local_hub.repo(REPO)
    assert repo.private and repo.tags["v0.1"] == sha == repo.branches["main"]
    assert repo.commits[sha].title == "demo"
    readme = repo.commits[sha].files["README.md"].decode()
    assert "pipeline_tag: image-feature-extraction" in readme and "## Bands" in readme
    assert {"config.json", "model.safetensors", "modeling_geofm.py", RUN_RECORD_NAME} <= set(
        repo.commits[sha].files
    )

    # Same folder, same tag: nothing new, still success. Another folder with that tag: refused.
    assert main([str(export), REPO, "--revision-tag", "v0.1"]) == 0
    assert repo.branches["main"] == sha
    other = _folder(
        tmp_path / "other",
        {"config.json": b"{}", "README.md": b"---\nlicense: mit\n---\n# other\n"},
    )
    assert main([str(other), REPO, "--revision-tag", "v0.1"]) == 1
    assert repo.tags["v0.1"] == sha

    bare = _folder(tmp_path / "bare", {"config.json": b"{}"})
    assert main([str(bare), REPO]) == 2
    assert main([str(tmp_path / "missing"), REPO]) == 2
    err = capsys.readouterr().err
    assert "neither README.md" in err and "not a directory" in err


def test_guards(local_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(RuntimeError, match="main process"):
        HubPusher(REPO)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="ORG/NAME"):
        HubPusher("no-namespace")
    pusher = HubPusher(REPO)
    with pytest.raises(FileNotFoundError):
        pusher.push_checkpoint(tmp_path / "nope", 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files"):
        pusher.push_checkpoint(tmp_path / "empty", 1)
    pusher.close()
    with pytest.raises(RuntimeError, match="closed"):
        pusher.push_checkpoint(_ckpt(tmp_path, 1), 1)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubPushError, match="HF_TOKEN"):
        HubPusher(REPO)


def test_pushes_run_in_order_on_huggingface_hubs_background_worker(
    local_hub, tmp_path, monkeypatch
):
    """The pusher keeps no thread or queue of its own: each push is one ``HfApi.run_as_future``
    job (huggingface_hub's single worker thread, first in first out)."""
    submitted, ran_on = [], []
    original = HfApi.run_as_future

    def recording(api, fn, *args, **kwargs):
        submitted.append(args[0].tags)

        def job(*a, **k):
            ran_on.append(threading.current_thread().name)
            return fn(*a, **k)

        return original(api, job, *args, **kwargs)

    monkeypatch.setattr(HfApi, "run_as_future", recording)
    before = {t.ident for t in threading.enumerate()}
    pusher = HubPusher(REPO, **FAST)
    for step in (1, 2, 3):
        pusher.push_checkpoint(_ckpt(tmp_path, step), step)
    summary = pusher.close(timeout=60)
    assert submitted == [["step-000001"], ["step-000002"], ["step-000003"]]
    assert [j["tags"] for j in summary["pushed"]] == submitted
    assert len(set(ran_on)) == 1 and ran_on[0].startswith("ThreadPoolExecutor"), ran_on
    # Besides the local Hub's request handlers, no thread of the pusher's own.
    new = [t.name for t in threading.enumerate() if t.ident not in before]
    assert all(n in ran_on or "process_request" in n for n in new), new
