"""The planner's cost model: memory per GCD, communication per step and images/s per strategy.

``geofm-plan --preset vit-5b --nodes 8`` (:mod:`geofm_hf.planner.cli`) answers "which accelerate
config do I launch?" before any node-hour is spent. The model is deliberately small -- a handful of
physical terms and six fitted constants (:data:`CALIBRATION`). Every strategy is ranked by the
model's predicted images/s alone; the paper's figures (:mod:`geofm_hf.planner.tables`) are used to
fit the constants and, held out one at a time, to validate them
(:mod:`geofm_hf.planner.validation`).

Units: memory is reported in GB of 2**30 bytes (GiB). The paper's peak-memory figures are GiB
(its differences between HYBRID_2/4/8/16 for the 5B model are exactly 16 bytes x parameters /
2**30 per halving), and a Frontier GCD has 64 GiB of HBM2e.

Memory model (per GCD, shard group ``g``; replicated strategies have ``g = 1``):

* parameters (fp32 master) 4 B, gradients (fp32) 4 B and AdamW moments 8 B per parameter, each
  divided by ``g``;
* communication buffers: FSDP's unsharded working set, two blocks in flight (the running one and
  the prefetched one) of low-precision parameters plus low-precision and fp32 gradients; DDP's
  gradient buckets (4 B per parameter); SHARD_GRAD_OP's low-precision parameters kept from forward
  to backward; when a shard group spans nodes, ``queued_layers`` fp32 gradient blocks waiting for
  the slower inter-node reduce-scatter;
* activations: with block-level activation checkpointing each block keeps its input and one block
  is recomputed at a time; without it every block keeps ~17 tensors of the block's width
  (Korthikanti et al.'s 34 bytes per token and channel in bf16). Attention is fused (SDPA), so
  no ``tokens**2`` scores are stored;
* a fixed runtime overhead (RCCL / rocBLAS workspaces).

The paper's residual (peak minus states) is ~3.4 GiB for the 5B model at every shard size,
which full activations (11 GiB at local batch 32) cannot explain: its runs used block-level
activation checkpointing, so the comparisons use ``activation_checkpointing=True``.

Throughput model (per step, per GCD):

* compute = local batch x training FLOPs per image (forward x 3, x 4 with recomputation) /
  (``efficiency`` x peak). Peak is 191.5 TFLOP/s in bf16 and 47.9 in fp32 on one MI250X GCD;
* communication = sum over collectives of a fixed per-call overhead + latency + bytes / bandwidth.
  RCCL's all-gather and reduce-scatter are rings (latency grows with the group: a ring over the
  whole job waits ~37 us per hop, 1,023 hops at 128 nodes); an all-reduce is priced as a ring and
  as a tree (latency log2 of the group, half the bandwidth) and the cheaper is taken, as RCCL's
  tuner does -- the reason FULL_SHARD collapses across nodes while HYBRID (shard in the node,
  all-reduce across) keeps scaling. A ring crosses each node boundary once, so a node's NICs
  carry one copy per ring on it (``inter_node_gbs``); inside a node the two GCDs of one MI250X
  share 200 GB/s, other pairs 50 GB/s;
* FULL_SHARD and HYBRID gather each unit in forward and again in backward; SHARD_GRAD_OP keeps
  it from forward to backward (no re-gather) -- one collective fewer per unit, and its gathers
  hide behind forward compute only;
* step = per phase (forward, backward) max(compute, comm) + ``exposed_fraction`` x min(compute,
  comm): a collective hides behind the compute of its own phase, not all of it.

The paper's DDP baseline is 2-2.7x slower than NO_SHARD on one node for the >= 0.6B models,
which no communication term explains: it ran in fp32, so the comparison models DDP with
``precision="fp32"``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._atomic import atomic_write_text
from .calibration import _BYTES, CALIBRATION, Calibration
from .shapes import _count, _resolve_shape, _Shape, count_parameters
from .throughput import (
    _attention_terms,
    _collective_cost,
    _collectives,
    _flops_per_image,
    _shard_group,
    _step_seconds,
    _ThroughputTerms,
)

__all__ = [
    "CALIBRATION",
    "CONFIG_FOR_STRATEGY",
    "DEFAULT_CONFIG",
    "STRATEGIES",
    "Calibration",
    "Plan",
    "StrategyEstimate",
    "count_parameters",
    "plan",
    "plan_from_accelerate_config",
    "write_accelerate_config",
]

STRATEGIES: tuple[str, ...] = (
    "DDP",
    "NO_SHARD",
    "HYBRID_1",
    "HYBRID_2",
    "HYBRID_4",
    "HYBRID_8",
    "HYBRID_16",
    "FULL_SHARD",
    "SHARD_GRAD_OP",
)

# The configs shipped in accelerate_configs/ (commented for Frontier). Every other strategy is
# ranked all the same; its config is generated on request (write_accelerate_config /
# ``geofm-plan --write-config``). accelerate 1.x cannot express FSDP2 with a shard group of one
# (it refuses a parallelism config with dp_shard_size == 1 under FSDP2), so "replicate" is DDP with
# bf16 autocast: the same per-GCD state as FSDP1's HYBRID_1 / NO_SHARD.
CONFIG_FOR_STRATEGY: dict[str, str] = {
    "HYBRID_1": "accelerate_configs/frontier_replicate.yaml",
    "HYBRID_8": "accelerate_configs/frontier_hybrid8.yaml",
    "FULL_SHARD": "accelerate_configs/frontier_full_shard.yaml",
    "SHARD_GRAD_OP": "accelerate_configs/frontier_shard_grad_op.yaml",
}
DEFAULT_CONFIG = "accelerate_configs/frontier_fsdp.yaml"

_GIB = float(2**30)
# Strategies predicted within this fraction of the best are reported as "not told apart by the
# model" (its out-of-sample error is larger); the ranking itself is by predicted images/s alone.
_CLOSE_FRACTION = 0.05


# --------------------------------------------------------------------------------------------
# Estimates
# --------------------------------------------------------------------------------------------


@dataclass
class StrategyEstimate:
    """One strategy's predicted memory, communication and throughput (GB = GiB, per GCD)."""

    strategy: str
    applicable: bool
    shard_group: int
    params_gb: float = 0.0
    grads_gb: float = 0.0
    optimizer_gb: float = 0.0
    activations_gb: float = 0.0
    comm_buffers_gb: float = 0.0
    overhead_gb: float = 0.0
    memory_gb_per_gcd: float = 0.0
    fits: bool = False
    comm_intra_node_gb: float = 0.0
    comm_inter_node_gb: float = 0.0
    compute_s: float = 0.0
    comm_s: float = 0.0
    step_s: float = 0.0
    images_per_s: float = 0.0
    collectives_per_step: int = 0
    config: str | None = None
    attention_kernel: str = ""
    note: str = ""


