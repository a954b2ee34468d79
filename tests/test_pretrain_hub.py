"""The pretraining recipe pushing to the (local, fake) Hub, then the probe and fine-tune recipes
consuming what it pushed: real recipe processes, the real huggingface_hub client, real weights.

One tiny pretraining run (4 steps, a checkpoint every 2) against a module-scoped local Hub is shared
by the first tests; the failure test makes its own run against its own server.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from classification_helpers import LABELLED
from huggingface_hub import constants, snapshot_download
from pretrain_hub_helpers import module_hub  # noqa: F401
from pretrain_utils import pretrain
from safetensors.torch import load_file

from geofm_hf.image_processing_geofm import PROCESSOR_CODE_FILES
from geofm_hf.modeling_geofm import MODEL_CODE_FILES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import finetune
import linear_probe

REPO = "geofm-test/demo"
RUN = ["--max_steps", "4", "--save_steps", "2", "--plot_reconstructions", "false"]
STEPS = (2, 4)
# What every pushed revision must hold to load through the Auto classes (the probe and fine-tune
# recipes need the image processor too), with or without geofm_hf installed.
LOADABLE = {
    "model.safetensors",
    "config.json",
    "preprocessor_config.json",
    *MODEL_CODE_FILES,
    *PROCESSOR_CODE_FILES,
}


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _without_gitattributes(files: dict[str, bytes]) -> dict[str, bytes]:
    # The repo's first commit (made by the server on create) holds only .gitattributes.
    return {k: v for k, v in files.items() if k != ".gitattributes"}


def _hub_summary(stdout: str) -> dict:
    """The HubPusher summary the recipe prints as its last ``hub: {...}`` line."""
    lines = [line for line in stdout.splitlines() if line.startswith("hub: {")]
    assert lines, f"the recipe printed no hub summary:\n{stdout[-3000:]}"
    return ast.literal_eval(lines[-1][len("hub: ") :])


def _assert_pushed(hub, repo_id: str, out: Path) -> None:
    """Tags on the checkpoints branch hold each checkpoint's export; main holds OUTPUT_DIR/final."""
    repo = hub.repo(repo_id)
    branch = [c.sha for c in repo.history(repo.branches["checkpoints"])]
    tagged = [repo.tags[f"step-{step:06d}"] for step in STEPS]
    assert all(sha in branch for sha in tagged), (tagged, branch)
    # Newest first: step 4 is the branch head, step 2 its ancestor.
    assert branch.index(tagged[1]) == 0 < branch.index(tagged[0])
    for step, sha in zip(STEPS, tagged):
        export = out / f"checkpoint-{step:06d}" / "hub_export"
        assert _without_gitattributes(repo.commits[sha].files) == _tree(export), step
        assert set(repo.commits[sha].files) >= LOADABLE

    main = _without_gitattributes(repo.files_at("main"))
    assert main == _tree(out / "final")
    assert set(main) >= LOADABLE | {"README.md", "run_record.json", "loss_curve.png"}
    assert repo.tags["final"] == repo.branches["main"]
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in main)


def _assert_history_only_grows(hub) -> None:
    assert hub.deletions == []
    assert not any(r.method == "DELETE" for r in hub.requests)
    for repo in hub.repos.values():
        reachable = {c.sha for ref in repo.branches.values() for c in repo.history(ref)}
        # No commit was orphaned (no force push) and no file ever left a branch.
        assert set(repo.commits) == reachable
        assert set(repo.tags.values()) <= reachable
        for commit in repo.commits.values():
            assert commit.deleted == []
            if commit.parent is not None:
                assert set(repo.commits[commit.parent].files) <= set(commit.files)


@pytest.fixture(scope="module")
def pushed_run(module_hub, tmp_path_factory):  # noqa: F811 - the imported fixture
    """One tiny pretraining run that pushes its checkpoints and export to ``REPO``."""
    out = tmp_path_factory.mktemp("pushed") / "run"
    result = pretrain(
        out, *RUN, "--push_to_hub", "true", "--hub_model_id", REPO, env=module_hub.env
    )
    return SimpleNamespace(
        out=out,
        stdout=result.stdout,
        stderr=result.stderr,
        hub=module_hub,
        repo=module_hub.repo(REPO),
    )


