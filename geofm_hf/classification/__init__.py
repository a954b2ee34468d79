"""Scene classification on frozen or fine-tuned encoders: data adapters, band mapping, features,
the MAE linear probe and the kNN probe, fine-tuning helpers, metrics with bootstrap intervals and
results (see docs/classification.md)."""

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
from .features import (
    FEATURE_CHOICES,
    extract_features,
    feature_cache_key,
    load_or_extract_features,
)
from .finetune import mixup_cutmix, param_groups_layer_decay
from .knn import knn_scores
from .metrics import classification_metrics, confusion_matrix, save_confusion_matrix_png
from .probe import (
    LARS,
    LinearProbe,
    predict_scores,
    sweep_linear_probe,
    train_linear_probe,
    validation_split,
)
from .results import (
    RESULTS_NAME,
    eval_results,
    load_results,
    paired_comparison,
    results_record,
    results_table,
    update_model_card,
    write_results,
)
from .stats import bootstrap_interval, paired_bootstrap, summarize_predictions

__all__ = [
    "FEATURE_CHOICES",
    "LARS",
    "RESULTS_NAME",
    "BandMismatchError",
    "ClassificationDataError",
    "ClassificationSplit",
    "LinearProbe",
    "bootstrap_interval",
    "check_splits",
    "classification_metrics",
    "confusion_matrix",
    "eval_results",
    "extract_features",
    "feature_cache_key",
    "knn_scores",
    "load_classification_split",
    "load_or_extract_features",
    "load_results",
    "map_dataset_bands",
    "mixup_cutmix",
    "paired_bootstrap",
    "paired_comparison",
    "param_groups_layer_decay",
    "predict_scores",
    "prepare_dataset_bands",
    "restrict_to_bands",
    "results_record",
    "results_table",
    "save_confusion_matrix_png",
    "summarize_predictions",
    "sweep_linear_probe",
    "train_linear_probe",
    "update_model_card",
    "validation_split",
    "write_results",
]
