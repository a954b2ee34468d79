"""A pixel-wise regression fine-tuning run (``recipes/segment.py --task regression``).

:func:`run_regression` is :func:`~geofm_hf.segmentation.run_segmentation` with a continuous
target per pixel: data (shards with a ``target`` column, ``geofm-make-shards --targets``) ->
model (the segmentation model with ``num_labels=1`` and ``problem_type="regression"``, so it
loads through ``AutoModelForSemanticSegmentation`` and its remote code as before) -> the shared
fine-tune loop with the masked MSE loss (NaN targets take no part) -> evaluation (RMSE, MAE, R2
with bootstrap intervals over chips, against predicting the training mean) -> save.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..classification.bands import match_splits_to_model
from ..classification.finetune_loop import flip_rotate, predict, preprocess_split, train_loop
from ..classification.model_source import load_pretrained
from ..classification.results import dataset_label
from ..training.arguments import check_output_dir_writable, end_training
from .arguments import SegmentArguments
from .data import load_regression_split, metadata_for_model
from .results import (
    mean_target_baseline,
    regression_card_rows,
    regression_metrics,
    regression_record,
    save_fine_tuned_run,
)

__all__ = ["run_regression"]


def _load_model(args: SegmentArguments, train):
    from .. import GeoViTMAEConfig, GeoViTMAEForSemanticSegmentation

    base = GeoViTMAEConfig.from_pretrained(args.model_name_or_path, revision=args.revision)
    config = GeoViTMAEConfig.from_pretrained(
        args.model_name_or_path, revision=args.revision, num_labels=1,
        id2label={0: args.target_column}, label2id={args.target_column: 0},
        problem_type="regression",
    )  # fmt: skip
    config.segmentation_hidden_size = args.segmentation_hidden_size
    model, processor = load_pretrained(GeoViTMAEForSemanticSegmentation, args, config=config)
    if args.random_init:
        model = GeoViTMAEForSemanticSegmentation(model.config)
    if args.random_init or base.problem_type != "regression":
        # A new head starts as the baseline, the training mean everywhere: its random init
        # would start off by the target's offset (metres, kg/m2) plus noise as large as the
        # signal, and the first epochs would go on undoing that. The zero weights still learn:
        # their gradient is the features times the error.
        with torch.no_grad():
            model.decode_head.classifier.weight.zero_()
            model.decode_head.classifier.bias.fill_(float(np.nanmean(train.masks)))
    processor.size = processor.crop_size = None  # chips are used as cut: never resized
    return model, processor


def run_regression(args: SegmentArguments) -> dict:
    """Fine-tune ``args.model_name_or_path`` to predict ``args.target_column`` per pixel,
    evaluate, save; returns the results record (also in ``OUTPUT_DIR/results.json``)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    check_output_dir_writable(args.output_dir)
    start = time.perf_counter()
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)

    # ---- data, model + band mapping
    load = dict(revision=args.dataset_revision, target_column=args.target_column)
    train = load_regression_split(args.dataset_name_or_path, args.train_split, **load)
    test = load_regression_split(args.dataset_name_or_path, args.test_split, **load)
    model, processor = _load_model(args, train)
    bands = match_splits_to_model(model, processor, (train, test), args)
    # Frames, dates and places the model needs, checked before any work.
    train_meta, test_meta = (metadata_for_model(model.config, s) for s in (train, test))
    batch = args.per_device_eval_batch_size
    train_x = preprocess_split(processor, train.images, bands.band_names, batch)
    test_x = preprocess_split(processor, test.images, bands.band_names, batch)
    train_y = torch.from_numpy(train.masks)  # (N, H, W) float32, NaN = unknown

    def compute_loss(model, pixels, targets, generator, interpolate, **coords):
        if args.augment:
            pixels, targets = flip_rotate(generator, pixels, targets)
        return model(pixels, labels=targets, interpolate_pos_encoding=interpolate,
                     **coords).loss  # fmt: skip

    # ---- train, evaluate against predicting the training mean
    series = f" of {train.num_frames} frames" if train.num_frames > 1 else ""
    banner = (f"regress {args.target_column} with {args.model_name_or_path}"
              f"{' (random init)' if args.random_init else ''}: train {len(train)} / test "
              f"{len(test)} chips{series}, bands {bands.bands_used}")  # fmt: skip
    loop = train_loop(accelerator, model, train_x, train_y, args, compute_loss, seed=args.seed,
                      banner=banner, metadata=train_meta)  # fmt: skip
    pred = predict(accelerator, loop.model, test_x, batch, reduce=lambda out: out[:, 0].float(),
                   metadata=test_meta)  # fmt: skip
    metrics = regression_metrics(pred, test.masks, seed=args.seed)
    baseline = mean_target_baseline(train, test)

    # ---- save (main process)
    accelerator.wait_for_everyone()
    results: dict = {}
    if accelerator.is_main_process:

        def make_results() -> dict:
            return regression_record(
                metrics=metrics, baseline=baseline, args=args, train=train, test=test,
                bands=bands, train_loss_per_epoch=loop.losses, steps=loop.steps,
                seconds=round(time.perf_counter() - start, 2),
            )  # fmt: skip

        results = save_fine_tuned_run(
            accelerator, loop, processor, args, output_dir, make_results,
            required=("rmse", "mae", "r2"), card_rows=regression_card_rows,
            description=f"pixel-wise regression of {args.target_column} fine-tuned on "
            f"{len(train)} chips of {dataset_label(args)}",
        )  # fmt: skip
        accelerator.print(
            f"RMSE {metrics['rmse']:.4g}  MAE {metrics['mae']:.4g}  R2 {metrics['r2']}  "
            f"(training mean: RMSE {baseline['rmse']:.4g}) -> {output_dir}"
        )
    end_training(accelerator)
    return results
