"""The paper's published figures, loaded from ``paper_figures.json`` (source recorded there).

Tsaris et al. 2024 (arXiv:2404.11706): peak memory per GCD (21 points) and images/s (62 points,
the first and last node count of each row), and the best strategy per model size. These are what
the cost model is fitted to and validated against; they never steer its ranking.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = [
    "PAPER_BEST_STRATEGY",
    "PAPER_IMAGES_PER_S",
    "PAPER_PEAK_MEMORY_GB",
    "PAPER_SETTINGS",
    "PAPER_SOURCE",
    "paper_precision",
]


def _load() -> dict[str, Any]:
    text = resources.files("geofm_hf.planner").joinpath("paper_figures.json").read_text("utf-8")
    return json.loads(text)


_DATA = _load()

PAPER_SOURCE: dict[str, str] = _DATA["source"]

# (preset, strategy, nodes) -> peak memory per GCD in GiB, local batch 32.
PAPER_PEAK_MEMORY_GB: dict[tuple[str, str, int], float] = {
    (r["model"], r["strategy"], int(r["nodes"])): float(r["gb"]) for r in _DATA["peak_memory_gb"]
}


def _throughput() -> dict[tuple[str, str], tuple[tuple[int, float], ...]]:
    rows: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in _DATA["images_per_s"]:
        rows.setdefault((r["model"], r["strategy"]), []).append(
            (int(r["nodes"]), float(r["images_per_s"]))
        )
    return {k: tuple(sorted(v)) for k, v in rows.items()}


# (preset, strategy) -> ((nodes, img/s), ...): the published points of each row.
PAPER_IMAGES_PER_S: dict[tuple[str, str], tuple[tuple[int, float], ...]] = _throughput()

# The paper's best strategy per size (its conclusions), for 1 and 128 nodes.
PAPER_BEST_STRATEGY: dict[str, str] = {r["model"]: r["strategy"] for r in _DATA["best_strategy"]}

# How the paper's runs are reproduced: block-level activation checkpointing (see the cost model's
# docstring), bf16 mixed precision except for its fp32 DDP baseline.
PAPER_SETTINGS: dict[str, Any] = {"local_batch": 32, "activation_checkpointing": True}


def paper_precision(strategy: str) -> str:
    """Precision the paper's run of ``strategy`` is modelled with (DDP ran in fp32)."""
    return "fp32" if strategy == "DDP" else "bf16"
