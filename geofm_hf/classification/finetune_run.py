"""A full fine-tuning run for scene classification, through Accelerate.

:func:`run_finetune` reads top to bottom: data -> model + band mapping -> preprocessing -> one
fine-tune per seed (:func:`~geofm_hf.classification.train_loop`: AdamW with layer-wise lr decay,
mixup/cutmix optional) -> evaluation with bootstrap intervals -> save. ``OUTPUT_DIR`` then holds
the first seed's model (safetensors, ``id2label`` in ``config.json``), its image processor,
``results.json``, ``confusion_matrix.png`` and a model card, so
``transformers.pipeline("image-classification", model=OUTPUT_DIR)`` works.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..training.arguments import check_output_dir_writable, end_training
from .arguments import FinetuneArguments
from .bands import match_splits_to_model, restrict_to_bands
from .data import load_train_test, metadata_for_model
from .finetune import mixup_cutmix
from .finetune_loop import flip_rotate, predict, preprocess_split, train_loop
from .geobench import geobench_aggregate
from .metrics import classification_metrics, confusion_matrix, save_confusion_matrix_png
from .model_source import load_pretrained
from .results import (
    dataset_label,
    fine_tuned_record,
    results_record,
    update_model_card,
    write_results,
)
from .stats import summarize_predictions

__all__ = ["run_finetune"]


def _classification_loss(args: FinetuneArguments, num_classes: int):
    """The loss of one batch: flips/rotations, mixup/cutmix and label smoothing, cross-entropy."""

    def compute_loss(model, pixels, labels, generator, interpolate, **coords):
        if args.augment:
            (pixels,) = flip_rotate(generator, pixels)
        pixels, targets = mixup_cutmix(
            pixels, labels, num_classes, mixup_alpha=args.mixup_alpha,
            cutmix_alpha=args.cutmix_alpha, label_smoothing=args.label_smoothing,
            generator=generator,
        )  # fmt: skip
        # A mixed sample keeps the dates and places of the sample the flipped batch was mixed into.
        logits = model(pixels, interpolate_pos_encoding=interpolate, **coords).logits
        return torch.nn.functional.cross_entropy(logits.float(), targets)

    return compute_loss


def run_finetune(args: FinetuneArguments) -> dict:
    """Fine-tune ``args.model_name_or_path`` once per seed, evaluate, save the first seed's model;
    returns the results record (also in ``OUTPUT_DIR/results.json``; empty on other ranks)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from .. import GeoViTMAEForImageClassification

    start = time.perf_counter()
    check_output_dir_writable(args.output_dir)  # a clear error (exit 2) before any work
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)

    # ---- data
    train, test = load_train_test(args)
    num_classes = len(train.label_names)
    id2label = dict(enumerate(train.label_names))

    # ---- model + band mapping (an explicit subset for RGB data on a multispectral model)
    def build():
        return load_pretrained(
            GeoViTMAEForImageClassification, args, num_labels=num_classes, id2label=id2label,
            label2id={v: k for k, v in id2label.items()}, pooling=args.feature,
        )  # fmt: skip

    model, processor = build()
    bands = match_splits_to_model(model, processor, (train, test), args)
    # Frames, dates and places the model needs, checked before any work.
    train_meta, test_meta = (
        {k: torch.from_numpy(v) for k, v in metadata_for_model(model.config, split).items()}
        for split in (train, test)
    )
    # Chips are resized to the model's input here on purpose (the probe/fine-tune protocol).
    processor.do_resize = True
    batch = args.per_device_eval_batch_size
    train_x = preprocess_split(processor, train.images, bands.band_names, batch)
    test_x = preprocess_split(processor, test.images, bands.band_names, batch)
    train_y, test_y = torch.from_numpy(train.labels), test.labels

    # ---- one fine-tune per seed; the first seed's model is the one saved
    seeds = [args.seed + i for i in range(args.seeds)]
    banner = (f"fine-tune {args.model_name_or_path}: {num_classes} classes, train {len(train)} / "
              f"test {len(test)}, bands {bands.bands_used}")  # fmt: skip
    per_seed, first = [], None
    for i, seed in enumerate(seeds):
        set_seed(seed)
        if i > 0:  # a fresh copy of the checkpoint, same band mapping
            accelerator.free_memory()
            model, fresh = build()
            # band_names are already the model's names: the same restriction again.
            restrict_to_bands(model, fresh, bands.band_names, args.allow_band_subset)
        loop = train_loop(accelerator, model, train_x, train_y, args,
                          _classification_loss(args, num_classes), seed=seed, banner=banner,
                          metadata=train_meta)  # fmt: skip
        scores = predict(accelerator, loop.model, test_x, args.per_device_eval_batch_size,
                         metadata=test_meta)  # fmt: skip
        per_seed.append({"metrics": classification_metrics(scores, test_y, num_classes),
                         "predictions": scores.argmax(1)})  # fmt: skip
        if i == 0:  # its scores give the confusion matrix
            first, first_scores = loop, scores
            first.model = accelerator.unwrap_model(loop.model)
        accelerator.print(f"seed {seed}: top-1 {100 * per_seed[-1]['metrics']['top1']:.1f}")
    summary = summarize_predictions(per_seed, test_y, num_classes, seeds=seeds,
                                    resamples=args.bootstrap_resamples)  # fmt: skip
    metrics = {k: v for k, v in summary.items() if k != "test_predictions"}
    matrix = confusion_matrix(first_scores.argmax(1), test_y, num_classes)

    # ---- save (main process): weights, processor, results, card
    accelerator.wait_for_everyone()
    results: dict = {}
    if accelerator.is_main_process:
        saved = first.model
        saved.save_pretrained(output_dir, safe_serialization=True)
        processor.save_pretrained(output_dir)
        save_confusion_matrix_png(matrix, train.label_names, output_dir / "confusion_matrix.png",
                                  title=f"fine-tuned on {dataset_label(args)}")  # fmt: skip
        results = results_record(
            metrics=metrics, protocol="fine-tune", args=args,
            preset=getattr(saved.config, "preset", None),
            num_parameters_encoder=sum(p.numel() for p in saved.vit.parameters()),
            train=train, test=test, num_classes=num_classes, bands_used=bands.bands_used,
            band_subset=bands.band_subset, matrix=matrix, protocols={"fine-tune": summary},
            test_references=test_y.tolist(), train_loss_per_epoch=first.losses,
            steps=first.steps, global_batch=first.global_batch,
            seconds=round(time.perf_counter() - start, 2),
        )  # fmt: skip
        if args.geobench_task:
            results["geobench"] = geobench_aggregate(
                args.geobench_task, "top1", summary["top1_per_seed"], seeds=seeds,
                resamples=args.bootstrap_resamples, seed=args.seed,
            )  # fmt: skip
        write_results(output_dir, results)
        record = fine_tuned_record(
            saved,
            processor,
            args,
            first,
            accelerator.num_processes,
            f"fine-tuned on {len(train)} images of {dataset_label(args)}",
        )
        update_model_card(output_dir, results, record=record)
        accelerator.print(
            f"top-1 {100 * metrics['top1']:.1f}  top-{metrics['top5_k']} "
            f"{100 * metrics['top5']:.1f}  macro-F1 {100 * metrics['macro_f1']:.1f} -> {output_dir}"
        )
    end_training(accelerator)
    return results
