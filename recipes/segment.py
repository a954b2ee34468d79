"""Fine-tuning of a geospatial ViT-MAE for semantic segmentation, through Accelerate.

    accelerate launch recipes/segment.py recipes/configs/segment_demo.yaml \
        --model_name_or_path runs/pretrain/final --dataset_name_or_path runs/osm-seg \
        --output_dir runs/segment-tiny
    python recipes/segment.py recipes/configs/segment_demo.yaml ...   # one process

The run is :func:`geofm_hf.segmentation.run_segmentation` (arguments:
:class:`~geofm_hf.segmentation.SegmentArguments`, ``finetune.py``'s loop options with the mask
as the label). The dataset is a shard dataset with masks, written by ``geofm-make-shards --labels
MASK.tif`` or ``--labels-vector FILE --label-field NAME``; its bands are matched to the model's
by sensor and wavelength (``--dataset_sensor``, default the sensor in geofm_dataset.json), as in
the classification recipes. Data -> model (encoder + UPerNet-style head) -> AdamW with
layer-wise lr decay -> loop (joint flips/rotations of images and masks) -> evaluation (mIoU,
per-class IoU, pixel accuracy, and the majority-class baseline) -> save. OUTPUT_DIR holds the
model (``AutoModelForSemanticSegmentation``), its image processor, ``results.json``,
``prediction.png`` and the model card with the scores in its model-index.

``--task regression`` fits a continuous value per pixel instead (shards written with
``geofm-make-shards --targets RASTER``; :func:`~geofm_hf.segmentation.run_regression`): the same
model with one output and ``problem_type="regression"``, masked MSE (NaN targets unknown), and
RMSE, MAE and R2 with bootstrap intervals over chips in ``results.json``.
"""

from __future__ import annotations

import sys

from geofm_hf.classification import recipe_main
from geofm_hf.segmentation import SegmentArguments, run_segmentation

__all__ = ["SegmentArguments", "main"]


def main(argv: list[str] | None = None) -> dict:
    """Entry point: ``[CONFIG.yaml] [--overrides]``."""
    return recipe_main(SegmentArguments, run_segmentation, argv)


if __name__ == "__main__":
    from geofm_hf.training.arguments import run_recipe

    sys.exit(run_recipe(main))
