"""Arguments of the segmentation run: the fine-tune loop's, with the mask (or, for
``--task regression``, the per-pixel target) as the label."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..classification.arguments import FineTuneLoopArguments

__all__ = ["SegmentArguments"]


@dataclass
class SegmentArguments(FineTuneLoopArguments):
    """Options of segmentation fine-tuning (the dataset is a shard dataset with masks, written by
    ``geofm-make-shards --labels MASK.tif`` or ``--labels-vector FILE --label-field NAME``; for
    ``--task regression`` one with targets, written by ``--targets RASTER``)."""

    task: str = field(
        default="segmentation",
        metadata={"help": "segmentation (classes per pixel, mIoU) or regression (a continuous "
                  "value per pixel: masked MSE loss, RMSE/MAE/R2)."},
    )  # fmt: skip
    label_column: str = "mask"
    target_column: str = field(
        default="target", metadata={"help": "The shards' target column (--task regression)."}
    )
    num_train_epochs: int = 30
    warmup_epochs: int = 2
    per_device_train_batch_size: int = 16
    learning_rate: float = field(
        default=1e-3, metadata={"help": "Base lr; peak = lr x global batch / 256."}
    )
    segmentation_hidden_size: int = field(default=128, metadata={"help": "Head width."})
    random_init: bool = field(
        default=False,
        metadata={"help": "Baseline: same architecture, encoder weights randomly initialised."},
    )
