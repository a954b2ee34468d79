"""Semantic segmentation: mask datasets, the fine-tuning run behind ``recipes/segment.py``
(:func:`run_segmentation`), metrics, the card's model-index, whole-scene maps."""

from .arguments import SegmentArguments
from .data import SegmentationDataError, SegmentationSplit, load_segmentation_split
from .finetune_run import run_segmentation
from .results import (
    majority_class_baseline,
    segmentation_metrics,
    segmentation_record,
    update_segmentation_card,
)
from .visualize import save_prediction_png, scene_mosaic

__all__ = [
    "SegmentArguments",
    "SegmentationDataError",
    "SegmentationSplit",
    "load_segmentation_split",
    "majority_class_baseline",
    "run_segmentation",
    "save_prediction_png",
    "scene_mosaic",
    "segmentation_metrics",
    "segmentation_record",
    "update_segmentation_card",
]
