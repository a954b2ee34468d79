"""Run records (``results.json``), the checkpoint comparison table and the card's model-index."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._atomic import atomic_write_text

__all__ = [
    "RESULTS_NAME",
    "dataset_label",
    "eval_results",
    "fine_tuned_record",
    "load_results",
    "merge_eval_results",
    "paired_comparison",
    "protocol_rows",
    "results_table",
    "run_fields",
    "update_model_card",
    "write_results",
]

RESULTS_NAME = "results.json"
_METRICS = (("top1", "accuracy", "Top-1 accuracy"), ("top5", "top_5_accuracy", "Top-5 accuracy"),
            ("macro_f1", "f1", "Macro F1"))  # fmt: skip
_REQUIRED = ("top1", "top5", "macro_f1", "num_train", "num_test", "model_name_or_path", "dataset")


def dataset_label(args: Any) -> str:
    """The dataset's display name: ``--dataset_name``, else its folder or repo name."""
    return args.dataset_name or Path(args.dataset_name_or_path).name


def run_fields(
    args: Any, *, train: Any, test: Any, num_classes: int, bands_used: list[str],
    band_subset: bool,
) -> dict[str, Any]:  # fmt: skip
    """The fields every run's ``results.json`` has (probe, fine-tune, segmentation): what was
    run on what, read from the run's arguments and its train and test splits."""
    from dataclasses import asdict

    return {
        "model_name_or_path": args.model_name_or_path,
        "revision": args.revision,
        "dataset": args.dataset_name_or_path,
        "dataset_name": dataset_label(args),
        "dataset_revision": args.dataset_revision,
        "train_split": args.train_split,
        "test_split": args.test_split,
        "num_train": len(train),
        "num_test": len(test),
        "num_classes": num_classes,
        "label_names": train.label_names,
        "bands_used": bands_used,
        "band_subset": band_subset,
        "args": asdict(args),
    }


def results_record(
    *,
    metrics: dict[str, Any],
    protocol: str,
    args: Any,
    preset: str | None,
    num_parameters_encoder: int,
    train: Any,
    test: Any,
    num_classes: int,
    bands_used: list[str],
    band_subset: bool,
    matrix: Any,
    **extra: Any,
) -> dict[str, Any]:
    """The ``results.json`` record shared by the probe and fine-tuning runs.

    ``args`` is the run's argument dataclass (model, dataset and split fields are read from
    it); ``extra`` adds the protocol's own fields (commit, probe schedule, losses, ...).
    """
    fields = run_fields(args, train=train, test=test, num_classes=num_classes,
                        bands_used=bands_used, band_subset=band_subset)  # fmt: skip
    return {
        **metrics,
        "protocol": protocol,
        "feature": args.feature,
        "preset": preset,
        "num_parameters_encoder": num_parameters_encoder,
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_png": "confusion_matrix.png",
        **{k: v for k, v in fields.items() if k != "args"},
        **extra,
        "args": fields["args"],
    }


