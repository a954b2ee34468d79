"""Linear probe (MAE protocol) of a frozen geospatial ViT-MAE encoder on scene classification.

    python recipes/linear_probe.py recipes/configs/probe_demo.yaml \
        --model_name_or_path runs/pretrain/final --output_dir runs/probe-tiny
    python recipes/linear_probe.py table runs/probe-*/ --baseline runs/probe-random \
        --output runs/probe_table.md

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
from geofm_hf.training.arguments import check_output_dir_writable


@dataclass
class ProbeArguments(ClassificationArguments):
    """Options of the linear probe (names follow transformers' TrainingArguments)."""

    feature: str = field(
        default="mean",
        metadata={"help": "cls, mean (patch tokens), mean_lastK (mean over the last K blocks) or "
                  "auto (the best of cls/mean/mean_last4 on the validation split)."},
    )  # fmt: skip
    protocol: str = field(
        default="both", metadata={"help": "linear, knn or both (same cached features)."}
    )
    seeds: int = field(
        default=5, metadata={"help": "Linear probes trained with seeds seed .. seed+seeds-1."}
    )
    knn_k: int = 20
    knn_temperature: float = 0.07
    sweep: bool = field(
        default=True,
        metadata={"help": "Choose learning rate and weight decay on a validation split of train."},
    )
    val_fraction: float = field(default=0.2, metadata={"help": "Share of train held out."})
    val_seed: int = field(
        default=0,
        metadata={"help": "Seed of the validation split and sweep, apart from --seed so that the "
                  "probe seeds change the per-seed values, never the chosen protocol."},
    )  # fmt: skip
    sweep_learning_rates: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    sweep_weight_decays: list[float] = field(default_factory=lambda: [0.0, 1e-4])
    bootstrap_resamples: int = 2000
    cache_features: bool = field(default=True, metadata={"help": "Cache features on disk."})
    feature_cache_dir: str | None = field(
        default=None, metadata={"help": "Feature cache folder (default OUTPUT_DIR/feature_cache)."}
    )
    num_train_epochs: int = 90
    warmup_epochs: int = 10
    per_device_train_batch_size: int = 256
    learning_rate: float = field(
        default=0.1,
        metadata={"help": "Base lr (peak = learning_rate x batch / 256) when --sweep false."},
    )
    weight_decay: float = field(default=0.0, metadata={"help": "Used when --sweep false."})
    optimizer: str = field(
        default="sgd", metadata={"help": "sgd (default: small datasets), lars (MAE) or adamw."}
    )
    update_model_card: bool = field(
        default=True, metadata={"help": "Write the results into the checkpoint's model-index."}
    )


PROTOCOLS = {"linear": ("linear-probe",), "knn": ("knn",), "both": ("linear-probe", "knn")}


def _model_source(args: ProbeArguments) -> tuple[Path | None, str | None]:
    """Local folder of the model (None for a Hub id) and the commit actually loaded."""
    local = Path(args.model_name_or_path)
    if local.is_dir():
        return local, None
    from geofm_hf.hub import resolve_model_source

    snapshot = resolve_model_source(args.model_name_or_path, args.revision)
    return None, snapshot.name  # snapshots/<commit sha>


def _check_args(args: ProbeArguments) -> None:
    from geofm_hf.classification.features import check_feature

    if args.feature != "auto":
        check_feature(args.feature)
    if args.protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}: found {args.protocol!r}.")
    if args.seeds < 1:
        raise ValueError(f"seeds is a count of probe seeds (>= 1): found {args.seeds}.")


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
    from geofm_hf.classification.features import FEATURE_CHOICES
    from geofm_hf.classification.knn import knn_scores
    from geofm_hf.classification.probe import sweep_linear_probe
    from geofm_hf.classification.stats import summarize_predictions
    from geofm_hf.model_card import RunRecord

    start = time.perf_counter()
    _check_args(args)
    output_dir = Path(args.output_dir)
    check_output_dir_writable(output_dir)  # creates it; a clear error (exit 2) if it cannot
    torch.manual_seed(args.seed)

    # ---- data
    load = dict(revision=args.dataset_revision, image_column=args.image_column,
                label_column=args.label_column, band_names=args.band_names)  # fmt: skip
    train = load_classification_split(args.dataset_name_or_path, args.train_split, **load)
    test = load_classification_split(args.dataset_name_or_path, args.test_split, **load)
    check_splits(train, test)
    num_classes = len(train.label_names)
    train_y = torch.from_numpy(train.labels).long()

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

    def features(split_name: str, split, feature: str) -> torch.Tensor:
        key = feature_cache_key(
            model=str(Path(args.model_name_or_path).resolve()) if local_dir else
            args.model_name_or_path, revision=commit or args.revision,
            weights_mtime=(local_dir / "model.safetensors").stat().st_mtime_ns
            if local_dir and (local_dir / "model.safetensors").is_file() else None,
            dataset=args.dataset_name_or_path, dataset_revision=args.dataset_revision,
            split=split_name, n=len(split), feature=feature, bands=bands_used,
            processor=processor.to_dict(),
        )  # fmt: skip

        def compute():
            return extract_features(
                model, processor, split.images, dataset_bands, feature=feature,
                batch_size=args.per_device_eval_batch_size,
            )  # fmt: skip

        out, cached = load_or_extract_features(cache_dir, key, compute)
        print(
            f"features {split_name} ({feature}): {tuple(out.shape)}{' (cache)' if cached else ''}"
        )
        return out

    # ---- choices on a validation split of train (never on test): feature, lr, weight decay
    schedule = dict(epochs=args.num_train_epochs, warmup_epochs=args.warmup_epochs,
                    batch_size=args.per_device_train_batch_size, optimizer=args.optimizer)  # fmt: skip
    # --sweep false keeps the given lr / weight decay; feature auto still compares on validation.
    sweep_grid = dict(learning_rates=args.sweep_learning_rates if args.sweep else
                      [args.learning_rate], weight_decays=args.sweep_weight_decays if args.sweep
                      else [args.weight_decay], val_fraction=args.val_fraction,
                      seed=args.val_seed, **schedule)  # fmt: skip
    candidates = [args.feature]
    if args.feature == "auto":  # mean_last4 on a model of fewer blocks averages all of them
        depth = model.config.num_hidden_layers
        candidates = [f if f != "mean_last4" or depth >= 4 else f"mean_last{depth}"
                      for f in FEATURE_CHOICES if f != "mean_last4" or depth > 1]  # fmt: skip
    selection: dict = {}
    if len(candidates) > 1 or (args.sweep and "linear-probe" in PROTOCOLS[args.protocol]):
        for feature in candidates:
            selection[feature] = sweep_linear_probe(
                features(args.train_split, train, feature), train_y, num_classes, **sweep_grid
            )
        feature = max(candidates, key=lambda f: selection[f]["val_top1"])  # first wins ties
        chosen = selection[feature]
        print(f"validation ({chosen['num_val']} of train): " + ", ".join(
            f"{f} top-1 {100 * r['val_top1']:.1f} (lr {r['learning_rate']:g}, wd "
            f"{r['weight_decay']:g})" for f, r in selection.items()))  # fmt: skip
        learning_rate, weight_decay = chosen["learning_rate"], chosen["weight_decay"]
    else:
        feature, learning_rate, weight_decay = candidates[0], args.learning_rate, args.weight_decay
    train_x = features(args.train_split, train, feature)
    test_x = features(args.test_split, test, feature)

    # ---- protocols: linear probe over seeds, kNN (deterministic)
    seeds = [args.seed + i for i in range(args.seeds)]
    summaries, first_scores, probe_stats = {}, {}, []
    for protocol in PROTOCOLS[args.protocol]:
        per_seed = []
        if protocol == "linear-probe":
            for seed in seeds:
                probe, stats = train_linear_probe(
                    train_x, train_y, num_classes, base_learning_rate=learning_rate,
                    weight_decay=weight_decay, seed=seed, **schedule,
                )  # fmt: skip
                scores = predict_scores(probe, test_x).numpy()
                per_seed.append({"metrics": classification_metrics(scores, test.labels, num_classes),
                                 "predictions": scores.argmax(1)})  # fmt: skip
                probe_stats.append({"seed": seed, **stats})
                first_scores.setdefault(protocol, scores)
        else:
            scores = knn_scores(train_x, train_y, test_x, num_classes, k=args.knn_k,
                                temperature=args.knn_temperature).numpy()  # fmt: skip
            per_seed.append({"metrics": classification_metrics(scores, test.labels, num_classes),
                             "predictions": scores.argmax(1)})  # fmt: skip
            first_scores[protocol] = scores
        summaries[protocol] = summarize_predictions(
            per_seed, test.labels, num_classes,
            seeds=seeds if protocol == "linear-probe" else None,
            resamples=args.bootstrap_resamples,
        )  # fmt: skip
        r = summaries[protocol]
        print(f"{protocol}: top-1 {100 * r['top1']:.1f} [{100 * r['top1_ci95'][0]:.1f}, "
              f"{100 * r['top1_ci95'][1]:.1f}] (std over {r['num_seeds']} seed(s) "
              f"{100 * r['top1_std']:.1f}); macro-F1 {100 * r['macro_f1']:.1f} "
              f"[{100 * r['macro_f1_ci95'][0]:.1f}, {100 * r['macro_f1_ci95'][1]:.1f}]")  # fmt: skip

    # ---- results: the first protocol is the headline (top-level keys), all are in "protocols"
    primary = PROTOCOLS[args.protocol][0]
    scores = first_scores[primary]
    matrix = confusion_matrix(scores.argmax(1), test.labels, num_classes)
    dataset_label = args.dataset_name or Path(args.dataset_name_or_path).name
    save_confusion_matrix_png(
        matrix, train.label_names, output_dir / "confusion_matrix.png",
        title=f"{Path(args.model_name_or_path).name} {primary} on {dataset_label}",
    )  # fmt: skip
    headline = {k: v for k, v in summaries[primary].items() if k != "test_predictions"}
    results = results_record(
        metrics=headline,
        protocol=primary,
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
        feature_used=feature,
        protocols=summaries,
        test_references=test.labels.tolist(),
        selection={
            "feature": args.feature,
            "chosen_feature": feature,
            "learning_rate": learning_rate,
            "weight_decay": weight_decay,
            "on": "validation split of train" if selection else "fixed (--sweep false)",
            "candidates": selection,
        },
        probe={
            "optimizer": args.optimizer,
            "epochs": args.num_train_epochs,
            "per_seed": probe_stats,
        },
        knn={"k": args.knn_k, "temperature": args.knn_temperature},
        seconds=round(time.perf_counter() - start, 2),
    )
    results["feature"] = feature  # the feature actually probed ("auto" is in args)
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
    print(f"{primary}: top-1 {100 * results['top1']:.1f}  macro-F1 "
          f"{100 * results['macro_f1']:.1f}  -> {output_dir / 'results.json'}")  # fmt: skip
    return results


def table_main(argv: list[str]) -> str:
    """``table RUN_DIR_OR_RESULTS_JSON... [--output FILE]``: the comparison table (Markdown)."""
    from geofm_hf._atomic import atomic_write_text
    from geofm_hf.classification import load_results, results_table

    parser = argparse.ArgumentParser(prog="linear_probe.py table")
    parser.add_argument("results", nargs="+", help="results.json files or run folders")
    parser.add_argument("--output", help="also write the table to this Markdown file")
    parser.add_argument(
        "--baseline",
        help="run to compare every row with (paired bootstrap of top-1 on the same test set)",
    )
    ns = parser.parse_args(argv)
    paths = [Path(p).resolve() for p in ns.results]
    records = [load_results(p) for p in paths]
    baseline = None
    if ns.baseline:
        where = Path(ns.baseline).resolve()
        same = [r for p, r in zip(paths, records) if where in (p, p.parent, p / "results.json")]
        baseline = same[0] if same else load_results(where)
    text = results_table(records, baseline=baseline)
    if ns.output:
        atomic_write_text(ns.output, text)
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
