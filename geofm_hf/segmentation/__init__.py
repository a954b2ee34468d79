"""Semantic segmentation: mask datasets, metrics, the card's model-index, whole-scene maps."""

from .data import SegmentationSplit, load_segmentation_split
from .results import segmentation_metrics, update_segmentation_card
from .visualize import save_prediction_png

__all__ = [
    "SegmentationSplit",
    "load_segmentation_split",
    "save_prediction_png",
    "segmentation_metrics",
    "update_segmentation_card",
]
