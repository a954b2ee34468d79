"""Models: shapes, presets, Auto-class round trips, equivalence with transformers' ViTMAE."""

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    ViTMAEConfig,
    ViTMAEForPreTraining,
    ViTMAEModel,
)

import geofm_hf
from geofm_hf import (
    PAPER_PARAMETER_COUNTS,
    GeoViTMAEConfig,
    GeoViTMAEForImageClassification,
    GeoViTMAEForPreTraining,
    GeoViTMAEModel,
    count_parameters,
    select_input_bands,
)
from geofm_hf.modeling_geofm import sincos_2d_position_embedding

S2_BANDS = [
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
]


def tiny_config(**overrides) -> GeoViTMAEConfig:
    fields = {"num_channels": 13, "band_names": S2_BANDS}
    fields.update(overrides)
    return GeoViTMAEConfig.from_preset("tiny", **fields)


def hf_vitmae(norm_pix_loss=True, image_size=32, patch_size=8, channels=3) -> ViTMAEForPreTraining:
    config = ViTMAEConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=image_size,
        patch_size=patch_size,
        num_channels=channels,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=64,
        norm_pix_loss=norm_pix_loss,
    )
    torch.manual_seed(0)
    model = ViTMAEForPreTraining(config)
    grid = image_size // patch_size
    with torch.no_grad():
        # transformers 5 leaves the fixed tables at zero on a fresh init; public checkpoints
        # hold MAE's sin-cos tables, which is what the converter expects.
        model.vit.embeddings.position_embeddings.copy_(
            sincos_2d_position_embedding(grid, grid, 64)[None]
        )
        model.decoder.decoder_pos_embed.copy_(sincos_2d_position_embedding(grid, grid, 32)[None])
    return model.eval()


# ---------------------------------------------------------------- presets and config


@pytest.mark.parametrize("preset", sorted(PAPER_PARAMETER_COUNTS))
def test_preset_encoder_parameter_counts_match_paper_on_meta(preset):
    config = GeoViTMAEConfig.from_preset(preset)
    with torch.device("meta"):
        model = GeoViTMAEForPreTraining(config)
    assert all(p.device.type == "meta" for p in model.parameters())
    encoder = count_parameters(model, encoder_only=True)
    assert abs(encoder / PAPER_PARAMETER_COUNTS[preset] - 1) < 0.02, (preset, encoder)
    assert count_parameters(model) > encoder  # the MAE decoder comes on top


def test_preset_shapes_and_overrides():
    config = GeoViTMAEConfig.from_preset("vit-15b", num_channels=13)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        5040,
        48,
        48,
    )
    assert config.hidden_size // config.num_attention_heads == 105  # not a power of two
    assert config.qk_norm and config.num_channels == 13 and config.preset == "vit-15b"
    assert GeoViTMAEConfig.from_preset("vit-5b").hidden_size == 2816


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_size": 100, "num_attention_heads": 3}, "divisible by num_attention_heads"),
        ({"image_size": 70, "patch_size": 16}, "divisible by patch_size"),
        ({"num_channels": 4, "band_names": ["a", "b", "c"]}, "one entry per band"),
        ({"band_names": ["a", "a"]}, "unique"),
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"pooling": "max"}, "pooling"),
    ],
)
def test_config_rejects_bad_shapes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GeoViTMAEConfig(**kwargs)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="expected one of tiny, vit-base"):
        GeoViTMAEConfig.from_preset("vit-7b")


def test_band_names_set_the_channel_count():
    assert GeoViTMAEConfig(band_names=S2_BANDS).num_channels == 13


# ---------------------------------------------------------------- forward shapes


