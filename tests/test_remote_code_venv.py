"""The model card's "without the package" install line is enough (issue 24.7): in a plain venv
holding only what the card lists (torch, transformers, safetensors, pillow), an export loads with
``trust_remote_code=True`` and its processor, model and pipeline run once.

Before, the card listed nothing and the remote-code processor failed there: transformers' image
processing needs pillow. The venv is built once (a few minutes, from the local wheels) and kept
under ``$GEOFM_TEST_VENV_CACHE`` (default ``~/.cache/geofm_hf/test-venvs``) in a folder keyed by
the Python version and the pins, so later runs take seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from remote_code_helpers import run_isolated

from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining, GeoViTMAEImageProcessor
from geofm_hf.image_processing_geofm import PROCESSOR_CODE_FILES
from geofm_hf.modeling_geofm import MODEL_CODE_FILES

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "geofm_hf" / "templates" / "model_card.md"
CONSTRAINTS = ROOT / "constraints" / "cpu.txt"


def card_packages() -> list[str]:
    """The packages of the card's ``pip install`` line."""
    lines = re.findall(r"^pip install (.+)$", CARD.read_text(), flags=re.MULTILINE)
    assert len(lines) == 1, f"expected one pip install line in {CARD}: found {lines}"
    return lines[0].split()


def pins(packages: list[str]) -> list[str]:
    """Each package at the version this environment tests the package with (torch at the CPU
    constraint's), so the venv is what the rest of the suite runs against."""
    fixed = dict(line.split("==") for line in CONSTRAINTS.read_text().splitlines() if "==" in line)
    return [f"{name}=={fixed.get(name) or importlib.metadata.version(name)}" for name in packages]


def venv_python(requirements: list[str]) -> Path:
    """A cached plain venv (no system site-packages, no geofm_hf) with ``requirements``."""
    key = hashlib.sha256(
        json.dumps([sys.version_info[:3], sorted(requirements)]).encode()
    ).hexdigest()[:16]
    root = Path(
        os.environ.get("GEOFM_TEST_VENV_CACHE", Path.home() / ".cache" / "geofm_hf" / "test-venvs")
    )
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"remote-code-{key}"
    python = folder / "bin" / "python"
    # One builder at a time (parallel test runs share the cache).
    with open(root / f"remote-code-{key}.lock", "w") as lock, contextlib.ExitStack():
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / "ready").exists():
            return python
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        install = [str(python), "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS)]
        result = subprocess.run(install + requirements, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        (folder / "ready").write_text("\n".join(requirements) + "\n")
    return python


def test_card_install_line_loads_an_export_without_the_package(tmp_path):
    packages = card_packages()
    assert {"torch", "transformers", "safetensors"} <= set(packages), packages
    python = venv_python(pins(packages))

    bands = ["B02", "B03", "B04", "B08"]
    config = GeoViTMAEConfig.from_preset(
        "tiny", band_names=bands, image_mean=[1e3] * 4, image_std=[5e2] * 4
    )
    torch.manual_seed(0)
    model = GeoViTMAEForPreTraining(config).eval()
    export = tmp_path / "export"
    model.save_pretrained(export)
    processor = GeoViTMAEImageProcessor.from_model_config(config)
    processor.save_pretrained(export)
    assert set(MODEL_CODE_FILES + PROCESSOR_CODE_FILES) <= {p.name for p in export.iterdir()}
    raw = np.random.default_rng(0).integers(0, 4000, (4, 64, 64)).astype(np.uint16)
    np.save(tmp_path / "raw.npy", raw)
    with torch.no_grad():
        expected = model.vit(**processor(raw)).pooler_output.sum().item()

    script = textwrap.dedent(
        f"""
        import importlib.util, json, os, sys, numpy as np, torch
        from transformers import AutoImageProcessor, AutoModel, pipeline
        assert importlib.util.find_spec("geofm_hf") is None, "geofm_hf is installed here"
        assert not any(os.path.isdir(os.path.join(p, "geofm_hf")) for p in sys.path), sys.path
        path = {str(export)!r}
        raw = np.load({str(tmp_path / "raw.npy")!r})
        processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=True)
        model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
        with torch.no_grad():
            pooled = model(**processor(raw)).pooler_output.sum().item()
        pipe = pipeline("image-feature-extraction", model=path, trust_remote_code=True)
        tokens = np.asarray(pipe({{b: raw[i] for i, b in enumerate({bands!r})}})).shape
        stems = {{name: name.rsplit(".", 1)[-1] for name in list(sys.modules)}}
        files = {{
            stem + ".py": sys.modules[name].__file__
            for name, stem in stems.items()
            if stem.endswith("_geofm") or "_geofm_" in stem
        }}
        print(json.dumps({{"pooled": pooled, "tokens": tokens, "files": files,
                          "module": type(model).__module__}}))
        """
    )
    got = run_isolated(script, tmp_path, python)
    assert abs(got["pooled"] - expected) < 1e-3
    assert got["tokens"] == [1, 1 + 64, 192]
    assert not got["module"].startswith("geofm_hf"), got["module"]
    # Every remote-code file ran from the export's copy (the processor's helpers included).
    assert sorted(got["files"]) == sorted(MODEL_CODE_FILES + PROCESSOR_CODE_FILES)
    for name, path in got["files"].items():
        assert Path(path).is_relative_to(tmp_path / "modules"), (name, path)
