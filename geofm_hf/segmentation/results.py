"""Segmentation scores through the shipped ``mean_iou`` module, the majority-class baseline, the
run's ``results.json`` record and the card's model-index."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "majority_class_baseline",
    "segmentation_metrics",
    "segmentation_record",
    "update_segmentation_card",
]


def segmentation_metrics(predictions, references, num_labels: int, ignore_index: int = 255,
                         label_names: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """``mean_iou``, ``pixel_accuracy``, ``mean_accuracy`` and ``per_class_iou`` (by name)."""
    from ..metrics import load_metric

    out = load_metric("mean_iou").compute(
        predictions=np.asarray(predictions), references=np.asarray(references),
        num_labels=num_labels, ignore_index=ignore_index,
    )  # fmt: skip
    names = label_names or [str(i) for i in range(num_labels)]
    return {
        "mean_iou": out["mean_iou"],
        "pixel_accuracy": out["overall_accuracy"],
        "mean_accuracy": out["mean_accuracy"],
        "per_class_iou": {
            n: (None if np.isnan(v) else v) for n, v in zip(names, out["per_category_iou"])
        },
    }


def majority_class_baseline(train, test) -> tuple[int, dict[str, Any]]:
    """The class most frequent among ``train``'s labelled pixels, and the scores on ``test`` of
    predicting it everywhere: what a model must beat to have learnt anything."""
    num_classes, ignore = len(train.label_names), train.ignore_index
    labelled = train.masks[train.masks != ignore]
    majority = int(np.bincount(labelled, minlength=num_classes).argmax())
    scores = segmentation_metrics(np.full_like(test.masks, majority), test.masks, num_classes,
                                  ignore, train.label_names)  # fmt: skip
    return majority, scores


def segmentation_record(*, metrics: dict[str, Any], baseline: tuple[int, dict[str, Any]],
                        args: Any, train, test, bands, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """The ``results.json`` record of a segmentation run: its scores, the majority-class
    baseline's, and the fields every run records
    (:func:`~geofm_hf.classification.results.run_fields`); ``extra`` adds losses, steps ..."""
    from ..classification.results import run_fields

    majority, scores = baseline
    return {
        **metrics,
        "majority_class": train.label_names[majority],
        "majority_class_mean_iou": scores["mean_iou"],
        "majority_class_pixel_accuracy": scores["pixel_accuracy"],
        "protocol": "segmentation fine-tune",
        "random_init": args.random_init,
        **run_fields(
            args,
            train=train,
            test=test,
            num_classes=len(train.label_names),
            bands_used=bands.bands_used,
            band_subset=bands.band_subset,
        ),
        **extra,
    }


def update_segmentation_card(card_dir: str | os.PathLike, results: dict[str, Any],
                             record=None) -> Path:  # fmt: skip
    """Merge mIoU and pixel accuracy into ``card_dir``'s run record and re-render its card
    (rows of the same task, dataset, split and metric are replaced, others kept)."""
    from ..classification.results import merge_eval_results

    rows = [
        {
            "task": "image-segmentation",
            "dataset_name": results.get("dataset_name") or results["dataset"],
            "dataset_id": results["dataset"],
            "split": results.get("test_split"),
            "metric_type": metric_type,
            "metric_name": f"{name} (fine-tune)",
            "value": round(float(results[key]), 6),
        }
        for key, metric_type, name in (("mean_iou", "mean_iou", "mIoU"),
                                       ("pixel_accuracy", "accuracy", "Pixel accuracy"))
    ]  # fmt: skip
    return merge_eval_results(card_dir, rows, record=record)