def test_pretrain_pushes_tagged_checkpoints_and_a_carded_main(pushed_run):
    hub, out = pushed_run.hub, pushed_run.out
    _assert_pushed(hub, REPO, out)
    summary = _hub_summary(pushed_run.stdout)
    assert [j["tags"] for j in summary["pushed"]] == [["step-000002"], ["step-000004"], ["final"]]
    assert summary["failed"] == summary["pending"] == []

    card = pushed_run.repo.files_at("main")["README.md"].decode()
    config = json.loads((out / "final" / "config.json").read_text())
    assert card.startswith("---\n") and "## Bands" in card
    assert "| # | band | wavelength (µm) | GSD (m) | mean | std |" in card
    for i, band in enumerate(config["band_names"]):
        assert f"| {i} | {band} | " in card, band
    assert REPO in card

    # The token travelled on every authenticated request and went nowhere else.
    token = hub.token
    authed = [r for r in hub.requests if r.path != "/api/validate-yaml"]
    assert authed and all(r.headers.get("authorization") == f"Bearer {token}" for r in authed)
    assert token not in pushed_run.stdout + pushed_run.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        assert token.encode() not in path.read_bytes(), path
    assert not list(out.rglob(".hub_staging/*")), "staged snapshots are removed once pushed"
    _assert_history_only_grows(hub)


def test_checkpoint_revision_loads_through_auto_class(pushed_run):
    from transformers import AutoImageProcessor, AutoModelForPreTraining

    import geofm_hf

    model = AutoModelForPreTraining.from_pretrained(REPO, revision="step-000002")
    assert isinstance(model, geofm_hf.GeoViTMAEForPreTraining)
    processor = AutoImageProcessor.from_pretrained(REPO, revision="step-000002")
    assert list(processor.band_names) == model.config.band_names
    assert list(processor.image_mean) == pytest.approx(model.config.image_mean)
    state = model.state_dict()
    pushed = {
        step: load_file(
            pushed_run.out / f"checkpoint-{step:06d}" / "hub_export" / "model.safetensors"
        )
        for step in STEPS
    }
    assert set(pushed[2]) <= set(state)
    for name, tensor in pushed[2].items():
        assert torch.equal(state[name], tensor), name
    # It is the step-2 revision, not whatever is newest: training moved the weights since.
    assert any(not torch.equal(pushed[2][k], pushed[4][k]) for k in pushed[2])
    # The final export on main is the last checkpoint's weights.
    final = load_file(pushed_run.out / "final" / "model.safetensors")
    assert final.keys() == pushed[4].keys()
    assert all(torch.equal(final[k], pushed[4][k]) for k in final)


def _probe_offline(hub, sha: str, out: Path, *extra: str) -> dict:
    """linear_probe.py on ``REPO@sha`` with HF_HUB_OFFLINE=1.

    The server stays up on purpose: a request that offline mode should have prevented is then
    recorded (and fails the test) instead of being refused and maybe retried or swallowed.
    """
    with pytest.MonkeyPatch.context() as monkeypatch:
        n_requests = len(hub.requests)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        results = linear_probe.main([
            "--model_name_or_path", REPO, "--revision", sha,
            "--dataset_name_or_path", LABELLED, "--output_dir", str(out),
            "--num_train_epochs", "30", "--warmup_epochs", "3",
            "--per_device_train_batch_size", "64", *extra,
        ])  # fmt: skip
        assert hub.requests[n_requests:] == [], "offline mode sent requests to the Hub"
    return results


