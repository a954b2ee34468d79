"""Importing public geospatial MAEs: each source's replica converts and gives the same features
(and MAE loss with the same mask) to 1e-5; what does not map is refused by name."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch
from source_replicas import MAEViT, PrithviMAE, ScaleMAE, TimmViT, mae_2d_sincos
from transformers import AutoImageProcessor, AutoModel, AutoModelForPreTraining

import geofm_hf
from geofm_hf import GeoViTMAEForPreTraining, GeoViTMAEModel, convert_from
from geofm_hf.convert import (
    KNOWN_SOURCES,
    UnsafeCheckpointError,
    UnsupportedSourceError,
    load_checkpoint,
    main,
    to_timm,
)
from geofm_hf.convert import api as convert_api

ATOL = 1e-5
S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert torch.allclose(a, b, atol=ATOL, rtol=0), (a - b).abs().max().item()


def _timm(**kw) -> TimmViT:
    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=8, in_chans=4, embed_dim=64, depth=2, num_heads=4)
    return TimmViT(**{**args, **kw}).eval()


# ------------------------------------------------------------------ timm VisionTransformer
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"qk_norm": True},
        {"qkv_bias": False},
        {"global_pool": "avg", "fc_norm": False, "num_classes": 0},
    ],
)
def test_timm_module_features_match(kw):
    source = _timm(**kw)
    model = convert_from(source)
    assert isinstance(model, GeoViTMAEModel)
    # timm's pos_embed here is learnt (random): kept as a stored table, not replaced.
    assert model.config.position_embedding == "learned"
    assert any("classification head" in n for n in model.conversion_notes) == (
        "num_classes" not in kw
    )
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        ours = model(x)
        _close(ours.last_hidden_state, source.forward_features(x))
        source.head = torch.nn.Identity()
        _close(ours.pooler_output, source(x))


def test_timm_state_dict_with_sincos_positions_uses_the_computed_table():
    source = _timm()
    with torch.no_grad():
        source.pos_embed.copy_(mae_2d_sincos(64, 4))
    model = convert_from(source.state_dict(), num_heads=4, band_names=["B02", "B03", "B04", "B08"])
    assert model.config.position_embedding == "sincos"
    assert "position_embeddings" not in dict(model.named_parameters())
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        _close(model(x).last_hidden_state, source.forward_features(x))


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"init_values": 0.1}, "layer scale"),
        ({"reg_tokens": 2}, "register tokens"),
        ({"global_pool": "avg"}, "norm after pooling"),
        ({"pre_norm": True}, "pre_norm"),
        ({"act_layer": torch.nn.SiLU}, "activation"),
    ],
)
def test_timm_parts_without_counterpart_are_refused(kw, reason):
    with pytest.raises(UnsupportedSourceError, match=reason):
        convert_from(_timm(**kw))


def test_timm_state_dict_needs_the_head_count():
    with pytest.raises(ValueError, match="num_heads"):
        convert_from(_timm().state_dict())


# ---------------------------------------------------------------- MAE layout with decoder
def _mae(**kw) -> MAEViT:
    torch.manual_seed(1)
    args = dict(
        img_size=32, patch_size=8, in_chans=3, embed_dim=64, depth=2, num_heads=4,
        decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4,
    )  # fmt: skip
    return MAEViT(**{**args, **kw}).eval()


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_mae_layout_encoder_and_loss_match(norm_pix_loss, tmp_path):
    """The MAE reference layout (SSL4EO-S12's and SatMAE's RGB pretraining model)."""
    source = _mae(norm_pix_loss=norm_pix_loss)
    path = tmp_path / "mae.pth"
    torch.save({"model": source.state_dict(), "epoch": 99}, path)
    model = convert_from(path, num_heads=4, decoder_num_heads=4, norm_pix_loss=norm_pix_loss)
    assert isinstance(model, GeoViTMAEForPreTraining)
    assert model.config.position_embedding == "sincos"
    x, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    with torch.no_grad():
        loss, pred, mask = source(x, 0.75, noise)
        out = model(x, noise=noise)
        _close(out.loss, loss)
        _close(out.logits, pred)
        assert torch.equal(out.mask, mask)
        _close(model.vit(x).last_hidden_state, source.forward_encoder(x, 0.0)[0])


# ----------------------------------------------------------------------------- Prithvi
def _prithvi(**kw) -> PrithviMAE:
    torch.manual_seed(2)
    args = dict(
        img_size=32, patch_size=(1, 8, 8), num_frames=3, in_chans=6, embed_dim=64, depth=2,
        num_heads=4, decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=4,
    )  # fmt: skip
    return PrithviMAE(**{**args, **kw}).eval()


@pytest.mark.parametrize("frames", [3, 1])
def test_prithvi_features_and_loss_match(frames):
    source = _prithvi(num_frames=frames)
    model = convert_from(
        source.state_dict(),
        num_heads=4,
        decoder_num_heads=4,
        num_frames=frames,
        layer_norm_eps=1e-5,
    )
    assert model.config.position_embedding == "sincos_3d"
    assert model.config.num_frames == frames
    theirs = torch.randn(2, 6, frames, 32, 32)  # Prithvi's (B, C, T, H, W)
    ours = theirs.transpose(1, 2) if frames > 1 else theirs[:, :, 0]  # ours: (B, T, C, H, W)
    noise = torch.rand(2, frames * 16)
    with torch.no_grad():
        _close(model.vit(ours).last_hidden_state, source.forward_features(theirs))
        loss, pred, _ = source(theirs, 0.75, noise)
        out = model(ours, noise=noise)
        _close(out.loss, loss)
        _close(out.logits, pred)


def test_prithvi_v1_flat_layout_converts_too():
    source = _prithvi()
    flat = {}
    for key, value in source.state_dict().items():  # Prithvi-EO-1.0 files: MAE's flat names
        flat[key.split(".", 1)[1]] = value
    model = convert_from(flat, num_heads=4, decoder_num_heads=4, num_frames=3, layer_norm_eps=1e-5)
    x = torch.randn(1, 6, 3, 32, 32)
    with torch.no_grad():
        _close(model.vit(x.transpose(1, 2)).last_hidden_state, source.forward_features(x))


@pytest.mark.parametrize("given", ["both", "time", "none"])
def test_prithvi_tl_time_and_location_encodings_match(given):
    source = _prithvi(num_frames=3, coords_encoding=("time", "location"))
    model = convert_from(
        source.state_dict(), num_heads=4, decoder_num_heads=4, num_frames=3, layer_norm_eps=1e-5
    )
    config = model.config
    assert config.metadata_encoding == "prithvi"
    assert config.temporal_encoding and config.location_encoding
    theirs = torch.randn(2, 6, 3, 32, 32)
    time = torch.tensor([[[2019.0, 12.0], [2020.0, 180.0], [2021.0, 350.0]]] * 2)
    place = torch.tensor([[38.9, -77.0], [-33.9, 151.2]]) if given == "both" else None
    time = None if given == "none" else time
    noise = torch.rand(2, 48)
    with torch.no_grad():
        ours = model.vit(theirs.transpose(1, 2), temporal_coords=time, location_coords=place)
        _close(ours.last_hidden_state, source.forward_features(theirs, time, place))
        loss, pred, _ = source(theirs, 0.75, noise, time, place)
        out = model(
            theirs.transpose(1, 2), noise=noise, temporal_coords=time, location_coords=place
        )
        _close(out.loss, loss)
        _close(out.logits, pred)
    if given == "both":  # the encodings do change the output
        with torch.no_grad():
            bare = model.vit(theirs.transpose(1, 2)).last_hidden_state
        assert not torch.allclose(bare, ours.last_hidden_state, atol=1e-3)


def test_a_tl_file_under_a_non_tl_name_is_refused(tmp_path, local_hub, monkeypatch):
    source = _prithvi(num_frames=4, coords_encoding=("time", "location"))
    path = tmp_path / "p.pt"
    torch.save(source.state_dict(), path)
    _publish_tiny(
        monkeypatch, local_hub, "prithvi-eo-2.0-300m", path, _prithvi_arch(),
        {"temporal_encoding": False},
    )  # fmt: skip
    with pytest.raises(UnsupportedSourceError, match="temporal_encoding: expected False, found"):
        convert_from("prithvi-eo-2.0-300m", revision="main")


def test_prithvi_with_a_foreign_position_table_is_refused(tmp_path, local_hub, monkeypatch):
    source = _prithvi(num_frames=4)
    state = source.state_dict()
    state["encoder.pos_embed"] = torch.randn_like(state["encoder.pos_embed"])
    path = tmp_path / "p.pt"
    torch.save(state, path)
    _publish_tiny(monkeypatch, local_hub, "prithvi-eo-2.0-300m", path, _prithvi_arch())
    with pytest.raises(UnsupportedSourceError, match="not the fixed 'sincos_3d' table"):
        convert_from("prithvi-eo-2.0-300m", revision="main")


# ---------------------------------------------------------------- SatMAE / Scale-MAE
def test_satmae_temporal_position_split_is_refused():
    state = _timm().state_dict()
    state["pos_embed"] = state["pos_embed"][..., :48]  # width shared with a timestamp encoding
    with pytest.raises(UnsupportedSourceError, match="SatMAE's temporal model"):
        convert_from(state, num_heads=4)


def test_satmae_grouped_channels_are_refused():
    state = _timm().state_dict()
    grouped = {k: v for k, v in state.items() if not k.startswith("patch_embed")}
    for g in range(3):  # SatMAE group-channel model: one patch embedding per band group
        grouped[f"patch_embed.{g}.proj.weight"] = torch.zeros(64, 3, 8, 8)
    grouped["channel_embed"] = torch.zeros(1, 3, 16)
    with pytest.raises(UnsupportedSourceError, match="grouped channels"):
        convert_from(grouped, num_heads=4)


def test_scalemae_encoder_converts_with_gsd_scaled_positions_and_its_decoder_is_refused():
    torch.manual_seed(4)
    source = ScaleMAE(
        img_size=32, patch_size=8, in_chans=3, embed_dim=64, depth=2, num_heads=4,
        decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4,
    ).eval()  # fmt: skip
    with pytest.raises(UnsupportedSourceError, match=r"Scale-MAE's decoder .*encoder_only=True"):
        convert_from(source.state_dict(), num_heads=4, decoder_num_heads=4)
    model = convert_from(source.state_dict(), num_heads=4, encoder_only=True)
    assert isinstance(model, GeoViTMAEModel) and model.config.reference_gsd_m == 1.0
    x, res = torch.randn(2, 3, 32, 32), torch.tensor([0.5, 2.0])
    with torch.no_grad():
        _close(model(x, gsd=res).last_hidden_state, source.forward_encoder(x, 0.0, res))
        _close(model(x).last_hidden_state, source.forward_encoder(x, 0.0, torch.ones(2)))


# ---------------------------------------------------------------------- checkpoint files
def test_pickle_needing_code_is_refused(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": _timm().state_dict(), "args": argparse.Namespace(lr=1e-3)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"weights_only=True[\s\S]*was not loaded"):
        load_checkpoint(path)
    assert main([str(path), "-o", str(tmp_path / "out"), "--num-heads", "4"]) == 2
    assert not (tmp_path / "out").exists()


def test_safetensors_file_and_wrapped_pickle_load(tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in _timm().state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    loaded, notes = load_checkpoint(tmp_path / "w.safetensors")
    assert loaded.keys() == state.keys() and not notes
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "w.ckpt")
    loaded, notes = load_checkpoint(tmp_path / "w.ckpt")
    assert torch.equal(loaded["cls_token"], state["cls_token"])
    assert notes == ["Weights read from the checkpoint's 'state_dict' entry."]


# ---------------------------------------------------------------------- CLI and export
def test_cli_writes_a_safetensors_export_that_loads_through_auto_classes(tmp_path):
    source = _mae()
    path = tmp_path / "satmae_rgb.pth"
    torch.save(source.state_dict(), path)
    out = tmp_path / "export"
    argv = [str(path), "-o", str(out), "--num-heads", "4", "--decoder-num-heads", "4"]
    argv += ["--band-names", "B04", "B03", "B02", "--image-mean", "1", "2", "3"]
    argv += ["--image-std", "4", "5", "6", "--license", "apache-2.0", "--sensor", "sentinel2-l1c"]
    assert main(argv) == 0
    files = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pth", ".pt", ".ckpt"))]
    card = (out / "README.md").read_text()
    assert "license: apache-2.0" in card and "| 0 | B04 |" in card
    assert json.loads((out / "config.json").read_text())["wavelengths_um"] == [0.665, 0.56, 0.49]
    processor = AutoImageProcessor.from_pretrained(out)
    assert processor.band_names == ["B04", "B03", "B02"] and processor.image_std == [4, 5, 6]
    loaded = AutoModelForPreTraining.from_pretrained(out).eval()
    encoder = AutoModel.from_pretrained(out).eval()
    x, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    with torch.no_grad():
        _close(loaded(x, noise=noise).loss, source(x, 0.75, noise)[0])
        _close(encoder(x).last_hidden_state, source.forward_encoder(x, 0.0)[0])
    # Exports are never overwritten in place.
    assert main(argv) == 2


def test_convert_from_transformers_vitmae_in_memory(tmp_path):
    from test_modeling import hf_vitmae

    theirs = hf_vitmae()
    model = convert_from(theirs, tmp_path / "out", no_normalization=True)
    x, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    with torch.no_grad():
        _close(model(x, noise=noise).loss, theirs(x, noise=noise).loss)
    assert (tmp_path / "out" / "model.safetensors").is_file()


# -------------------------------------------------------- known sources through the Hub API
def _publish_tiny(monkeypatch, hub, name, path, arch, expected=None):
    """Serves a tiny replica as the known source's file on the local Hub, and shrinks the
    published shape check to the replica's (the real files are GBs and need the internet)."""
    from huggingface_hub import HfApi

    known = KNOWN_SOURCES[name]
    api = HfApi()
    api.create_repo(known.repo_id, exist_ok=True)
    api.upload_file(path_or_fileobj=str(path), path_in_repo=known.filename, repo_id=known.repo_id)
    tiny = dataclasses.replace(known, arch={**known.arch, **arch}, expected=expected or {})
    monkeypatch.setitem(KNOWN_SOURCES, name, tiny)
    return tiny


