"""Scaling planner: memory per GCD, communication per step and images/s for every FSDP strategy.

* :mod:`geofm_hf.planner.cost_model` -- the memory model, the ranking (``plan``) and configs;
* :mod:`geofm_hf.planner.shapes` -- model shapes and analytic parameter counts;
* :mod:`geofm_hf.planner.throughput` -- FLOPs, attention kernels, collectives, step time;
* :mod:`geofm_hf.planner.calibration` -- hardware figures and the fitted constants;
* :mod:`geofm_hf.planner.attention` -- which SDPA kernel a head dim gets on CUDA / ROCm;
* :mod:`geofm_hf.planner.tables` -- the paper's figures (``paper_figures.json``, with source);
* :mod:`geofm_hf.planner.validation` -- in-sample and leave-one-out errors against them;
* :mod:`geofm_hf.planner.cli` -- ``geofm-plan``.
"""

from __future__ import annotations

from geofm_hf.planner.calibration import _PEAK_TFLOPS
from geofm_hf.planner.cli import main
from geofm_hf.planner.cost_model import (
    CALIBRATION,
    CONFIG_FOR_STRATEGY,
    DEFAULT_CONFIG,
    STRATEGIES,
    Calibration,
    Plan,
    StrategyEstimate,
    count_parameters,
    plan,
    plan_from_accelerate_config,
    rank_strategies,
    write_accelerate_config,
)
from geofm_hf.planner.shapes import _count, _resolve_shape
from geofm_hf.planner.tables import (
    PAPER_BEST_STRATEGY,
    PAPER_IMAGES_PER_S,
    PAPER_PEAK_MEMORY_GB,
    PAPER_SETTINGS,
    PAPER_SOURCE,
    paper_precision,
)
from geofm_hf.planner.throughput import _flops_per_image
from geofm_hf.planner.validation import predict_paper_point

__all__ = [
    "CALIBRATION",
    "CONFIG_FOR_STRATEGY",
    "DEFAULT_CONFIG",
    "PAPER_BEST_STRATEGY",
    "PAPER_IMAGES_PER_S",
    "PAPER_PEAK_MEMORY_GB",
    "PAPER_SETTINGS",
    "PAPER_SOURCE",
    "STRATEGIES",
    "_PEAK_TFLOPS",
    "Calibration",
    "Plan",
    "StrategyEstimate",
    "_count",
    "_flops_per_image",
    "_resolve_shape",
    "count_parameters",
    "main",
    "paper_precision",
    "plan",
    "plan_from_accelerate_config",
    "predict_paper_point",
    "rank_strategies",
    "write_accelerate_config",
]
