"""Linear probe (MAE protocol) of a frozen geospatial ViT-MAE encoder on scene classification.

    python recipes/linear_probe.py recipes/configs/probe_demo.yaml \
        --model_name_or_path runs/pretrain/final --output_dir runs/probe-tiny
    python recipes/linear_probe.py table runs/probe-*/ --output runs/probe_table.md

Reads top to bottom: arguments -> data -> model + band mapping -> features (cached) -> probe ->
metrics -> results.json, confusion matrix PNG, model card ``model-index``. The model is any
``from_pretrained`` source: a local export or a Hub repo id + revision (offline from the cache with
HF_HUB_OFFLINE=1). Writes OUTPUT_DIR/results.json (top1, top5, macro_f1, num_train, num_test ...),
OUTPUT_DIR/confusion_matrix.png, and updates the card of a local checkpoint (else
OUTPUT_DIR/model_card/README.md).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from geofm_hf.classification.arguments import ClassificationArguments


@dataclass
class ProbeArguments(ClassificationArguments):
    """Options of the linear probe (names follow transformers' TrainingArguments)."""

    cache_features: bool = field(default=True, metadata={"help": "Cache features on disk."})
    feature_cache_dir: str | None = field(
        default=None, metadata={"help": "Feature cache folder (default OUTPUT_DIR/feature_cache)."}
    )
    num_train_epochs: int = 90
    warmup_epochs: int = 10
    per_device_train_batch_size: int = 256
    learning_rate: float = field(
        default=0.1, metadata={"help": "Base lr; the peak is learning_rate x batch / 256."}
    )
    weight_decay: float = 0.0
    optimizer: str = field(
        default="sgd", metadata={"help": "sgd (default: small datasets), lars (MAE) or adamw."}
    )
    update_model_card: bool = field(
        default=True, metadata={"help": "Write the results into the checkpoint's model-index."}
    )


def _model_source(args: ProbeArguments) -> tuple[Path | None, str | None]:
    """Local folder of the model (None for a Hub id) and the commit actually loaded."""
    local = Path(args.model_name_or_path)
    if local.is_dir():
        return local, None
    from geofm_hf.hub import resolve_model_source

    snapshot = resolve_model_source(args.model_name_or_path, args.revision)
    return None, snapshot.name  # snapshots/<commit sha>


def run(args: ProbeArguments) -> dict:
    """Run the probe; returns the results record (also written to OUTPUT_DIR/results.json)."""
    from transformers import AutoImageProcessor, AutoModel

    import geofm_hf  # noqa: F401 - registers the Auto classes
    from geofm_hf.classification import (
        check_splits,
        classification_metrics,
        confusion_matrix,
        extract_features,
        feature_cache_key,
        load_classification_split,
        load_or_extract_features,
        predict_scores,
        prepare_dataset_bands,
        results_record,
        save_confusion_matrix_png,
        train_linear_probe,
        update_model_card,
        write_results,
    )
    from geofm_hf.model_card import RunRecord

    start = time.perf_counter()
    if args.feature not in ("cls", "mean"):
        raise ValueError(f"feature must be 'cls' or 'mean': found {args.feature!r}.")
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    # ---- data
    load = dict(revision=args.dataset_revision, image_column=args.image_column,
                label_column=args.label_column, band_names=args.band_names)  # fmt: skip
    train = load_classification_split(args.dataset_name_or_path, args.train_split, **load)
    test = load_classification_split(args.dataset_name_or_path, args.test_split, **load)
    check_splits(train, test)
    num_classes = len(train.label_names)

    # ---- model (frozen) + band mapping
    local_dir, commit = _model_source(args)
    model = AutoModel.from_pretrained(args.model_name_or_path, revision=args.revision).eval()
    processor = AutoImageProcessor.from_pretrained(args.model_name_or_path, revision=args.revision)
    for p in model.parameters():
        p.requires_grad_(False)
    card_record = RunRecord.from_model(model, processor)  # before any band restriction
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
    print(
        f"model {args.model_name_or_path}@{args.revision or commit or 'local'}: "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M encoder params; "
        f"train {len(train)} / test {len(test)} images, {num_classes} classes; bands "
        f"{bands_used}{' (explicit subset of the model bands)' if band_subset else ''}"
    )

    # ---- features (cached)
    cache_dir = None
    if args.cache_features:
        cache_dir = args.feature_cache_dir or output_dir / "feature_cache"
    feats = {}
    for name, split in ((args.train_split, train), (args.test_split, test)):
        key = feature_cache_key(
            model=str(Path(args.model_name_or_path).resolve()) if local_dir else
            args.model_name_or_path, revision=commit or args.revision,
            weights_mtime=(local_dir / "model.safetensors").stat().st_mtime_ns
            if local_dir and (local_dir / "model.safetensors").is_file() else None,
            dataset=args.dataset_name_or_path, dataset_revision=args.dataset_revision,
            split=name, n=len(split), feature=args.feature, bands=bands_used,
            processor=processor.to_dict(),
        )  # fmt: skip

        def compute(split=split):
            return extract_features(
                model, processor, split.images, dataset_bands, feature=args.feature,
                batch_size=args.per_device_eval_batch_size,
            )  # fmt: skip

        feats[name], cached = load_or_extract_features(cache_dir, key, compute)
        print(f"features {name}: {tuple(feats[name].shape)}{' (cache)' if cached else ''}")

    # ---- probe
    probe, stats = train_linear_probe(
        feats[args.train_split], torch.from_numpy(train.labels), num_classes,
        epochs=args.num_train_epochs, warmup_epochs=args.warmup_epochs,
        batch_size=args.per_device_train_batch_size, base_learning_rate=args.learning_rate,
        weight_decay=args.weight_decay, optimizer=args.optimizer, seed=args.seed,
    )  # fmt: skip
    print(f"probe: {args.optimizer}, peak lr {stats['learning_rate']:.4g}, {stats['steps']} steps,"
          f" final loss {stats['final_loss']:.4f}")  # fmt: skip

    # ---- metrics
    scores = predict_scores(probe, feats[args.test_split]).numpy()
    metrics = classification_metrics(scores, test.labels, num_classes)
    matrix = confusion_matrix(scores.argmax(1), test.labels, num_classes)
    dataset_label = args.dataset_name or Path(args.dataset_name_or_path).name
    save_confusion_matrix_png(
        matrix, train.label_names, output_dir / "confusion_matrix.png",
        title=f"{Path(args.model_name_or_path).name} linear probe on {dataset_label}",
    )  # fmt: skip
    results = results_record(
        metrics=metrics,
        protocol="linear-probe",
        args=args,
        preset=getattr(model.config, "preset", None),
        num_parameters_encoder=sum(p.numel() for p in model.parameters()),
        dataset_name=dataset_label,
        train=train,
        test=test,
        num_classes=num_classes,
        bands_used=bands_used,
        band_subset=band_subset,
        matrix=matrix,
        commit=commit,
        probe={"optimizer": args.optimizer, "epochs": args.num_train_epochs, **stats},
        seconds=round(time.perf_counter() - start, 2),
    )
    write_results(output_dir, results)

    # ---- model card model-index
    if args.update_model_card:
        card_dir = local_dir if local_dir is not None else output_dir / "model_card"
        if local_dir is None:
            from geofm_hf.hub import resolve_model_source
            from geofm_hf.model_card import RUN_RECORD_NAME

            card_dir.mkdir(parents=True, exist_ok=True)
            snapshot = resolve_model_source(args.model_name_or_path, args.revision)
            remote = snapshot / RUN_RECORD_NAME
            if remote.is_file() and not (card_dir / RUN_RECORD_NAME).is_file():
                card_record = RunRecord.load(remote)
                # The card references the run's figures: bring them along from the snapshot.
                for figure in (card_record.loss_curve_png, card_record.reconstruction_png):
                    if figure and (snapshot / figure).is_file():
                        shutil.copyfile(snapshot / figure, card_dir / figure)
        card = update_model_card(card_dir, results, record=card_record)
        print(f"model card: {card}")
    print(
        f"top-1 {100 * metrics['top1']:.1f}  top-{metrics['top5_k']} {100 * metrics['top5']:.1f}"
        f"  macro-F1 {100 * metrics['macro_f1']:.1f}  -> {output_dir / 'results.json'}"
    )
    return results


def table_main(argv: list[str]) -> str:
    """``table RUN_DIR_OR_RESULTS_JSON... [--output FILE]``: the comparison table (Markdown)."""
    from geofm_hf.classification import load_results, results_table

    parser = argparse.ArgumentParser(prog="linear_probe.py table")
    parser.add_argument("results", nargs="+", help="results.json files or run folders")
    parser.add_argument("--output", help="also write the table to this Markdown file")
    ns = parser.parse_args(argv)
    text = results_table([load_results(p) for p in ns.results])
    if ns.output:
        out = Path(ns.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
    print(text, end="")
    return text


def main(argv: list[str] | None = None) -> dict | str:
    """Entry point: ``[CONFIG.yaml] [--overrides]`` runs the probe; ``table ...`` aggregates."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "table":
        return table_main(argv[1:])
    from geofm_hf.classification._cli import parse_recipe_args

    (args,) = parse_recipe_args(ProbeArguments, argv)
    return run(args)


if __name__ == "__main__":
    from geofm_hf.training.arguments import run_recipe

    sys.exit(run_recipe(main))
