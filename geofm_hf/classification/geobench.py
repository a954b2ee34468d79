"""GEO-Bench's aggregate of a run: the task's metric per seed, its IQM with a bootstrap interval
over seeds, and GEO-Bench's normalised score where the benchmark's ``normalizer.json`` is there.

GEO-Bench (Lacoste et al., 2023) reports each task's test metric (top-1 accuracy for
classification, mIoU for segmentation) normalised between a low and a high reference of that
task, ``(metric - low) / (high - low)``, and aggregates seeds and tasks by the interquartile mean
(IQM: the mean of the middle half) with a percentile bootstrap. The references are the
``{task: [low, high]}`` of ``normalizer.json`` in the benchmark folder (the task folder's
parent, e.g. ``classification_v1.0/``), which its plotting code reads; when that file is absent
the normalised score is ``None`` and the record says so, the raw metric and its IQM still stand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["geobench_aggregate", "interquartile_mean"]

NORMALIZER_FILE = "normalizer.json"


def interquartile_mean(values) -> float:
    """Mean of the middle half of ``values`` (scipy's ``trim_mean(values, 0.25)``: a quarter cut
    from each end, rounded down, so under 4 values it is the mean)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    cut = int(0.25 * len(x))
    return float(x[cut : len(x) - cut].mean())


def _iqm_interval(values, resamples: int, seed: int) -> list[float]:
    """95 % percentile bootstrap of the IQM over seeds (seeds drawn with replacement)."""
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(x), size=(resamples, len(x)))
    iqms = [interquartile_mean(x[row]) for row in draws]
    return [float(np.percentile(iqms, 2.5)), float(np.percentile(iqms, 97.5))]


def _normalizer(task_root: Path) -> tuple[list[float] | None, str | None]:
    path = task_root.parent / NORMALIZER_FILE
    if not path.is_file():
        return None, None
    try:
        ranges = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, str(path)
    low_high = ranges.get(task_root.name) if isinstance(ranges, dict) else None
    return (list(map(float, low_high)) if low_high else None), str(path)


def geobench_aggregate(
    task_root, metric: str, per_seed: list[float], *, seeds: list[int] | None = None,
    resamples: int = 2000, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """The ``geobench`` record of a run's ``results.json``.

    Args:
        task_root: the GEO-Bench task folder the run used.
        metric: name of the task's metric (``top1``, ``mean_iou``).
        per_seed: the test metric of each seed (fractions in [0, 1]).
        seeds: the seeds, for the record.
        resamples, seed: of the bootstrap over seeds.
    """
    root = Path(task_root)
    values = [float(v) for v in per_seed]
    low_high, source = _normalizer(root)
    out: dict[str, Any] = {
        "task": root.name,
        "metric": metric,
        "per_seed": values,
        "seeds": seeds,
        "iqm": interquartile_mean(values),
        "iqm_ci95": _iqm_interval(values, resamples, seed),
        "ci_method": f"95% percentile bootstrap over {len(values)} seed(s) ({resamples} "
        "resamples) of the interquartile mean",
    }
    if low_high is None:
        out["normalized_iqm"] = None
        out["normalized_per_seed"] = None
        out["normalizer"] = (
            f"no [low, high] for {root.name} in {source}" if source else
            f"no {NORMALIZER_FILE} beside the task folder (in {root.parent}): GEO-Bench's "
            "normalised score needs its reference range; raw metric and IQM reported"
        )  # fmt: skip
        return out
    low, high = low_high
    normalized = [(v - low) / (high - low) for v in values]
    out["normalized_per_seed"] = normalized
    out["normalized_iqm"] = interquartile_mean(normalized)
    out["normalized_iqm_ci95"] = _iqm_interval(normalized, resamples, seed)
    out["normalizer"] = {"file": source, "low": low, "high": high}
    return out
