"""Our encoders in real timm: ``to_timm``'s state dict and kwargs build ``timm.create_model``
models, and timm's own folder format loads with ``local-dir:`` or ``pretrained_cfg_overlay``;
their features equal ours (tests/test_convert.py checks the same against a replica, fast)."""

from __future__ import annotations

import json

import pytest
import torch
from interop_helpers import S2, require, statistics, tiny_export

timm = require("timm")

from geofm_hf import GeoViTMAEConfig, GeoViTMAEModel  # noqa: E402
from geofm_hf.convert.timm import (  # noqa: E402
    save_timm_folder,
    timm_architecture,
    timm_pretrained_cfg,
    to_timm,
)

ATOL = 1e-5


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= ATOL


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> GeoViTMAEModel:
    folder = tiny_export(tmp_path_factory.mktemp("export") / "tiny")
    return GeoViTMAEModel.from_pretrained(folder).eval()


def _check_features(theirs, ours: GeoViTMAEModel) -> None:
    x = torch.randn(2, 13, 16, 16)
    with torch.no_grad():
        want = ours(x)
        _close(theirs.forward_features(x), want.last_hidden_state)
        _close(theirs(x), want.pooler_output)


def test_create_model_with_to_timm_kwargs_and_state(ours):
    state, kwargs = to_timm(ours)
    name = timm_architecture(ours)
    model = timm.create_model(name, pretrained_cfg=timm_pretrained_cfg(ours), **kwargs).eval()
    model.load_state_dict(state, strict=True)
    assert model.pretrained_cfg["architecture"] == name
    assert model.pretrained_cfg["mean"] == tuple(statistics()[0])
    assert model.pretrained_cfg["std"] == tuple(statistics()[1])
    assert ", ".join(S2) in model.pretrained_cfg["description"]
    assert model.patch_embed.proj.in_channels == 13
    _check_features(model, ours)


def test_a_standard_shape_keeps_timms_name():
    config = GeoViTMAEConfig.from_preset("vit-base", num_channels=13, layer_norm_eps=1e-6)
    model = GeoViTMAEModel(config)
    assert timm_architecture(model) == "vit_base_patch16_224"
    state, kwargs = to_timm(model)
    built = timm.create_model(timm_architecture(model), **kwargs)
    built.load_state_dict(state, strict=True)  # the very module timm registers, weights and all


def test_timm_folder_loads_with_local_dir_and_file_overlay(ours, tmp_path):
    folder = save_timm_folder(ours, tmp_path / "timm")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["geofm_hf"]["band_names"] == S2
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert tuple(model.pretrained_cfg["input_size"]) == (13, 16, 16)
    assert list(model.pretrained_cfg["mean"]) == statistics()[0]  # JSON: a list
    _check_features(model, ours)
    # timm's other documented route: the registry name plus a weights file.
    model = timm.create_model(
        meta["architecture"],
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")),
        **meta["model_args"],
    ).eval()
    _check_features(model, ours)
