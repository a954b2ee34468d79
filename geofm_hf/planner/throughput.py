"""Throughput model: training FLOPs per image, the attention kernel's extra cost, and the
collectives of each strategy, priced by a per-call overhead, ring/tree latency and link
bandwidth; one optimiser step is, per phase (forward, backward), ``max(compute, comm) +
exposed_fraction x min(compute, comm)`` (see :mod:`geofm_hf.planner.cost_model` for the
derivation and units)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .calibration import _BYTES, _PEAK_TFLOPS, Calibration
from .shapes import _count, _Shape


def _shard_group(strategy: str, world: int) -> int:
    if strategy in ("DDP", "NO_SHARD", "HYBRID_1"):
        return 1
    if strategy in ("FULL_SHARD", "SHARD_GRAD_OP"):
        return world
    return int(strategy.split("_")[1])


def _flops_per_image(shape: _Shape, checkpointing: bool) -> float:
    """Training FLOPs for one image: encoder on kept tokens, decoder on all tokens."""
    counts = _count(shape)
    s_enc, s_dec = shape.kept_tokens, shape.num_patches + 1
    d, dd = shape.hidden_size, shape.decoder_hidden_size
    io = shape.io_costs
    pixels = io["pixels_per_token"] * shape.num_channels
    fwd = io["hypernetwork_flops"]
    fwd += 2 * counts["encoder_block"] * s_enc * shape.num_hidden_layers
    fwd += 4 * s_enc * s_enc * d * shape.num_hidden_layers  # scores and weighted sum
    fwd += 2 * counts["decoder_block"] * s_dec * shape.decoder_num_hidden_layers
    fwd += 4 * s_dec * s_dec * dd * shape.decoder_num_hidden_layers
    fwd += 2 * pixels * d * (s_enc - 1) + 2 * d * dd * s_enc + 2 * dd * pixels * s_dec
    # backward = 2 x forward; checkpointing recomputes the blocks' forward once more.
    return fwd * (4.0 if checkpointing else 3.0)


def _attention_terms(
    shape: _Shape, batch: int, precision: str, platform: str, checkpointing: bool
) -> dict[str, Any]:
    """What the SDPA kernel that really runs adds to the fused, unpadded baseline.

    ``flops`` per image (the flash path's zero padding of the head dim), ``bytes`` of stored
    scores and ``traffic`` bytes per step (the unfused path), and a ``kernel`` description.
    """
    from geofm_hf.planner.attention import sdpa_backend

    out: dict[str, Any] = {"flops": 0.0, "bytes": 0.0, "traffic": 0.0}
    low = _BYTES[precision]
    passes = 4.0 if checkpointing else 3.0
    kinds, largest = [], 0.0
    for part, tokens, width, heads, layers in (
        ("encoder", shape.kept_tokens, shape.hidden_size, shape.num_attention_heads,
         shape.num_hidden_layers),
        ("decoder", shape.num_patches + 1, shape.decoder_hidden_size,
         shape.decoder_num_attention_heads, shape.decoder_num_hidden_layers),
    ):  # fmt: skip
        head_dim = width // heads
        kernel, computed = sdpa_backend(head_dim, platform=platform, precision=precision)
        kinds.append(
            f"{part} {kernel}"
            + (f" (head dim {head_dim}->{computed})" if computed != head_dim else "")
        )
        out["flops"] += passes * 4 * tokens * tokens * heads * (computed - head_dim) * layers
        if kernel == "math":
            scores = batch * heads * tokens * tokens
            # Kept for backward: the fp32 softmax output and its low-precision copy.
            kept = scores * (4 + low)
            largest = max(largest, kept)
            out["bytes"] += 0.0 if checkpointing else kept * layers
            # Written and read: scores, fp32 softmax, low-precision weights; backward ~2x.
            out["traffic"] += passes * scores * 2 * (2 * low + 4) * layers
    out["bytes"] += largest if checkpointing else 0.0
    out["kernel"] = ", ".join(kinds)
    return out


# NCCL/RCCL's double binary tree carries each byte about twice through a node's NICs (up the
# reduce tree, down the broadcast tree) where a ring carries it once: half the ring's bandwidth.
_TREE_BANDWIDTH_FRACTION = 0.5


@dataclass
class _Collective:
    kind: str  # "allgather", "reducescatter" (rings) or "allreduce" (ring or tree)
    group: int
    members_per_node: int
    nbytes: float  # per member, per call: the unsharded unit (AG / RS) or the buffer (AR)
    calls: int
    phase: str = "backward"  # the compute it can hide behind: "forward" or "backward"


def _collective_cost(c: _Collective, gcds_per_node: int, cal: Calibration) -> tuple[float, ...]:
    """Seconds, intra-node bytes and inter-node bytes per GCD for ``calls`` calls."""
    if c.group <= 1 or c.calls == 0:
        return 0.0, 0.0, 0.0
    g, m = c.group, c.members_per_node
    passes = 2.0 if c.kind == "allreduce" else 1.0
    moved = passes * c.nbytes * (g - 1) / g  # per member per call
    overhead = cal.collective_overhead_us * 1e-6
    if g <= m:  # inside one node: a ring over Infinity Fabric
        bw = cal.mi250x_pair_gbs if g == 2 else cal.intra_node_gbs
        latency = passes * (g - 1) * cal.latency_intra_us * 1e-6
        seconds = overhead + latency + moved / (bw * 1e9)
        return seconds * c.calls, moved * c.calls, 0.0
    # A ring crosses each node boundary once, so a node's NICs carry ``moved`` per ring that has
    # members on it -- whatever the group size: what differs between strategies is how many
    # rings share the NICs, how many hops each waits for, and how much compute hides them.
    rings_on_node = gcds_per_node / m
    nic = rings_on_node * moved / (cal.inter_node_gbs * 1e9)
    intra = moved / (cal.intra_node_gbs * 1e9) if m > 1 else 0.0
    ring = passes * (g - 1) * cal.latency_inter_us * 1e-6 + max(nic, intra)
    seconds = ring
    if c.kind == "allreduce":
        # RCCL picks per call: ring (bandwidth-optimal, latency linear in the group) or tree
        # (latency logarithmic, half the bandwidth) -- small buffers over many GCDs go by tree.
        tree = 2 * math.ceil(math.log2(g)) * cal.latency_inter_us * 1e-6
        tree += max(nic / _TREE_BANDWIDTH_FRACTION, intra)
        seconds = min(ring, tree)
    intra_share = moved * (m - 1) / m
    return (overhead + seconds) * c.calls, intra_share * c.calls, moved / m * c.calls


@dataclass
class _ThroughputTerms:
    """Everything images/s depends on apart from the calibration (refitted in validation)."""

    collectives: list[_Collective]
    gcds_per_node: int
    precision: str
    flops: float
    traffic: float
    images: int
    forward_share: float = 0.25  # forward's part of the compute (1/4 with recomputation)


def _step_seconds(t: _ThroughputTerms, cal: Calibration) -> tuple[float, float, float]:
    """(compute, communication, step) seconds of one optimiser step.

    Forward and backward are priced apart: a collective can only hide behind the compute of its
    own phase (FSDP prefetches the next unit's all-gather during this unit's forward; gradient
    reductions run during the rest of backward). Per phase: ``max(compute, comm) +
    exposed_fraction x min(compute, comm)``.
    """
    efficiency = cal.efficiency_bf16 if t.precision == "bf16" else cal.efficiency_fp32
    compute = t.flops / (efficiency * _PEAK_TFLOPS[t.precision] * 1e12)
    compute += t.traffic / (cal.hbm_gbs * 1e9)
    comm = {"forward": 0.0, "backward": 0.0}
    for c in t.collectives:
        comm[c.phase] += _collective_cost(c, t.gcds_per_node, cal)[0]
    step = 0.0
    for phase, share in (("forward", t.forward_share), ("backward", 1 - t.forward_share)):
        a, b = compute * share, comm[phase]
        step += max(a, b) + cal.exposed_fraction * min(a, b)
    return compute, sum(comm.values()), step


def _collectives(
    strategy: str,
    p_total: int,
    shape: _Shape,
    world: int,
    g: int,
    gcds_per_node: int,
    low: int,
    red: int,
) -> list[_Collective]:
    units = shape.num_hidden_layers + shape.decoder_num_hidden_layers + 1
    unit_bytes = p_total * low / units  # one block's parameters, all-gathered
    grad_unit = p_total * red / units  # one block's gradients, reduced
    collectives: list[_Collective] = []
    if strategy == "DDP":
        grad_bytes = 4 * p_total  # DDP reduces the fp32 .grad of fp32 parameters
        buckets = max(1, math.ceil(grad_bytes / (25 * 2**20)))
        collectives.append(
            _Collective("allreduce", world, gcds_per_node, grad_bytes / buckets, buckets)
        )
    elif g == 1:
        collectives.append(_Collective("allreduce", world, gcds_per_node, grad_unit, units))
    else:
        shard_per_node = min(g, gcds_per_node)
        collectives.append(
            _Collective("allgather", g, shard_per_node, unit_bytes, units, phase="forward")
        )
        if strategy != "SHARD_GRAD_OP":  # it keeps the gathered parameters for backward
            collectives.append(_Collective("allgather", g, shard_per_node, unit_bytes, units))
        collectives.append(_Collective("reducescatter", g, shard_per_node, grad_unit, units))
        replicas = world // g
        if replicas > 1:
            per_node = max(1, gcds_per_node // g) if g <= gcds_per_node else 1
            collectives.append(_Collective("allreduce", replicas, per_node, grad_unit / g, units))
    return collectives