def write_results(
    output_dir: str | os.PathLike, results: dict[str, Any], required: tuple = _REQUIRED
) -> Path:
    """Write ``output_dir/results.json`` atomically (keys sorted, indented), once it has the
    ``required`` keys (the classification ones by default)."""
    missing = [k for k in required if k not in results]
    if missing:
        raise ValueError(f"results lack {missing}; expected at least {list(required)}")
    path = Path(output_dir) / RESULTS_NAME
    atomic_write_text(path, json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``results.json`` (or the one inside a run folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_NAME
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(f"{path} lacks {missing}: not a results.json written by the recipes")
    return data


def protocol_rows(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{protocol: numbers}`` of one record: every protocol it ran (records written before
    ``protocols`` existed have one, at the top level)."""
    return results.get("protocols") or {results.get("protocol", "?"): results}


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _with_interval(r: dict[str, Any], key: str) -> str:
    text = _pct(r[key])
    if r.get(f"{key}_ci95"):
        lo, hi = r[f"{key}_ci95"]
        text += f" [{_pct(lo)}, {_pct(hi)}]"
    return text


def paired_comparison(
    a: dict[str, Any], b: dict[str, Any], protocol: str, *, resamples: int | None = None
) -> dict[str, dict[str, Any]]:
    """``a - b`` for ``top1`` and ``macro_f1`` of one protocol, by the paired bootstrap over the
    test samples both runs scored (:func:`~geofm_hf.classification.stats.paired_bootstrap`).

    Both records must come from the same test set: same dataset, split and references, in the
    same order; anything else is an error, since an unpaired difference would be silently wrong.
    """
    from .stats import BOOTSTRAP_RESAMPLES, paired_bootstrap

    for name, r in (("first", a), ("second", b)):
        rows = protocol_rows(r)
        if protocol not in rows or "test_predictions" not in rows[protocol]:
            raise ValueError(
                f"The {name} run ({r['model_name_or_path']}) has no per-sample {protocol!r} "
                f"predictions (protocols: {sorted(rows)}): rerun it with this version's recipe."
            )
    same = [k for k in ("dataset", "test_split", "num_test") if a.get(k) != b.get(k)]
    if same or a.get("test_references") != b.get("test_references"):
        raise ValueError(
            f"A paired comparison needs both runs on the same test set: they differ in "
            f"{same or ['test_references']} ({a.get('dataset')}:{a.get('test_split')} vs "
            f"{b.get('dataset')}:{b.get('test_split')})."
        )
    out = {}
    for key in ("top1", "macro_f1"):
        out[key] = paired_bootstrap(
            protocol_rows(a)[protocol]["test_predictions"],
            protocol_rows(b)[protocol]["test_predictions"],
            a["test_references"],
            a["num_classes"],
            key,
            resamples=resamples or BOOTSTRAP_RESAMPLES,
        )
    return out


def results_table(results: list[dict[str, Any]], baseline: dict[str, Any] | None = None) -> str:
    """Markdown table comparing runs (one row per run and protocol), sorted by dataset then
    encoder size. Top-1 and macro-F1 are seed means with their 95 % bootstrap interval over test
    samples; ``± std`` is over seeds. With ``baseline``, a last column gives each row's top-1
    minus the baseline's (same protocol) with the paired-bootstrap 95 % interval."""
    if not results:
        raise ValueError("results_table needs at least one results record: found none.")
    rows = sorted(
        results, key=lambda r: (r["dataset"], r.get("num_parameters_encoder") or 0, r["protocol"])
    )
    head = (
        "| checkpoint | revision | encoder params | protocol | feature | dataset | bands | train | "
        "test | seeds | top-1 [95% CI] | ± std | top-5 | macro-F1 [95% CI] |"
        + (" Δ top-1 vs baseline [95% CI] |" if baseline else "")
        + "\n|---|---|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
        + ("---:|" if baseline else "")
        + "\n"
    )
    lines = []
    for r in rows:
        params = r.get("num_parameters_encoder")
        params_text = f"{params / 1e6:.1f}M" if params else "?"
        for protocol, p in protocol_rows(r).items():
            top5 = _pct(p["top5"])
            if p.get("top5_k", 5) < 5:
                top5 += f" (k={p['top5_k']})"
            line = (
                f"| {r['model_name_or_path']} | {r.get('revision') or '-'} | {params_text} | "
                f"{protocol} | {r.get('feature', '-')} | {r['dataset']} "
                f"({r.get('test_split', 'test')}) | {len(r.get('bands_used') or [])} | "
                f"{r['num_train']} | {r['num_test']} | {p.get('num_seeds', 1)} | "
                f"{_with_interval(p, 'top1')} | {_pct(p.get('top1_std', 0.0))} | {top5} | "
                f"{_with_interval(p, 'macro_f1')} |"
            )
            if baseline is not None:
                if r is baseline:
                    line += " (baseline) |"
                else:
                    d = paired_comparison(r, baseline, protocol)["top1"]
                    lo, hi = d["ci95"]
                    line += f" {100 * d['difference']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] |"
            lines.append(line)
    return head + "\n".join(lines) + "\n"


def eval_results(results: dict[str, Any]) -> list[dict[str, Any]]:
    """``RunRecord.eval_results`` rows (the card's model-index) for one results record: one row
    per protocol and metric; top-1 and macro-F1 carry their 95 % interval (``ci95``) and the
    seed count, which the card writes into the model-index metric's ``args``."""
    rows = []
    for protocol, r in protocol_rows(results).items():
        for key, metric_type, name in _METRICS:
            if key == "top5" and r.get("top5_k", 5) < 5:
                continue  # top-5 of fewer than 5 classes is always 1: not worth publishing
            row = {
                "task": "image-classification",
                "dataset_name": results.get("dataset_name") or results["dataset"],
                "dataset_id": results["dataset"],
                "split": results.get("test_split"),
                "metric_type": metric_type,
                "metric_name": f"{name} ({protocol}, {results.get('feature', 'fine-tuned')})",
                "value": round(float(r[key]), 6),
            }
            if r.get(f"{key}_ci95"):
                row["ci95"] = [round(float(v), 6) for v in r[f"{key}_ci95"]]
                row["num_seeds"] = r.get("num_seeds", 1)
                row["std_over_seeds"] = round(float(r.get(f"{key}_std", 0.0)), 6)
            rows.append(row)
    return rows


def update_model_card(card_dir: str | os.PathLike, results: dict[str, Any], record=None) -> Path:
    """Merge ``results`` into ``card_dir/run_record.json`` and re-render ``card_dir/README.md``
    (see :func:`merge_eval_results`). Returns the card's path."""
    return merge_eval_results(card_dir, eval_results(results), record=record)


def merge_eval_results(
    card_dir: str | os.PathLike, rows: list[dict[str, Any]], record=None
) -> Path:
    """Merge model-index ``rows`` into ``card_dir/run_record.json`` and re-render the card.

    Rows of the same task, dataset, split and metric name are replaced, others kept, so running
    an evaluation again updates the card instead of duplicating entries. Without a run record in
    ``card_dir``, ``record`` (a :class:`~geofm_hf.model_card.RunRecord`, e.g. from
    ``RunRecord.from_model``) is used. Returns the card's path.
    """
    from ..model_card import RUN_RECORD_NAME, RunRecord, write_model_card

    card_dir = Path(card_dir)
    record_path = card_dir / RUN_RECORD_NAME
    if record_path.is_file():
        record = RunRecord.load(record_path)
    elif record is None:
        raise FileNotFoundError(
            f"no {RUN_RECORD_NAME} in {card_dir}: pass record= (RunRecord.from_model(model))"
        )
    record = RunRecord.from_dict(record.to_dict())  # a copy: the caller's record is not changed

    def key(row):
        return (row["task"], row["dataset_name"], row.get("split"), row.get("metric_name"))

    replaced = {key(r) for r in rows}
    record.eval_results = [r for r in record.eval_results if key(r) not in replaced] + rows
    record.save(record_path)
    return write_model_card(card_dir, record)


def fine_tuned_record(model, processor, args: Any, loop: Any, world_size: int, limitation: str):
    """The :class:`~geofm_hf.model_card.RunRecord` of a model fine-tuned from
    ``args.model_name_or_path`` (``loop``: the :class:`~geofm_hf.classification.LoopResult`)."""
    from dataclasses import asdict

    from ..model_card import RunRecord

    return RunRecord.from_model(
        model, processor, base_model=args.model_name_or_path, base_model_revision=args.revision,
        global_batch=loop.global_batch, steps=loop.steps, world_size=world_size,
        final_loss=loop.losses[-1] if loop.losses else None,
        datasets=[{"repo_id_or_path": args.dataset_name_or_path,
                   "revision": args.dataset_revision}],
        run_config=asdict(args), limitations=[limitation],
    )  # fmt: skip
