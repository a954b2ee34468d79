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
        collective_overhead_us: fixed cost of one FSDP collective call (flat-parameter copy-in /
            copy-out, stream syncs, RCCL launch), whatever the group; fitted at ~2 ms. Counting it
            per call, not per ring step, is what makes HYBRID_2 / HYBRID_4 (an extra all-reduce
            per unit) no faster than FULL_SHARD / SHARD_GRAD_OP on one node, as measured.
        latency_intra_us: per ring step inside a node (xGMI; a physical value, not fitted).
        latency_inter_us: per-hop latency across nodes (ring steps and tree levels); fitted at
            ~37 us, which is what makes a ring over the whole job collapse.
        inter_node_gbs: effective bandwidth of one node's NICs for collectives (4 x 25 GB/s
            Slingshot peak; the paper's scaling fits ~10 GB/s achieved).
        exposed_fraction: share of the shorter of compute / communication, per phase (forward,
            backward), that prefetch and separate streams fail to hide (RCCL kernels also take
            compute units from the GEMMs they overlap).
        runtime_overhead_gib: fixed per-GCD memory outside tensors the model accounts for.
        queued_layers: fp32 gradient blocks held by a reduce-scatter that crosses nodes.
        intra_node_gbs: GCD-to-GCD bandwidth inside a node (PAPER.md: 50-100; lower bound).
        mi250x_pair_gbs: bandwidth between the two GCDs of one MI250X (PAPER.md).
        hbm_gbs: memory bandwidth of one GCD (MI250X: 1.6 TB/s per GCD), for the unfused
            attention path's score traffic.
    """

    efficiency_bf16: float = 0.0807
    efficiency_fp32: float = 0.1459
    collective_overhead_us: float = 2026.0
    latency_intra_us: float = 5.0
    latency_inter_us: float = 36.7
    inter_node_gbs: float = 10.05
    exposed_fraction: float = 0.252
    runtime_overhead_gib: float = 0.25
    queued_layers: float = 3.0
    intra_node_gbs: float = 50.0
    mi250x_pair_gbs: float = 200.0
    hbm_gbs: float = 1600.0


CALIBRATION = Calibration()
