"""Shared test setup: small thread counts, the slow marker, the local Hub fixture."""

import os

import pytest
import torch
from hubserver import local_hub  # noqa: F401

# Tests run on 2-core CI machines; more threads than cores only adds contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("GEOFM_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow or set GEOFM_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
