"""The peak learning rate at Frontier batch sizes (issue 23 item 6): linear scaling only where
MAE measured it, the square root above, and no silent extrapolation past the published range."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from geofm_hf.training.optim import (
    LINEAR_SCALING_MAX_BATCH,
    SQRT_SCALING_MAX_BATCH,
    LearningRateRuleError,
    learning_rate_rule,
    scaled_learning_rate,
)

ROOT = Path(__file__).resolve().parents[1]
BASE = 1.5e-4


@pytest.mark.parametrize(
    "batch, rule, expected",
    [
        (256, "auto", BASE),
        (4_096, "auto", BASE * 16),  # MAE's own batch: linear, 2.4e-3
        (16_384, "auto", BASE * 16 * 2),  # sqrt(16384 / 4096) = 2
        (65_536, "auto", BASE * 16 * 4),
        (262_144, "sqrt", BASE * 16 * 8),  # 1,024 Frontier nodes x 8 GCDs x 32, chosen
        (262_144, "linear", BASE * 1024),  # chosen explicitly: 0.154, as asked
        (1_024, "sqrt", BASE * 4),  # below the knee every rule is linear
    ],
)
def test_the_rule_by_batch(batch, rule, expected):
    peak, text = learning_rate_rule(BASE, batch, rule)
    assert math.isclose(peak, expected, rel_tol=1e-12), (peak, expected)
    assert text and str(batch) in text


def test_auto_refuses_past_the_published_range_naming_the_choices():
    with pytest.raises(LearningRateRuleError) as err:
        scaled_learning_rate(BASE, 262_144)
    message = str(err.value)
    assert "--lr_scaling sqrt (peak 0.0192)" in message and "--learning_rate" in message
    assert "--lr_scaling linear (peak 0.154" in message
    assert LINEAR_SCALING_MAX_BATCH < SQRT_SCALING_MAX_BATCH < 262_144


def _dry_run(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "recipes" / "pretrain.py"), "--dry_run", "true",
         "--preset", "vit-15b", "--synthetic_data", "true", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_dry_run_prints_the_peak_learning_rate_and_refuses_extrapolation():
    two = _dry_run("--dry_run_nodes", "2")
    assert two.returncode == 0, two.stderr[-2000:]
    assert "global batch 512 -> peak learning rate 3.000e-04 (linear" in two.stdout
    frontier = _dry_run("--dry_run_nodes", "1024")
    assert frontier.returncode == 2 and "Traceback" not in frontier.stderr
    assert "global batch 262,144 is above 65,536" in frontier.stderr
    chosen = _dry_run("--dry_run_nodes", "1024", "--lr_scaling", "sqrt")
    assert chosen.returncode == 0, chosen.stderr[-2000:]
    assert "peak learning rate 1.920e-02 (sqrt above 4096" in chosen.stdout
