"""The hardware figures (one MI250X GCD) and the fitted constants the cost model runs on."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CALIBRATION", "Calibration"]

_PEAK_TFLOPS = {"bf16": 191.5, "fp32": 47.9}  # one MI250X GCD (half of 383 / 95.7)


_BYTES = {"bf16": 2, "fp32": 4}


@dataclass(frozen=True)
class Calibration:
    """The fitted constants (``benchmarks/planner_vs_paper.py --fit`` re-derives them).

    Attributes:
        efficiency_bf16: achieved fraction of the bf16 peak (MAE on 65 visible tokens per image
            runs small GEMMs; the paper's 1-node HYBRID_1 figures give 7-9 %).
        efficiency_fp32: the same for fp32 (the paper's DDP rows).
        latency_intra_us: per ring step inside a node. Fitted at ~0.4 ms, far above the
            link latency: it absorbs FSDP's per-call work (copy-in/out, stream syncs).
        latency_inter_us: per-hop latency across nodes (ring steps and tree levels).
        inter_node_gbs: effective bandwidth of one node's NICs for collectives (4 x 25 GB/s
            Slingshot peak; the paper's FULL_SHARD collapse fits ~6.5 GB/s achieved).
        exposed_fraction: share of the shorter of compute / communication that prefetch and
            bucketing fail to hide.
        runtime_overhead_gib: fixed per-GCD memory outside tensors the model accounts for.
        queued_layers: fp32 gradient blocks held by a reduce-scatter that crosses nodes.
        intra_node_gbs: GCD-to-GCD bandwidth inside a node (PAPER.md: 50-100; lower bound).
        mi250x_pair_gbs: bandwidth between the two GCDs of one MI250X (PAPER.md).
        hbm_gbs: memory bandwidth of one GCD (MI250X: 1.6 TB/s per GCD), for the unfused
            attention path's score traffic.
    """

    efficiency_bf16: float = 0.0722
    efficiency_fp32: float = 0.1323
    latency_intra_us: float = 432.0
    latency_inter_us: float = 37.1
    inter_node_gbs: float = 6.48
    exposed_fraction: float = 0.064
    runtime_overhead_gib: float = 0.25
    queued_layers: float = 3.0
    intra_node_gbs: float = 50.0
    mi250x_pair_gbs: float = 200.0
    hbm_gbs: float = 1600.0


CALIBRATION = Calibration()
