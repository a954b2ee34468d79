"""Top-k accuracy: the fraction of samples whose label is among the k highest scores."""

import warnings

import datasets
import evaluate
import numpy as np
from sklearn.metrics import top_k_accuracy_score

_DESCRIPTION = (
    "Top-k accuracy, from scikit-learn's top_k_accuracy_score: a sample counts as correct when "
    "its reference label is among the k classes with the highest scores (equal scores rank the "
    "higher class index first, as scikit-learn). With k >= the number of classes every sample "
    "is correct."
)
_KWARGS = """
Args:
    predictions (`list[list[float]]`): class scores (logits or probabilities) per sample; column
        c scores class c.
    references (`list[int]`): true class index per sample.
    k (`int`, defaults to 5): number of top-scoring classes to accept.
Returns:
    top_k_accuracy (`float`): in [0, 1]; `k` (`int`): the k used, capped at the class count.
"""


class TopKAccuracy(evaluate.Metric):
    """Top-k accuracy from per-class scores."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, k=5):
        scores = np.asarray(predictions, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[0] == 0:
            raise ValueError(
                f"predictions must be per-class scores of shape (samples, classes): found "
                f"shape {scores.shape}."
            )
        if k < 1:
            raise ValueError(f"k must be >= 1: found {k}.")
        classes = scores.shape[1]
        references = np.asarray(references)
        bad = references[(references < 0) | (references >= classes)]
        if bad.size:
            raise ValueError(
                f"references must be class indices in 0..{classes - 1} (one per score column): "
                f"found {np.unique(bad).tolist()}."
            )
        k = min(int(k), classes)
        if classes < 3:
            # scikit-learn reads labels 0/1 as a binary problem and wants one column of scores;
            # a constant column below every score keeps the ranking and makes it multi-class.
            low = np.full((len(scores), 3 - classes), np.nanmin(scores) - 1)
            scores = np.hstack([scores, low])
        with warnings.catch_warnings():
            # k == classes: every sample is correct, as documented; not worth a warning.
            warnings.filterwarnings("ignore", message=".*will result in a perfect score")
            accuracy = top_k_accuracy_score(
                references, scores, k=k, labels=np.arange(scores.shape[1])
            )
        return {"top_k_accuracy": float(accuracy), "k": k}
