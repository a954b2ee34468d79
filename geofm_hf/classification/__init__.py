"""Scene classification on frozen or fine-tuned encoders: data adapters, band mapping, features,
the MAE linear probe and the kNN probe, fine-tuning helpers, metrics with bootstrap intervals and
results (see docs/classification.md).

The runs behind the recipes are here too: build their arguments and call them from Python::

    from geofm_hf.classification import ProbeArguments, run_probe

    results = run_probe(ProbeArguments(model_name_or_path="runs/pretrain/final",
                                       dataset_name_or_path="runs/shards", output_dir="runs/probe"))
"""

from ._cli import parse_recipe_args, recipe_main
from .arguments import (
    PROBE_PROTOCOLS,
    ClassificationArguments,
    FinetuneArguments,
    FineTuneLoopArguments,
    ProbeArguments,
)
from .bands import (
    BandMatch,
    BandMismatchError,
    map_dataset_bands,
    match_splits_to_model,
    prepare_dataset_bands,
    restrict_to_bands,
)
from .data import (
    ClassificationDataError,
    ClassificationSplit,
    check_splits,
    load_classification_split,
    load_train_test,
)
from .features import (
    FEATURE_CHOICES,
    extract_features,
    feature_cache_key,
    load_or_extract_features,
)
from .finetune import mixup_cutmix, param_groups_layer_decay
from .finetune_loop import LoopResult, train_loop
from .finetune_run import run_finetune
from .knn import knn_scores
from .metrics import classification_metrics, confusion_matrix, save_confusion_matrix_png
from .model_source import ModelSource, load_pretrained
from .probe import (
    LARS,
    LinearProbe,
    predict_scores,
    sweep_linear_probe,
    train_linear_probe,
    validation_split,
)
from .probe_run import probe_table, run_probe
from .results import (
    RESULTS_NAME,
    eval_results,
    load_results,
    merge_eval_results,
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
    "PROBE_PROTOCOLS",
    "RESULTS_NAME",
    "BandMatch",
    "BandMismatchError",
    "ClassificationArguments",
    "ClassificationDataError",
    "ClassificationSplit",
    "FineTuneLoopArguments",
    "FinetuneArguments",
    "LinearProbe",
    "LoopResult",
    "ModelSource",
    "ProbeArguments",
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
    "load_pretrained",
    "load_results",
    "load_train_test",
    "map_dataset_bands",
    "match_splits_to_model",
    "merge_eval_results",
    "mixup_cutmix",
    "paired_bootstrap",
    "paired_comparison",
    "param_groups_layer_decay",
    "parse_recipe_args",
    "predict_scores",
    "prepare_dataset_bands",
    "probe_table",
    "recipe_main",
    "restrict_to_bands",
    "results_record",
    "results_table",
    "run_finetune",
    "run_probe",
    "save_confusion_matrix_png",
    "summarize_predictions",
    "sweep_linear_probe",
    "train_linear_probe",
    "train_loop",
    "update_model_card",
    "validation_split",
    "write_results",
]
