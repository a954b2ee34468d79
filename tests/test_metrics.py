"""The shipped evaluate metric modules equal a numpy computation and load with the Hub offline."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from geofm_hf.classification import (
    classification_metrics,
    confusion_matrix,
    save_confusion_matrix_png,
)
from geofm_hf.metrics import METRICS, load_metric, metric_path


def _numpy_reference(scores, labels, num_classes):
    pred = scores.argmax(1)
    top5 = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    f1s = []
    for c in range(num_classes):
        tp = np.sum((pred == c) & (labels == c))
        fp = np.sum((pred == c) & (labels != c))
        fn = np.sum((pred != c) & (labels == c))
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return (pred == labels).mean(), (top5 == labels[:, None]).any(1).mean(), np.mean(f1s)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_numpy_on_the_same_predictions(seed):
    rng = np.random.default_rng(seed)
    num_classes = 12
    labels = rng.integers(0, num_classes, 300)
    scores = rng.normal(size=(300, num_classes))
    scores[np.arange(300), labels] += rng.uniform(0, 2.5, 300)  # better than chance, not perfect
    got = classification_metrics(scores, labels, num_classes)
    top1, top5, f1 = _numpy_reference(scores, labels, num_classes)
    assert 0.2 < top1 < 0.95 and top5 > top1
    assert got["top1"] == pytest.approx(top1, abs=1e-12)
    assert got["top5"] == pytest.approx(top5, abs=1e-12)
    assert got["macro_f1"] == pytest.approx(f1, abs=1e-12)
    matrix = confusion_matrix(scores.argmax(1), labels, num_classes)
    assert matrix.sum() == 300 and np.trace(matrix) / 300 == pytest.approx(top1)
    np.testing.assert_array_equal(matrix.sum(1), np.bincount(labels, minlength=num_classes))


def test_known_values_and_edge_cases():
    f1 = load_metric("f1")
    # class 0: P=1 R=1 -> 1; class 1: tp 1 fp 0 fn 1 -> 2/3; class 2: tp 1 fp 1 fn 0 -> 2/3.
    assert f1.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])["f1"] == pytest.approx(
        (1 + 2 / 3 + 2 / 3) / 3
    )
    # A class never predicted and never present is left out; one predicted wrongly scores 0.
    assert f1.compute(predictions=[0, 0], references=[0, 0], num_classes=3)["f1"] == 1.0
    assert f1.compute(predictions=[1, 0], references=[0, 0], num_classes=2)["f1"] == pytest.approx(
        (2 / 3 + 0) / 2
    )
    topk = load_metric("top_k_accuracy")
    # Ties rank the lower class index first: label 1 is not in the top-1 of [0.5, 0.5].
    assert topk.compute(predictions=[[0.5, 0.5]], references=[1], k=1)["top_k_accuracy"] == 0.0
    out = topk.compute(predictions=[[0.1, 0.2, 0.7]], references=[0], k=5)
    assert out == {"top_k_accuracy": 1.0, "k": 3}
    with pytest.raises(ValueError, match="zero samples"):
        load_metric("accuracy").compute(predictions=[], references=[])
    with pytest.raises(ValueError, match="Unknown metric 'accurracy'"):
        metric_path("accurracy")
    with pytest.raises(ValueError, match=r"Expected scores of shape \(2, 3\)"):
        classification_metrics(np.zeros((2, 4)), [0, 1], 3)


def test_metric_modules_load_by_path_with_the_hub_offline(tmp_path):
    code = (
        "from geofm_hf.metrics import METRICS, load_metric\n"
        "for m in METRICS: load_metric(m)\n"
        "print(load_metric('accuracy').compute(predictions=[1, 0], references=[1, 1]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9",
           "HF_HOME": str(tmp_path / "hf")}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'accuracy': 0.5" in out.stdout
    assert set(METRICS) == {"accuracy", "top_k_accuracy", "f1", "mean_iou"}


def test_confusion_matrix_png(tmp_path):
    matrix = confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3)
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    path = save_confusion_matrix_png(matrix, ["a", "b", "c"], tmp_path / "cm.png", title="t")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob("*.tmp*"))
