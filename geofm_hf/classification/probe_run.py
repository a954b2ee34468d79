"""A probe run of a frozen encoder (MAE's linear probe and DINO's kNN), and the table of runs.

:func:`run_probe` reads top to bottom: data -> model + band mapping -> features (cached) ->
choices on a validation split of train (feature, lr, weight decay; never on test) -> linear probes
over seeds and kNN -> ``results.json``, confusion matrix PNG, model card ``model-index``. The model
is any ``from_pretrained`` source: a local export or a Hub repo id + revision.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..training.arguments import ArgumentError, check_output_dir_writable
from .arguments import PROBE_PROTOCOLS, ProbeArguments
from .bands import match_splits_to_model
from .data import load_train_test, metadata_for_model
from .features import (
    FEATURE_CHOICES,
    check_feature,
    extract_features,
    feature_cache_key,
    load_or_extract_features,
)
from .geobench import geobench_aggregate
from .knn import knn_scores
from .metrics import classification_metrics, confusion_matrix, save_confusion_matrix_png
from .model_source import ModelSource, load_pretrained
from .probe import predict_scores, sweep_linear_probe, train_linear_probe
from .results import dataset_label, results_record, update_model_card, write_results
from .stats import summarize_predictions

__all__ = ["probe_table", "run_probe"]


def _check_arguments(args: ProbeArguments) -> None:
    if args.feature != "auto":
        try:
            check_feature(args.feature)
        except ValueError as err:
            raise ArgumentError(str(err)) from None
    if args.protocol not in PROBE_PROTOCOLS:
        raise ArgumentError(
            f"protocol must be one of {sorted(PROBE_PROTOCOLS)}: found {args.protocol!r}."
        )
    if args.seeds < 1:
        raise ArgumentError(f"seeds is a count of probe seeds (>= 1): found {args.seeds}.")


def _digest(values) -> str:
    """What a cache key keeps of an array of dates or places: its bytes' hash."""
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()[:16]


class _Features:
    """Features of a split, from the cache when the same model, data and options made them."""

    def __init__(self, args: ProbeArguments, source: ModelSource, model, processor, bands) -> None:
        self.args, self.source, self.model, self.processor, self.bands = (
            args, source, model, processor, bands)  # fmt: skip
        self.cache_dir = None
        if args.cache_features:
            self.cache_dir = args.feature_cache_dir or Path(args.output_dir) / "feature_cache"

    def __call__(self, split_name: str, split, feature: str) -> torch.Tensor:
        args = self.args
        metadata = metadata_for_model(self.model.config, split)
        key = feature_cache_key(
            **self.source.cache_identity(), dataset=args.dataset_name_or_path,
            dataset_revision=args.dataset_revision, split=split_name, n=len(split),
            feature=feature, bands=self.bands.bands_used, processor=self.processor.to_dict(),
            metadata={k: _digest(v) for k, v in metadata.items()},
        )  # fmt: skip

        def compute():
            return extract_features(
                self.model, self.processor, split.images, self.bands.band_names, feature=feature,
                batch_size=args.per_device_eval_batch_size, metadata=metadata,
            )  # fmt: skip

        out, cached = load_or_extract_features(self.cache_dir, key, compute)
        print(
            f"features {split_name} ({feature}): {tuple(out.shape)}{' (cache)' if cached else ''}"
        )
        return out


def _schedule(args: ProbeArguments) -> dict:
    return dict(epochs=args.num_train_epochs, warmup_epochs=args.warmup_epochs,
                batch_size=args.per_device_train_batch_size, optimizer=args.optimizer)  # fmt: skip


