"""Fine-tuning of a geospatial ViT-MAE for semantic segmentation, through Accelerate.

    accelerate launch recipes/segment.py recipes/configs/segment_demo.yaml \
        --model_name_or_path runs/pretrain/final --dataset_name_or_path runs/osm-seg \
        --output_dir runs/segment-tiny
    python recipes/segment.py recipes/configs/segment_demo.yaml ...   # one process

The arguments are ``finetune.py``'s (the dataset is a shard dataset with masks, written by
``geofm-make-shards --labels MASK.tif`` or ``--labels-vector FILE --label-field NAME``). Reads
top to bottom: arguments -> data -> model (encoder + UPerNet-style head) -> AdamW with layer-wise
lr decay -> loop (joint flips/rotations of images and masks) -> evaluation (mIoU, per-class IoU,
pixel accuracy through the shipped ``evaluate`` ``mean_iou`` module, and the majority-class
baseline) -> save. OUTPUT_DIR holds the model (``AutoModelForSemanticSegmentation``), its image
processor, ``results.json``, ``prediction.png`` and the model card with the scores in its
model-index.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from geofm_hf.classification.arguments import ClassificationArguments
from geofm_hf.training.arguments import check_output_dir_writable, end_training
from geofm_hf.training.optim import learning_rate_at


@dataclass
class SegmentArguments(ClassificationArguments):
    """Options of segmentation fine-tuning: ``finetune.py``'s, with the mask as the label."""

    label_column: str = "mask"
    num_train_epochs: int = 30
    warmup_epochs: int = 2
    per_device_train_batch_size: int = 16
    learning_rate: float = field(
        default=1e-3, metadata={"help": "Base lr; peak = lr x global batch / 256."}
    )
    weight_decay: float = 0.05
    layer_decay: float = field(default=0.75, metadata={"help": "Layer-wise lr decay (1 = off)."})
    augment: bool = field(default=True, metadata={"help": "Random flips and 90-degree rotations."})
    max_grad_norm: float | None = None
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16."})
    segmentation_hidden_size: int = field(default=128, metadata={"help": "Head width."})
    random_init: bool = field(
        default=False,
        metadata={"help": "Baseline: same architecture, encoder weights randomly initialised."},
    )


def _augment(pixels, masks, generator):
    # Overhead imagery has no "up": flips and right-angle rotations preserve every label.
    if torch.rand((), generator=generator) < 0.5:
        pixels, masks = pixels.flip(-1), masks.flip(-1)
    k = int(torch.randint(4, (), generator=generator))
    if k:
        pixels, masks = torch.rot90(pixels, k, (-2, -1)), torch.rot90(masks, k, (-2, -1))
    return pixels, masks


def _mosaic(split, values: np.ndarray, fill) -> np.ndarray | None:
    """Place per-chip ``values`` (N, ..., H, W) of the first scene at their offsets."""
    first = split.sources[0]
    keep = [i for i, s in enumerate(split.sources) if s == first and split.offsets[i, 0] >= 0]
    if not keep:
        return None
    side = split.masks.shape[-1]
    r0, c0 = split.offsets[keep].min(0)
    r1, c1 = split.offsets[keep].max(0) + side
    canvas = np.full((*values.shape[1:-2], r1 - r0, c1 - c0), fill, dtype=values.dtype)
    for i in keep:
        r, c = split.offsets[i] - (r0, c0)
        canvas[..., r : r + side, c : c + side] = values[i]
    return canvas