def test_ssl4eo_downloads_converts_and_carries_its_band_contract(tmp_path, local_hub, monkeypatch):
    source = _timm(in_chans=13, num_classes=0)
    with torch.no_grad():
        source.pos_embed.copy_(mae_2d_sincos(64, 4))  # MAE-trained: fixed sin-cos positions
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("norm.")}
    path = tmp_path / "B13_vits16_mae_ep99_enc.pth"
    torch.save(state, path)
    # The published-shape check refuses a file of another shape under the real entry.
    _publish_tiny(monkeypatch, local_hub, "ssl4eo-s12-mae-vit-s16", path, {"num_heads": 4})
    monkeypatch.setitem(
        KNOWN_SOURCES,
        "ssl4eo-s12-mae-vit-s16",
        dataclasses.replace(
            KNOWN_SOURCES["ssl4eo-s12-mae-vit-s16"],
            expected={"hidden_size": 384, "num_channels": 13},
        ),
    )
    with pytest.raises(UnsupportedSourceError, match="hidden_size: expected 384, found 64"):
        convert_from("ssl4eo-s12-mae-vit-s16", revision="main")
    monkeypatch.setitem(
        KNOWN_SOURCES,
        "ssl4eo-s12-mae-vit-s16",
        dataclasses.replace(KNOWN_SOURCES["ssl4eo-s12-mae-vit-s16"], expected={"num_channels": 13}),
    )
    out = tmp_path / "ssl4eo"
    model = convert_from("ssl4eo-s12-mae-vit-s16", out, revision="main")
    config = model.config
    assert config.band_names == S2 and config.image_mean == [0.0] * 13
    assert config.image_std == [10000.0] * 13 and config.wavelengths_um[9] == 0.945
    assert config.position_embedding == "sincos"
    # torchgeo leaves the missing final norm at 1/0: so does the conversion, and says so.
    with torch.no_grad():
        source.norm.weight.fill_(1.0)
        source.norm.bias.zero_()
    x = torch.randn(2, 13, 32, 32)
    loaded = AutoModel.from_pretrained(out).eval()
    with torch.no_grad():
        _close(loaded(x).last_hidden_state, source.forward_features(x))
    card = (out / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "wang2023ssl4eo" in card
    assert "_zhu_xlab_transforms" in card and "final LayerNorm keeps weight 1" in card
    record = json.loads((out / "conversion.json").read_text())
    assert record["file"] == "B13_vits16_mae_ep99_enc.pth" and len(record["revision"]) == 40
    import hashlib

    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["revision"] == local_hub.repo("wangyi111/SSL4EO-S12").resolve("main")


def _prithvi_arch():
    return {"num_heads": 4, "decoder_num_heads": 4}


@pytest.mark.parametrize("name", ["prithvi-eo-2.0-300m", "prithvi-eo-2.0-300m-tl"])
def test_prithvi_known_source_downloads_and_matches(name, tmp_path, local_hub, monkeypatch):
    tl = name.endswith("-tl")
    source = _prithvi(num_frames=4, coords_encoding=("time", "location") if tl else ())
    path = tmp_path / KNOWN_SOURCES[name].filename
    torch.save(source.state_dict(), path)
    expected = {"temporal_encoding": tl, "location_encoding": tl}
    _publish_tiny(monkeypatch, local_hub, name, path, _prithvi_arch(), expected)
    out = tmp_path / "prithvi"
    assert main([name, "-o", str(out), "--revision", "main"]) == 0
    model = GeoViTMAEForPreTraining.from_pretrained(out)
    assert model.config.band_names == ["B02", "B03", "B04", "B05", "B06", "B07"]
    assert model.config.image_mean[0] == 1087.0 and model.config.image_std[5] == 1049.0
    assert model.config.layer_norm_eps == 1e-5 and model.config.num_frames == 4
    loaded = AutoModelForPreTraining.from_pretrained(out).eval()
    theirs = torch.randn(1, 6, 4, 32, 32)
    noise = torch.rand(1, 64)
    time = torch.tensor([[[2020.0, d] for d in (10.0, 100.0, 200.0, 300.0)]]) if tl else None
    place = torch.tensor([[45.0, 7.0]]) if tl else None
    with torch.no_grad():
        ours = loaded(
            theirs.transpose(1, 2), noise=noise, temporal_coords=time, location_coords=place
        )
        _close(ours.loss, source(theirs, 0.75, noise, time, place)[0])
    assert "license: apache-2.0" in (out / "README.md").read_text()


def test_cli_pushes_the_export_to_the_hub(tmp_path, local_hub):
    path = tmp_path / "vit.pth"
    torch.save(_timm().state_dict(), path)
    out = tmp_path / "export"
    assert main([str(path), "-o", str(out), "--num-heads", "4", "--push-to-hub", "org/vit",
                 "--no-normalization"]) == 0  # fmt: skip
    files = local_hub.repo("org/vit").files_at("main")
    assert "model.safetensors" in files and "README.md" in files and "config.json" in files


# ------------------------------------------------------------------------------- to timm
@pytest.mark.parametrize("learned", [False, True])
def test_to_timm_state_dict_rebuilds_the_same_vit(learned):
    source = _timm(num_classes=0)
    if not learned:
        with torch.no_grad():
            source.pos_embed.copy_(mae_2d_sincos(64, 4))
    model = convert_from(source)
    state, kwargs = to_timm(model)
    rebuilt = TimmViT(**kwargs).eval()
    rebuilt.load_state_dict(state, strict=True)
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        _close(rebuilt.forward_features(x), model(x).last_hidden_state)
        _close(rebuilt(x), model(x).pooler_output)


def test_to_timm_refuses_what_timm_cannot_express():
    config = geofm_hf.GeoViTMAEConfig.from_preset("tiny", num_frames=2, tubelet_size=1)
    with pytest.raises(ValueError, match="time series"):
        to_timm(GeoViTMAEModel(config))


def test_unknown_source_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"prithvi-eo-2\.0-600m"):
        convert_from("prithvi-eo-3.0")
    assert convert_api.KNOWN_SOURCES is KNOWN_SOURCES