def test_pretraining_forward_shapes_and_mask():
    config = tiny_config()
    model = GeoViTMAEForPreTraining(config)
    pixels = torch.randn(2, 13, 64, 64)
    out = model(pixels)
    length = (64 // 8) ** 2
    assert out.logits.shape == (2, length, 8 * 8 * 13)
    assert out.mask.shape == (2, length)
    assert out.mask.sum(dim=1).tolist() == [length * 0.75] * 2
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    # unpatchify inverts patchify
    assert torch.equal(model.unpatchify(model.patchify(pixels)), pixels)


def test_noise_makes_masking_exact():
    model = GeoViTMAEForPreTraining(tiny_config()).eval()
    pixels = torch.randn(2, 13, 64, 64)
    noise = torch.rand(2, 64)
    a, b = model(pixels, noise=noise), model(pixels, noise=noise)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.mask, b.mask)
    # the lowest-noise 25% are the kept patches
    kept = noise.argsort(dim=1)[:, :16]
    assert (a.mask.gather(1, kept) == 0).all()


def test_encoder_without_mask_sees_every_patch_and_pools():
    config = tiny_config(pooling="mean")
    model = GeoViTMAEModel(config).eval()
    out = model(torch.randn(3, 13, 64, 64), output_hidden_states=True)
    assert out.last_hidden_state.shape == (3, 1 + 64, 192)
    assert out.mask is None and out.ids_restore is None
    assert torch.allclose(out.pooler_output, out.last_hidden_state[:, 1:].mean(1))
    assert len(out.hidden_states) == config.num_hidden_layers + 1


def test_classification_loss_and_logits():
    config = tiny_config(num_labels=5)
    model = GeoViTMAEForImageClassification(config)
    labels = torch.tensor([0, 4])
    out = model(torch.randn(2, 13, 64, 64), labels=labels)
    assert out.logits.shape == (2, 5)
    expected = torch.nn.functional.cross_entropy(out.logits, labels)
    assert torch.allclose(out.loss, expected)


def test_interpolated_positions_run_at_other_sizes():
    model = GeoViTMAEModel(tiny_config()).eval()
    with pytest.raises(ValueError, match="interpolate_pos_encoding=True"):
        model(torch.randn(1, 13, 96, 96))
    out = model(torch.randn(1, 13, 96, 96), interpolate_pos_encoding=True)
    assert out.last_hidden_state.shape == (1, 1 + 144, 192)
    # at the training size, interpolation is the identity
    pixels = torch.randn(1, 13, 64, 64)
    assert torch.allclose(
        model(pixels).last_hidden_state,
        model(pixels, interpolate_pos_encoding=True).last_hidden_state,
    )
    # interpolated table spans the same extent as the training grid
    table = sincos_2d_position_embedding(16, 16, 64, ref_grid=8)
    reference = sincos_2d_position_embedding(8, 8, 64)
    assert torch.allclose(
        table[1:].view(16, 16, 64)[::2, ::2].reshape(-1, 64), reference[1:], atol=1e-6
    )


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (torch.randn(1, 3, 64, 64), r"Expected 13 input bands \(B01"),
        (torch.randn(1, 13, 60, 60), "divisible by the patch size"),
        (torch.randn(13, 64, 64), r"\(batch, channels, height, width\)"),
    ],
)
def test_bad_pixel_values_are_explained(pixels, message):
    with pytest.raises(ValueError, match=message):
        GeoViTMAEModel(tiny_config())(pixels)


def test_qk_norm_and_odd_head_dim():
    config = tiny_config(hidden_size=132, num_attention_heads=12, qk_norm=True)  # head dim 11
    model = GeoViTMAEForPreTraining(config)
    assert model.vit.encoder.layers[0].attention.q_norm is not None
    model(torch.randn(2, 13, 64, 64)).loss.backward()
    assert model.vit.encoder.layers[0].attention.q_norm.weight.grad is not None


def test_sdpa_matches_eager():
    torch.manual_seed(0)
    sdpa = GeoViTMAEForPreTraining(tiny_config(qk_norm=True)).eval()
    eager = GeoViTMAEForPreTraining(tiny_config(qk_norm=True)).eval()
    eager.load_state_dict(sdpa.state_dict())
    eager.set_attn_implementation("eager")
    assert sdpa.config._attn_implementation == "sdpa"
    pixels, noise = torch.randn(2, 13, 64, 64), torch.rand(2, 64)
    assert torch.allclose(
        sdpa(pixels, noise=noise).logits, eager(pixels, noise=noise).logits, atol=1e-5
    )


