"""``evaluate`` metric modules shipped with the package, loaded by file path.

``evaluate.load("accuracy")`` downloads its script from the Hub and fails offline; these modules
are plain files inside the installed package, so ``evaluate.load(metric_path("accuracy"))`` works
anywhere. Each lives in ``<name>/<name>.py`` (the layout ``evaluate.load`` expects of a folder).
"""

from __future__ import annotations

from pathlib import Path

METRICS = ("accuracy", "top_k_accuracy", "f1", "mean_iou")


def metric_path(name: str) -> str:
    """Folder of the shipped metric ``name`` (one of :data:`METRICS`), for ``evaluate.load``."""
    if name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}: expected one of {', '.join(METRICS)}.")
    return str(Path(__file__).resolve().parent / name)


def load_metric(name: str, **kwargs):
    """``evaluate.load`` of the shipped metric ``name``; works with the Hub unreachable."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)


__all__ = ["METRICS", "load_metric", "metric_path"]
