"""recipes/pretrain.py end to end under `accelerate launch` with 2 CPU processes."""

import json
import stat

import pytest
import torch
from pretrain_utils import ROOT, launch, metrics, pretrain
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForPreTraining

import geofm_hf
from geofm_hf.data import read_dataset_info, sample_dataset_path
from geofm_hf.training.arguments import parse_arguments
from geofm_hf.training.checkpointing import list_checkpoints


def test_demo_run_learns_and_exports_loadable_weights(tmp_path):
    out = tmp_path / "run"
    result = pretrain(out, "--max_steps", "30", "--save_steps", "15", "--warmup_steps", "5")
    log = result.stdout + result.stderr
    assert "world size 2" in log and "global batch 16" in log and "MULTI_CPU" in log
    # CPU ranks return freed tensors to the OS (geofm_hf.training.host_memory)
    assert "glibc mmap threshold pinned at 1 MiB" in log
    records = metrics(out)
    assert [r["step"] for r in records] == list(range(1, 31))
    first = sum(r["loss"] for r in records[:5]) / 5
    last = sum(r["loss"] for r in records[-5:]) / 5
    assert last < first * 0.9, (first, last)

    final = out / "final"
    names = {p.name for p in final.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} <= names
    assert {"loss_curve.png", "reconstruction.png", "run_record.json", "modeling_geofm.py"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    # the weights are as readable as the rest of the export (issue 16: they were 0600)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in final.iterdir() if p.is_file()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o644, modes

    # the band contract came from the dataset's own metadata
    info = read_dataset_info(sample_dataset_path())
    model = AutoModelForPreTraining.from_pretrained(final)
    assert isinstance(model, geofm_hf.GeoViTMAEForPreTraining)
    assert model.config.band_names == info.band_names
    assert model.config.image_mean == pytest.approx(info.mean)
    encoder = AutoModel.from_pretrained(final)
    assert isinstance(encoder, geofm_hf.GeoViTMAEModel)
    # the export holds the trained weights, not the initial ones
    ckpt = list_checkpoints(out)[-1][1]
    trained = load_file(final / "model.safetensors")
    assert not torch.equal(
        trained["vit.encoder.layers.0.mlp.fc1.weight"],
        geofm_hf.GeoViTMAEForPreTraining(model.config).state_dict()[
            "vit.encoder.layers.0.mlp.fc1.weight"
        ],
    )
    assert ckpt.name == "checkpoint-000030"
    record = json.loads((final / "run_record.json").read_text())
    assert record["world_size"] == 2 and record["steps"] == 30 and record["global_batch"] == 16


def test_continued_pretraining_checks_bands(tmp_path):
    out = tmp_path / "run"
    pretrain(out, "--max_steps", "2", "--save_steps", "2", "--plot_reconstructions", "false")
    # Continue from the export for a few more steps: the bands match, so it runs.
    more = tmp_path / "more"
    pretrain(
        more,
        "--max_steps",
        "2",
        "--model_name_or_path",
        out / "final",
        "--plot_reconstructions",
        "false",
    )
    assert (more / "final" / "model.safetensors").exists()
    # A model whose bands differ from the dataset's is refused with the difference named.
    config = geofm_hf.GeoViTMAEConfig.from_preset("tiny", band_names=["B04", "B03", "B02"])
    geofm_hf.GeoViTMAEForPreTraining(config).save_pretrained(tmp_path / "rgb")
    result = pretrain(
        tmp_path / "bad", "--max_steps", "1", "--model_name_or_path", tmp_path / "rgb", check=False
    )
    assert result.returncode != 0
    assert "not in the model" in result.stderr and "B01" in result.stderr


def test_arguments_from_yaml_with_overrides_and_errors(tmp_path):
    demo = str(ROOT / "recipes" / "configs" / "demo.yaml")
    model_args, data_args, args = parse_arguments(["--config", demo, "--max_steps", "7"])
    assert args.max_steps == 7 and model_args.preset == "tiny" and args.learning_rate == 1.5e-3
    assert data_args.dataset_name_or_path is None  # -> the bundled sample
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_stepz: 3\n")
    with pytest.raises(ValueError, match=r"unknown arguments \['max_stepz'\]"):
        parse_arguments(["--config", str(bad)])
    with pytest.raises(ValueError, match="push_to_hub needs hub_model_id"):
        parse_arguments(["--push_to_hub", "true"])


def test_dry_run_plans_a_15b_model_on_meta(tmp_path):
    result = launch(
        ROOT / "recipes" / "pretrain.py",
        "--dry_run", "true", "--preset", "vit-15b", "--dry_run_nodes", "16",
        "--synthetic_data", "true",  # the paper's 224 px: larger than the bundled sample's chips
        "--accelerate_config", ROOT / "accelerate_configs" / "frontier_shard_grad_op.yaml",
    )  # fmt: skip
    out = result.stdout
    assert "vit-15b on meta" in out and "strategy SHARD_GRAD_OP" in out
    assert "14.6" in out  # encoder billions of parameters


@pytest.mark.parametrize(
    "name", ["demo", "vit-base", "vit-huge", "vit-1b", "vit-3b", "vit-5b", "vit-15b"]
)
def test_run_configs_parse(name):
    model_args, _, args = parse_arguments(
        ["--config", str(ROOT / "recipes" / "configs" / f"{name}.yaml")]
    )
    assert model_args.preset in geofm_hf.PRESETS
    assert args.resume_from_checkpoint == "auto"
