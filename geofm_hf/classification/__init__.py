"""Scene classification on frozen or fine-tuned encoders: data adapters, band mapping, features,
the MAE linear probe, fine-tuning helpers, metrics and results (see docs/classification.md)."""

from .bands import (
    BandMismatchError,
    map_dataset_bands,
    prepare_dataset_bands,
    restrict_to_bands,
)
from .data import (
    ClassificationDataError,
    ClassificationSplit,
    check_splits,
    load_classification_split,
)
from .features import extract_features, feature_cache_key, load_or_extract_features
from .finetune import mixup_cutmix, param_groups_layer_decay
from .metrics import classification_metrics, confusion_matrix, save_confusion_matrix_png
from .probe import LARS, LinearProbe, predict_scores, train_linear_probe
from .results import (
    RESULTS_NAME,
    eval_results,
    load_results,
    results_record,
    results_table,
    update_model_card,
    write_results,
)

__all__ = [
    "LARS",
    "RESULTS_NAME",
    "BandMismatchError",
    "ClassificationDataError",
    "ClassificationSplit",
    "LinearProbe",
    "check_splits",
    "classification_metrics",
    "confusion_matrix",
    "eval_results",
    "extract_features",
    "feature_cache_key",
    "load_classification_split",
    "load_or_extract_features",
    "load_results",
    "map_dataset_bands",
    "mixup_cutmix",
    "param_groups_layer_decay",
    "predict_scores",
    "prepare_dataset_bands",
    "restrict_to_bands",
    "results_record",
    "results_table",
    "save_confusion_matrix_png",
    "train_linear_probe",
    "update_model_card",
    "write_results",
]
