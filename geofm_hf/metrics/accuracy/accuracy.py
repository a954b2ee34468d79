"""Top-1 accuracy: the fraction of predictions equal to the reference label."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = (
    "Top-1 accuracy = (number of predictions equal to the reference) / (number of samples)."
)
_KWARGS = """
Args:
    predictions (`list[int]`): predicted class index per sample.
    references (`list[int]`): true class index per sample.
Returns:
    accuracy (`float`): in [0, 1].
"""


class Accuracy(evaluate.Metric):
    """Top-1 accuracy of class-index predictions."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions), np.asarray(references)
        if predictions.size == 0:
            raise ValueError("accuracy of zero samples is undefined: found no predictions.")
        return {"accuracy": float((predictions == references).mean())}
