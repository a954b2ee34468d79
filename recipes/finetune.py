"""Full fine-tuning of a geospatial ViT-MAE for scene classification, through Accelerate.

    accelerate launch recipes/finetune.py recipes/configs/finetune_demo.yaml \
        --model_name_or_path runs/pretrain/final --output_dir runs/finetune-tiny
    python recipes/finetune.py recipes/configs/finetune_demo.yaml ...   # one process

Reads top to bottom: arguments -> data -> model + band mapping -> optimizer (layer-wise lr decay)
-> loop (mixup/cutmix optional) -> evaluation -> save. The same Accelerator() / prepare() scales
it the way pretraining scales (accelerate config decides DDP/FSDP). OUTPUT_DIR holds the
fine-tuned model (safetensors, id2label/label2id in config.json), its image processor, results.json,
confusion_matrix.png and a model card, so ``transformers.pipeline("image-classification",
model=OUTPUT_DIR)`` works.
"""

from __future__ import annotations

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
class FinetuneArguments(ClassificationArguments):
    """Options of fine-tuning (names follow transformers' TrainingArguments)."""

    num_train_epochs: int = 100
    warmup_epochs: int = 5
    per_device_train_batch_size: int = 64
    learning_rate: float = field(
        default=1e-3, metadata={"help": "Base lr (MAE fine-tune); peak = lr x global batch / 256."}
    )
    weight_decay: float = 0.05
    layer_decay: float = field(default=0.75, metadata={"help": "Layer-wise lr decay (1 = off)."})
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    label_smoothing: float = 0.1
    augment: bool = field(default=True, metadata={"help": "Random flips and 90-degree rotations."})
    max_grad_norm: float | None = None
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16."})
    seeds: int = field(
        default=1,
        metadata={"help": "Fine-tunes with seeds seed .. seed+seeds-1 (results over all; the "
                  "first seed's model is saved). Each costs a full fine-tune."},
    )  # fmt: skip
    bootstrap_resamples: int = 2000


def _preprocess(processor, split, band_names, batch_size: int) -> torch.Tensor:
    """All images of a split through the image processor: ``(N, C, S, S)`` float32."""
    out = []
    for start in range(0, len(split), batch_size):
        batch = split.images[start : start + batch_size]
        batch = (batch.astype(np.float32) if isinstance(batch, np.ndarray)
                 else [np.asarray(b, np.float32) for b in batch])  # fmt: skip
        out.append(processor(batch, band_names=band_names)["pixel_values"])
    return torch.cat(out)


def _augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # Overhead imagery has no "up": flips and right-angle rotations are label-preserving.
    if torch.rand((), generator=generator) < 0.5:
        pixels = pixels.flip(-1)
    k = int(torch.randint(4, (), generator=generator))
    return torch.rot90(pixels, k, dims=(-2, -1)) if k else pixels


