"""Segmentation scores through the shipped ``mean_iou`` module, the majority-class baseline, the
run's ``results.json`` record and the card's model-index; for pixel-wise regression RMSE, MAE
and R2 with bootstrap intervals over chips, and the mean-target baseline; the save step both
runs end with (:func:`save_fine_tuned_run`)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "majority_class_baseline",
    "mean_target_baseline",
    "regression_card_rows",
    "regression_metrics",
    "regression_record",
    "save_fine_tuned_run",
    "segmentation_card_rows",
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

    return merge_eval_results(card_dir, segmentation_card_rows(results), record=record)


def segmentation_card_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The model-index rows of a segmentation run's ``results``: mIoU and pixel accuracy."""
    return _card_rows(results, (("mean_iou", "mean_iou", "mIoU (fine-tune)"),
                                ("pixel_accuracy", "accuracy", "Pixel accuracy (fine-tune)")))  # fmt: skip


def regression_card_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The model-index rows of a pixel-wise regression run's ``results``: RMSE and MAE."""
    return _card_rows(results, [(key, key, f"{key.upper()} (pixel regression fine-tune)")
                                for key in ("rmse", "mae")])  # fmt: skip


def _card_rows(results: dict[str, Any], metrics) -> list[dict[str, Any]]:
    """One ``image-segmentation`` row per (results key, metric type, metric name)."""
    return [
        {
            "task": "image-segmentation",
            "dataset_name": results.get("dataset_name") or results["dataset"],
            "dataset_id": results["dataset"],
            "split": results.get("test_split"),
            "metric_type": metric_type,
            "metric_name": name,
            "value": round(float(results[key]), 6),
        }
        for key, metric_type, name in metrics
    ]


def save_fine_tuned_run(accelerator, loop, processor, args: Any, output_dir: Path,
                        make_results: Callable[[], dict[str, Any]], *, required: tuple[str, ...],
                        description: str,
                        card_rows: Callable[[dict[str, Any]], list[dict[str, Any]]],
                        ) -> dict[str, Any]:  # fmt: skip
    """The save step of a segmentation or regression run, on the main process: the fine-tuned
    model (safetensors) and its processor into ``output_dir``; then the run's record,
    ``make_results()`` (called once they are saved, so that its time counts the saving), in
    ``results.json`` (checked to hold the ``required`` keys); then the card, its run record
    saying the model was fine-tuned for ``description`` and its model-index holding
    ``card_rows(results)``. Returns the record."""
    from ..classification.results import fine_tuned_record, merge_eval_results, write_results

    unwrapped = accelerator.unwrap_model(loop.model)
    unwrapped.save_pretrained(output_dir, safe_serialization=True)
    processor.save_pretrained(output_dir)
    results = make_results()
    write_results(output_dir, results, required=required)
    record = fine_tuned_record(unwrapped, processor, args, loop, accelerator.num_processes,
                               description)  # fmt: skip
    merge_eval_results(output_dir, card_rows(results), record=record)
    return results


def _regression_sums(predictions: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Per chip ``(N, 5)``: known pixels, sum of squared and of absolute errors, sum of the
    targets and of their squares (NaN targets unknown); what RMSE, MAE and R2 add up from."""
    known = np.isfinite(references)
    ref = np.where(known, references, 0.0).astype(np.float64)
    err = np.where(known, predictions.astype(np.float64) - ref, 0.0)
    axes = tuple(range(1, references.ndim))
    return np.stack([known.sum(axes), (err**2).sum(axes), np.abs(err).sum(axes), ref.sum(axes),
                     (ref**2).sum(axes)], axis=1)  # fmt: skip


def _scores(sums: np.ndarray) -> np.ndarray:
    """``(..., 5)`` pooled sums -> ``(..., 3)`` RMSE, MAE, R2 over every known pixel."""
    n, sse, sae, s, s2 = np.moveaxis(sums, -1, 0)
    n = np.maximum(n, 1)
    total = s2 - s * s / n  # sum of squares about the mean
    r2 = np.where(total > 0, 1 - sse / np.where(total > 0, total, 1), np.nan)
    return np.stack([np.sqrt(sse / n), sae / n, r2], axis=-1)


def regression_metrics(predictions, references, *, resamples: int | None = None,
                       level: float = 0.95, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """``rmse``, ``mae`` and ``r2`` over the known pixels (finite references) of ``(N, H, W)``
    predictions and references, each with a percentile-bootstrap interval over chips (pixels of
    one chip are not independent, so chips, not pixels, are resampled), and ``num_pixels``."""
    from ..classification.stats import BOOTSTRAP_RESAMPLES

    sums = _regression_sums(np.asarray(predictions), np.asarray(references))
    if sums[:, 0].sum() == 0:
        raise ValueError("regression metrics need at least one known (finite) target pixel: "
                         "found none.")  # fmt: skip
    rmse, mae, r2 = _scores(sums.sum(0))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sums), size=(resamples or BOOTSTRAP_RESAMPLES, len(sums)))
    boot = _scores(sums[idx].sum(1))  # (resamples, 3)
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(boot, [tail, 100 - tail], axis=0)
    out: dict[str, Any] = {"num_pixels": int(sums[:, 0].sum()), "bootstrap_level": level}
    for i, name in enumerate(("rmse", "mae", "r2")):
        value = (rmse, mae, r2)[i]
        out[name] = None if np.isnan(value) else float(value)
        out[f"{name}_ci"] = [float(lo[i]), float(hi[i])]
    return out


def mean_target_baseline(train, test) -> dict[str, Any]:
    """The scores on ``test`` of predicting the training targets' mean everywhere: what a model
    must beat to have learnt anything (its R2 is at most 0)."""
    mean = float(np.nanmean(train.masks))
    return {"mean": mean, **regression_metrics(np.full_like(test.masks, mean), test.masks)}


def regression_record(*, metrics: dict[str, Any], baseline: dict[str, Any], args: Any, train,
                      test, bands, **extra: Any) -> dict[str, Any]:  # fmt: skip
    """The ``results.json`` record of a pixel-wise regression run, as
    :func:`segmentation_record` is a segmentation run's."""
    from ..classification.results import run_fields

    return {
        **metrics,
        "task": "regression",
        "mean_target": baseline["mean"],
        "mean_target_rmse": baseline["rmse"],
        "mean_target_mae": baseline["mae"],
        "protocol": "pixel-wise regression fine-tune",
        "random_init": args.random_init,
        **run_fields(
            args,
            train=train,
            test=test,
            num_classes=1,
            bands_used=bands.bands_used,
            band_subset=bands.band_subset,
        ),
        **extra,
    }
