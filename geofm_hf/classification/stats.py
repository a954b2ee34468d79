"""Uncertainty of classification results: bootstrap intervals over test samples, the paired
bootstrap of a difference between two runs on the same test set, and per-seed summaries.

Two sources of noise are kept apart. ``std`` over seeds is the optimisation noise of the probe or
fine-tune (initialisation, data order); the 95 % interval is the sampling noise of a finite test
set: the percentile bootstrap over test samples of the *seed-averaged* metric (each resample
draws test indices once and scores every seed's predictions on them). On 169 test chips the
second dominates: a top-1 near 70 % has a standard error of about 3.5 points.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .metrics import check_class_indices

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "bootstrap_interval",
    "macro_f1_batch",
    "paired_bootstrap",
    "summarize_predictions",
    "top1_batch",
]

BOOTSTRAP_RESAMPLES = 2000


def top1_batch(predictions: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Top-1 of each row: ``predictions`` and ``references`` ``(R, N)`` -> ``(R,)``."""
    return (predictions == references).mean(axis=-1)


def macro_f1_batch(predictions: np.ndarray, references: np.ndarray, num_classes: int) -> np.ndarray:
    """Macro-F1 of each row, as the shipped ``f1`` metric (scikit-learn's ``f1_score`` with
    ``labels=range(num_classes)``): per class ``2tp / (2tp + fp + fn)``, 0 for a class in neither
    the row's predictions nor its references, averaged over all ``num_classes`` classes.

    Vectorised over rows on purpose (the bootstrap scores thousands of resamples per call);
    ``test_macro_f1_batch_equals_scikit_learn`` holds it to ``f1_score`` row by row. A value
    outside ``0..num_classes-1`` is a ``ValueError`` (it would land in another row's counts)."""
    predictions = np.atleast_2d(predictions)
    references = np.atleast_2d(references)
    check_class_indices("references", references, num_classes)
    check_class_indices("predictions", predictions, num_classes)
    return _macro_f1_rows(predictions, references, num_classes)


def _macro_f1_rows(predictions: np.ndarray, references: np.ndarray, num_classes: int) -> np.ndarray:
    """:func:`macro_f1_batch` of 2-D inputs already checked (the bootstrap checks its inputs
    once: resampling them makes no new values)."""
    rows = np.arange(predictions.shape[0])[:, None]
    # (R, C, C) confusion counts per row, built with one bincount.
    flat = (rows * num_classes + references) * num_classes + predictions
    counts = np.bincount(flat.ravel(), minlength=len(rows) * num_classes**2)
    matrix = counts.reshape(len(rows), num_classes, num_classes)
    tp = np.diagonal(matrix, axis1=1, axis2=2)
    fp = matrix.sum(axis=1) - tp
    fn = matrix.sum(axis=2) - tp
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(tp.shape, dtype=float), where=denominator > 0)
    return f1.mean(axis=1)


def _metric(name: str, num_classes: int, references: np.ndarray, *runs: np.ndarray):
    """The row-wise function of ``name``; for ``macro_f1`` the class indices of the references
    and of every run are checked here, once."""
    if name == "top1":
        return top1_batch
    if name == "macro_f1":
        check_class_indices("references", references, num_classes)
        for predictions in runs:
            check_class_indices("predictions", predictions, num_classes)
        return lambda p, r: _macro_f1_rows(p, r, num_classes)
    raise ValueError(f"metric must be 'top1' or 'macro_f1': found {name!r}.")


