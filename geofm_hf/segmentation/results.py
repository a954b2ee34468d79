"""Segmentation scores through the shipped ``mean_iou`` module, and the card's model-index."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["segmentation_metrics", "update_segmentation_card"]


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


def update_segmentation_card(card_dir: str | os.PathLike, results: dict[str, Any],
                             record=None) -> Path:  # fmt: skip
    """Merge mIoU and pixel accuracy into ``card_dir``'s run record and re-render its card
    (rows of the same task, dataset, split and metric are replaced, others kept)."""
    from ..model_card import RUN_RECORD_NAME, RunRecord, write_model_card

    card_dir = Path(card_dir)
    record_path = card_dir / RUN_RECORD_NAME
    if record_path.is_file():
        record = RunRecord.load(record_path)
    elif record is None:
        raise FileNotFoundError(f"no {RUN_RECORD_NAME} in {card_dir}: pass record=")
    record = RunRecord.from_dict(record.to_dict())
    new = [
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

    def key(row):
        return (row["task"], row["dataset_name"], row.get("split"), row.get("metric_name"))

    replaced = {key(r) for r in new}
    record.eval_results = [r for r in record.eval_results if key(r) not in replaced] + new
    record.save(record_path)
    return write_model_card(card_dir, record)
