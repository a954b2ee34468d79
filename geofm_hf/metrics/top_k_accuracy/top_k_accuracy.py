"""Top-k accuracy: the fraction of samples whose label is among the k highest scores."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = (
    "Top-k accuracy: a sample counts as correct when its reference label is among the k classes "
    "with the highest scores. With k >= the number of classes every sample is correct."
)
_KWARGS = """
Args:
    predictions (`list[list[float]]`): class scores (logits or probabilities) per sample.
    references (`list[int]`): true class index per sample.
    k (`int`, defaults to 5): number of top-scoring classes to accept.
Returns:
    top_k_accuracy (`float`): in [0, 1]; `k` (`int`): the k used, capped at the class count.
"""


class TopKAccuracy(evaluate.Metric):
    """Top-k accuracy from per-class scores (ties are broken by the lower class index)."""

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
        scores, references = np.asarray(predictions, dtype=np.float64), np.asarray(references)
        if scores.ndim != 2 or scores.shape[0] == 0:
            raise ValueError(
                f"predictions must be per-class scores of shape (samples, classes): found "
                f"shape {scores.shape}."
            )
        if k < 1:
            raise ValueError(f"k must be >= 1: found {k}.")
        k = min(int(k), scores.shape[1])
        # Stable sort of the negated scores: equal scores rank the lower class index first.
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return {"top_k_accuracy": float((top == references[:, None]).any(axis=1).mean()), "k": k}
