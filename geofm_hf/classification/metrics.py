"""Classification metrics through the shipped ``evaluate`` modules, and the confusion matrix."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._atomic import atomic_savefig

__all__ = [
    "check_class_indices",
    "classification_metrics",
    "confusion_matrix",
    "save_confusion_matrix_png",
]


def classification_metrics(scores, references, num_classes: int) -> dict[str, float]:
    """``top1``, ``top5`` (``top5_k``: the k used, capped at ``num_classes``) and ``macro_f1``.

    ``scores`` ``(N, num_classes)`` logits or probabilities; ``references`` ``(N,)`` class indices.
    Computed with the metric modules in :mod:`geofm_hf.metrics` (loaded by path, offline), which
    call scikit-learn: ``macro_f1`` averages all ``num_classes`` classes, so a class absent from
    both the predictions and the references scores 0 (``zero_division=0`` said outright: a small
    evaluation set without some class is expected, not a warning at every evaluation).
    """
    from ..metrics import load_metric

    scores = np.asarray(scores, dtype=np.float64)
    references = np.asarray(references, dtype=np.int64)
    if scores.ndim != 2 or scores.shape != (len(references), num_classes):
        raise ValueError(
            f"Expected scores of shape ({len(references)}, {num_classes}), found {scores.shape}."
        )
    predictions = scores.argmax(axis=1)
    top1 = load_metric("accuracy").compute(predictions=predictions, references=references)
    top5 = load_metric("top_k_accuracy").compute(predictions=scores, references=references, k=5)
    labels = list(range(num_classes))
    f1 = load_metric("f1").compute(
        predictions=predictions, references=references, labels=labels, zero_division=0.0
    )
    return {
        "top1": top1["accuracy"],
        "top5": top5["top_k_accuracy"],
        "top5_k": top5["k"],
        "macro_f1": f1["f1"],
    }


def check_class_indices(name: str, values: np.ndarray, num_classes: int) -> None:
    """Raise a clear ``ValueError`` when ``values`` holds anything outside ``0..num_classes-1``."""
    values = np.asarray(values)
    if values.size == 0 or (values.min() >= 0 and values.max() < num_classes):
        return
    bad = values[(values < 0) | (values >= num_classes)]
    shown = sorted({int(v) for v in bad[:1000]})[:10]
    raise ValueError(
        f"{name} must be class indices in 0..{num_classes - 1} (num_classes={num_classes}): "
        f"found {bad.size} outside, e.g. {shown}. Check that num_classes matches the label "
        "names the model was trained on."
    )


def confusion_matrix(predictions, references, num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` int64 counts; rows = true class, columns = predicted.

    scikit-learn's ``confusion_matrix`` with ``labels=range(num_classes)``, so a class absent from
    both gets a zero row and column. scikit-learn drops pairs whose label is not among ``labels``
    without a word; here a value outside ``0..num_classes-1`` is a ``ValueError`` instead.
    """
    import sklearn.metrics

    predictions = np.asarray(predictions, dtype=np.int64).ravel()
    references = np.asarray(references, dtype=np.int64).ravel()
    if predictions.shape != references.shape:
        raise ValueError(
            f"Expected one prediction per reference: found {predictions.size} predictions and "
            f"{references.size} references."
        )
    check_class_indices("references", references, num_classes)
    check_class_indices("predictions", predictions, num_classes)
    if references.size == 0:  # scikit-learn refuses empty inputs; no samples, no counts
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    matrix = sklearn.metrics.confusion_matrix(
        references, predictions, labels=np.arange(num_classes)
    )
    return matrix.astype(np.int64, copy=False)


def save_confusion_matrix_png(
    matrix: np.ndarray, label_names: list[str], path: str | os.PathLike, title: str = ""
) -> Path:
    """Write the confusion matrix (row-normalised colours, counts printed) as a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(label_names)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), label_names, rotation=90)
    ax.set_yticks(range(n), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                color = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    return atomic_savefig(fig, path, format="png")
