"""FSDP2 really sharding on CPU (2 processes over gloo), and the recipe running on it."""

from pretrain_utils import CPU_FSDP_CONFIG, ROOT, launch, pretrain
from transformers import AutoModelForPreTraining

import geofm_hf


def test_fsdp2_shards_saves_loads_and_gathers_on_cpu(tmp_path):
    result = launch(ROOT / "tests" / "workers" / "fsdp_check.py", tmp_path / "state")
    assert "FSDP_CHECK_OK world=2" in result.stdout, result.stdout[-2000:] + result.stderr[-4000:]
    # accelerate wrote a sharded (distributed checkpoint) model state, not one full file
    shards = list((tmp_path / "state").glob("pytorch_model_fsdp_0/*.distcp"))
    assert len(shards) == 2


def test_recipe_under_fsdp2_on_cpu_exports_full_weights(tmp_path):
    out = tmp_path / "run"
    result = pretrain(
        out,
        "--max_steps",
        "4",
        "--save_steps",
        "2",
        "--plot_reconstructions",
        "false",
        "--bf16",
        "false",
        config=CPU_FSDP_CONFIG,
    )
    log = result.stdout + result.stderr
    assert "FSDP2: block weights sharded (384, 192) of (768, 192)" in log
    # torch warns, per step and rank, when an FSDP2 unit returns a view (a lost backward hook
    # if an in-place op followed): the patch embedding returns a contiguous tensor.
    assert "returned a view tensor" not in log
    model = AutoModelForPreTraining.from_pretrained(out / "final")
    assert isinstance(model, geofm_hf.GeoViTMAEForPreTraining)
    assert (out / "checkpoint-000004" / "pytorch_model_fsdp_0").is_dir()
    # resuming a sharded checkpoint with more steps continues from step 4
    result = pretrain(
        out,
        "--max_steps",
        "6",
        "--save_steps",
        "2",
        "--plot_reconstructions",
        "false",
        "--bf16",
        "false",
        config=CPU_FSDP_CONFIG,
    )
    assert "at step 4" in result.stdout + result.stderr


def test_activation_checkpointing_asked_twice_is_refused(tmp_path):
    out = tmp_path / "run"
    result = pretrain(
        out, "--max_steps", "1", "--gradient_checkpointing", "true", "--bf16", "false",
        config=CPU_FSDP_CONFIG, launch_args=["--fsdp_activation_checkpointing", "true"],
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Activation checkpointing is asked for twice" in result.stderr
    assert "--gradient_checkpointing false" in result.stderr
    assert not list(out.glob("checkpoint-*"))
