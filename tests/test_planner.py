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
def test_recommendation_matches_the_papers_best(preset, nodes):
    result = planner.plan(preset, num_nodes=nodes, **planner.PAPER_SETTINGS)
    assert result.recommended_strategy == planner.PAPER_BEST_STRATEGY[preset], result.why
    assert result.recommended == planner.CONFIG_FOR_STRATEGY[result.recommended_strategy]
    assert result.why


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
        assert many / (128 * one) > 0.9  # paper: ~100 %
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
    assert data["recommended"] == "accelerate_configs/frontier_hybrid8.yaml"
    assert data["num_nodes"] == 8 and data["global_batch"] == 8 * 8 * 32


def test_cli_table_and_config_json(tmp_path, capsys):
    config = GeoViTMAEConfig.from_preset("vit-3b", num_channels=13)
    path = tmp_path / "config.json"
    path.write_text(config.to_json_string(), encoding="utf-8")
    assert planner.main(["--config-json", str(path), "--activation-checkpointing"]) == 0
    out = capsys.readouterr().out
    assert "recommended: accelerate_configs/frontier_replicate.yaml" in out
    assert "SHARD_GRAD_OP" in out and "why:" in out


def test_cli_errors(tmp_path, capsys):
    assert planner.main(["--preset", "vit-7b"]) == 2
    assert "Unknown preset" in capsys.readouterr().err
    assert planner.main(["--config-json", str(tmp_path / "none.json")]) == 2
    assert "not found" in capsys.readouterr().err


def test_plan_to_dict_is_json():
    data = planner.plan("vit-huge", num_nodes=4).to_dict()
    assert json.loads(json.dumps(data)) == data
