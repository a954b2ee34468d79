"""F1 score for multi-class predictions, macro-averaged by default: scikit-learn's ``f1_score``."""

import datasets
import evaluate
from sklearn.metrics import f1_score

_DESCRIPTION = (
    "F1 = 2 * precision * recall / (precision + recall) per class, from scikit-learn's f1_score. "
    "'macro' averages it over the classes (each class weighs the same, whatever its size), "
    "'weighted' by their reference counts, 'micro' pools every sample. The classes are `labels`, "
    "else those seen in predictions or references; a listed class absent from both scores "
    "`zero_division` (0 by default, as scikit-learn: it counts in the macro mean; NaN leaves it "
    "out)."
)
_KWARGS = """
Args:
    predictions (`list[int]`): predicted class index per sample.
    references (`list[int]`): true class index per sample.
    labels (`list[int]`, *optional*): the classes to score (e.g. `range(num_classes)`).
    average (`str` or `None`, defaults to "macro"): "macro", "weighted", "micro", or `None` for
        the per-class list.
    zero_division (`"warn"`, `0.0`, `1.0` or `nan`, defaults to "warn"): the score of a class
        without predictions or references ("warn": 0 and a warning).
Returns:
    f1 (`float` or `list[float]`).
"""


class F1(evaluate.Metric):
    """Multi-class F1 (macro, weighted, micro or per class) computed by scikit-learn."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"
            ],
        )

    def _compute(self, predictions, references, labels=None, average="macro", zero_division="warn"):
        if len(predictions) == 0:
            raise ValueError("F1 of zero samples is undefined: found no predictions.")
        score = f1_score(references, predictions, labels=labels, average=average,
                         zero_division=zero_division)  # fmt: skip
        return {"f1": score.tolist() if average is None else float(score)}
