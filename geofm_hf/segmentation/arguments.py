"""Arguments of the segmentation run: the fine-tune loop's, with the mask as the label."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..classification.arguments import FineTuneLoopArguments

__all__ = ["SegmentArguments"]


@dataclass
class SegmentArguments(FineTuneLoopArguments):
    """Options of segmentation fine-tuning (the dataset is a shard dataset with masks, written by
    ``geofm-make-shards --labels MASK.tif`` or ``--labels-vector FILE --label-field NAME``)."""

    label_column: str = "mask"
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
