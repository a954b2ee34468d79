"""The shipped evaluate metric modules equal scikit-learn and load with the Hub offline."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import sklearn.metrics
from sklearn.exceptions import UndefinedMetricWarning

from geofm_hf.classification import (
    classification_metrics,
    confusion_matrix,
    save_confusion_matrix_png,
)
from geofm_hf.metrics import METRICS, load_metric, metric_path


def _sklearn(name, pred, ref, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return getattr(sklearn.metrics, name)(ref, pred, **kw)


def _cases(seed):
    """Random label sets with classes absent in each possible way: only in the references
    (never predicted), only predicted, and (with ``labels=``) in neither."""
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(3, 12))
    n = int(rng.integers(1, 60))
    ref = rng.choice(num_classes - 2, n)  # the last two classes never occur in the references
    pred = np.where(rng.random(n) < 0.5, ref, rng.choice(num_classes - 1, n))  # last: never
    missing = int(rng.integers(0, num_classes - 2))
    pred[pred == missing] = (missing + 1) % (num_classes - 2)  # one more never predicted
    scores = rng.normal(size=(n, num_classes))
    if seed % 4 == 0:  # ties
        scores = np.round(scores)
    return num_classes, pred, ref, scores


def _ours(metric, **kw):
    # The f1 module's default zero_division="warn" warns as scikit-learn does (asserted in
    # test_a_class_absent_from_both_counts_in_the_macro_mean); here only the values are compared.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return metric.compute(**kw)


@pytest.fixture(scope="module")
def metric():
    return {name: load_metric(name) for name in METRICS}


@pytest.mark.parametrize("seed", range(24))
def test_metrics_equal_scikit_learn_with_absent_classes(seed, metric):
    num_classes, pred, ref, scores = _cases(seed)
    f1 = metric["f1"]
    labels = list(range(num_classes))
    for average in ("macro", "micro", "weighted"):
        for kw in ({}, {"labels": labels}, {"labels": labels, "zero_division": np.nan}):
            got = _ours(f1, predictions=pred, references=ref, average=average, **kw)["f1"]
            want = _sklearn("f1_score", pred, ref, average=average, **kw)
            assert got == pytest.approx(want, abs=1e-12, nan_ok=True), (average, kw)
    per_class = _ours(f1, predictions=pred, references=ref, labels=labels, average=None)["f1"]
    np.testing.assert_allclose(per_class, _sklearn("f1_score", pred, ref, labels=labels,
                                                   average=None))  # fmt: skip
    accuracy = metric["accuracy"].compute(predictions=pred, references=ref)["accuracy"]
    assert accuracy == pytest.approx(_sklearn("accuracy_score", pred, ref), abs=1e-12)
    topk = metric["top_k_accuracy"]
    for k in range(1, num_classes + 2):
        got = topk.compute(predictions=scores, references=ref, k=k)
        want = _sklearn("top_k_accuracy_score", scores, ref, k=min(k, num_classes), labels=labels)
        assert got == {"top_k_accuracy": pytest.approx(want, abs=1e-12), "k": min(k, num_classes)}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_classification_metrics_equal_scikit_learn(seed):
    num_classes, _, ref, scores = _cases(seed)
    labels = list(range(num_classes))
    got = classification_metrics(scores, ref, num_classes)
    assert got["top1"] == pytest.approx(_sklearn("accuracy_score", scores.argmax(1), ref))
    assert got["top5"] == pytest.approx(_sklearn("top_k_accuracy_score", scores, ref,
                                                 k=min(5, num_classes), labels=labels))  # fmt: skip
    assert got["macro_f1"] == pytest.approx(
        _sklearn("f1_score", scores.argmax(1), ref, labels=labels, average="macro")
    )
    matrix = confusion_matrix(scores.argmax(1), ref, num_classes)
    np.testing.assert_array_equal(
        matrix, sklearn.metrics.confusion_matrix(ref, scores.argmax(1), labels=labels)
    )


def test_a_class_absent_from_both_counts_in_the_macro_mean():
    """The old numpy F1 left such a class out (1.0 here); scikit-learn scores it 0."""
    f1 = load_metric("f1")
    with pytest.warns(UndefinedMetricWarning):
        got = f1.compute(predictions=[0, 1], references=[0, 1], labels=[0, 1, 2])["f1"]
    assert got == pytest.approx(2 / 3)
    # zero_division=nan leaves it out of the mean, as the per-class list shows
    out = f1.compute(predictions=[0, 1], references=[0, 1], labels=[0, 1, 2], zero_division=np.nan)
    assert out["f1"] == 1.0
    per_class = f1.compute(predictions=[0, 1], references=[0, 1], labels=[0, 1, 2], average=None,
                           zero_division=np.nan)["f1"]  # fmt: skip
    assert per_class[:2] == [1.0, 1.0] and np.isnan(per_class[2])


def test_top_k_with_two_classes_and_ties():
    topk = load_metric("top_k_accuracy")
    scores = [[0.2, 0.8], [0.9, 0.1], [3.0, -1.0], [0.5, 0.5]]
    got = topk.compute(predictions=scores, references=[1, 0, 1, 1], k=1)["top_k_accuracy"]
    # ties rank the higher class index first, as scikit-learn's multi-class ranking does
    assert got == 0.75
    assert topk.compute(predictions=scores, references=[1, 0, 1, 1], k=2)["top_k_accuracy"] == 1
    with pytest.raises(ValueError, match=r"class indices in 0..1 .*found \[2\]"):
        topk.compute(predictions=scores, references=[1, 0, 2, 1], k=1)


def test_known_values_and_edge_cases():
    f1 = load_metric("f1")
    # class 0: P=1 R=1 -> 1; class 1: tp 1 fp 0 fn 1 -> 2/3; class 2: tp 1 fp 1 fn 0 -> 2/3.
    assert f1.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])["f1"] == pytest.approx(
        (1 + 2 / 3 + 2 / 3) / 3
    )
    # A class predicted but never in the references scores 0.
    assert f1.compute(predictions=[1, 0], references=[0, 0])["f1"] == pytest.approx((2 / 3 + 0) / 2)
    topk = load_metric("top_k_accuracy")
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


@pytest.mark.parametrize("seed", range(12))
def test_confusion_matrix_counts_every_pair_with_absent_classes(seed):
    """Against a plain count of (reference, prediction) pairs; ``_cases`` leaves classes absent
    from the references, from the predictions and from both."""
    num_classes, pred, ref, _ = _cases(seed)
    want = np.zeros((num_classes, num_classes), dtype=np.int64)
    for r, p in zip(ref.tolist(), pred.tolist()):
        want[r, p] += 1
    got = confusion_matrix(pred, ref, num_classes)
    assert got.dtype == np.int64 and got.shape == (num_classes, num_classes)
    np.testing.assert_array_equal(got, want)
    assert not got[num_classes - 1].any() and not got[:, num_classes - 1].any()  # in neither
    np.testing.assert_array_equal(confusion_matrix([], [], 3), np.zeros((3, 3), dtype=np.int64))


def test_confusion_matrix_refuses_class_indices_out_of_range():
    """scikit-learn with ``labels=`` would drop these pairs silently; the counts would then sum
    to fewer than the samples."""
    with pytest.raises(ValueError, match=r"references must be class indices in 0\.\.2 .*found 1 "
                                         r"outside, e\.g\. \[3\]"):  # fmt: skip
        confusion_matrix([0, 1, 2], [0, 3, 2], 3)
    with pytest.raises(ValueError, match=r"predictions must be class indices in 0\.\.2 .*found "
                                         r"2 outside, e\.g\. \[-1, 5\]"):  # fmt: skip
        confusion_matrix([-1, 1, 5], [0, 1, 2], 3)
    with pytest.raises(ValueError, match="one prediction per reference: found 2 predictions and 3"):
        confusion_matrix([0, 1], [0, 1, 2], 3)


def test_confusion_matrix_png(tmp_path):
    matrix = confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3)
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    path = save_confusion_matrix_png(matrix, ["a", "b", "c"], tmp_path / "cm.png", title="t")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("seed", range(6))
def test_mean_iou_leaves_classes_absent_from_both_out(seed, metric):
    """mean_iou's convention (evaluate's and mmseg's): a class in neither the labelled reference
    pixels nor the predictions has IoU NaN and is left out of the mean; every other class is
    scikit-learn's Jaccard index over the labelled pixels (ignore_index excluded)."""
    rng = np.random.default_rng(seed)
    num_labels = 6
    ref = rng.choice([0, 1, 2, 255], size=(2, 8, 8))  # 3..5 never in the references
    pred = rng.choice([0, 1, 3], size=(2, 8, 8))  # 3 predicted only; 2 never; 4, 5 absent
    out = metric["mean_iou"].compute(predictions=pred, references=ref, num_labels=num_labels)
    keep = ref != 255
    jaccard = _sklearn("jaccard_score", pred[keep], ref[keep], labels=list(range(num_labels)),
                       average=None)  # fmt: skip
    iou = np.array(out["per_category_iou"])
    np.testing.assert_allclose(iou[:4], jaccard[:4])
    assert iou[2] == 0 and np.isnan(iou[4:]).all()
    want = _sklearn("jaccard_score", pred[keep], ref[keep], labels=[0, 1, 2, 3], average="macro")
    assert out["mean_iou"] == pytest.approx(want)
    assert out["overall_accuracy"] == pytest.approx(
        _sklearn("accuracy_score", pred[keep], ref[keep])
    )
