"""Linear probe end to end on the bundled OSM-labelled Sentinel-2 chips, from a local export and
from a Hub repo id served offline from the cache; bad inputs; the comparison table."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from classification_helpers import LABELLED, rgb_png_folder, tiny_export
from huggingface_hub import HfApi, ModelCard, constants, snapshot_download
from huggingface_hub.repocard_data import model_index_to_eval_results

from geofm_hf.classification import (
    BandMismatchError,
    ClassificationDataError,
    load_classification_split,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))
import linear_probe

REPO = "geofm-test/probe-tiny"
FAST = ["--num_train_epochs", "30", "--warmup_epochs", "3", "--per_device_train_batch_size", "64"]
CHEAP = ["--seeds", "2", "--sweep_learning_rates", "0.1", "--sweep_weight_decays", "0"]


def _probe(model, out, *extra):
    return linear_probe.main([
        "--model_name_or_path", str(model), "--dataset_name_or_path", LABELLED,
        "--output_dir", str(out), *FAST, *extra,
    ])  # fmt: skip


def test_probe_on_bundled_chips_writes_results_png_and_card(tmp_path):
    export = tiny_export(tmp_path / "export")
    results = _probe(export, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["top1"] == results["top1"]
    info = json.loads(Path(LABELLED, "geofm_dataset.json").read_text())
    assert saved["num_train"] == info["num_samples"]["train"] == 394
    assert saved["num_test"] == info["num_samples"]["test"] == 169
    matrix = np.array(saved["confusion_matrix"])
    assert matrix.sum() == saved["num_test"]
    # Headline: the linear probe's mean over the default 5 seeds; the matrix is the first seed's.
    linear = saved["protocols"]["linear-probe"]
    assert saved["protocol"] == "linear-probe" and linear["seeds"] == [0, 1, 2, 3, 4]
    assert linear["top1_per_seed"][0] == pytest.approx(np.trace(matrix) / matrix.sum())
    assert saved["top1"] == pytest.approx(np.mean(linear["top1_per_seed"]))
    assert saved["top1_std"] == pytest.approx(np.std(linear["top1_per_seed"], ddof=1))
    for key in ("top1", "macro_f1"):
        lo, hi = saved[f"{key}_ci95"]
        assert lo < saved[key] < hi and hi - lo < 0.25  # 169 test chips: about +-7 points
    preds = np.array(linear["test_predictions"])
    assert preds.shape == (5, 169)
    refs = np.array(saved["test_references"])
    np.testing.assert_allclose((preds == refs).mean(1), linear["top1_per_seed"])
    # kNN on the same cached features: deterministic, one value, its own interval.
    knn = saved["protocols"]["knn"]
    assert knn["num_seeds"] == 1 and knn["top1_ci95"][0] < knn["top1"] < knn["top1_ci95"][1]
    assert saved["knn"] == {"k": 20, "temperature": 0.07}
    # Learning rate and weight decay were chosen on a validation split of train.
    chosen = saved["selection"]["candidates"][saved["feature"]]
    assert chosen["num_val"] + chosen["num_fit"] == 394 and len(chosen["grid"]) == 6
    assert saved["selection"]["learning_rate"] == chosen["learning_rate"]
    assert saved["top5_k"] == 5 and saved["top5"] == 1.0  # 5 classes: top-5 is every class
    # Real labels carry signal: even a random frozen encoder beats the majority class clearly.
    majority = matrix.sum(axis=1).max() / matrix.sum()
    assert saved["top1"] > majority + 0.1, (saved["top1"], majority)
    assert (tmp_path / "run" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    # The local checkpoint's card now carries a valid model-index with these numbers.
    card = ModelCard.load(export / "README.md")
    _, evals = model_index_to_eval_results(card.data.to_dict()["model-index"])
    top1 = [e for e in evals if e.metric_type == "accuracy"]
    assert len(top1) == 2 and "knn" in top1[1].metric_name  # one row per protocol
    assert top1[0].metric_value == pytest.approx(saved["top1"], abs=1e-6)
    assert top1[0].dataset_split == "test"
    # The interval travels with the value (model-index metric args) and into the card's table.
    assert top1[0].metric_args["ci95"] == pytest.approx(saved["top1_ci95"], abs=1e-6)
    assert top1[0].metric_args["num_seeds"] == 5
    assert "(95% CI, 5 seeds)" in (export / "README.md").read_text()
    # Second run: features from the cache, identical metrics, card rows replaced not duplicated.
    again = _probe(
        export, tmp_path / "run", "--feature_cache_dir", str(tmp_path / "run" / "feature_cache")
    )
    assert again["top1"] == results["top1"]
    card = ModelCard.load(export / "README.md")
    _, evals2 = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert len(evals2) == len(evals)


def test_probe_from_hub_repo_id_offline_from_cache(local_hub, tmp_path, monkeypatch):
    export = tiny_export(tmp_path / "export", seed=1)
    api = HfApi()
    api.create_repo(REPO)
    commit = api.upload_folder(repo_id=REPO, folder_path=str(export)).oid
    snapshot_download(REPO, revision=commit)  # the one download
    local_hub.set_failure("down")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    n_requests = len(local_hub.requests)
    results = _probe(REPO, tmp_path / "run", "--revision", commit, "--feature", "mean")
    assert len(local_hub.requests) == n_requests  # nothing tried the network
    assert results["commit"] == commit and results["feature"] == "mean"
    local = _probe(export, tmp_path / "local", "--feature", "mean", "--update_model_card", "false")
    assert results["top1"] == pytest.approx(local["top1"])  # same weights, same numbers
    card = ModelCard.load(tmp_path / "run" / "model_card" / "README.md")
    assert "model-index" in card.data.to_dict()


def test_yaml_config_and_cli_override(tmp_path):
    export = tiny_export(tmp_path / "export")
    config = yaml.safe_load(Path("recipes/configs/probe_demo.yaml").read_text())
    config.update(model_name_or_path=str(export), output_dir=str(tmp_path / "yaml"))
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(config))
    results = linear_probe.main([str(path), *FAST, "--update_model_card", "false"])
    assert results["args"]["num_train_epochs"] == 30  # the command line wins over the YAML
    assert results["dataset"] == config["dataset_name_or_path"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**config, "learning_rat": 0.1}))
    with pytest.raises(ValueError, match="unknown keys \\['learning_rat'\\]"):
        linear_probe.main([str(bad)])


def test_comparison_table_aggregates_runs(tmp_path, capsys):
    small = tiny_export(tmp_path / "small")
    wide = tiny_export(tmp_path / "wide", hidden_size=96, num_attention_heads=3)
    for name, export in (("small", small), ("wide", wide)):
        _probe(export, tmp_path / name, "--update_model_card", "false", *CHEAP)
    text = linear_probe.main(["table", str(tmp_path / "wide"), str(tmp_path / "small" /
                              "results.json"), "--output", str(tmp_path / "table.md")])  # fmt: skip
    rows = [r for r in text.splitlines() if r.startswith("| ") and "checkpoint" not in r]
    assert len(rows) == 4  # linear probe and kNN for each
    assert str(small) in rows[0] and str(wide) in rows[3]  # sorted by encoder size
    assert (tmp_path / "table.md").read_text() == text
    small_result = json.loads((tmp_path / "small" / "results.json").read_text())
    lo, hi = small_result["top1_ci95"]
    headline = next(r for r in rows if str(small) in r and f"| {small_result['protocol']} |" in r)
    assert f"{100 * small_result['top1']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" in headline
    # With a baseline: the paired-bootstrap difference of every other run, per protocol.
    text = linear_probe.main(["table", str(tmp_path / "small"), str(tmp_path / "wide"),
                              "--baseline", str(tmp_path / "small")])  # fmt: skip
    rows = [r for r in text.splitlines() if r.startswith("| ") and "checkpoint" not in r]
    assert "Δ top-1 vs baseline" in text and rows[0].endswith("(baseline) |")
    from geofm_hf.classification import load_results, paired_comparison

    d = paired_comparison(load_results(tmp_path / "wide"), small_result, "linear-probe")["top1"]
    wide_linear = next(r for r in rows if str(wide) in r and "| linear-probe |" in r)
    assert f"{100 * d['difference']:+.1f} [{100 * d['ci95'][0]:+.1f}" in wide_linear
    with pytest.raises(ValueError, match="lacks"):
        (tmp_path / "broken.json").write_text("{}")
        linear_probe.main(["table", str(tmp_path / "broken.json")])


def test_seeds_change_per_seed_values_not_the_protocol(tmp_path):
    export = tiny_export(tmp_path / "export")
    cache = ["--feature_cache_dir", str(tmp_path / "cache"), "--update_model_card", "false",
             "--sweep_learning_rates", "0.1", "1.0"]  # fmt: skip
    a = _probe(export, tmp_path / "a", "--seeds", "3", *cache)
    b = _probe(export, tmp_path / "b", "--seeds", "3", "--seed", "7", *cache)
    c = _probe(export, tmp_path / "c", "--seeds", "2", *cache)
    lin = {k: r["protocols"]["linear-probe"] for k, r in zip("abc", (a, b, c))}
    assert lin["a"]["seeds"] == [0, 1, 2] and lin["b"]["seeds"] == [7, 8, 9]
    assert lin["a"]["test_predictions"] != lin["b"]["test_predictions"]
    assert lin["c"]["top1_per_seed"] == lin["a"]["top1_per_seed"][:2]  # seed i is seed i
    # The protocol (feature, hyperparameters chosen on validation, kNN) does not move.
    assert a["selection"] == b["selection"] == c["selection"]
    assert a["protocols"]["knn"] == b["protocols"]["knn"] == c["protocols"]["knn"]
    assert a["feature"] == b["feature"] and a["knn"] == b["knn"]


def test_choices_are_made_on_validation_never_on_test(tmp_path):
    """Scrambling the test labels changes test scores, never the feature or hyperparameters."""
    scrambled = tmp_path / "scrambled"
    shutil.copytree(LABELLED, scrambled)
    shard = next((scrambled / "data").glob("test-*.parquet"))
    table = pq.read_table(shard)
    labels = np.random.default_rng(0).permutation(table.column("label").to_numpy())
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label",
                                    pa.array(labels, table.schema.field("label").type)), shard)  # fmt: skip
    export = tiny_export(tmp_path / "export")
    runs = [linear_probe.main([
        "--model_name_or_path", str(export), "--dataset_name_or_path", str(data),
        "--output_dir", str(tmp_path / name), *FAST, "--feature", "auto", "--seeds", "1",
        "--update_model_card", "false",
    ]) for name, data in (("real", LABELLED), ("scrambled", scrambled))]  # fmt: skip
    real, fake = runs
    assert real["selection"] == fake["selection"]
    assert set(real["selection"]["candidates"]) == {"cls", "mean", "mean_last2"}
    best = max(real["selection"]["candidates"].items(), key=lambda kv: kv[1]["val_top1"])[0]
    assert real["feature"] == best and real["args"]["feature"] == "auto"
    assert fake["top1"] < real["top1"] - 0.1  # the scrambled test labels did reach the scores


def test_knn_only_protocol_and_bad_options(tmp_path):
    export = tiny_export(tmp_path / "export")
    r = _probe(export, tmp_path / "knn", "--protocol", "knn", "--update_model_card", "false")
    assert r["protocol"] == "knn" and set(r["protocols"]) == {"knn"}
    assert r["selection"]["on"].startswith("fixed")  # nothing to choose for kNN alone
    for bad, message in ((["--protocol", "svm"], "protocol must be one of"),
                         (["--seeds", "0"], "seeds is a count"),
                         (["--feature", "max"], "feature must be 'cls', 'mean' or 'mean_lastK'")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            _probe(export, tmp_path / "bad", *bad)


# ----------------------------------------------------------------------------- bad input
def test_missing_label_column_is_a_clear_error(tmp_path):
    with pytest.raises(ClassificationDataError, match="no label column 'klass'"):
        load_classification_split(LABELLED, "train", label_column="klass")


def test_label_column_not_class_like(tmp_path):
    table = pa.table({"image": [[[[0.0] * 4] * 4]] * 3, "label": [0.5, 1.5, 2.5]})
    (tmp_path / "ds").mkdir()
    pq.write_table(table, tmp_path / "ds" / "train.parquet")
    with pytest.raises(ClassificationDataError, match="not class-like"):
        load_classification_split(str(tmp_path / "ds"), "train")


def test_class_only_in_test_and_empty_split(tmp_path):
    root = rgb_png_folder(tmp_path / "rgb")
    # "forest" exists only in test once its training images are gone.
    for f in (root / "train" / "forest").glob("*.png"):
        f.unlink()
    (root / "train" / "forest").rmdir()
    export = tiny_export(tmp_path / "export")
    args = ["--model_name_or_path", str(export), "--dataset_name_or_path", str(root),
            "--output_dir", str(tmp_path / "out"), *FAST]  # fmt: skip
    with pytest.raises(ClassificationDataError, match=r"classes \['forest'\] appear in"):
        linear_probe.main(args)
    (root / "empty").mkdir()
    (root / "empty" / "farm").mkdir()
    with pytest.raises(ClassificationDataError, match=r"has no split|is empty"):
        load_classification_split(str(root), "empty")


def test_band_mismatch_is_an_error_never_zero_fill(tmp_path):
    root = rgb_png_folder(tmp_path / "rgb")
    no_rgb = tiny_export(tmp_path / "swir", band_names=["B11", "B12"])
    args = ["--dataset_name_or_path", str(root), "--output_dir", str(tmp_path / "o"), *FAST]
    with pytest.raises(BandMismatchError, match="'red' is not among the model's bands"):
        linear_probe.main(["--model_name_or_path", str(no_rgb), *args])
    s2 = tiny_export(tmp_path / "s2")
    with pytest.raises(BandMismatchError, match="lacks the model's bands"):
        linear_probe.main(["--model_name_or_path", str(s2), *args, "--allow_band_subset", "false"])
    # Allowed: an explicit subset, recorded in the results (8-bit PNGs against 16-bit
    # statistics: said, and normalised anyway).
    with pytest.warns(UserWarning, match=r"8-bit input \(uint8 0-255\)"):
        results = linear_probe.main(["--model_name_or_path", str(s2), *args,
                                     "--update_model_card", "false"])  # fmt: skip
    assert results["bands_used"] == ["B04", "B03", "B02"] and results["band_subset"] is True


@pytest.mark.parametrize("config", sorted(Path("recipes/configs").glob("*_*.yaml")),
                         ids=lambda p: p.stem)  # fmt: skip
def test_shipped_configs_parse(config):
    import finetune

    from geofm_hf.classification._cli import parse_recipe_args

    if not config.stem.startswith(("probe_", "finetune_")):
        pytest.skip("not a classification config")
    cls = linear_probe.ProbeArguments if config.stem.startswith("probe_") else (
        finetune.FinetuneArguments)  # fmt: skip
    (args,) = parse_recipe_args(cls, [str(config)])
    assert args.dataset_name_or_path and args.output_dir