def _choose(args: ProbeArguments, features: _Features, train, num_classes: int, depth: int):
    """Feature, base lr and weight decay, chosen on a validation split of train (never on test):
    ``(feature, learning_rate, weight_decay, selection record)``."""
    train_y = torch.from_numpy(train.labels).long()
    # --sweep false keeps the given lr / weight decay; feature auto still compares on validation.
    grid = dict(learning_rates=args.sweep_learning_rates if args.sweep else [args.learning_rate],
                weight_decays=args.sweep_weight_decays if args.sweep else [args.weight_decay],
                val_fraction=args.val_fraction, seed=args.val_seed, **_schedule(args))  # fmt: skip
    candidates = [args.feature]
    if args.feature == "auto":  # mean_last4 on a model of fewer blocks averages all of them
        candidates = [f if f != "mean_last4" or depth >= 4 else f"mean_last{depth}"
                      for f in FEATURE_CHOICES if f != "mean_last4" or depth > 1]  # fmt: skip
    scores: dict = {}
    if len(candidates) > 1 or (args.sweep and "linear-probe" in PROBE_PROTOCOLS[args.protocol]):
        for feature in candidates:
            scores[feature] = sweep_linear_probe(
                features(args.train_split, train, feature), train_y, num_classes, **grid
            )
        feature = max(candidates, key=lambda f: scores[f]["val_top1"])  # first wins ties
        chosen = scores[feature]
        print(f"validation ({chosen['num_val']} of train): " + ", ".join(
            f"{f} top-1 {100 * r['val_top1']:.1f} (lr {r['learning_rate']:g}, wd "
            f"{r['weight_decay']:g})" for f, r in scores.items()))  # fmt: skip
        learning_rate, weight_decay = chosen["learning_rate"], chosen["weight_decay"]
    else:
        feature, learning_rate, weight_decay = candidates[0], args.learning_rate, args.weight_decay
    selection = {
        "feature": args.feature,
        "chosen_feature": feature,
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "on": "validation split of train" if scores else "fixed (--sweep false)",
        "candidates": scores,
    }
    return feature, learning_rate, weight_decay, selection


def _protocols(args: ProbeArguments, train_x, train_y, test_x, test, num_classes, lr, wd):
    """Every protocol of ``--protocol`` on the same features: ``(summary by protocol, the first
    seed's test scores by protocol, per-seed probe stats)``."""
    seeds = [args.seed + i for i in range(args.seeds)]
    summaries, first_scores, probe_stats = {}, {}, []

    def scored(scores):
        return {"metrics": classification_metrics(scores, test.labels, num_classes),
                "predictions": scores.argmax(1)}  # fmt: skip

    for protocol in PROBE_PROTOCOLS[args.protocol]:
        per_seed = []
        if protocol == "linear-probe":
            for seed in seeds:
                probe, stats = train_linear_probe(
                    train_x, train_y, num_classes, base_learning_rate=lr, weight_decay=wd,
                    seed=seed, **_schedule(args),
                )  # fmt: skip
                scores = predict_scores(probe, test_x).numpy()
                per_seed.append(scored(scores))
                probe_stats.append({"seed": seed, **stats})
                first_scores.setdefault(protocol, scores)
        else:  # kNN: deterministic, one "seed"
            scores = knn_scores(train_x, train_y, test_x, num_classes, k=args.knn_k,
                                temperature=args.knn_temperature).numpy()  # fmt: skip
            per_seed.append(scored(scores))
            first_scores[protocol] = scores
        summaries[protocol] = r = summarize_predictions(
            per_seed, test.labels, num_classes,
            seeds=seeds if protocol == "linear-probe" else None,
            resamples=args.bootstrap_resamples,
        )  # fmt: skip
        print(f"{protocol}: top-1 {100 * r['top1']:.1f} [{100 * r['top1_ci95'][0]:.1f}, "
              f"{100 * r['top1_ci95'][1]:.1f}] (std over {r['num_seeds']} seed(s) "
              f"{100 * r['top1_std']:.1f}); macro-F1 {100 * r['macro_f1']:.1f} "
              f"[{100 * r['macro_f1_ci95'][0]:.1f}, {100 * r['macro_f1_ci95'][1]:.1f}]")  # fmt: skip
    return summaries, first_scores, probe_stats


