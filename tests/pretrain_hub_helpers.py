"""A module-scoped local Hub for tests that share one (slow) recipe run between several tests.

``hubserver.local_hub`` is function-scoped: its server and cache disappear after each test. The
pretraining run in tests/test_pretrain_hub.py takes tens of seconds, so it is made once per module
against :func:`module_hub`, which patches the same environment variables and
``huggingface_hub.constants`` as ``local_hub`` for the lifetime of the module.
"""

from __future__ import annotations

import os

import pytest
from hubserver import FakeHub, hub_env


def point_client_at(hub: FakeHub, home: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this process (env + frozen ``huggingface_hub.constants``) at ``hub``; returns the env.

    Mirrors ``hubserver.local_hub``: huggingface_hub reads these at import time, so the environment
    alone only reaches subprocesses.
    """
    from huggingface_hub import constants

    os.makedirs(home, exist_ok=True)
    env = hub_env(hub, home)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HOME", home)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
    monkeypatch.setattr(constants, "HF_XET_CACHE", env["HF_XET_CACHE"])
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", env["HF_TOKEN_PATH"])
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", os.path.join(home, "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return env


@pytest.fixture(scope="module")
def module_hub(tmp_path_factory):
    """A ``FakeHub`` (with ``.env`` and ``.home``) serving every test of one module."""
    hub = FakeHub().start()
    home = str(tmp_path_factory.mktemp("module_hub") / "hf_home")
    with pytest.MonkeyPatch.context() as monkeypatch:
        hub.env = point_client_at(hub, home, monkeypatch)
        hub.home = home
        try:
            yield hub
        finally:
            hub.set_failure(None)
            hub.stop()


__all__ = ["module_hub", "point_client_at"]