def test_attention_is_not_causal():
    model = GeoViTMAEModel(tiny_config()).eval()
    pixels = torch.randn(1, 13, 64, 64)
    base = model(pixels).last_hidden_state
    changed = pixels.clone()
    changed[..., -8:, -8:] += 5.0  # only the last patch changes
    # a causal model would leave every earlier token unchanged
    assert not torch.allclose(model(changed).last_hidden_state[:, 0], base[:, 0])


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    config = tiny_config()
    plain = GeoViTMAEForPreTraining(config).train()
    ckpt = GeoViTMAEForPreTraining(config).train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.activation_checkpointing_enable()
    assert (
        ckpt.vit.encoder.gradient_checkpointing
        and ckpt.decoder.decoder_layers.gradient_checkpointing
    )
    pixels, noise = torch.randn(2, 13, 64, 64), torch.rand(2, 64)
    plain(pixels, noise=noise).loss.backward()
    ckpt(pixels, noise=noise).loss.backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


# ---------------------------------------------------------------- saving and Auto classes


def test_save_load_round_trip_through_auto_classes(tmp_path):
    model = GeoViTMAEForPreTraining(tiny_config(image_mean=[1.0] * 13, image_std=[2.0] * 13)).eval()
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt")) for f in files)
    assert {"configuration_geofm.py", "modeling_geofm.py"} <= files
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, GeoViTMAEConfig) and config.band_names == S2_BANDS
    assert config.auto_map["AutoModel"] == "modeling_geofm.GeoViTMAEModel"

    pixels, noise = torch.randn(2, 13, 64, 64), torch.rand(2, 64)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, GeoViTMAEForPreTraining)
    assert torch.equal(reloaded(pixels, noise=noise).logits, model(pixels, noise=noise).logits)

    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(encoder, GeoViTMAEModel)
    assert torch.equal(encoder(pixels).last_hidden_state, model.vit(pixels).last_hidden_state)

    classifier = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=4)
    assert isinstance(classifier, GeoViTMAEForImageClassification)
    assert torch.equal(
        classifier.vit.encoder.layers[0].mlp.fc1.weight, model.vit.encoder.layers[0].mlp.fc1.weight
    )


def test_bf16_load_through_dtype(tmp_path):
    GeoViTMAEForPreTraining(tiny_config()).save_pretrained(tmp_path)
    model = AutoModelForPreTraining.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    out = model(torch.randn(1, 13, 64, 64, dtype=torch.bfloat16))
    assert torch.isfinite(out.loss)


# ---------------------------------------------------------------- band subsets


def test_select_input_bands_keeps_the_learnt_weights():
    model = GeoViTMAEForPreTraining(
        tiny_config(image_mean=list(range(13)), image_std=[1.0] * 13)
    ).eval()
    before = model.vit.embeddings.patch_embeddings.projection.weight.detach().clone()
    rgb = ["B04", "B03", "B02"]
    select_input_bands(model, rgb)
    assert model.config.band_names == rgb and model.config.num_channels == 3
    assert model.config.image_mean == [3, 2, 1]
    after = model.vit.embeddings.patch_embeddings.projection.weight
    assert torch.equal(after, before[:, [3, 2, 1]])
    out = model(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, 64, 8 * 8 * 3)
    with pytest.raises(ValueError, match=r"Bands \['nir'\] are not among"):
        select_input_bands(model, ["nir"])


def test_select_input_bands_matches_full_model_on_zeroed_bands():
    # Dropping bands from the projection equals feeding zeros on those bands: the subset model
    # computes exactly what the full model computes when the missing bands contribute nothing.
    full = GeoViTMAEModel(tiny_config()).eval()
    subset = GeoViTMAEModel(tiny_config()).eval()
    subset.load_state_dict(full.state_dict())
    select_input_bands(subset, ["B02", "B03", "B04"])
    rgb = torch.randn(1, 3, 64, 64)
    padded = torch.zeros(1, 13, 64, 64)
    padded[:, 1:4] = rgb
    assert torch.allclose(subset(rgb).last_hidden_state, full(padded).last_hidden_state, atol=1e-5)


