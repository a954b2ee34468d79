"""A run's whole life as a user sees it: sizes never changed silently, a finished run rerun,
another run's folder resumed into, arguments changed at resume."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
from pretrain_utils import ROOT, pretrain

from geofm_hf import GeoViTMAEImageProcessor
from geofm_hf.data import sample_dataset_path
from geofm_hf.training.arguments import ArgumentError
from geofm_hf.training.inputs import loader_settings

_spec = importlib.util.spec_from_file_location("pretrain_recipe", ROOT / "recipes" / "pretrain.py")
recipe = importlib.util.module_from_spec(_spec)
sys.modules["pretrain_recipe"] = recipe  # dataclasses look their module up there
_spec.loader.exec_module(recipe)
FRONTIER = str(ROOT / "accelerate_configs" / "frontier_fsdp.yaml")


def test_image_size_larger_than_the_chips_is_refused_not_changed():
    with pytest.raises(ArgumentError, match=r"--image_size 96 is larger than the dataset's 64 px "
                       r"chips\. Pass --image_size 64"):  # fmt: skip
        recipe.main(["--dry_run", "true", "--preset", "tiny", "--image_size", "96"])
    # the preset's paper size too: vit-huge has 14 px patches, so 56 px is what fits
    with pytest.raises(ArgumentError, match=r"vit-huge preset's image_size 224 is larger than "
                       r"the dataset's 64 px chips\. Pass --image_size 56"):  # fmt: skip
        recipe.main(["--dry_run", "true", "--preset", "vit-huge"])


def test_dry_run_plans_with_the_datasets_bands_and_chip_size(capsys):
    recipe.main(["--dry_run", "true", "--preset", "vit-huge", "--image_size", "56",
                 "--accelerate_config", FRONTIER])  # fmt: skip
    out = capsys.readouterr().out
    assert "vit-huge on meta" in out and "13 bands at 56 px" in out, out


def _tree(folder):
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_runs_life_rerun_foreign_resume_and_changed_arguments(tmp_path):
    out = tmp_path / "run"
    base = ("--max_steps", "2", "--save_steps", "2", "--plot_reconstructions", "false")
    pretrain(out, *base, "--image_size", "48")

    # 10: training cropped 48 px windows from 64 px chips; the processor crops them too
    processor = GeoViTMAEImageProcessor.from_pretrained(out / "final")
    assert (processor.size, processor.crop_size) == (64, 48)
    mean = np.array(processor.image_mean, dtype="float32")[:, None, None]
    std = np.array(processor.image_std, dtype="float32")[:, None, None]
    # A chip like the training data (one far from it is warned about, tested elsewhere).
    chip = np.random.default_rng(0).normal(mean, std, (13, 64, 64)).astype("float32")
    pixels = processor(chip, return_tensors="pt")["pixel_values"][0].numpy()
    np.testing.assert_allclose(pixels, ((chip - mean) / std)[:, 8:56, 8:56], rtol=1e-5, atol=1e-5)

    # 9: the same command again is a no-op that says so; nothing in final/ moves or changes
    before = _tree(out / "final")
    again = pretrain(out, *base, "--image_size", "48")
    assert "already finished" in again.stdout and "nothing to do" in again.stdout
    assert _tree(out / "final") == before
    assert not list(out.glob("final-before-*"))

    # 11: another run's folder: refused before anything is loaded, every difference named
    other = pretrain(out, "--max_steps", "4", "--save_steps", "2", "--plot_reconstructions",
                     "false", "--per_device_train_batch_size", "4", check=False)  # fmt: skip
    assert other.returncode != 0
    err = other.stderr
    assert "written by another run" in err
    assert "model image_size: 48 in the checkpoint, 64 now" in err
    assert "global batch (per-device batch x world size x accumulation): 8 x" in err
    assert "--allow_global_batch_change" in err
    assert "size mismatch" not in err and "Traceback" not in err.split("Cannot resume")[0][-200:]

    # 11: allowed changes (schedule) resume, and are recorded in the run record and the card
    more = pretrain(out, "--max_steps", "4", "--save_steps", "2", "--plot_reconstructions",
                    "false", "--image_size", "48", "--learning_rate", "5e-4")  # fmt: skip
    assert "with changed arguments" in more.stdout
    record = json.loads((out / "final" / "run_record.json").read_text())
    (change,) = record["argument_changes"]
    assert change["step"] == 2
    assert change["changes"]["learning_rate"] == [1.5e-3, 5e-4]
    assert change["changes"]["max_steps"] == [2, 4]
    card = (out / "final" / "README.md").read_text()
    assert "Resumed at step 2 with changed arguments" in card and "learning_rate" in card
    assert os.path.isdir(sample_dataset_path())


def test_gpu_runs_use_data_workers_and_pinned_memory_by_default():
    assert loader_settings("cuda", None) == (4, True)
    assert loader_settings("cuda", 0) == (0, True)  # an explicit choice is kept
    assert loader_settings("cpu", None) == (0, False)  # CPU ranks own the cores