@dataclass
class Plan:
    """Estimates for every strategy plus the recommendation (see :func:`plan`)."""

    model: str
    parameters: int
    encoder_parameters: int
    num_nodes: int
    gcds_per_node: int
    gcd_memory_gb: float
    local_batch: int
    global_batch: int
    precision: str
    activation_checkpointing: bool
    image_size: int
    strategies: dict[str, StrategyEstimate]
    recommended_strategy: str | None
    # The shipped accelerate config of the recommended strategy; None when there is none (write
    # one with write_accelerate_config) or nothing fits.
    recommended: str | None
    why: str
    ranking: list[str] = field(default_factory=list)
    platform: str = "rocm"
    reduce_precision: str | None = None
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``strategies[NAME]`` holds ``memory_gb_per_gcd``, ``images_per_s``..."""
        out = asdict(self)
        out["strategies"] = {
            name: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in est.items()}
            for name, est in out["strategies"].items()
        }
        return out

    def format_table(self) -> str:
        """Human-readable table (the ``geofm-plan`` output)."""
        head = (
            f"{self.model}: {self.parameters / 1e9:.3f}B parameters "
            f"(encoder {self.encoder_parameters / 1e9:.3f}B), {self.num_nodes} node(s) x "
            f"{self.gcds_per_node} GCDs of {self.gcd_memory_gb:g} GB, local batch "
            f"{self.local_batch} (global {self.global_batch}), {self.precision}, activation "
            f"checkpointing {'on' if self.activation_checkpointing else 'off'}, "
            f"{self.image_size} px"
        )
        cols = (
            f"{'strategy':<14}{'params':>7}{'grads':>7}{'optim':>7}{'activ':>7}{'buffers':>8}"
            f"{'total GB':>9} {'fits':<5}{'intra GB':>9}{'inter GB':>9}{'img/s':>10}"
        )
        lines = [head, "", cols, "-" * len(cols)]
        for name in STRATEGIES:
            e = self.strategies[name]
            if not e.applicable:
                lines.append(f"{name:<14}  n/a: {e.note}")
                continue
            lines.append(
                f"{name:<14}{e.params_gb:7.1f}{e.grads_gb:7.1f}{e.optimizer_gb:7.1f}"
                f"{e.activations_gb:7.1f}{e.comm_buffers_gb + e.overhead_gb:8.1f}"
                f"{e.memory_gb_per_gcd:9.1f} {'yes' if e.fits else 'NO':<5}"
                f"{e.comm_intra_node_gb:9.2f}{e.comm_inter_node_gb:9.2f}"
                f"{e.images_per_s:10,.0f}"
            )
        lines += ["", f"ranking (predicted img/s): {' > '.join(self.ranking) or 'none fits'}"]
        lines.append(
            f"recommended: {self.recommended_strategy} "
            f"({self.recommended or 'generate its config with --write-config FILE'})"
        )
        lines.append(f"why: {self.why}")
        return "\n".join(lines)


def _activation_bytes(shape: _Shape, batch: int, nbytes: int, checkpointing: bool) -> float:
    stacks = (
        (shape.kept_tokens, shape.hidden_size, shape.num_hidden_layers),
        (shape.num_patches + 1, shape.decoder_hidden_size, shape.decoder_num_hidden_layers),
    )
    full_per_token = 17 * nbytes  # x width: 34 B per token and channel in bf16
    total = 0.0
    largest_block = 0.0
    for tokens, width, layers in stacks:
        block = batch * tokens * width * full_per_token
        largest_block = max(largest_block, block)
        if checkpointing:
            total += layers * batch * tokens * width * nbytes
        else:
            total += layers * block
    if checkpointing:
        total += largest_block
    pixels = batch * shape.num_frames * shape.num_channels * shape.image_size**2
    return total + 4 * pixels * 4  # input, target, normalised target, prediction in fp32


def _estimate(
    strategy: str,
    shape: _Shape,
    *,
    num_nodes: int,
    gcds_per_node: int,
    gcd_memory_gb: float,
    local_batch: int,
    precision: str,
    checkpointing: bool,
    cal: Calibration,
    platform: str = "rocm",
    reduce_precision: str | None = None,
) -> StrategyEstimate:
    world = num_nodes * gcds_per_node
    g = _shard_group(strategy, world)
    est = StrategyEstimate(strategy=strategy, applicable=True, shard_group=g)
    est.config = CONFIG_FOR_STRATEGY.get(strategy)
    if strategy.startswith("HYBRID_") and g > world:
        est.applicable = False
        est.note = f"shard group of {g} GCDs needs at least {math.ceil(g / gcds_per_node)} nodes"
        return est
    if strategy.startswith("HYBRID_") and g > gcds_per_node and g % gcds_per_node:
        est.applicable = False
        est.note = f"a shard group spanning nodes must be a multiple of {gcds_per_node} GCDs"
        return est

    counts = _count(shape)
    p_total = counts["total"]
    block = max(counts["encoder_block"], counts["decoder_block"])
    low = _BYTES[precision]
    # Gradient collectives: FSDP2's MixedPrecisionPolicy reduce_dtype (None = param dtype).
    red = _BYTES[reduce_precision or precision]
    sharded = g > 1

    est.params_gb = 4 * p_total / g / _GIB
    est.grads_gb = 4 * p_total / g / _GIB
    est.optimizer_gb = 8 * p_total / g / _GIB
    buffers = 0.0
    if strategy == "DDP":
        buffers += 4 * p_total  # gradient buckets (gradient_as_bucket_view=False)
    elif not sharded:
        buffers += (low * p_total) if low < 4 else 0.0  # low-precision copy of the weights
    else:
        # 2 blocks in flight: params, grads in the reduce dtype, fp32 grads
        buffers += 2 * block * (low + red + 4)
        if strategy == "SHARD_GRAD_OP":
            buffers += low * p_total  # parameters stay unsharded from forward to backward
        if g > gcds_per_node:
            buffers += cal.queued_layers * block * 4
    est.comm_buffers_gb = buffers / _GIB
    attn = _attention_terms(shape, local_batch, precision, platform, checkpointing)
    est.attention_kernel = attn["kernel"]
    est.activations_gb = (
        _activation_bytes(shape, local_batch, low, checkpointing) + attn["bytes"]
    ) / _GIB
    est.overhead_gb = cal.runtime_overhead_gib
    est.memory_gb_per_gcd = (
        est.params_gb
        + est.grads_gb
        + est.optimizer_gb
        + est.comm_buffers_gb
        + est.activations_gb
        + est.overhead_gb
    )
    est.fits = est.memory_gb_per_gcd <= gcd_memory_gb

    # -- communication and time ------------------------------------------------------------
    terms = _ThroughputTerms(
        collectives=_collectives(strategy, p_total, shape, world, g, gcds_per_node, low, red),
        gcds_per_node=gcds_per_node,
        precision=precision,
        flops=local_batch * (_flops_per_image(shape, checkpointing) + attn["flops"]),
        traffic=attn["traffic"],
        images=world * local_batch,
        forward_share=0.25 if checkpointing else 1 / 3,
    )
    est.collectives_per_step = sum(c.calls for c in terms.collectives if c.group > 1)
    intra = inter = 0.0
    for c in terms.collectives:
        _, a, b = _collective_cost(c, gcds_per_node, cal)
        intra, inter = intra + a, inter + b
    est.comm_intra_node_gb = intra / 1e9
    est.comm_inter_node_gb = inter / 1e9
    est.compute_s, est.comm_s, est.step_s = _step_seconds(terms, cal)
    est.images_per_s = terms.images / est.step_s
    if not est.fits:
        est.note = f"needs {est.memory_gb_per_gcd:.1f} GB of {gcd_memory_gb:g} GB"
    return est


def _all_estimates(shape: _Shape, num_nodes: int, **kw: Any) -> dict[str, StrategyEstimate]:
    return {name: _estimate(name, shape, num_nodes=num_nodes, **kw) for name in STRATEGIES}


def rank_strategies(estimates: dict[str, StrategyEstimate]) -> list[str]:
    """Every applicable strategy that fits, best first, by the cost model alone.

    Key: predicted images/s (higher first), then predicted memory per GCD (lower first), then the
    name -- only exact ties in both reach the name, and no order taken from measured results.
    """
    fitting = [e for e in estimates.values() if e.applicable and e.fits]
    fitting.sort(key=lambda e: (-e.images_per_s, e.memory_gb_per_gcd, e.strategy))
    return [e.strategy for e in fitting]


def _recommend(estimates: dict[str, StrategyEstimate]) -> tuple[list[str], str]:
    ranking = rank_strategies(estimates)
    if not ranking:
        return [], (
            "no strategy fits in GCD memory: enable activation checkpointing, lower the local "
            "batch or shard over more GCDs"
        )
    choice = estimates[ranking[0]]
    why = (
        f"{choice.strategy} fits ({choice.memory_gb_per_gcd:.1f} of the GCD's GB) and has the "
        f"highest predicted throughput, {choice.images_per_s:,.0f} img/s"
    )
    close = [
        estimates[n]
        for n in ranking[1:]
        if estimates[n].images_per_s >= (1 - _CLOSE_FRACTION) * choice.images_per_s
    ]
    if close:
        why += (
            f"; {', '.join(f'{e.strategy} ({e.images_per_s:,.0f})' for e in close)} predict "
            f"within {_CLOSE_FRACTION:.0%}, closer than the model's out-of-sample error "
            "(docs/frontier.md): measure both before a long run"
        )
    elif len(ranking) > 1:
        runner = estimates[ranking[1]]
        why += f", {choice.images_per_s / runner.images_per_s - 1:.0%} ahead of {runner.strategy}"
    if choice.strategy not in CONFIG_FOR_STRATEGY:
        why += (
            f"; no shipped config for {choice.strategy}: write one with `geofm-plan ... "
            f"--write-config FILE --strategy {choice.strategy}`"
        )
    return ranking, why + "."


def plan(
    config_or_preset: Any,
    *,
    num_nodes: int = 1,
    gcds_per_node: int = 8,
    gcd_memory_gb: float = 64.0,
    local_batch: int = 32,
    precision: str = "bf16",
    activation_checkpointing: bool = False,
    image_size: int | None = None,
    calibration: Calibration | None = None,
    platform: str = "rocm",
    reduce_precision: str | None = None,
) -> Plan:
    """Estimates every strategy for a model on ``num_nodes`` x ``gcds_per_node`` GCDs.

    ``config_or_preset``: a preset name (``"vit-5b"``), a ``GeoViTMAEConfig`` or a dict of its
    fields. Nothing is allocated: 15B plans on a laptop. ``precision``: ``"bf16"`` (mixed
    precision with fp32 master weights) or ``"fp32"``. ``reduce_precision``: dtype of the gradient
    reduce-scatter / all-reduce (FSDP2 ``MixedPrecisionPolicy.reduce_dtype``); ``None`` = the
    param dtype, as FSDP2 does by default. ``platform``: ``"rocm"`` or ``"cuda"``, for the SDPA
    kernel the head dims get (:func:`geofm_hf.planner.attention.sdpa_backend`). Returns a
    :class:`Plan`.
    """
    if precision not in _BYTES:
        raise ValueError(f"precision must be one of {sorted(_BYTES)}: found {precision!r}.")
    if reduce_precision is not None and reduce_precision not in _BYTES:
        raise ValueError(
            f"reduce_precision must be None or one of {sorted(_BYTES)}: found {reduce_precision!r}."
        )
    for name, value in (
        ("num_nodes", num_nodes),
        ("gcds_per_node", gcds_per_node),
        ("local_batch", local_batch),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer: found {value!r}.")
    if gcd_memory_gb <= 0:
        raise ValueError(f"gcd_memory_gb must be positive: found {gcd_memory_gb!r}.")
    cal = calibration or CALIBRATION
    shape = _resolve_shape(config_or_preset, image_size)
    kw = dict(
        gcds_per_node=gcds_per_node,
        gcd_memory_gb=gcd_memory_gb,
        local_batch=local_batch,
        precision=precision,
        checkpointing=activation_checkpointing,
        cal=cal,
        platform=platform,
        reduce_precision=reduce_precision,
    )
    estimates = _all_estimates(shape, num_nodes, **kw)
    ranking, why = _recommend(estimates)
    strategy = ranking[0] if ranking else None
    counts = _count(shape)
    return Plan(
        model=shape.name,
        parameters=counts["total"],
        encoder_parameters=counts["encoder"],
        num_nodes=num_nodes,
        gcds_per_node=gcds_per_node,
        gcd_memory_gb=gcd_memory_gb,
        local_batch=local_batch,
        global_batch=local_batch * num_nodes * gcds_per_node,
        precision=precision,
        activation_checkpointing=activation_checkpointing,
        image_size=shape.image_size,
        strategies=estimates,
        recommended_strategy=strategy,
        recommended=CONFIG_FOR_STRATEGY.get(strategy) if strategy else None,
        ranking=ranking,
        platform=platform,
        reduce_precision=reduce_precision,
        why=why,
        assumptions=[
            "memory in GiB; fp32 master weights + AdamW; MAE decoder included",
            f"mask ratio {shape.mask_ratio}: encoder sees {shape.kept_tokens} tokens per image",
            f"attention on {platform}: "
            + next(iter(e.attention_kernel for e in estimates.values() if e.attention_kernel), "")
            + " (flash/efficient/cudnn are fused: no tokens^2 scores stored)",
            "gradient reduction in "
            + (reduce_precision or precision)
            + " (FSDP2 MixedPrecisionPolicy.reduce_dtype)",
            "throughput calibrated to Tsaris et al. 2024 (Frontier, MI250X, RCCL)",
        ],
    )


# --------------------------------------------------------------------------------------------
# accelerate configs
# --------------------------------------------------------------------------------------------


def _strategy_from_accelerate(cfg: dict[str, Any], path: str) -> str:
    dist = cfg.get("distributed_type")
    if dist == "MULTI_GPU":
        # fp32 DDP is the paper's DDP baseline; DDP under bf16 autocast is "replicate".
        return "HYBRID_1" if cfg.get("mixed_precision") == "bf16" else "DDP"
    if dist != "FSDP":
        raise ValueError(f"{path}: expected distributed_type FSDP or MULTI_GPU, found {dist!r}.")
    fsdp = cfg.get("fsdp_config") or {}
    if str(fsdp.get("fsdp_version", 1)) != "2":
        raise ValueError(f"{path}: expected fsdp_version 2, found {fsdp.get('fsdp_version')!r}.")
    par = cfg.get("parallelism_config") or {}
    replicate = int(par.get("parallelism_config_dp_replicate_size", 1))
    shard = int(par.get("parallelism_config_dp_shard_size", cfg.get("num_processes", 1)))
    reshard = str(fsdp.get("fsdp_reshard_after_forward", True)).lower() == "true"
    if replicate > 1:
        if not reshard:
            raise ValueError(
                f"{path}: the planner models reshard_after_forward=false only for a full shard."
            )
        return f"HYBRID_{shard}"
    return "FULL_SHARD" if reshard else "SHARD_GRAD_OP"


def plan_from_accelerate_config(
    model_config: Any,
    accelerate_config_path: str | Path,
    *,
    num_nodes: int | None = None,
    local_batch: int = 32,
    **kwargs: Any,
) -> tuple[str, Plan]:
    """Plan for the strategy one of our accelerate yaml files launches.

    Reads the yaml (``parallelism_config_dp_replicate_size > 1`` means HYBRID with a shard
    group of ``dp_shard_size``; 1 means the shard group grows with the job, as
    ``recipes/frontier/pretrain.sbatch`` launches it). ``num_nodes`` defaults to the file's
    ``num_machines``; precision and activation checkpointing to the file's values. Returns
    ``(strategy_name, plan)``; ``plan.strategies[strategy_name]`` is the estimate that applies.
    """
    import yaml

    path = Path(accelerate_config_path)
    if not path.is_file():
        raise FileNotFoundError(f"accelerate config not found: {path}")
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a yaml mapping, found {type(cfg).__name__}.")
    strategy = _strategy_from_accelerate(cfg, str(path))
    fsdp = cfg.get("fsdp_config") or {}
    kwargs.setdefault("precision", "bf16" if cfg.get("mixed_precision") == "bf16" else "fp32")
    kwargs.setdefault(
        "activation_checkpointing",
        str(fsdp.get("fsdp_activation_checkpointing", False)).lower() == "true",
    )
    nodes = num_nodes if num_nodes is not None else int(cfg.get("num_machines", 1))
    result = plan(model_config, num_nodes=nodes, local_batch=local_batch, **kwargs)
    return strategy, result


def write_accelerate_config(
    strategy: str,
    path: str | Path,
    *,
    num_nodes: int = 1,
    gcds_per_node: int = 8,
    precision: str = "bf16",
    activation_checkpointing: bool = True,
) -> Path:
    """Write an accelerate yaml that launches ``strategy`` (any of :data:`STRATEGIES`).

    FSDP2 through accelerate's parallelism config: HYBRID_g is ``dp_shard_size=g`` x
    ``dp_replicate_size=world/g``; FULL_SHARD / SHARD_GRAD_OP shard over the whole job with
    ``reshard_after_forward`` true / false. HYBRID_1 and NO_SHARD (a shard group of one, which
    accelerate's FSDP2 refuses) are DDP under bf16 autocast -- the same per-GCD state; DDP is the
    paper's fp32 baseline. :func:`plan_from_accelerate_config` reads the file back to the same
    strategy (NO_SHARD reads back as HYBRID_1). Refuses to overwrite an existing file.
    """
    import yaml

    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}.")
    if precision not in _BYTES:
        raise ValueError(f"precision must be one of {sorted(_BYTES)}: found {precision!r}.")
    world = num_nodes * gcds_per_node
    g = _shard_group(strategy, world)
    if strategy.startswith("HYBRID_") and (g > world or (g > gcds_per_node and g % gcds_per_node)):
        raise ValueError(
            f"{strategy} needs a shard group of {g} GCDs that tiles {num_nodes} node(s) x "
            f"{gcds_per_node} GCDs: use more nodes or a smaller group."
        )
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists: choose a new file name (nothing was written).")
    cfg: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "mixed_precision": "no" if strategy == "DDP" else precision.replace("fp32", "no"),
        "downcast_bf16": "no",
        "num_machines": num_nodes,
        "num_processes": world,
        "machine_rank": 0,
        "rdzv_backend": "static",
        "same_network": True,
        "main_training_function": "main",
        "use_cpu": False,
        "gpu_ids": "all",
        "enable_cpu_affinity": False,
    }
    if g == 1:
        cfg["distributed_type"] = "MULTI_GPU"
    else:
        hybrid = strategy.startswith("HYBRID_")
        cfg["distributed_type"] = "FSDP"
        cfg["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_reshard_after_forward": strategy != "SHARD_GRAD_OP",
            "fsdp_activation_checkpointing": activation_checkpointing,
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_offload_params": False,
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_sync_module_states": True,
        }
        cfg["parallelism_config"] = {
            "parallelism_config_dp_replicate_size": world // g if hybrid else 1,
            "parallelism_config_dp_shard_size": g,
            "parallelism_config_tp_size": 1,
            "parallelism_config_cp_size": 1,
        }
    header = (
        f"# {strategy} on {num_nodes} node(s) x {gcds_per_node} GCDs, written by geofm-plan "
        "--write-config.\n# See accelerate_configs/frontier_*.yaml for what each key does.\n"
    )
    return atomic_write_text(path, header + yaml.safe_dump(cfg, sort_keys=False))
