"""A module-scoped local Hub for tests that share one (slow) recipe run between several tests.

``hubserver.local_hub`` is function-scoped: its server and cache disappear after each test. The
pretraining run in tests/test_pretrain_hub.py takes tens of seconds, so it is made once per module
against :func:`module_hub`, which points the client at it with the same
``hubserver.point_client_at`` as ``local_hub``, for the lifetime of the module.
"""

from __future__ import annotations

import pytest
from hubserver import serving_hub


@pytest.fixture(scope="module")
def module_hub(tmp_path_factory):
    """A ``FakeHub`` (with ``.env`` and ``.home``) serving every test of one module."""
    home = str(tmp_path_factory.mktemp("module_hub") / "hf_home")
    with pytest.MonkeyPatch.context() as monkeypatch, serving_hub(home, monkeypatch) as hub:
        yield hub


__all__ = ["module_hub"]
