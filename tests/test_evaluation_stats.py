"""Uncertainty and the kNN probe: bootstrap intervals, the paired bootstrap, weighted kNN."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import f1_score

from geofm_hf.classification import classification_metrics
from geofm_hf.classification.knn import knn_scores
from geofm_hf.classification.probe import validation_split
from geofm_hf.classification.stats import (
    bootstrap_interval,
    macro_f1_batch,
    paired_bootstrap,
    summarize_predictions,
)


def _predictions(n: int, accuracy: float, num_classes: int = 5, seed: int = 0):
    """References and predictions that are right on a fraction ``accuracy`` of samples."""
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, num_classes, n)
    wrong = rng.random(n) > accuracy
    preds = refs.copy()
    preds[wrong] = (refs[wrong] + rng.integers(1, num_classes, wrong.sum())) % num_classes
    return preds, refs


def test_interval_covers_the_point_and_shrinks_with_more_test_samples():
    widths = {}
    for n in (100, 400, 3200):
        preds, refs = _predictions(n, 0.7, seed=n)
        top1 = float((preds == refs).mean())
        lo, hi = bootstrap_interval(preds, refs, 5, "top1")
        assert lo < top1 < hi
        # The binomial standard error: a 95 % interval is about +-1.96 of it.
        se = (top1 * (1 - top1) / n) ** 0.5
        assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)
        f1 = macro_f1_batch(preds, refs, 5)[0]
        f_lo, f_hi = bootstrap_interval(preds, refs, 5, "macro_f1")
        assert f_lo < f1 < f_hi
        widths[n] = hi - lo
    assert widths[400] < 0.65 * widths[100] and widths[3200] < 0.45 * widths[400]  # ~1/sqrt(n)


def test_macro_f1_batch_matches_the_shipped_metric_module():
    preds, refs = _predictions(300, 0.6, num_classes=6, seed=3)
    preds[preds == 5] = 4  # class 5 never predicted: F1 0 for it, as the module says
    scores = np.eye(6)[preds]
    expected = classification_metrics(scores, refs, 6)["macro_f1"]
    assert macro_f1_batch(preds, refs, 6)[0] == pytest.approx(expected, abs=1e-12)
    # A class absent from predictions and references scores 0, as in the module (scikit-learn).
    assert macro_f1_batch(np.array([0, 1]), np.array([0, 1]), 4)[0] == 0.5
    rng = np.random.default_rng(0)
    rows_p, rows_r = rng.integers(0, 4, (20, 15)), rng.integers(0, 3, (20, 15))  # 3: never a ref
    rows_p[rows_p == 2] = 1  # 2: never predicted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        want = [f1_score(r, p, labels=range(6), average="macro") for p, r in zip(rows_p, rows_r)]
    np.testing.assert_allclose(macro_f1_batch(rows_p, rows_r, 6), want, atol=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_macro_f1_batch_equals_scikit_learn(seed):
    """Row by row against ``f1_score(average="macro", labels=range(C), zero_division=0)``, with
    classes absent from a row's references, its predictions, or both."""
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 9))
    rows, n = int(rng.integers(1, 12)), int(rng.integers(1, 40))
    refs = rng.integers(0, max(1, num_classes - 1), (rows, n))  # the last class: never a reference
    preds = np.where(rng.random((rows, n)) < 0.5, refs, rng.integers(0, num_classes, (rows, n)))
    preds[:, : n // 3] = refs[:, : n // 3]  # some right answers in every row
    if num_classes > 2:
        preds[preds == 0] = 1  # class 0 never predicted
        even = preds[::2]
        even[even == num_classes - 1] = 1  # the last class in neither, in every other row
    want = [
        f1_score(r, p, labels=range(num_classes), average="macro", zero_division=0)
        for p, r in zip(preds, refs)
    ]
    np.testing.assert_allclose(macro_f1_batch(preds, refs, num_classes), want, atol=1e-12)


def test_macro_f1_batch_refuses_class_indices_out_of_range():
    with pytest.raises(ValueError, match=r"references must be class indices in 0\.\.3"):
        macro_f1_batch(np.array([[0, 1]]), np.array([[0, 4]]), 4)
    with pytest.raises(ValueError, match=r"predictions must be class indices in 0\.\.3 .*\[-1\]"):
        macro_f1_batch(np.array([[0, -1]]), np.array([[0, 1]]), 4)
    with pytest.raises(ValueError, match="predictions must be class indices"):
        bootstrap_interval([0, 7, 1], [0, 1, 1], 3, "macro_f1", resamples=10)
    with pytest.raises(ValueError, match=r"references must be class indices in 0\.\.2 .*\[3\]"):
        paired_bootstrap([0, 1, 1], [0, 1, 2], [0, 3, 1], 3, "macro_f1", resamples=10)
    assert paired_bootstrap([0, 1, 1], [0, 1, 2], [0, 3, 1], 3, "top1", resamples=10)  # no classes


def test_seed_summary_mean_std_and_interval_of_the_seed_mean():
    refs = _predictions(500, 0.7)[1]
    per_seed = []
    for seed in range(4):
        preds, _ = _predictions(500, 0.6 + 0.05 * seed, seed=10 + seed)
        preds = np.where(np.random.default_rng(seed).random(500) < 0.5, refs, preds)
        scores = np.eye(5)[preds]
        per_seed.append({"metrics": classification_metrics(scores, refs, 5), "predictions": preds})
    s = summarize_predictions(per_seed, refs, 5, seeds=[0, 1, 2, 3], resamples=500)
    values = [r["metrics"]["top1"] for r in per_seed]
    assert s["top1_per_seed"] == values and s["top1"] == pytest.approx(np.mean(values))
    assert s["top1_std"] == pytest.approx(np.std(values, ddof=1))
    assert s["top1_ci95"][0] < s["top1"] < s["top1_ci95"][1]
    assert s["macro_f1_ci95"][0] < s["macro_f1"] < s["macro_f1_ci95"][1]
    assert len(s["test_predictions"]) == 4 and s["num_seeds"] == 4
    with pytest.raises(ValueError, match="at least one seed"):
        summarize_predictions([], refs, 5, seeds=[])


def test_paired_bootstrap_of_two_runs_on_the_same_test_set():
    preds, refs = _predictions(400, 0.6, seed=1)
    same = paired_bootstrap(preds, preds, refs, 5)
    assert same["difference"] == 0 and same["ci95"] == [0.0, 0.0]
    better = preds.copy()
    fix = np.flatnonzero(better != refs)[:40]  # 10 points better on the same chips
    better[fix] = refs[fix]
    d = paired_bootstrap(better, preds, refs, 5)
    assert d["difference"] == pytest.approx(0.1)
    assert 0 < d["ci95"][0] < 0.1 < d["ci95"][1] and d["p_value"] < 0.01
    # Pairing: far narrower than the unpaired interval (independent errors: widths add in
    # quadrature), since the chips both runs get right or wrong cancel.
    width_a = np.subtract(*bootstrap_interval(better, refs, 5)[::-1])
    width_b = np.subtract(*bootstrap_interval(preds, refs, 5)[::-1])
    assert d["ci95"][1] - d["ci95"][0] < 0.6 * (width_a**2 + width_b**2) ** 0.5
    with pytest.raises(ValueError, match="same 400 test samples"):
        paired_bootstrap(preds[:300], preds, refs, 5)


def test_knn_on_separable_features_is_perfect_and_on_random_labels_near_chance():
    gen = torch.Generator().manual_seed(0)
    num_classes, dim = 5, 32
    centers = torch.randn(num_classes, dim, generator=gen) * 5

    def sample(n):
        labels = torch.randint(num_classes, (n,), generator=gen)
        return centers[labels] + torch.randn(n, dim, generator=gen), labels

    train_x, train_y = sample(500)
    test_x, test_y = sample(300)
    scores = knn_scores(train_x, train_y, test_x, num_classes)
    assert scores.shape == (300, num_classes)
    torch.testing.assert_close(scores.sum(1), torch.ones(300, dtype=torch.float64))
    assert (scores.argmax(1) == test_y).float().mean() >= 0.99
    # Labels that carry no information about the features: about 1 / num_classes.
    random_y = torch.randint(num_classes, (500,), generator=gen)
    test_random = torch.randint(num_classes, (300,), generator=gen)
    chance = knn_scores(train_x, random_y, test_x, num_classes).argmax(1) == test_random
    assert abs(chance.float().mean().item() - 1 / num_classes) < 0.08


def test_knn_votes_are_temperature_weighted_over_the_k_nearest():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.02]])
    scores = knn_scores(train, labels, test, 2, k=2, temperature=0.07)
    sims = (
        torch.nn.functional.normalize(train.double(), dim=1)
        @ torch.nn.functional.normalize(test.double(), dim=1).T
    )
    w = (sims[:2, 0] / 0.07).exp()  # the two nearest: samples 0 and 1
    torch.testing.assert_close(scores[0], torch.stack([w[0], w[1]]) / w.sum())
    with pytest.raises(ValueError, match="same width"):
        knn_scores(train, labels, torch.ones(1, 3), 2)


def test_validation_split_is_stratified_and_disjoint():
    labels = torch.tensor([0] * 50 + [1] * 20 + [2] * 1)
    fit, val = validation_split(labels, 0.2, seed=0)
    assert set(fit.tolist()).isdisjoint(val.tolist()) and len(fit) + len(val) == 71
    assert torch.bincount(labels[val], minlength=3).tolist() == [10, 4, 0]
    assert torch.equal(validation_split(labels, 0.2, seed=0)[1], val)
    with pytest.raises(ValueError, match="val_fraction"):
        validation_split(labels, 1.0)