# ------------------------------------------------------------- position_embedding option
def test_prithvi_metadata_option_is_counted_and_validated():
    from geofm_hf import planner

    config = geofm_hf.GeoViTMAEConfig.from_preset(
        "tiny", num_frames=2, temporal_encoding=True, location_encoding=True,
        metadata_encoding="prithvi",
    )  # fmt: skip
    model = GeoViTMAEForPreTraining(config)
    assert planner.count_parameters(config, part="total") == sum(
        p.numel() for p in model.parameters()
    )
    with pytest.raises(ValueError, match="expected tubelet_size=1 and metadata_dropout=0"):
        geofm_hf.GeoViTMAEConfig.from_preset(
            "tiny", temporal_encoding=True, metadata_encoding="prithvi", metadata_dropout=0.1
        )


@pytest.mark.parametrize("position", ["learned", "sincos_3d"])
def test_position_tables_refuse_other_sizes_and_are_counted(position):
    from geofm_hf import planner

    config = geofm_hf.GeoViTMAEConfig.from_preset("tiny", position_embedding=position)
    model = GeoViTMAEForPreTraining(config).eval()
    assert planner.count_parameters(config, part="total") == sum(
        p.numel() for p in model.parameters()
    )
    with pytest.raises(ValueError, match="laid out for 64x64 images: found 96x96"):
        model.vit(torch.randn(1, 3, 96, 96), interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match="needs position_embedding='sincos'"):
        geofm_hf.GeoViTMAEConfig.from_preset(
            "tiny", position_embedding=position, reference_gsd_m=10
        )


