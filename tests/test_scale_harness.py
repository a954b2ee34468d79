"""Per-rank costs of the real recipe do not grow with the number of processes (issue 23 item 14):
``benchmarks/scale_harness.py`` in its reduced mode (2 and 4 processes, local shards and a local
Hub, one save and one resume), every per-rank figure asserted flat."""

from __future__ import annotations

import importlib.util

import pytest
from pretrain_utils import ROOT

_spec = importlib.util.spec_from_file_location(
    "scale_harness", ROOT / "benchmarks" / "scale_harness.py"
)
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)

WORLDS = (2, 4)
# Seconds of rank-0-only work may differ by this much between runs on a loaded CI machine.
SECONDS_SLACK = 0.5


@pytest.fixture(scope="module")
def figures():
    return harness.measure(worlds=WORLDS, sources=("local", "hub"), steps=2)


def _rows(figures, source):
    return {row["figure"]: row for row in figures[source]["rows"]}


@pytest.mark.parametrize("source", ["local", "hub"])
def test_every_per_rank_figure_is_flat(figures, source):
    rows = _rows(figures, source)
    expected = {name for name, _, _ in harness.FIGURES}
    if source == "local":
        expected = {name for name in expected if "Hub" not in name}
    assert set(rows) == expected, sorted(expected ^ set(rows))
    grown = {}
    for name, row in rows.items():
        small, large = (row["values"][w] for w in WORLDS)
        allowed = {"s": SECONDS_SLACK, "bytes": 0.1 * small}.get(row["unit"], 0)
        if large > small + allowed:
            grown[name] = (small, large)
    assert not grown, f"{source}: per-rank figures that grow from 2 to 4 processes: {grown}"


def test_hub_metadata_requests_per_job_are_equal(figures):
    rows = _rows(figures, "hub")
    for run in ("train run", "resume run"):
        values = rows[f"Hub metadata requests per job ({run})"]["values"]
        assert values[2] == values[4] > 0, (run, values)


@pytest.mark.parametrize("source", ["local", "hub"])
def test_one_collective_per_step(figures, source):
    values = _rows(figures, source)["collectives per step"]["values"]
    assert values == {2: 1.0, 4: 1.0}, values


def test_the_table_reports_every_figure(figures):
    text = harness.table("ddp/hub", figures["hub"]["rows"])
    assert text.count("\n") == len(figures["hub"]["rows"]) + 1
    assert "| flat |" in text and f"at {harness.TARGET_RANKS:,}" in text
