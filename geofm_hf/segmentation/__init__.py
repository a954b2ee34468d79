"""Semantic segmentation and pixel-wise regression: mask and target datasets, the fine-tuning
runs behind ``recipes/segment.py`` (:func:`run_segmentation`, :func:`run_regression` for
``--task regression``), metrics, the card's model-index, whole-scene maps."""

from .arguments import SegmentArguments
from .data import (
    SegmentationDataError,
    SegmentationSplit,
    load_regression_split,
    load_segmentation_split,
)
from .finetune_run import run_segmentation
from .regression_run import run_regression
from .results import (
    majority_class_baseline,
    mean_target_baseline,
    regression_metrics,
    regression_record,
    segmentation_metrics,
    segmentation_record,
    update_segmentation_card,
)
from .visualize import save_prediction_png, scene_mosaic

__all__ = [
    "SegmentArguments",
    "SegmentationDataError",
    "SegmentationSplit",
    "load_regression_split",
    "load_segmentation_split",
    "majority_class_baseline",
    "mean_target_baseline",
    "regression_metrics",
    "regression_record",
    "run_regression",
    "run_segmentation",
    "save_prediction_png",
    "scene_mosaic",
    "segmentation_metrics",
    "segmentation_record",
    "update_segmentation_card",
]