def _resampled(runs: list[np.ndarray], references: np.ndarray, fn, resamples: int, seed: int):
    """``(len(runs), resamples)``: each run's seed-averaged metric on the same resamples of the
    test indices. Resamples go in chunks of about 2e7 indices, so 30k test samples stay small."""
    n = len(references)
    if n == 0:
        raise ValueError("A bootstrap over test samples needs at least one sample: found none.")
    rng = np.random.default_rng(seed)
    chunk = max(1, 20_000_000 // n)
    out = np.empty((len(runs), resamples))
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        refs = references[idx]
        for i, predictions in enumerate(runs):
            out[i, start : start + len(idx)] = np.mean([fn(p[idx], refs) for p in predictions], 0)
    return out


def bootstrap_interval(
    predictions,
    references,
    num_classes: int,
    metric: str = "top1",
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the seed-averaged ``metric`` over test samples.

    ``predictions``: ``(N,)`` or ``(S, N)`` predicted classes of ``S`` seeds on the same ``N`` test
    samples; ``references``: ``(N,)``. Returns ``(lo, hi)`` at ``level``.
    """
    predictions = np.atleast_2d(np.asarray(predictions, dtype=np.int64))
    references = np.asarray(references, dtype=np.int64)
    if predictions.shape[1] != len(references):
        raise ValueError(
            f"Expected predictions of {len(references)} test samples per seed, found "
            f"{predictions.shape[1]}."
        )
    fn = _metric(metric, num_classes, references, predictions)
    (values,) = _resampled([predictions], references, fn, resamples, seed)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def paired_bootstrap(
    predictions_a,
    predictions_b,
    references,
    num_classes: int,
    metric: str = "top1",
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Difference ``a - b`` of the seed-averaged ``metric`` of two runs on the same test set.

    Each resample draws the test indices once and scores both runs on them, so the variation that
    is common to both (easy or hard chips) cancels: the interval is much narrower than the two
    single-run intervals would suggest. Returns ``{"difference", "ci95": [lo, hi], "p_value"}``
    with ``p_value`` the two-sided bootstrap probability of a difference of the other sign (or 0).
    """
    a = np.atleast_2d(np.asarray(predictions_a, dtype=np.int64))
    b = np.atleast_2d(np.asarray(predictions_b, dtype=np.int64))
    references = np.asarray(references, dtype=np.int64)
    if a.shape[1] != len(references) or b.shape[1] != len(references):
        raise ValueError(
            f"Both runs must predict the same {len(references)} test samples: found "
            f"{a.shape[1]} and {b.shape[1]}."
        )
    fn = _metric(metric, num_classes, references, a, b)
    point = float(np.mean(fn(a, references[None])) - np.mean(fn(b, references[None])))
    values_a, values_b = _resampled([a, b], references, fn, resamples, seed)
    diffs = values_a - values_b
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(diffs, [tail, 100 - tail])
    p = 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0))
    return {"difference": point, "ci95": [float(lo), float(hi)], "p_value": float(min(p, 1.0))}


def summarize_predictions(
    per_seed: list[dict[str, Any]],
    references,
    num_classes: int,
    *,
    seeds: list[int] | None,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> dict[str, Any]:
    """The reported numbers of one protocol over seeds.

    ``per_seed``: one ``{"metrics": {top1, top5, top5_k, macro_f1}, "predictions": (N,)}`` per
    seed. Returns the seed means (``top1``, ``top5``, ``macro_f1``), ``*_std`` (sample std over
    seeds, 0 for one seed), ``*_per_seed``, ``top1_ci95`` / ``macro_f1_ci95`` (bootstrap over test
    samples of the seed mean), the predictions per seed (for paired comparisons) and the method.
    """
    if not per_seed:
        raise ValueError("summarize_predictions needs at least one seed's results: found none.")
    predictions = np.stack([np.asarray(r["predictions"], dtype=np.int64) for r in per_seed])
    out: dict[str, Any] = {"seeds": seeds, "num_seeds": len(per_seed)}
    for key in ("top1", "top5", "macro_f1"):
        values = [float(r["metrics"][key]) for r in per_seed]
        out[key] = float(np.mean(values))
        out[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        out[f"{key}_per_seed"] = values
    out["top5_k"] = per_seed[0]["metrics"]["top5_k"]
    for key in ("top1", "macro_f1"):
        out[f"{key}_ci95"] = list(
            bootstrap_interval(predictions, references, num_classes, key, resamples=resamples)
        )
    out["ci_method"] = (
        f"95% percentile bootstrap over the {predictions.shape[1]} test samples ({resamples} "
        f"resamples) of the mean over {len(per_seed)} seed(s)"
    )
    out["test_predictions"] = predictions.tolist()
    return out
