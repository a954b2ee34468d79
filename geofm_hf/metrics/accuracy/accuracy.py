"""Top-1 accuracy: the fraction of predictions equal to the reference label (scikit-learn)."""

import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = (
    "Top-1 accuracy = (number of predictions equal to the reference) / (number of samples), "
    "from scikit-learn's accuracy_score."
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
        if len(predictions) == 0:
            raise ValueError("accuracy of zero samples is undefined: found no predictions.")
        return {"accuracy": float(accuracy_score(references, predictions))}
