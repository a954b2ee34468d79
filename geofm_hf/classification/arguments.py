"""Arguments shared by the linear-probe and fine-tuning recipes (TrainingArguments names)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ClassificationArguments:
    """Model, dataset and band options common to ``linear_probe.py`` and ``finetune.py``."""

    model_name_or_path: str = field(metadata={"help": "Local export or Hub model repo id."})
    dataset_name_or_path: str = field(
        metadata={"help": "geofm shards (folder/Hub), image folder, or a datasets repo."}
    )
    output_dir: str = field(metadata={"help": "Where results.json, the PNG and any model go."})
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
