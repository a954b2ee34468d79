"""Every shipped config recommends what the planner recommends for the node count it states.

A ``# planner: <preset> at <N> nodes -> <STRATEGY> ...`` line in a config is a claim; this checks
it against ``plan(...)``: the strategy must be the planner's first, or predicted within the
planner's own "not told apart" band (``_CLOSE_FRACTION``), and it must be the strategy the file
launches.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from geofm_hf import planner
from geofm_hf.planner.cost_model import _CLOSE_FRACTION

ROOT = Path(__file__).parents[1]
_LINE = re.compile(
    r"^# planner: (?P<preset>vit-\w+) at (?P<nodes>\d+) nodes -> (?P<strategy>\w+) "
    r"\(`geofm-plan --preset (?P=preset) --nodes (?P=nodes) --activation-checkpointing`\)"
    r"(?: -> (?P<config>accelerate_configs/\S+\.yaml))?$",
    re.M,
)
MODEL_CONFIGS = sorted((ROOT / "recipes/configs").glob("vit-*.yaml"))
ACCELERATE_CONFIGS = sorted((ROOT / "accelerate_configs").glob("frontier_*.yaml"))


def _claims(path: Path) -> list[dict]:
    return [m.groupdict() for m in _LINE.finditer(path.read_text(encoding="utf-8"))]


def _check(preset: str, nodes: int, strategy: str, config: Path) -> None:
    launched, result = planner.plan_from_accelerate_config(
        preset, config, num_nodes=nodes, activation_checkpointing=True
    )
    assert launched == strategy, f"{config.name} launches {launched}, the line says {strategy}"
    top = result.strategies[result.ranking[0]].images_per_s
    got = result.strategies[strategy]
    assert got.fits, f"{preset} {strategy} on {nodes} nodes needs {got.memory_gb_per_gcd:.1f} GB"
    assert got.images_per_s >= (1 - _CLOSE_FRACTION) * top, (
        f"{preset} on {nodes} nodes: the planner ranks {result.ranking[0]} first "
        f"({top:,.0f} img/s), {strategy} predicts {got.images_per_s:,.0f}: {result.why}"
    )


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: p.name)
def test_each_model_config_states_one_planned_node_count_and_follows_the_planner(path):
    claims = _claims(path)
    assert len(claims) == 1 and claims[0]["config"], f"{path.name}: one '# planner:' line"
    (claim,) = claims
    assert claim["preset"] == yaml.safe_load(path.read_text(encoding="utf-8"))["preset"]
    config = ROOT / claim["config"]
    assert f"Launch on Frontier with\n# {claim['config']}" in path.read_text(encoding="utf-8")
    _check(claim["preset"], int(claim["nodes"]), claim["strategy"], config)


@pytest.mark.parametrize(
    "claim",
    [(p, c) for p in ACCELERATE_CONFIGS for c in _claims(p)],
    ids=lambda c: f"{c[0].name}-{c[1]['preset']}-{c[1]['nodes']}n",
)
def test_each_accelerate_config_claim_follows_the_planner(claim):
    path, c = claim
    _check(c["preset"], int(c["nodes"]), c["strategy"], path)


def test_every_recommended_accelerate_config_carries_a_claim():
    claimed = {p.name for p in ACCELERATE_CONFIGS if _claims(p)}
    # frontier_full_shard.yaml is kept for reference: the planner never ranks it first.
    assert claimed == {p.name for p in ACCELERATE_CONFIGS} - {"frontier_full_shard.yaml"}


def test_the_sbatch_default_is_the_planners_choice_at_scale():
    sbatch = (ROOT / "recipes/frontier/pretrain.sbatch").read_text(encoding="utf-8")
    default = re.search(r'GEOFM_ACCELERATE_CONFIG:-([^}"]+)', sbatch).group(1)
    for claim in _claims(ROOT / default):
        _check(claim["preset"], int(claim["nodes"]), claim["strategy"], ROOT / default)
    assert {c["preset"] for c in _claims(ROOT / default)} == {"vit-5b", "vit-15b"}


@pytest.mark.parametrize(
    ("config", "verdict"),
    [
        ("frontier_hybrid8.yaml", "why HYBRID_8: HYBRID_8 fits"),
        ("frontier_shard_grad_op.yaml", "why not SHARD_GRAD_OP: the planner prefers HYBRID_8 on"),
    ],
)
def test_dry_run_says_why_the_launched_strategy_wins_or_not(config, verdict, capsys):
    from geofm_hf import GeoViTMAEConfig
    from geofm_hf.training.arguments import parse_arguments
    from geofm_hf.training.dry_run import dry_run

    _, _, args = parse_arguments(
        [
            *("--config", str(ROOT / "recipes/configs/vit-15b.yaml"), "--dry_run", "true"),
            # 1,024 nodes x 8 GCDs x 32 is past where the default lr rule holds: choose one.
            *("--dry_run_nodes", "1024", "--lr_scaling", "sqrt"),
            *("--accelerate_config", str(ROOT / "accelerate_configs" / config)),
        ]
    )
    assert dry_run(GeoViTMAEConfig.from_preset("vit-15b"), args) == 0
    out = capsys.readouterr().out
    assert verdict in out
    assert "peak learning rate" in out and "chosen strategy" in out  # the lines kept
