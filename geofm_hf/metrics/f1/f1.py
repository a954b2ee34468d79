"""F1 score for multi-class predictions, macro-averaged by default."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = (
    "F1 = 2 * precision * recall / (precision + recall) per class. 'macro' averages it over the "
    "classes (each class weighs the same, whatever its size); a class with no prediction and no "
    "reference is left out; a class with zero precision and recall scores 0."
)
_KWARGS = """
Args:
    predictions (`list[int]`): predicted class index per sample.
    references (`list[int]`): true class index per sample.
    num_classes (`int`, *optional*): classes 0..num_classes-1 to average over (defaults to those
        seen in predictions or references).
    average (`str`, defaults to "macro"): "macro", "micro" or "none" (per-class list).
Returns:
    f1 (`float` or `list[float]`).
"""


class F1(evaluate.Metric):
    """Multi-class F1 (macro, micro or per class) computed with numpy."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, num_classes=None, average="macro"):
        pred, ref = np.asarray(predictions), np.asarray(references)
        if pred.size == 0:
            raise ValueError("F1 of zero samples is undefined: found no predictions.")
        if average not in ("macro", "micro", "none"):
            raise ValueError(f"average must be 'macro', 'micro' or 'none': found {average!r}.")
        if average == "micro":  # single-label multi-class: micro F1 equals accuracy
            return {"f1": float((pred == ref).mean())}
        classes = np.arange(num_classes) if num_classes else np.union1d(pred, ref)
        per_class = []
        for c in classes:
            tp = np.sum((pred == c) & (ref == c))
            fp = np.sum((pred == c) & (ref != c))
            fn = np.sum((pred != c) & (ref == c))
            if tp + fp + fn == 0:
                per_class.append(np.nan)  # absent from both: says nothing about this class
                continue
            per_class.append(2 * tp / (2 * tp + fp + fn))
        values = np.asarray(per_class, dtype=np.float64)
        if average == "none":
            return {"f1": [None if np.isnan(v) else float(v) for v in values]}
        return {"f1": float(np.nanmean(values))}