def test_converted_exports_load_without_the_package(tmp_path):
    """Prithvi (3D sin-cos) and timm (learnt table) exports through remote code alone."""
    import subprocess
    import sys
    import textwrap

    from test_remote_code import BLOCK_GEOFM

    prithvi, timm_vit = _prithvi(coords_encoding=("time", "location")), _timm(num_classes=0)
    convert_from(
        prithvi.state_dict(), tmp_path / "prithvi", num_heads=4, decoder_num_heads=4,
        num_frames=3, layer_norm_eps=1e-5, no_normalization=True,
    )  # fmt: skip
    convert_from(timm_vit, tmp_path / "timm", no_normalization=True)
    torch.manual_seed(3)
    frames, image = torch.randn(1, 6, 3, 32, 32), torch.randn(1, 4, 32, 32)
    time, place = torch.tensor([[[2020.0, 5.0], [2020.0, 50.0], [2021.0, 9.0]]]), torch.ones(1, 2)
    inputs = {"frames": frames, "image": image, "time": time, "place": place}
    torch.save(inputs, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = [
            prithvi.forward_features(frames, time, place).sum().item(),
            timm_vit.forward_features(image).sum().item(),
        ]
    script = BLOCK_GEOFM + textwrap.dedent(
        f"""
        import json, torch
        from transformers import AutoModel
        x = torch.load({str(tmp_path / "inputs.pt")!r}, weights_only=True)
        a = AutoModel.from_pretrained({str(tmp_path / "prithvi")!r}, trust_remote_code=True)
        b = AutoModel.from_pretrained({str(tmp_path / "timm")!r}, trust_remote_code=True)
        with torch.no_grad():
            y = a(x["frames"].transpose(1, 2), temporal_coords=x["time"], location_coords=x["place"])
            out = [y.last_hidden_state.sum().item(),
                   b(x["image"]).last_hidden_state.sum().item()]
        print(json.dumps([type(a).__module__, out]))
        """
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    module, out = json.loads(done.stdout.strip().splitlines()[-1])
    assert not module.startswith("geofm_hf")
    assert out == pytest.approx(expected, abs=1e-3)


def test_transformers_vitmae_folder_converts_through_the_cli(tmp_path):
    from test_modeling import hf_vitmae

    theirs = hf_vitmae()
    theirs.save_pretrained(tmp_path / "vitmae")
    assert main([str(tmp_path / "vitmae"), "-o", str(tmp_path / "out"), "--no-normalization"]) == 0
    ours = AutoModelForPreTraining.from_pretrained(tmp_path / "out").eval()
    x, noise = torch.randn(1, 3, 32, 32), torch.rand(1, 16)
    with torch.no_grad():
        _close(ours(x, noise=noise).loss, theirs(x, noise=noise).loss)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["band_names"] == [
        "red", "green", "blue"
    ]  # fmt: skip
