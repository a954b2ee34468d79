"""``--dry_run``: the model on the meta device and the planner's memory/throughput table for the
launch config; no training, no process group."""

from __future__ import annotations

import os

import torch

from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining
from geofm_hf.modeling_geofm import count_parameters, flops_per_image
from geofm_hf.training.arguments import ArgumentError
from geofm_hf.training.optim import LearningRateRuleError, peak_learning_rate


def dry_run(config: GeoViTMAEConfig, args) -> int:
    """Build the model on the meta device and print the memory/throughput plan; no training."""
    from geofm_hf.planner import plan_from_accelerate_config

    with torch.device("meta"):
        model = GeoViTMAEForPreTraining(config)
    path = (
        args.accelerate_config
        or os.environ.get("GEOFM_ACCELERATE_CONFIG")
        or "accelerate_configs/frontier_fsdp.yaml"
    )
    strategy, plan = plan_from_accelerate_config(
        config, path, num_nodes=args.dry_run_nodes, local_batch=args.per_device_train_batch_size
    )
    print(
        f"dry run: {config.preset} on meta: {count_parameters(model) / 1e9:.3f}B parameters "
        f"(encoder {count_parameters(model, encoder_only=True) / 1e9:.3f}B), "
        f"{config.num_channels} bands at {config.image_size} px, "
        f"{flops_per_image(config) / 1e12:.3f} TFLOPs per image (fwd+bwd)\n"
        f"accelerate config {path} -> strategy {strategy}, {args.dry_run_nodes} node(s)"
    )
    print(plan.format_table())
    # The planned job's global batch (its nodes x GCDs), and so the lr that job would use.
    global_batch = plan.global_batch * args.gradient_accumulation_steps
    try:
        peak, rule = peak_learning_rate(args, global_batch)
        print(f"global batch {global_batch:,} -> peak learning rate {peak:.3e} ({rule})")
    except LearningRateRuleError as err:
        raise ArgumentError(str(err)) from err
    estimate = plan.strategies[strategy]
    print(
        f"chosen strategy {strategy}: {estimate.memory_gb_per_gcd:.1f} GB per GCD "
        f"({'fits' if estimate.fits else 'does NOT fit'}), about {estimate.images_per_s:,.0f} "
        "images/s predicted"
    )
    # The table's last line says why its top strategy wins; say it about the one being launched.
    if strategy == plan.recommended_strategy:
        print(f"why {strategy}: {plan.why}")
    else:
        best = plan.recommended_strategy
        ahead = (
            plan.strategies[best].images_per_s / max(estimate.images_per_s, 1e-9) - 1 if best else 0
        )
        print(
            f"why not {strategy}: the planner prefers {best} on {plan.num_nodes} node(s), "
            f"{ahead:.0%} ahead ({plan.recommended or 'geofm-plan --write-config FILE'}): {plan.why}"
        )
    return 0