def run_probe(args: ProbeArguments) -> dict:
    """Probe the frozen encoder of ``args.model_name_or_path``; returns the results record (also
    written to ``OUTPUT_DIR/results.json``) and, with ``update_model_card``, updates the card of
    a local checkpoint (else ``OUTPUT_DIR/model_card/README.md``)."""
    from transformers import AutoModel

    from ..model_card import RunRecord

    start = time.perf_counter()
    _check_arguments(args)
    output_dir = Path(args.output_dir)
    check_output_dir_writable(output_dir)  # creates it; a clear error (exit 2) if it cannot
    torch.manual_seed(args.seed)

    # ---- data
    train, test = load_train_test(args)
    num_classes = len(train.label_names)
    train_y = torch.from_numpy(train.labels).long()

    # ---- model (frozen) + band mapping
    source = ModelSource.resolve(args.model_name_or_path, args.revision)
    model, processor = load_pretrained(AutoModel, args)
    model.eval().requires_grad_(False)
    card_record = RunRecord.from_model(model, processor)  # before any band restriction
    # Matched by sensor + wavelength (never band number); --dataset_bands picks the channels.
    bands = match_splits_to_model(model, processor, (train, test), args)
    for split in (train, test):  # frames, dates and places the model needs: checked before work
        metadata_for_model(model.config, split)
    # Chips are resized to the model's input here on purpose (the probe/fine-tune protocol).
    processor.do_resize = True
    num_parameters = sum(p.numel() for p in model.parameters())
    print(
        f"model {source.label}: {num_parameters / 1e6:.2f}M encoder params; train {len(train)} / "
        f"test {len(test)} images, {num_classes} classes; bands {bands.bands_used}"
        f"{' (explicit subset of the model bands)' if bands.band_subset else ''}"
    )

    # ---- features (cached), choices on validation, protocols on test
    features = _Features(args, source, model, processor, bands)
    feature, lr, wd, selection = _choose(
        args, features, train, num_classes, model.config.num_hidden_layers
    )
    train_x = features(args.train_split, train, feature)
    test_x = features(args.test_split, test, feature)
    summaries, first_scores, probe_stats = _protocols(
        args, train_x, train_y, test_x, test, num_classes, lr, wd
    )

    # ---- results: the first protocol is the headline (top-level keys), all are in "protocols"
    primary = PROBE_PROTOCOLS[args.protocol][0]
    matrix = confusion_matrix(first_scores[primary].argmax(1), test.labels, num_classes)
    save_confusion_matrix_png(
        matrix, train.label_names, output_dir / "confusion_matrix.png",
        title=f"{Path(args.model_name_or_path).name} {primary} on {dataset_label(args)}",
    )  # fmt: skip
    results = results_record(
        metrics={k: v for k, v in summaries[primary].items() if k != "test_predictions"},
        protocol=primary, args=args, preset=getattr(model.config, "preset", None),
        num_parameters_encoder=num_parameters, train=train, test=test, num_classes=num_classes,
        bands_used=bands.bands_used, band_subset=bands.band_subset, matrix=matrix,
        commit=source.commit, feature_used=feature, protocols=summaries,
        test_references=test.labels.tolist(), selection=selection,
        probe={"optimizer": args.optimizer, "epochs": args.num_train_epochs,
               "per_seed": probe_stats},
        knn={"k": args.knn_k, "temperature": args.knn_temperature},
        seconds=round(time.perf_counter() - start, 2),
    )  # fmt: skip
    results["feature"] = feature  # the feature actually probed ("auto" is in args)
    if args.geobench_task:
        results["geobench"] = geobench_aggregate(
            args.geobench_task, "top1", summaries[primary]["top1_per_seed"],
            seeds=summaries[primary]["seeds"], resamples=args.bootstrap_resamples, seed=args.seed,
        )  # fmt: skip
    write_results(output_dir, results)

    # ---- model card model-index
    if args.update_model_card:
        card_dir, card_record = source.card_dir(output_dir, card_record)
        card = update_model_card(card_dir, results, record=card_record)
        print(f"model card: {card}")
    print(f"{primary}: top-1 {100 * results['top1']:.1f}  macro-F1 "
          f"{100 * results['macro_f1']:.1f}  -> {output_dir / 'results.json'}")  # fmt: skip
    return results


def probe_table(
    results: list[str | os.PathLike],
    *,
    baseline: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
) -> str:
    """The Markdown comparison table of runs (``results.json`` files or run folders); with
    ``baseline``, every row's paired-bootstrap top-1 difference to that run; with ``output``,
    also written there."""
    from .._atomic import atomic_write_text
    from .results import load_results, results_table

    paths = [Path(p).resolve() for p in results]
    records = [load_results(p) for p in paths]
    base = None
    if baseline:
        where = Path(baseline).resolve()
        same = [r for p, r in zip(paths, records) if where in (p, p.parent, p / "results.json")]
        base = same[0] if same else load_results(where)
    text = results_table(records, baseline=base)
    if output:
        atomic_write_text(output, text)
    return text