# ---------------------------------------------------------------- transformers' ViTMAE


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_equivalence_with_transformers_vitmae(norm_pix_loss):
    theirs = hf_vitmae(norm_pix_loss=norm_pix_loss)
    ours = geofm_hf.from_transformers_vitmae(theirs).eval()
    assert ours.config.band_names == ["red", "green", "blue"]
    torch.manual_seed(1)
    pixels, noise = torch.randn(3, 3, 32, 32), torch.rand(3, 16)
    a = theirs(pixel_values=pixels, noise=noise)
    b = ours(pixels, noise=noise)
    assert (a.loss - b.loss).abs().item() <= 1e-5
    assert (a.logits - b.logits).abs().max().item() <= 1e-5
    assert torch.equal(a.mask, b.mask) and torch.equal(a.ids_restore, b.ids_restore)


def test_equivalence_of_gradients_with_transformers_vitmae():
    theirs = hf_vitmae().train()
    ours = geofm_hf.from_transformers_vitmae(theirs).train()
    pixels, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    theirs(pixel_values=pixels, noise=noise).loss.backward()
    ours(pixels, noise=noise).loss.backward()
    assert torch.allclose(
        theirs.vit.layers[0].mlp.fc1.weight.grad,
        ours.vit.encoder.layers[0].mlp.fc1.weight.grad,
        atol=1e-6,
    )
    q_grad = theirs.vit.layers[1].attention.q_proj.weight.grad
    assert torch.allclose(
        q_grad, ours.vit.encoder.layers[1].attention.qkv.weight.grad[:64], atol=1e-6
    )


def test_import_from_a_bare_vitmae_encoder():
    theirs = hf_vitmae()
    encoder = ViTMAEModel(theirs.config)
    encoder.load_state_dict(theirs.vit.state_dict())
    ours = geofm_hf.from_transformers_vitmae(encoder)
    pixels, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 16)
    a = encoder(pixel_values=pixels, noise=noise).last_hidden_state
    b = ours.vit(pixels, noise=noise, mask_ratio=theirs.config.mask_ratio).last_hidden_state
    assert (a - b).abs().max().item() <= 1e-5


def test_import_rejects_tables_that_are_not_sincos():
    theirs = hf_vitmae()
    with torch.no_grad():
        theirs.vit.embeddings.position_embeddings.normal_()
    with pytest.raises(ValueError, match="not MAE's fixed 2D sin-cos table"):
        geofm_hf.from_transformers_vitmae(theirs)
    with pytest.raises(ValueError, match="Expected a transformers ViTMAE model"):
        geofm_hf.from_transformers_vitmae(GeoViTMAEModel(tiny_config()))


def test_bf16_training_on_cpu_takes_the_unfused_attention():
    """CPU bf16 steps with gradients run matmul-softmax-matmul (faster backward than the fused
    kernel on CPU): bit-identical to the eager implementation; inference keeps SDPA."""
    from geofm_hf import GeoViTMAEConfig, GeoViTMAEForPreTraining

    torch.manual_seed(0)
    config = GeoViTMAEConfig.from_preset("tiny", num_channels=4, image_size=32, patch_size=8)
    sdpa = GeoViTMAEForPreTraining(config)
    config_eager = GeoViTMAEConfig.from_dict(config.to_dict())
    config_eager._attn_implementation = "eager"
    eager = GeoViTMAEForPreTraining(config_eager)
    eager.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == "sdpa"
    pixels, noise = torch.randn(2, 4, 32, 32), torch.rand(2, 16)
    losses, grads = [], []
    for model in (sdpa, eager):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(pixel_values=pixels, noise=noise).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append(model.vit.encoder.layers[0].attention.qkv.weight.grad.clone())
    assert torch.equal(losses[0], losses[1]) and torch.equal(grads[0], grads[1])
