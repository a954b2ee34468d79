"""Run records (``results.json``), the checkpoint comparison table and the card's model-index."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "RESULTS_NAME",
    "eval_results",
    "load_results",
    "results_table",
    "update_model_card",
    "write_results",
]

RESULTS_NAME = "results.json"
_METRICS = (("top1", "accuracy", "Top-1 accuracy"), ("top5", "top_5_accuracy", "Top-5 accuracy"),
            ("macro_f1", "f1", "Macro F1"))  # fmt: skip
_REQUIRED = ("top1", "top5", "macro_f1", "num_train", "num_test", "model_name_or_path", "dataset")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def results_record(
    *,
    metrics: dict[str, Any],
    protocol: str,
    args: Any,
    preset: str | None,
    num_parameters_encoder: int,
    dataset_name: str,
    train: Any,
    test: Any,
    num_classes: int,
    bands_used: list[str],
    band_subset: bool,
    matrix: Any,
    **extra: Any,
) -> dict[str, Any]:
    """The ``results.json`` record shared by the probe and fine-tuning recipes.

    ``args`` is the recipe's argument dataclass (model, dataset and split fields are read from
    it); ``extra`` adds the protocol's own fields (commit, probe schedule, losses, ...).
    """
    from dataclasses import asdict

    return {
        **metrics,
        "protocol": protocol,
        "feature": args.feature,
        "model_name_or_path": args.model_name_or_path,
        "revision": args.revision,
        "preset": preset,
        "num_parameters_encoder": num_parameters_encoder,
        "dataset": args.dataset_name_or_path,
        "dataset_name": dataset_name,
        "dataset_revision": args.dataset_revision,
        "train_split": args.train_split,
        "test_split": args.test_split,
        "num_train": len(train),
        "num_test": len(test),
        "num_classes": num_classes,
        "label_names": train.label_names,
        "bands_used": bands_used,
        "band_subset": band_subset,
        "confusion_matrix": matrix.tolist(),
        "confusion_matrix_png": "confusion_matrix.png",
        **extra,
        "args": asdict(args),
    }


def write_results(output_dir: str | os.PathLike, results: dict[str, Any]) -> Path:
    """Write ``output_dir/results.json`` atomically (keys sorted, indented)."""
    missing = [k for k in _REQUIRED if k not in results]
    if missing:
        raise ValueError(f"results lack {missing}; expected at least {list(_REQUIRED)}")
    path = Path(output_dir) / RESULTS_NAME
    _atomic_write(path, json.dumps(results, indent=2, sort_keys=True) + "\n")
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


def results_table(results: list[dict[str, Any]]) -> str:
    """Markdown table comparing runs (one row each), sorted by dataset then encoder size."""
    if not results:
        raise ValueError("results_table needs at least one results record: found none.")
    rows = sorted(
        results, key=lambda r: (r["dataset"], r.get("num_parameters_encoder") or 0, r["protocol"])
    )
    head = (
        "| checkpoint | revision | encoder params | protocol | feature | dataset | bands | train | "
        "test | top-1 | top-5 | macro-F1 |\n"
        "|---|---|---:|---|---|---|---|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        params = r.get("num_parameters_encoder")
        params_text = f"{params / 1e6:.1f}M" if params else "?"
        top5 = f"{100 * r['top5']:.1f}"
        if r.get("top5_k", 5) < 5:
            top5 += f" (k={r['top5_k']})"
        lines.append(
            f"| {r['model_name_or_path']} | {r.get('revision') or '-'} | {params_text} | "
            f"{r.get('protocol', '?')} | {r.get('feature', '-')} | {r['dataset']} "
            f"({r.get('test_split', 'test')}) | {len(r.get('bands_used') or [])} | "
            f"{r['num_train']} | {r['num_test']} | {100 * r['top1']:.1f} | {top5} | "
            f"{100 * r['macro_f1']:.1f} |"
        )
    return head + "\n".join(lines) + "\n"


def eval_results(results: dict[str, Any]) -> list[dict[str, Any]]:
    """``RunRecord.eval_results`` rows (the card's model-index) for one results record."""
    protocol = results.get("protocol", "linear-probe")
    rows = []
    for key, metric_type, name in _METRICS:
        if key == "top5" and results.get("top5_k", 5) < 5:
            continue  # top-5 of fewer than 5 classes is always 1: not worth publishing
        rows.append({
            "task": "image-classification",
            "dataset_name": results.get("dataset_name") or results["dataset"],
            "dataset_id": results["dataset"],
            "split": results.get("test_split"),
            "metric_type": metric_type,
            "metric_name": f"{name} ({protocol}, {results.get('feature', 'fine-tuned')})",
            "value": round(float(results[key]), 6),
        })  # fmt: skip
    return rows


def update_model_card(card_dir: str | os.PathLike, results: dict[str, Any], record=None) -> Path:
    """Merge ``results`` into ``card_dir/run_record.json`` and re-render ``card_dir/README.md``.

    Rows of the same task, dataset, split and metric name are replaced, others kept, so running
    the probe again updates the card instead of duplicating entries. Without a run record in
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
    new = eval_results(results)

    def key(row):
        return (row["task"], row["dataset_name"], row.get("split"), row.get("metric_name"))

    replaced = {key(r) for r in new}
    record.eval_results = [r for r in record.eval_results if key(r) not in replaced] + new
    record.save(record_path)
    return write_model_card(card_dir, record)