@pytest.fixture(scope="module")
def probe_run(pushed_run, tmp_path_factory):
    """The probe on the pinned main commit of ``REPO``, after one online download."""
    sha = pushed_run.repo.branches["main"]
    snapshot_download(REPO, revision=sha)  # the one online download
    out = tmp_path_factory.mktemp("probe") / "run"
    results = _probe_offline(pushed_run.hub, sha, out, "--update_model_card", "false")
    return SimpleNamespace(out=out, sha=sha, results=results)


def test_linear_probe_from_hub_id_offline_from_cache(probe_run):
    saved = json.loads((probe_run.out / "results.json").read_text())
    assert saved["commit"] == probe_run.sha and saved["model_name_or_path"] == REPO
    info = json.loads(Path(LABELLED, "geofm_dataset.json").read_text())
    assert saved["num_train"] == info["num_samples"]["train"] == 394
    assert saved["num_test"] == info["num_samples"]["test"] == 169
    matrix = np.array(saved["confusion_matrix"])
    assert matrix.sum() == saved["num_test"]
    # The confusion matrix is the first seed's; top1 is the mean over the probe seeds.
    assert saved["top1_per_seed"][0] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert saved["top1"] == pytest.approx(np.mean(saved["top1_per_seed"]))
    assert saved["top1"] == pytest.approx(probe_run.results["top1"])
    assert saved["top5_k"] == 5 and saved["top5"] == 1.0  # 5 classes: top-5 is every class
    assert 0.0 < saved["macro_f1"] <= 1.0
    majority = matrix.sum(axis=1).max() / matrix.sum()
    assert saved["top1"] > majority + 0.1, (saved["top1"], majority)  # real labels carry signal


def test_linear_probe_card_for_a_hub_export(pushed_run, probe_run, tmp_path):
    out = tmp_path / "probe"
    # The card copies the run's figures from the Hub snapshot (they are referenced by it).
    _probe_offline(
        pushed_run.hub, probe_run.sha, out,
        "--feature_cache_dir", str(probe_run.out / "feature_cache"),
        "--num_train_epochs", "1", "--warmup_epochs", "0",  # the card is what is tested here
    )  # fmt: skip
    card_dir = out / "model_card"
    card = (card_dir / "README.md").read_text()
    assert "model-index" in card and "## Bands" in card
    assert (card_dir / "loss_curve.png").is_file()


def test_finetune_from_local_export(pushed_run, tmp_path):
    from transformers import AutoModelForImageClassification

    import geofm_hf

    final = pushed_run.out / "final"
    out = tmp_path / "ft"
    results = finetune.main([
        "--model_name_or_path", str(final), "--dataset_name_or_path", LABELLED,
        "--output_dir", str(out), "--num_train_epochs", "2", "--warmup_epochs", "1",
        "--per_device_train_batch_size", "64",
    ])  # fmt: skip
    assert results["num_train"] == 394 and results["num_test"] == 169
    assert 0.0 <= results["top1"] <= 1.0 and np.isfinite(results["train_loss_per_epoch"]).all()
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))

    model = AutoModelForImageClassification.from_pretrained(out).eval()
    assert isinstance(model, geofm_hf.GeoViTMAEForImageClassification)
    assert model.config.id2label == dict(enumerate(results["label_names"]))
    pretrained = json.loads((final / "config.json").read_text())
    assert model.config.band_names == pretrained["band_names"]
    # The encoder started from the export: near it after 2 short epochs, far from a fresh init.
    name = "vit.encoder.layers.0.mlp.fc1.weight"
    export = load_file(final / "model.safetensors")[name]
    tuned = model.state_dict()[name]
    torch.manual_seed(1234)
    fresh = geofm_hf.GeoViTMAEForImageClassification(model.config).state_dict()[name]
    assert (tuned - export).norm() < 0.5 * (fresh - export).norm()
    with torch.no_grad():
        logits = model(torch.randn(2, model.config.num_channels, 16, 16),
                       interpolate_pos_encoding=True).logits  # fmt: skip
    assert logits.shape == (2, len(results["label_names"]))


