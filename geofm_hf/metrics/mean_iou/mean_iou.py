"""Mean intersection-over-union of semantic segmentation maps (ignore index aware)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = (
    "IoU of class k = |pred == k and ref == k| / |pred == k or ref == k| over every labelled "
    "pixel (reference != ignore_index): scikit-learn's jaccard_score. A class absent from both "
    "has IoU NaN and mean_iou leaves it out (the convention of evaluate's mean_iou and "
    "mmsegmentation). Also reports pixel accuracy and per-class accuracy."
)
_KWARGS = """
Args:
    predictions (`list[list[list[int]]]`): predicted class map per image, (H, W).
    references (`list[list[list[int]]]`): reference class map per image, (H, W).
    num_labels (`int`): number of classes.
    ignore_index (`int`, defaults to 255): reference value of unlabelled pixels (not scored).
Returns:
    mean_iou (`float`), per_category_iou (`list[float]`, NaN for classes absent from both),
    overall_accuracy (`float`, the pixel accuracy), mean_accuracy (`float`),
    per_category_accuracy (`list[float]`, NaN for classes absent from the references).
"""


class MeanIoU(evaluate.Metric):
    """Mean IoU from one confusion matrix over all labelled pixels."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {
                    "predictions": datasets.List(datasets.List(datasets.Value("int64"))),
                    "references": datasets.List(datasets.List(datasets.Value("int64"))),
                }
            ),
        )

    def _compute(self, predictions, references, num_labels, ignore_index=255):
        if len(predictions) == 0:
            raise ValueError("mean IoU of zero images is undefined: found no predictions.")
        matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
        for pred, ref in zip(predictions, references):
            pred, ref = np.asarray(pred).reshape(-1), np.asarray(ref).reshape(-1)
            if pred.shape != ref.shape:
                raise ValueError(
                    f"prediction and reference sizes differ: {pred.shape} vs {ref.shape}"
                )
            keep = ref != ignore_index
            pred, ref = pred[keep], ref[keep]
            bad = (ref < 0) | (ref >= num_labels) | (pred < 0) | (pred >= num_labels)
            if bad.any():
                raise ValueError(
                    f"class indices must be in 0..{num_labels - 1} (or ignore_index "
                    f"{ignore_index} in references): found {np.unique(np.r_[ref[bad], pred[bad]])}"
                )
            matrix += np.bincount(ref * num_labels + pred, minlength=num_labels**2).reshape(
                num_labels, num_labels
            )
        if matrix.sum() == 0:
            raise ValueError("every reference pixel is ignore_index: nothing to score.")
        tp = np.diag(matrix).astype(np.float64)
        union = matrix.sum(0) + matrix.sum(1) - tp
        support = matrix.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(support > 0, tp / support, np.nan)
        return {
            "mean_iou": float(np.nanmean(iou)),
            "per_category_iou": iou.tolist(),
            "overall_accuracy": float(tp.sum() / matrix.sum()),
            "mean_accuracy": float(np.nanmean(acc)),
            "per_category_accuracy": acc.tolist(),
        }
