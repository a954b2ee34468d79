"""The suite turns warnings into errors (issue 22 item 6): a warning nobody asserted fails its
test, and only the listed third-party warnings are let through. Run as a separate pytest on a
scratch test file with this project's configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]

SCRATCH = """
import warnings

import pytest
import rasterio.transform


def test_an_unasserted_warning_fails():
    warnings.warn("a new deprecation nobody looked at", DeprecationWarning)


def test_an_asserted_warning_passes():
    with pytest.warns(UserWarning, match="far outside"):
        warnings.warn("Inputs far outside the model's statistics", UserWarning)


def test_rasterios_own_affine_deprecation_is_let_through():
    # rasterio composes transforms with `*` inside from_bounds; affine 3 deprecates it.
    rasterio.transform.from_bounds(0, 0, 10, 10, 5, 5)


def test_the_same_deprecation_in_our_code_fails():
    from affine import Affine

    Affine.identity() * Affine.scale(2)
"""


def test_warnings_are_errors_except_the_listed_third_party_ones(tmp_path):
    (tmp_path / "test_scratch.py").write_text(SCRATCH)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir",
         str(tmp_path), "-p", "no:cacheprovider", "-q", "-rfE", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 1, out[-3000:]
    assert "FAILED test_scratch.py::test_an_unasserted_warning_fails" in out, out[-3000:]
    assert "FAILED test_scratch.py::test_the_same_deprecation_in_our_code_fails" in out
    assert "2 failed, 2 passed" in out, out[-3000:]


def test_every_ignored_warning_says_why():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    filters = config["ini_options"]["filterwarnings"]
    assert filters[0] == "error"
    ignores = filters[1:]
    assert ignores and all(f.startswith("ignore:") for f in ignores)
    text = (ROOT / "pyproject.toml").read_text()
    for rule in ignores:  # each ignore sits under a comment giving its reason
        line = next(i for i, ln in enumerate(text.splitlines()) if rule.split(":")[1][:12] in ln)
        assert text.splitlines()[line - 1].strip().startswith("#"), rule