def run(args: SegmentArguments) -> dict:
    """Fine-tune, evaluate, save; returns the results record (also in OUTPUT_DIR/results.json)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import AutoImageProcessor

    import geofm_hf  # noqa: F401 - registers the Auto classes
    from geofm_hf import GeoViTMAEConfig, GeoViTMAEForSemanticSegmentation
    from geofm_hf._atomic import atomic_write_text
    from geofm_hf.classification import param_groups_layer_decay, restrict_to_bands
    from geofm_hf.model_card import RunRecord
    from geofm_hf.segmentation import (
        load_segmentation_split,
        save_prediction_png,
        segmentation_metrics,
        update_segmentation_card,
    )
    from geofm_hf.segmentation.visualize import rgb_composite

    check_output_dir_writable(args.output_dir)  # a clear error (exit 2) before any work
    start = time.perf_counter()
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)

    # ---- data
    load = dict(revision=args.dataset_revision, mask_column=args.label_column)
    train = load_segmentation_split(args.dataset_name_or_path, args.train_split, **load)
    test = load_segmentation_split(args.dataset_name_or_path, args.test_split, **load)
    if train.label_names != test.label_names:
        raise ValueError(f"train and test classes differ: {train.label_names} vs "
                         f"{test.label_names}")  # fmt: skip
    num_classes, ignore = len(train.label_names), train.ignore_index
    id2label = dict(enumerate(train.label_names))

    # ---- model + band mapping
    config = GeoViTMAEConfig.from_pretrained(
        args.model_name_or_path, revision=args.revision, num_labels=num_classes,
        id2label=id2label, label2id={v: k for k, v in id2label.items()},
    )  # fmt: skip
    config.segmentation_hidden_size = args.segmentation_hidden_size
    config.semantic_loss_ignore_index = ignore
    model = GeoViTMAEForSemanticSegmentation.from_pretrained(
        args.model_name_or_path, revision=args.revision, config=config
    )
    if args.random_init:
        model = GeoViTMAEForSemanticSegmentation(model.config)
    processor = AutoImageProcessor.from_pretrained(args.model_name_or_path, revision=args.revision)
    processor.size = processor.crop_size = None  # chips are used as cut: never resized
    bands_used = restrict_to_bands(model, processor, train.band_names, args.allow_band_subset)
    band_subset = len(bands_used) < len(train.band_names)
    dataset_bands = bands_used if band_subset else train.band_names

    def prep(split):
        return torch.cat([
            processor(split.images[i : i + 64].astype(np.float32),
                      band_names=dataset_bands)["pixel_values"]
            for i in range(0, len(split), 64)
        ])  # fmt: skip

    train_x, test_x = prep(train), prep(test)
    train_y = torch.from_numpy(train.masks.astype(np.int64))
    interpolate = train_x.shape[-1] != model.config.image_size

    # ---- optimizer: AdamW with layer-wise lr decay, warm-up then cosine
    global_batch = args.per_device_train_batch_size * accelerator.num_processes
    peak_lr = args.learning_rate * global_batch / 256
    optimizer = torch.optim.AdamW(
        param_groups_layer_decay(model, args.weight_decay, args.layer_decay), lr=peak_lr
    )
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(train_x, train_y),
        batch_size=args.per_device_train_batch_size, shuffle=True,
        drop_last=len(train_x) > args.per_device_train_batch_size,
        generator=torch.Generator().manual_seed(args.seed),
    )  # fmt: skip
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    total = args.num_train_epochs * len(loader)
    warmup = args.warmup_epochs * len(loader)
    accelerator.print(
        f"segment {args.model_name_or_path}{' (random init)' if args.random_init else ''}: "
        f"{num_classes} classes, train {len(train)} / test {len(test)} chips, bands "
        f"{bands_used}; global batch {global_batch}, peak lr {peak_lr:.3g}, {total} steps"
    )

    # ---- loop
    aug = torch.Generator().manual_seed(args.seed + accelerator.process_index)
    step, losses = 0, []
    model.train()
    for epoch in range(args.num_train_epochs):
        for pixels, masks in loader:
            scale = learning_rate_at(step, peak=1.0, warmup_steps=warmup, max_steps=total)
            for group in optimizer.param_groups:
                group["lr"] = peak_lr * scale * group.get("lr_scale", 1.0)
            if args.augment:
                pixels, masks = _augment(pixels, masks, aug)
            loss = model(pixels, labels=masks, interpolate_pos_encoding=interpolate).loss
            accelerator.backward(loss)
            if args.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
        losses.append(loss.item())  # a sync point: once per epoch only
        if (epoch + 1) % max(1, args.num_train_epochs // 5) == 0:
            accelerator.print(f"epoch {epoch + 1}: loss {losses[-1]:.4f}")

    # ---- evaluation (every process scores the whole test split: it is small)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([
            model(test_x[i : i + args.per_device_eval_batch_size].to(accelerator.device),
                  interpolate_pos_encoding=interpolate).logits.argmax(1).cpu()
            for i in range(0, len(test_x), args.per_device_eval_batch_size)
        ]).numpy()  # fmt: skip
    metrics = segmentation_metrics(pred, test.masks, num_classes, ignore, train.label_names)
    labelled = train.masks[train.masks != ignore]
    majority = int(np.bincount(labelled, minlength=num_classes).argmax())
    baseline = segmentation_metrics(np.full_like(test.masks, majority), test.masks, num_classes,
                                    ignore, train.label_names)  # fmt: skip

    # ---- save (main process)
    accelerator.wait_for_everyone()
    results: dict = {}
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(output_dir, safe_serialization=True)
        processor.save_pretrained(output_dir)
        dataset_label = args.dataset_name or Path(args.dataset_name_or_path).name
        image = _mosaic(test, test.images.astype(np.float32), np.nan)
        panels = [] if image is None else [
            ("Sentinel-2 RGB (test block)", rgb_composite(image, test.band_names)),
            ("reference", _mosaic(test, test.masks, ignore)),
            (f"prediction (mIoU {100 * metrics['mean_iou']:.1f} %)",
             _mosaic(test, pred.astype(np.uint8), ignore)),
        ]  # fmt: skip
        if panels:
            save_prediction_png(panels, train.label_names, output_dir / "prediction.png",
                                ignore_index=ignore, title=f"{dataset_label}, "
                                f"{'random init' if args.random_init else args.model_name_or_path}")  # fmt: skip
        results = {
            **metrics,
            "majority_class": train.label_names[majority],
            "majority_class_mean_iou": baseline["mean_iou"],
            "majority_class_pixel_accuracy": baseline["pixel_accuracy"],
            "protocol": "segmentation fine-tune",
            "random_init": args.random_init,
            "model_name_or_path": args.model_name_or_path,
            "revision": args.revision,
            "dataset": args.dataset_name_or_path,
            "dataset_name": dataset_label,
            "test_split": args.test_split,
            "num_train": len(train),
            "num_test": len(test),
            "num_classes": num_classes,
            "label_names": train.label_names,
            "bands_used": bands_used,
            "prediction_png": "prediction.png" if panels else None,
            "train_loss_per_epoch": losses,
            "steps": step,
            "seconds": round(time.perf_counter() - start, 2),
            "args": asdict(args),
        }
        atomic_write_text(
            output_dir / "results.json", json.dumps(results, indent=2, sort_keys=True) + "\n"
        )
        record = RunRecord.from_model(
            unwrapped, processor, base_model=args.model_name_or_path,
            base_model_revision=args.revision, global_batch=global_batch, steps=step,
            world_size=accelerator.num_processes, final_loss=losses[-1] if losses else None,
            datasets=[{"repo_id_or_path": args.dataset_name_or_path,
                       "revision": args.dataset_revision}],
            run_config=asdict(args),
            limitations=[f"segmentation fine-tuned on {len(train)} chips of {dataset_label}"],
        )  # fmt: skip
        update_segmentation_card(output_dir, results, record=record)
        accelerator.print(
            f"mIoU {100 * metrics['mean_iou']:.1f}  pixel accuracy "
            f"{100 * metrics['pixel_accuracy']:.1f}  (majority class "
            f"{train.label_names[majority]}: mIoU {100 * baseline['mean_iou']:.1f}) -> {output_dir}"
        )
    end_training(accelerator)
    return results


def main(argv: list[str] | None = None) -> dict:
    """Entry point: ``[CONFIG.yaml] [--overrides]``."""
    from geofm_hf.classification._cli import parse_recipe_args

    (args,) = parse_recipe_args(SegmentArguments, list(sys.argv[1:] if argv is None else argv))
    return run(args)


if __name__ == "__main__":
    from geofm_hf.training.arguments import run_recipe

    sys.exit(run_recipe(main))
