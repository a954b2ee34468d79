"""A segmentation fine-tuning run, through Accelerate.

:func:`run_segmentation` reads top to bottom: data (shards with masks) -> model (encoder +
UPerNet-style head) + band mapping -> the fine-tune loop shared with classification (joint
flips/rotations of images and masks) -> evaluation (mIoU, per-class IoU, pixel accuracy through
the shipped ``evaluate`` ``mean_iou`` module, and the majority-class baseline) -> save.
``OUTPUT_DIR`` then holds the model (``AutoModelForSemanticSegmentation``), its image processor,
``results.json``, ``prediction.png`` and the model card with the scores in its model-index.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..classification.bands import match_splits_to_model
from ..classification.finetune_loop import flip_rotate, predict, preprocess_split, train_loop
from ..classification.geobench import geobench_aggregate
from ..classification.model_source import load_pretrained
from ..classification.results import dataset_label
from ..training.arguments import check_output_dir_writable, end_training
from .arguments import SegmentArguments
from .data import (
    SegmentationDataError,
    load_geobench_segmentation_split,
    load_segmentation_split,
    metadata_for_model,
)
from .results import (
    majority_class_baseline,
    save_fine_tuned_run,
    segmentation_card_rows,
    segmentation_metrics,
    segmentation_record,
)
from .visualize import rgb_composite, save_prediction_png, scene_mosaic

__all__ = ["run_segmentation"]


def _segmentation_loss(args: SegmentArguments):
    def compute_loss(model, pixels, masks, generator, interpolate, **coords):
        if args.augment:  # a series' frames turn with its mask; dates and places stay
            pixels, masks = flip_rotate(generator, pixels, masks)
        return model(pixels, labels=masks, interpolate_pos_encoding=interpolate, **coords).loss

    return compute_loss


def _load_splits(args: SegmentArguments):
    if args.geobench_task:
        train, sensor = load_geobench_segmentation_split(
            args.geobench_task, args.train_split, args.dataset_sensor
        )
        test, _ = load_geobench_segmentation_split(
            args.geobench_task, args.test_split, args.dataset_sensor
        )
        # The band matching reads the sensor here: GEO-Bench's bands go by its wavelengths.
        args.dataset_sensor = args.dataset_sensor or sensor
    else:
        load = dict(revision=args.dataset_revision, mask_column=args.label_column)
        train = load_segmentation_split(args.dataset_name_or_path, args.train_split, **load)
        test = load_segmentation_split(args.dataset_name_or_path, args.test_split, **load)
    if train.label_names != test.label_names:
        raise SegmentationDataError(f"train and test classes differ: {train.label_names} vs "
                                    f"{test.label_names}")  # fmt: skip
    return train, test


def _load_model(args: SegmentArguments, train):
    from .. import GeoViTMAEConfig, GeoViTMAEForSemanticSegmentation

    id2label = dict(enumerate(train.label_names))
    config = GeoViTMAEConfig.from_pretrained(
        args.model_name_or_path, revision=args.revision, num_labels=len(id2label),
        id2label=id2label, label2id={v: k for k, v in id2label.items()},
    )  # fmt: skip
    config.segmentation_hidden_size = args.segmentation_hidden_size
    config.semantic_loss_ignore_index = train.ignore_index
    model, processor = load_pretrained(GeoViTMAEForSemanticSegmentation, args, config=config)
    if args.random_init:
        model = GeoViTMAEForSemanticSegmentation(model.config)
    processor.size = processor.crop_size = None  # chips are used as cut: never resized
    return model, processor


def _prediction_png(args, test, pred, metrics, output_dir: Path) -> str | None:
    """Image | reference | prediction of the test split's first scene; its file name, or
    ``None`` when the chips do not say where they lie in their scene."""
    ignore = test.ignore_index
    series = test.num_frames > 1
    images = test.images[:, 0] if series else test.images  # a series: its first frame
    image = scene_mosaic(test, images.astype(np.float32), np.nan)
    if image is None:
        return None
    panels = [
        (f"Sentinel-2 RGB (test block{', first frame' if series else ''})",
         rgb_composite(image, test.band_names)),
        ("reference", scene_mosaic(test, test.masks, ignore)),
        (f"prediction (mIoU {100 * metrics['mean_iou']:.1f} %)",
         scene_mosaic(test, pred.astype(np.uint8), ignore)),
    ]  # fmt: skip
    model = "random init" if args.random_init else args.model_name_or_path
    save_prediction_png(panels, test.label_names, output_dir / "prediction.png",
                        ignore_index=ignore, title=f"{dataset_label(args)}, {model}")  # fmt: skip
    return "prediction.png"


def run_segmentation(args: SegmentArguments) -> dict:
    """Fine-tune ``args.model_name_or_path`` for segmentation, evaluate, save; returns the results
    record (also in ``OUTPUT_DIR/results.json``; empty on other ranks). ``--task regression``
    runs :func:`~geofm_hf.segmentation.regression_run.run_regression` instead."""
    from ..training.arguments import ArgumentError

    if args.task == "regression":
        from .regression_run import run_regression

        return run_regression(args)
    if args.task != "segmentation":
        raise ArgumentError(f"--task must be segmentation or regression: found {args.task!r}.")
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    check_output_dir_writable(args.output_dir)  # a clear error (exit 2) before any work
    start = time.perf_counter()
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)

    # ---- data, model + band mapping (by sensor and wavelength, as the classification runs)
    train, test = _load_splits(args)
    num_classes, ignore = len(train.label_names), train.ignore_index
    model, processor = _load_model(args, train)
    bands = match_splits_to_model(model, processor, (train, test), args)
    # Frames, dates and places the model needs, checked before any work.
    train_meta, test_meta = (metadata_for_model(model.config, s) for s in (train, test))
    batch = args.per_device_eval_batch_size
    train_x = preprocess_split(processor, train.images, bands.band_names, batch)
    test_x = preprocess_split(processor, test.images, bands.band_names, batch)
    train_y = torch.from_numpy(train.masks.astype(np.int64))

    # ---- train, evaluate against the majority class
    series = f" of {train.num_frames} frames" if train.num_frames > 1 else ""
    banner = (f"segment {args.model_name_or_path}{' (random init)' if args.random_init else ''}: "
              f"{num_classes} classes, train {len(train)} / test {len(test)} chips{series}, "
              f"bands {bands.bands_used}")  # fmt: skip
    loop = train_loop(accelerator, model, train_x, train_y, args, _segmentation_loss(args),
                      seed=args.seed, banner=banner, metadata=train_meta)  # fmt: skip
    pred = predict(accelerator, loop.model, test_x, batch, reduce=lambda logits: logits.argmax(1),
                   metadata=test_meta)  # fmt: skip
    metrics = segmentation_metrics(pred, test.masks, num_classes, ignore, train.label_names)
    baseline = majority_class_baseline(train, test)

    # ---- save (main process)
    accelerator.wait_for_everyone()
    results: dict = {}
    if accelerator.is_main_process:

        def make_results() -> dict:
            record = segmentation_record(
                metrics=metrics, baseline=baseline, args=args, train=train, test=test,
                bands=bands, prediction_png=_prediction_png(args, test, pred, metrics, output_dir),
                train_loss_per_epoch=loop.losses, steps=loop.steps,
                seconds=round(time.perf_counter() - start, 2),
            )  # fmt: skip
            if args.geobench_task:
                record["geobench"] = geobench_aggregate(
                    args.geobench_task, "mean_iou", [metrics["mean_iou"]], seeds=[args.seed]
                )
            return record

        results = save_fine_tuned_run(
            accelerator, loop, processor, args, output_dir, make_results,
            required=("mean_iou", "pixel_accuracy"), card_rows=segmentation_card_rows,
            description=f"segmentation fine-tuned on {len(train)} chips of {dataset_label(args)}",
        )  # fmt: skip
        majority, scores = baseline
        accelerator.print(
            f"mIoU {100 * metrics['mean_iou']:.1f}  pixel accuracy "
            f"{100 * metrics['pixel_accuracy']:.1f}  (majority class "
            f"{train.label_names[majority]}: mIoU {100 * scores['mean_iou']:.1f}) -> {output_dir}"
        )
    end_training(accelerator)
    return results
