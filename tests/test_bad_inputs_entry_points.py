"""Every bad input to every command ends in one line and exit 2, never a traceback (issue 25,
class 8). Each entry point's table runs as a subprocess, as a user would: the exit code, the
absence of "Traceback" and the words naming the file or argument at fault are checked. Before,
each of these rows gave a traceback, exit 0 on a silently wrong plan, or an error naming the
wrong file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geofm_hf.data import sample_dataset_path

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {
    "geofm-make-shards": "geofm_hf.data.cli",
    "geofm-plan": "geofm_hf.planner",
    "geofm-embed": "geofm_hf.inference.embed",
    "geofm-segment": "geofm_hf.inference.segment",
}


def _scene(tmp):
    path = tmp / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=3, dtype="uint16",
                       crs="EPSG:32633", transform=Affine(10, 0, 5e5, 0, -10, 4.6e6)) as dst:  # fmt: skip
        dst.write(np.ones((3, 32, 32), np.uint16))
        for i, name in enumerate(["red", "green", "blue"], 1):
            dst.set_band_description(i, name)
    return str(path)


def _text(tmp, name, text="not what it claims to be\n"):
    (tmp / name).write_text(text)
    return str(tmp / name)


def _shards(tmp, *extra):
    return [_scene(tmp), "-o", str(tmp / "out"), "--chip-size", "16", "--sensor", "rgb", *extra]


# entry point -> {case: (argv from tmp_path, words the one line must hold)}
CASES = {
    "geofm-make-shards": {
        "labels_not_a_raster": (lambda t: _shards(t, "--labels", _text(t, "l.tif")),
                                ["l.tif", "(--labels)", "not a raster"]),
        "labels_a_folder": (lambda t: _shards(t, "--labels", str(t)),
                            ["(--labels)", "not a raster"]),
        "labels_vector_not_a_vector": (
            lambda t: _shards(t, "--labels-vector", _text(t, "v.gpkg"), "--label-field", "k"),
            ["v.gpkg", "(--labels-vector)"]),
        "labels_vector_a_folder": (
            lambda t: _shards(t, "--labels-vector", str(t / "sub"), "--label-field", "k")
            if (t / "sub").mkdir() is None else None, ["sub", "(--labels-vector)"]),
        "filename_pattern_not_a_regex": (lambda t: _shards(t, "--filename-pattern", "(?P<band"),
                                         ["--filename-pattern", "(?P<band"]),
        "band_names_twice": (lambda t: [_scene(t), "-o", str(t / "o"), "--chip-size", "16",
                                        "--band-names", "B4,B4,B3"], ["'B4' twice"]),
    },
    # The bundled shard dataset given where a model export goes.
    "geofm-embed": {
        "dataset_as_model": (lambda t: [sample_dataset_path(), _scene(t), "-o", str(t / "e.parquet")],
                             ["is not a model export", "config.json", "OUTPUT_DIR/final"]),
    },
    "geofm-segment": {
        "dataset_as_model": (lambda t: [sample_dataset_path(), _scene(t), "-o", str(t / "p.tif")],
                             ["is not a model export", "config.json", "OUTPUT_DIR/final"]),
    },
    "geofm-plan": {
        "config_json_a_folder": (lambda t: ["--config-json", str(t)], ["--config-json", "folder"]),
        "config_json_a_list": (lambda t: ["--config-json", _text(t, "c.json", "[1, 2]")],
                               ["c.json", "list"]),
        "config_json_empty_object": (lambda t: ["--config-json", _text(t, "c.json", "{}")],
                                     ["c.json", "names no model config field"]),
        "config_json_foreign_fields": (
            lambda t: ["--config-json", _text(t, "c.json", json.dumps({"format_version": 1}))],
            ["names no model config field", "format_version"]),
        "config_json_binary": (lambda t: ["--config-json", str(_binary(t))],
                               ["c.json", "not valid JSON"]),
    },
}  # fmt: skip


def _binary(tmp):
    (tmp / "c.json").write_bytes(b"\xff\xfe\x00garbage")
    return tmp / "c.json"


def _run(command, argv, tmp_path):
    code = f"import sys; from {ENTRY_POINTS[command]} import main; sys.exit(main())"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)  # fmt: skip


def _check(result, prefix, words):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prefix}: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize(
    ("command", "case"), [(c, k) for c, table in CASES.items() for k in sorted(table)]
)
def test_console_script_bad_input_is_one_line_and_exit_2(command, case, tmp_path):
    make, words = CASES[command][case]
    _check(_run(command, make(tmp_path), tmp_path), command, words)


# Recipes (run_recipe is their handler): a dataset argument that is not a dataset.
RECIPE_CASES = {
    "dataset_is_a_file": (lambda t: ["--dataset_name_or_path", _text(t, "d.parquet")],
                          ["d.parquet", "is a file", "dataset folder"]),
    "dataset_info_lacks_keys": (
        lambda t: ["--dataset_name_or_path", str(_dataset(t, {"format_version": 1}))],
        ["geofm_dataset.json", "lacks required keys", "band_names"]),
    "dataset_info_not_json": (lambda t: ["--dataset_name_or_path", str(_dataset(t, None))],
                              ["geofm_dataset.json", "not valid JSON"]),
    "dataset_info_future_version": (
        lambda t: ["--dataset_name_or_path", str(_dataset(t, {"format_version": 99}))],
        ["format_version 99"]),
    # The bundled sample given as a model, and a file given as a checkpoint.
    "dataset_as_model": (lambda t: ["--model_name_or_path", sample_dataset_path()],
                         ["--model_name_or_path", "is not a model export", "OUTPUT_DIR/final"]),
    "checkpoint_is_a_file": (lambda t: ["--resume_from_checkpoint", _text(t, "ckpt.bin")],
                             ["ckpt.bin", "is not a complete checkpoint"]),
}  # fmt: skip


def _dataset(tmp, info):
    folder = tmp / "ds"
    folder.mkdir()
    (folder / "geofm_dataset.json").write_text("{" if info is None else json.dumps(info))
    return folder


@pytest.mark.parametrize("case", sorted(RECIPE_CASES))
def test_pretrain_recipe_bad_dataset_is_one_line_and_exit_2(case, tmp_path):
    make, words = RECIPE_CASES[case]
    argv = [*make(tmp_path), "--output_dir", str(tmp_path / "run"), "--max_steps", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(ROOT / "recipes" / "pretrain.py"), *argv],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    _check(result, "pretrain.py", words)


@pytest.mark.parametrize("recipe", ["linear_probe.py", "finetune.py", "segment.py"])
def test_downstream_recipe_missing_dataset_is_one_line_and_exit_2(recipe, tmp_path):
    """A dataset path that is not there: the recipes' handler treats it as the console scripts
    do (a missing path is the user's), not as a crash."""
    argv = ["--model_name_or_path", sample_dataset_path(), "--dataset_name_or_path",
            str(tmp_path / "nope"), "--output_dir", str(tmp_path / "run")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(ROOT / "recipes" / recipe), *argv],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith(f"{recipe}: error: ")]
    assert "nope" in line, line