def test_hub_http_500_during_the_run_is_retried(local_hub, tmp_path):
    # Five failed requests with a 0.2 s first backoff (doubling): ~6 s of retries on the first
    # push while training goes on.
    failures = 5
    repo_id = "geofm-test/flaky"
    local_hub.set_failure("http500", count=failures)
    out = tmp_path / "run"
    result = pretrain(
        out,
        *RUN,
        "--push_to_hub", "true",
        "--hub_model_id", repo_id,
        "--hub_retry_backoff_s", "0.2",
        env=local_hub.env,
    )  # fmt: skip
    assert len(local_hub.requests) > failures
    assert "retrying in" in result.stderr and "simulated internal error" in result.stderr
    summary = _hub_summary(result.stdout)
    assert summary["failed"] == summary["pending"] == []
    assert [j["tags"] for j in summary["pushed"]] == [["step-000002"], ["step-000004"], ["final"]]
    assert summary["retried"] and summary["retried"][0]["attempts"] == failures + 1
    _assert_pushed(local_hub, repo_id, out)
    _assert_history_only_grows(local_hub)
    assert local_hub.token not in result.stdout + result.stderr


def test_rotation_does_not_lose_pushes_queued_behind_a_slow_hub(local_hub, tmp_path):
    """save_total_limit 1 deletes checkpoint-N while its push still waits for a slow Hub."""
    repo_id = "geofm-test/slow"
    local_hub.request_delay_s = 0.4
    out = tmp_path / "run"
    result = pretrain(
        out, "--max_steps", "3", "--save_steps", "1", "--save_total_limit", "1",
        "--plot_reconstructions", "false", "--push_to_hub", "true", "--hub_model_id", repo_id,
        env=local_hub.env,
    )  # fmt: skip
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-000003"]
    summary = _hub_summary(result.stdout)
    assert summary["failed"] == summary["pending"] == [], summary
    tags = [["step-000001"], ["step-000002"], ["step-000003"], ["final"]]
    assert [j["tags"] for j in summary["pushed"]] == tags
    repo = local_hub.repo(repo_id)
    for step in (1, 2, 3):
        files = repo.commits[repo.tags[f"step-{step:06d}"]].files
        assert set(files) >= LOADABLE, (step, sorted(files))
    assert not list(out.rglob(".hub_staging/*")), "staged snapshots are removed once pushed"


def test_run_stopped_by_a_signal_does_not_wait_for_an_unreachable_hub(local_hub, tmp_path):
    """SIGTERM (Slurm's wall-time warning) while the first push retries against a Hub that is
    down: the run stops at once, and what was not pushed is summarised, staged and logged with the
    command that pushes it, instead of the interpreter's exit waiting for the push's retries."""
    import signal
    import subprocess
    import time

    import psutil
    from pretrain_utils import ROOT, _command, _env, _pretrain_args

    local_hub.set_failure("down")
    out = tmp_path / "run"
    args = _pretrain_args(out, [
        "--max_steps", "1000", "--save_steps", "1", "--plot_reconstructions", "false",
        "--push_to_hub", "true", "--hub_model_id", "geofm-test/down", "--hub_retry_backoff_s", "0.2",
    ])  # fmt: skip
    proc = subprocess.Popen(
        _command(ROOT / "recipes" / "pretrain.py", args),
        cwd=ROOT,
        env=_env(local_hub.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob(".hub_staging/*")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        workers = [
            p for p in psutil.Process(proc.pid).children() if "pretrain.py" in " ".join(p.cmdline())
        ]
        assert len(workers) == 2, workers
        t0 = time.monotonic()
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
        stopped_in = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            from pretrain_utils import kill_tree

            kill_tree(proc.pid)
    assert stopped_in < 60, stopped_in
    summary = _hub_summary(stdout)
    assert summary["pushed"] == [] and summary["pending"], summary
    for push in summary["pending"]:
        assert (Path(push["folder"]) / "model.safetensors").is_file()
        command = f"geofm-push {push['folder']} geofm-test/down --branch checkpoints"
        assert command in stderr, stderr[-3000:]
    assert local_hub.token not in stdout + stderr