def run(args: FinetuneArguments) -> dict:
    """Fine-tune, evaluate, save; returns the results record (also in OUTPUT_DIR/results.json)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import AutoImageProcessor

    import geofm_hf  # noqa: F401 - registers the Auto classes
    from geofm_hf import GeoViTMAEForImageClassification
    from geofm_hf.classification import (
        check_splits,
        classification_metrics,
        confusion_matrix,
        load_classification_split,
        mixup_cutmix,
        param_groups_layer_decay,
        prepare_dataset_bands,
        restrict_to_bands,
        results_record,
        save_confusion_matrix_png,
        update_model_card,
        write_results,
    )
    from geofm_hf.classification.stats import summarize_predictions
    from geofm_hf.model_card import RunRecord

    start = time.perf_counter()
    check_output_dir_writable(args.output_dir)  # a clear error (exit 2) before any work
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    set_seed(args.seed)
    output_dir = Path(args.output_dir)

    # ---- data
    load = dict(revision=args.dataset_revision, image_column=args.image_column,
                label_column=args.label_column, band_names=args.band_names)  # fmt: skip
    train = load_classification_split(args.dataset_name_or_path, args.train_split, **load)
    test = load_classification_split(args.dataset_name_or_path, args.test_split, **load)
    check_splits(train, test)
    num_classes = len(train.label_names)
    id2label = dict(enumerate(train.label_names))

    # ---- band mapping (an explicit subset for RGB data on a multispectral model)
    def build_model():
        return GeoViTMAEForImageClassification.from_pretrained(
            args.model_name_or_path, revision=args.revision, num_labels=num_classes,
            id2label=id2label, label2id={v: k for k, v in id2label.items()}, pooling=args.feature,
        )  # fmt: skip

    model = build_model()
    processor = AutoImageProcessor.from_pretrained(args.model_name_or_path, revision=args.revision)
    model_bands = list(model.config.band_names or [])
    # Matched by sensor + wavelength (never band number); --dataset_bands picks the channels.
    channels, dataset_bands, bands_used = prepare_dataset_bands(
        model, processor, train.band_names, dataset=args.dataset_name_or_path,
        dataset_revision=args.dataset_revision, dataset_bands=args.dataset_bands,
        dataset_sensor=args.dataset_sensor, allow_subset=args.allow_band_subset,
    )  # fmt: skip
    band_subset = bool(model_bands) and len(bands_used) < len(model_bands)
    if channels != list(range(len(train.band_names))):
        for split in (train, test):
            split.images = (split.images[:, channels] if isinstance(split.images, np.ndarray)
                            else [im[channels] for im in split.images])  # fmt: skip
            split.band_names = [split.band_names[i] for i in channels]
    # Chips are resized to the model's input here on purpose (the probe/fine-tune protocol).
    processor.do_resize = True
    train_x = _preprocess(processor, train, dataset_bands, args.per_device_eval_batch_size)
    test_x = _preprocess(processor, test, dataset_bands, args.per_device_eval_batch_size)
    train_y, test_y = torch.from_numpy(train.labels), torch.from_numpy(test.labels)
    interpolate = train_x.shape[-1] != model.config.image_size
    global_batch = args.per_device_train_batch_size * accelerator.num_processes
    peak_lr = args.learning_rate * global_batch / 256

    def fine_tune(model, seed: int):
        """One fine-tune from the checkpoint with ``seed``: returns (model, test scores, losses,
        steps)."""
        set_seed(seed)
        if model is None:  # a later seed: a fresh copy of the checkpoint, same band mapping
            accelerator.free_memory()
            model = build_model()
            fresh = AutoImageProcessor.from_pretrained(
                args.model_name_or_path, revision=args.revision
            )
            # dataset_bands are already the model's band names: the same restriction again.
            restrict_to_bands(model, fresh, dataset_bands, args.allow_band_subset)
        # ---- optimizer: AdamW with layer-wise lr decay, warm-up then cosine
        groups = param_groups_layer_decay(model, args.weight_decay, args.layer_decay)
        optimizer = torch.optim.AdamW(groups, lr=peak_lr, betas=(0.9, 0.999))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(train_x, train_y),
            batch_size=args.per_device_train_batch_size, shuffle=True, drop_last=len(train_x) >
            args.per_device_train_batch_size, generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        steps_per_epoch = len(loader)
        total, warmup = (
            args.num_train_epochs * steps_per_epoch,
            args.warmup_epochs * steps_per_epoch,
        )
        accelerator.print(
            f"fine-tune {args.model_name_or_path}: {num_classes} classes, train {len(train)} / test "
            f"{len(test)}, bands {bands_used}; global batch {global_batch}, peak lr {peak_lr:.3g}, "
            f"layer decay {args.layer_decay}, {total} steps on {accelerator.num_processes} process(es)"
        )

        # ---- loop
        aug = torch.Generator().manual_seed(seed + accelerator.process_index)
        step, losses = 0, []
        model.train()
        for epoch in range(args.num_train_epochs):
            for pixels, labels in loader:
                scale = learning_rate_at(step, peak=1.0, warmup_steps=warmup, max_steps=total)
                for group in optimizer.param_groups:
                    group["lr"] = peak_lr * scale * group.get("lr_scale", 1.0)
                if args.augment:
                    pixels = _augment(pixels, aug)
                pixels, targets = mixup_cutmix(
                    pixels, labels, num_classes, mixup_alpha=args.mixup_alpha,
                    cutmix_alpha=args.cutmix_alpha, label_smoothing=args.label_smoothing,
                    generator=aug,
                )  # fmt: skip
                logits = model(pixels, interpolate_pos_encoding=interpolate).logits
                loss = torch.nn.functional.cross_entropy(logits.float(), targets)
                accelerator.backward(loss)
                if args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
            losses.append(loss.item())  # .item() is a sync point: once per epoch only
            if (epoch + 1) % max(1, args.num_train_epochs // 5) == 0:
                accelerator.print(f"epoch {epoch + 1}: loss {losses[-1]:.4f}")

        # ---- evaluation (every process scores the whole test split: it is small)
        model.eval()
        with torch.no_grad():
            scores = torch.cat([
                model(test_x[i : i + args.per_device_eval_batch_size].to(accelerator.device),
                      interpolate_pos_encoding=interpolate).logits.float().cpu()
                for i in range(0, len(test_x), args.per_device_eval_batch_size)
            ]).numpy()  # fmt: skip
        return accelerator.unwrap_model(model), scores, losses, step

    seeds = [args.seed + i for i in range(args.seeds)]
    per_seed, saved = [], None
    for i, seed in enumerate(seeds):
        unwrapped, scores, seed_losses, seed_steps = fine_tune(model if i == 0 else None, seed)
        per_seed.append({"metrics": classification_metrics(scores, test_y.numpy(), num_classes),
                         "predictions": scores.argmax(1)})  # fmt: skip
        if i == 0:  # the saved model is the first seed's: its scores give the confusion matrix
            saved, first_scores, losses, step = unwrapped, scores, seed_losses, seed_steps
        accelerator.print(f"seed {seed}: top-1 {100 * per_seed[-1]['metrics']['top1']:.1f}")
    summary = summarize_predictions(per_seed, test_y.numpy(), num_classes, seeds=seeds,
                                    resamples=args.bootstrap_resamples)  # fmt: skip
    metrics = {k: v for k, v in summary.items() if k != "test_predictions"}
    matrix = confusion_matrix(first_scores.argmax(1), test_y.numpy(), num_classes)

    # ---- save (main process): weights, processor, results, card
    accelerator.wait_for_everyone()
    results = {}
    if accelerator.is_main_process:
        unwrapped = saved
        unwrapped.save_pretrained(output_dir, safe_serialization=True)
        processor.save_pretrained(output_dir)
        dataset_label = args.dataset_name or Path(args.dataset_name_or_path).name
        save_confusion_matrix_png(matrix, train.label_names, output_dir / "confusion_matrix.png",
                                  title=f"fine-tuned on {dataset_label}")  # fmt: skip
        results = results_record(
            metrics=metrics,
            protocol="fine-tune",
            args=args,
            preset=getattr(unwrapped.config, "preset", None),
            num_parameters_encoder=sum(p.numel() for p in unwrapped.vit.parameters()),
            dataset_name=dataset_label,
            train=train,
            test=test,
            num_classes=num_classes,
            bands_used=bands_used,
            band_subset=band_subset,
            matrix=matrix,
            protocols={"fine-tune": summary},
            test_references=test_y.tolist(),
            train_loss_per_epoch=losses,
            steps=step,
            global_batch=global_batch,
            seconds=round(time.perf_counter() - start, 2),
        )
        write_results(output_dir, results)
        record = RunRecord.from_model(
            unwrapped, processor, base_model=args.model_name_or_path,
            base_model_revision=args.revision, global_batch=global_batch, steps=step,
            world_size=accelerator.num_processes, final_loss=losses[-1] if losses else None,
            datasets=[{"repo_id_or_path": args.dataset_name_or_path,
                       "revision": args.dataset_revision}],
            run_config=asdict(args),
            limitations=[f"fine-tuned on {len(train)} images of {dataset_label}"],
        )  # fmt: skip
        update_model_card(output_dir, results, record=record)
        accelerator.print(
            f"top-1 {100 * metrics['top1']:.1f}  top-{metrics['top5_k']} "
            f"{100 * metrics['top5']:.1f}  macro-F1 {100 * metrics['macro_f1']:.1f} -> {output_dir}"
        )
    end_training(accelerator)
    return results


def main(argv: list[str] | None = None) -> dict:
    """Entry point: ``[CONFIG.yaml] [--overrides]``."""
    from geofm_hf.classification._cli import parse_recipe_args

    (args,) = parse_recipe_args(FinetuneArguments, list(sys.argv[1:] if argv is None else argv))
    return run(args)


if __name__ == "__main__":
    from geofm_hf.training.arguments import run_recipe

    sys.exit(run_recipe(main))
