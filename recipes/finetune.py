"""Full fine-tuning of a geospatial ViT-MAE for scene classification, through Accelerate.

    accelerate launch recipes/finetune.py recipes/configs/finetune_demo.yaml \
        --model_name_or_path runs/pretrain/final --output_dir runs/finetune-tiny
    python recipes/finetune.py recipes/configs/finetune_demo.yaml ...   # one process

The run is :func:`geofm_hf.classification.run_finetune` (arguments:
:class:`~geofm_hf.classification.FinetuneArguments`): data -> model + band mapping -> AdamW with
layer-wise lr decay -> loop (mixup/cutmix optional), once per seed -> evaluation -> save. The
same Accelerator() / prepare() scales it the way pretraining scales (accelerate config decides
DDP/FSDP). OUTPUT_DIR holds the fine-tuned model (safetensors, id2label/label2id in
config.json), its image processor, results.json, confusion_matrix.png and a model card, so
``transformers.pipeline("image-classification", model=OUTPUT_DIR)`` works.
"""

from __future__ import annotations

import sys

from geofm_hf.classification import FinetuneArguments, recipe_main, run_finetune

__all__ = ["FinetuneArguments", "main"]


def main(argv: list[str] | None = None) -> dict:
    """Entry point: ``[CONFIG.yaml] [--overrides]``."""
    return recipe_main(FinetuneArguments, run_finetune, argv)


if __name__ == "__main__":
    from geofm_hf.training.arguments import run_recipe

    sys.exit(run_recipe(main))
