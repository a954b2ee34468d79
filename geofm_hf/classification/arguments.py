"""Arguments of the probe, fine-tune and segmentation runs (transformers' TrainingArguments names).

One layer: :class:`ClassificationArguments` (model, dataset, bands) is every run's;
:class:`FineTuneLoopArguments` adds the optimisation loop the fine-tune and the segmentation run
share; each run's own options extend one of them. The recipes parse them from YAML and the
command line (:func:`~geofm_hf.classification.recipe_main`); from Python, build them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "PROBE_PROTOCOLS",
    "ClassificationArguments",
    "FineTuneLoopArguments",
    "FinetuneArguments",
    "ProbeArguments",
]

# --protocol -> the protocols it runs; the first is the headline of results.json.
PROBE_PROTOCOLS = {"linear": ("linear-probe",), "knn": ("knn",), "both": ("linear-probe", "knn")}


@dataclass
class ClassificationArguments:
    """Model, dataset and band options common to the probe, fine-tune and segmentation runs."""

    model_name_or_path: str = field(metadata={"help": "Local export or Hub model repo id."})
    output_dir: str = field(metadata={"help": "Where results.json, the PNG and any model go."})
    # Optional only because --geobench_task can name the data instead: one of the two is needed.
    dataset_name_or_path: str | None = field(
        default=None,
        metadata={"help": "geofm shards (folder/Hub), image folder, or a datasets repo."},
    )
    geobench_task: str | None = field(
        default=None,
        metadata={"help": "A GEO-Bench task folder (e.g. classification_v1.0/m-eurosat): its "
                  "default partition's train/valid/test; results add GEO-Bench's IQM."},
    )  # fmt: skip
    revision: str | None = field(default=None, metadata={"help": "Model revision (Hub only)."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Dataset revision."})
    dataset_name: str | None = field(default=None, metadata={"help": "Display name of the data."})
    train_split: str = "train"
    test_split: str = "test"
    image_column: str = "image"
    label_column: str = "label"
    band_names: list[str] | None = field(
        default=None,
        metadata={"help": "Names of the dataset's channels when it does not say (e.g. red green "
                  "blue); mapped to the model's bands by alias."},
    )  # fmt: skip
    dataset_bands: list[str] | None = field(
        default=None,
        metadata={"help": "Use only these dataset bands, in this order (e.g. B3 B4 B5)."},
    )
    dataset_sensor: str | None = field(
        default=None,
        metadata={"help": "The dataset's sensor (e.g. landsat7): bands are then matched to the "
                  "model's by wavelength. Default: geofm_dataset.json's sensor/wavelengths."},
    )  # fmt: skip
    allow_band_subset: bool = field(
        default=True,
        metadata={"help": "Run on a strict subset of the model's bands (select_input_bands)."},
    )
    feature: str = field(default="cls", metadata={"help": "'cls' token or 'mean' of patches."})
    per_device_eval_batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        from ..training.arguments import ArgumentError

        if self.geobench_task is not None:
            if self.dataset_name_or_path not in (None, self.geobench_task):
                raise ArgumentError(
                    f"--geobench_task {self.geobench_task} and --dataset_name_or_path "
                    f"{self.dataset_name_or_path} both name the data: expected one of them."
                )
            # The task folder is the run's dataset wherever a run names it (results, card, cache).
            self.dataset_name_or_path = self.geobench_task
        if self.dataset_name_or_path is None:
            raise ArgumentError(
                "no dataset: expected --dataset_name_or_path (shards, image folder or datasets "
                "repo) or --geobench_task (a GEO-Bench task folder)."
            )


@dataclass
class ProbeArguments(ClassificationArguments):
    """Options of the linear probe and the kNN probe on a frozen encoder."""

    feature: str = field(
        default="mean",
        metadata={"help": "cls, mean (patch tokens), mean_lastK (mean over the last K blocks) or "
                  "auto (the best of cls/mean/mean_last4 on the validation split)."},
    )  # fmt: skip
    protocol: str = field(
        default="both", metadata={"help": "linear, knn or both (same cached features)."}
    )
    seeds: int = field(
        default=5, metadata={"help": "Linear probes trained with seeds seed .. seed+seeds-1."}
    )
    knn_k: int = 20
    knn_temperature: float = 0.07
    sweep: bool = field(
        default=True,
        metadata={"help": "Choose learning rate and weight decay on a validation split of train."},
    )
    val_fraction: float = field(default=0.2, metadata={"help": "Share of train held out."})
    val_seed: int = field(
        default=0,
        metadata={"help": "Seed of the validation split and sweep, apart from --seed so that the "
                  "probe seeds change the per-seed values, never the chosen protocol."},
    )  # fmt: skip
    sweep_learning_rates: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    sweep_weight_decays: list[float] = field(default_factory=lambda: [0.0, 1e-4])
    bootstrap_resamples: int = 2000
    cache_features: bool = field(default=True, metadata={"help": "Cache features on disk."})
    feature_cache_dir: str | None = field(
        default=None, metadata={"help": "Feature cache folder (default OUTPUT_DIR/feature_cache)."}
    )
    num_train_epochs: int = 90
    warmup_epochs: int = 10
    per_device_train_batch_size: int = 256
    learning_rate: float = field(
        default=0.1,
        metadata={"help": "Base lr (peak = learning_rate x batch / 256) when --sweep false."},
    )
    weight_decay: float = field(default=0.0, metadata={"help": "Used when --sweep false."})
    optimizer: str = field(
        default="sgd", metadata={"help": "sgd (default: small datasets), lars (MAE) or adamw."}
    )
    update_model_card: bool = field(
        default=True, metadata={"help": "Write the results into the checkpoint's model-index."}
    )


@dataclass
class FineTuneLoopArguments(ClassificationArguments):
    """The optimisation loop of every fine-tune: AdamW with layer-wise lr decay, warm-up then
    cosine, flips and right-angle rotations, under Accelerate."""

    num_train_epochs: int = 100
    warmup_epochs: int = 5
    per_device_train_batch_size: int = 64
    learning_rate: float = field(
        default=1e-3, metadata={"help": "Base lr (MAE fine-tune); peak = lr x global batch / 256."}
    )
    weight_decay: float = 0.05
    layer_decay: float = field(default=0.75, metadata={"help": "Layer-wise lr decay (1 = off)."})
    augment: bool = field(default=True, metadata={"help": "Random flips and 90-degree rotations."})
    max_grad_norm: float | None = None
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16."})


@dataclass
class FinetuneArguments(FineTuneLoopArguments):
    """Options of scene-classification fine-tuning."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    label_smoothing: float = 0.1
    seeds: int = field(
        default=1,
        metadata={"help": "Fine-tunes with seeds seed .. seed+seeds-1 (results over all; the "
                  "first seed's model is saved). Each costs a full fine-tune."},
    )  # fmt: skip
    bootstrap_resamples: int = 2000
