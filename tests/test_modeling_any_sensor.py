"""Wavelength-conditioned patches, GSD-scaled positions, time series and time/location inputs."""

import pytest
import torch
from transformers import AutoModel, AutoModelForImageClassification, AutoModelForPreTraining

from geofm_hf import (
    GeoViTMAEConfig,
    GeoViTMAEForImageClassification,
    GeoViTMAEForPreTraining,
    GeoViTMAEImageProcessor,
    GeoViTMAEModel,
    count_parameters,
    flops_per_image,
    select_input_bands,
)
from geofm_hf.bands import SENSORS
from geofm_hf.modeling_geofm import _gsd_position_table, sincos_2d_position_embedding

S2 = SENSORS["sentinel2-l1c"]
S2_WAVELENGTHS = torch.tensor([b.wavelength_um for b in S2])
# Landsat 8 OLI's six reflective bands a Landsat user has (blue .. swir22) and RGB+NIR.
LANDSAT6 = [b.wavelength_um for b in SENSORS["landsat8-oli"] if b.name in ("B2", "B3", "B4", "B5", "B6", "B7")]  # fmt: skip
RGBN = [0.665, 0.560, 0.490, 0.842]


def wavelength_config(**overrides) -> GeoViTMAEConfig:
    fields = {
        "patch_embedding": "wavelength",
        "band_names": [b.name for b in S2],
        "wavelengths_um": S2_WAVELENGTHS.tolist(),
        "wavelength_embed_dim": 32,
    }
    fields.update(overrides)
    return GeoViTMAEConfig.from_preset("tiny", **fields)


def series(batch=2, frames=4, channels=3, side=64) -> torch.Tensor:
    return torch.randn(batch, frames, channels, side, side)


TEMPORAL = torch.tensor([[[2009.0, 100.0], [2009.0, 116.0], [2009.0, 132.0], [2009.0, 148.0]]] * 2)
LOCATION = torch.tensor([[40.2, -105.3], [-33.9, 18.4]])

# One config per model option, for the save/load and remote-code round trips.
OPTIONS = {
    "wavelength": dict(patch_embedding="wavelength", wavelength_embed_dim=32),
    "conv_time_series": dict(num_frames=4, tubelet_size=2, num_channels=3),
    "wavelength_time_series_metadata_gsd": dict(
        patch_embedding="wavelength",
        wavelength_embed_dim=32,
        num_frames=4,
        tubelet_size=2,
        temporal_encoding=True,
        location_encoding=True,
        metadata_dropout=0.3,
        reference_gsd_m=10.0,
    ),
}


def option_inputs(name: str) -> dict:
    """Model inputs matching the option of ``OPTIONS[name]`` (seeded)."""
    generator = torch.Generator().manual_seed(0)
    if name == "wavelength":
        return {
            "pixel_values": torch.randn(2, 6, 64, 64, generator=generator),
            "wavelengths": torch.tensor(LANDSAT6),
        }
    if name == "conv_time_series":
        return {"pixel_values": torch.randn(2, 4, 3, 64, 64, generator=generator)}
    return {
        "pixel_values": torch.randn(2, 4, 4, 64, 64, generator=generator),
        "wavelengths": torch.tensor(RGBN),
        "temporal_coords": TEMPORAL,
        "location_coords": LOCATION,
        "gsd": torch.tensor([30.0, 10.0]),
    }


# ---------------------------------------------------------------- wavelength patch embedding


def test_permuting_bands_with_their_wavelengths_gives_the_same_output():
    torch.manual_seed(0)
    model = GeoViTMAEForPreTraining(wavelength_config(wavelength_bandwidths=True)).eval()
    pixels, noise = torch.randn(2, 13, 64, 64), torch.rand(2, 64)
    widths = torch.linspace(0.02, 0.2, 13)
    perm = torch.randperm(13)
    a = model.vit(pixels, wavelengths=S2_WAVELENGTHS, bandwidths=widths).last_hidden_state
    b = model.vit(
        pixels[:, perm], wavelengths=S2_WAVELENGTHS[perm], bandwidths=widths[perm]
    ).last_hidden_state
    assert torch.allclose(a, b, atol=1e-5)
    # the reconstruction is permuted the same way as the input bands
    rec_a = model(pixels, wavelengths=S2_WAVELENGTHS, noise=noise).logits.view(2, 64, 64, 13)
    rec_b = model(pixels[:, perm], wavelengths=S2_WAVELENGTHS[perm], noise=noise).logits
    assert torch.allclose(rec_a[..., perm], rec_b.view(2, 64, 64, 13), atol=1e-5)
    # permuting the pixels alone (wrong wavelengths) does change the output
    c = model.vit(pixels[:, perm], wavelengths=S2_WAVELENGTHS, bandwidths=widths)
    assert not torch.allclose(a, c.last_hidden_state, atol=1e-3)


def test_bandwidths_reach_only_a_model_pretrained_with_them():
    torch.manual_seed(0)
    pixels, widths = torch.randn(1, 13, 64, 64), torch.linspace(0.02, 0.2, 13)
    with_widths = GeoViTMAEModel(wavelength_config(wavelength_bandwidths=True)).eval()
    a = with_widths(pixels, wavelengths=S2_WAVELENGTHS, bandwidths=widths).last_hidden_state
    b = with_widths(pixels, wavelengths=S2_WAVELENGTHS).last_hidden_state  # unknown: zeros
    assert not torch.allclose(a, b, atol=1e-4)
    without = GeoViTMAEModel(wavelength_config()).eval()
    with pytest.raises(ValueError, match="pretrained without them"):
        without(pixels, wavelengths=S2_WAVELENGTHS, bandwidths=widths)


def test_the_processor_gives_bandwidths_to_a_model_that_reads_them():
    config = wavelength_config(wavelength_bandwidths=True, band_names=None, wavelengths_um=None)
    processor = GeoViTMAEImageProcessor.from_model_config(config)
    inputs = processor(torch.rand(3, 64, 64), band_names=["B3", "B4", "B5"], sensor="landsat7")
    # ETM+ band 3/4/5 widths (USGS): 0.63-0.69, 0.77-0.90, 1.55-1.75 um
    assert inputs["bandwidths"].tolist() == pytest.approx([0.06, 0.13, 0.20], abs=1e-6)
    given = processor(
        torch.rand(2, 64, 64), wavelengths_um=[0.665, 0.56], bandwidths_um=[0.03, 0.035]
    )
    assert given["bandwidths"].tolist() == pytest.approx([0.03, 0.035])
    with pytest.warns(UserWarning, match="none are known for the input bands"):
        unknown = processor(torch.rand(2, 64, 64), wavelengths_um=[0.665, 0.56])
    assert "bandwidths" not in unknown
    model = GeoViTMAEModel(config).eval()
    assert torch.isfinite(model(**inputs).last_hidden_state).all()
    plain = GeoViTMAEImageProcessor.from_model_config(wavelength_config())
    assert "bandwidths" not in plain(torch.rand(3, 64, 64), band_names=["B3", "B4", "B5"],
                                     sensor="landsat7")  # fmt: skip


def test_the_token_is_the_sum_over_the_bands_present():
    embeddings = GeoViTMAEModel(wavelength_config()).embeddings
    embed, encoder = embeddings.patch_embeddings, embeddings.wavelength_encoder
    pixels, wavelengths = torch.randn(1, 2, 64, 64), torch.tensor([0.49, 0.842])
    both = embed(pixels, band_embedding=encoder(wavelengths))
    one = embed(pixels[:, :1], band_embedding=encoder(wavelengths[:1]))
    other = embed(pixels[:, 1:], band_embedding=encoder(wavelengths[1:]))
    assert torch.allclose(both, one + other, atol=1e-5)


def test_a_sentinel2_model_embeds_landsat_and_rgbn_and_reconstructs_their_bands():
    model = GeoViTMAEForPreTraining(wavelength_config())
    for wavelengths in (S2_WAVELENGTHS.tolist(), LANDSAT6, RGBN):
        channels = len(wavelengths)
        pixels = torch.randn(2, channels, 64, 64)
        features = model.vit(pixels, wavelengths=wavelengths).pooler_output
        assert features.shape == (2, 192) and torch.isfinite(features).all()
        out = model(pixels, wavelengths=wavelengths)
        assert out.logits.shape == (2, 64, 8 * 8 * channels)
        assert model.unpatchify(out.logits).shape == (2, channels, 64, 64)
        model.zero_grad()
        out.loss.backward()
        # the decoder's per-band output weights come from the same wavelength embedding
        assert model.decoder.weight_generator.weight.grad.abs().sum() > 0
        encoder = model.vit.embeddings.wavelength_encoder
        assert encoder.fc1.weight.grad.abs().sum() > 0


def test_per_sample_wavelengths_equal_separate_runs():
    model = GeoViTMAEForPreTraining(wavelength_config()).eval()
    first, second = torch.randn(1, 4, 64, 64), torch.randn(1, 4, 64, 64)
    other = [0.49, 0.56, 0.665, 1.61]
    batch = torch.cat([first, second])
    wavelengths = torch.tensor([RGBN, other])
    noise = torch.rand(2, 64)
    joint = model(batch, wavelengths=wavelengths, noise=noise).logits
    alone = [
        model(first, wavelengths=RGBN, noise=noise[:1]).logits,
        model(second, wavelengths=other, noise=noise[1:]).logits,
    ]
    assert torch.allclose(joint, torch.cat(alone), atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, r"pass wavelengths=\[\.\.\.\]"),
        ({"wavelengths": [490.0, 560.0, 665.0, 842.0]}, "look like nanometres"),
        ({"wavelengths": [0.49, 0.56]}, r"shape \(C,\) = \(4,\)"),
        ({"wavelengths": RGBN, "gsd": 10.0}, "reference_gsd_m"),
        ({"wavelengths": RGBN, "temporal_coords": torch.zeros(2, 1, 2)}, "temporal_encoding"),
    ],
)
def test_wavelength_inputs_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GeoViTMAEModel(wavelength_config())(torch.randn(2, 4, 64, 64), **kwargs)


def test_conv_model_checks_wavelengths_against_its_bands():
    config = GeoViTMAEConfig.from_preset(
        "tiny", band_names=["B02", "B03", "B04"], wavelengths_um=[0.49, 0.56, 0.665]
    )
    model = GeoViTMAEModel(config).eval()
    pixels = torch.randn(1, 3, 64, 64)
    same = model(pixels, wavelengths=[0.49, 0.56, 0.665]).last_hidden_state
    assert torch.equal(same, model(pixels).last_hidden_state)
    with pytest.raises(ValueError, match="not the bands this model was trained on"):
        model(pixels, wavelengths=[0.665, 0.56, 0.49])
    with pytest.raises(ValueError, match="narrows the per-band kernels"):
        select_input_bands(GeoViTMAEModel(wavelength_config()), ["B02"])


# ---------------------------------------------------------------- ground sample distance


def test_gsd_scales_positions_to_ground_distance():
    # At twice the reference GSD, patch i sits where patch 2i of a reference image sits.
    scaled = _gsd_position_table(4, 4, 64, torch.tensor([2.0]), None)[0, 1:]
    reference = sincos_2d_position_embedding(8, 8, 64)[1:].view(8, 8, 64)[::2, ::2]
    assert torch.allclose(scaled, reference.reshape(16, 64), atol=1e-5)

    model = GeoViTMAEModel(wavelength_config(reference_gsd_m=10.0)).eval()
    pixels = torch.randn(2, 4, 64, 64)
    plain = model(pixels, wavelengths=RGBN).last_hidden_state
    at_reference = model(pixels, wavelengths=RGBN, gsd=10.0).last_hidden_state
    assert torch.allclose(plain, at_reference, atol=1e-5)
    coarse = model(pixels, wavelengths=RGBN, gsd=torch.tensor([10.0, 30.0])).last_hidden_state
    assert torch.allclose(coarse[0], plain[0], atol=1e-5)
    assert not torch.allclose(coarse[1], plain[1], atol=1e-3)
    with pytest.raises(ValueError, match="positive metres per pixel"):
        model(pixels, wavelengths=RGBN, gsd=-1.0)


# ---------------------------------------------------------------- time series


@pytest.mark.parametrize("embedding", ["conv", "wavelength"])
def test_time_series_tubelets_and_space_time_masking(embedding):
    config = wavelength_config(
        patch_embedding=embedding, num_frames=4, tubelet_size=2, band_names=None,
        wavelengths_um=None, num_channels=3,
    )  # fmt: skip
    model = GeoViTMAEForPreTraining(config).eval()
    assert config.num_patches == 2 * 64
    pixels = series()
    kwargs = {"wavelengths": [0.56, 0.665, 0.842]} if embedding == "wavelength" else {}
    noise = torch.rand(2, 128)
    out = model(pixels, noise=noise, **kwargs)
    assert out.logits.shape == (2, 128, 2 * 8 * 8 * 3)
    assert out.mask.shape == (2, 128) and out.mask.sum(dim=1).tolist() == [96.0, 96.0]
    # masking picks space-time tokens: the lowest-noise quarter is kept, across both tubelets
    kept = noise.argsort(dim=1)[:, :32]
    assert (out.mask.gather(1, kept) == 0).all()
    assert torch.equal(model.unpatchify(model.patchify(pixels)), pixels)
    # a token covers frames (2k, 2k+1) of one patch: changing frame 3 changes no frame-0/1 token
    patches = model.patchify(pixels)
    changed = pixels.clone()
    changed[:, 3] += 1.0
    diff = (model.patchify(changed) - patches).abs().sum(-1)  # (B, L)
    assert (diff[:, :64] == 0).all() and (diff[:, 64:] > 0).all()
    # the two tubelets get different positions: swapping them changes the encoding
    swapped = pixels[:, [2, 3, 0, 1]]
    a = model.vit(pixels, **kwargs).last_hidden_state[:, 1:]
    b = model.vit(swapped, **kwargs).last_hidden_state[:, 1:]
    assert not torch.allclose(a[:, :64], b[:, 64:], atol=1e-3)
    with pytest.raises(ValueError, match="num_frames=4"):
        model(torch.randn(2, 3, 64, 64), **kwargs)
    with pytest.raises(ValueError, match="Expected 4 frames"):
        model(series(frames=2), **kwargs)


def test_time_series_pixel_mask_keeps_cloudy_frames_out_of_input_and_loss():
    config = GeoViTMAEConfig.from_preset("tiny", num_channels=3, num_frames=4, tubelet_size=2)
    model = GeoViTMAEForPreTraining(config).eval()
    pixels, noise = series(), torch.rand(2, 128)
    valid = torch.ones(2, 4, 64, 64)
    valid[:, 3] = 0  # frame 3 is cloud
    cloudy = pixels.clone()
    cloudy[:, 3] = float("nan")
    out = model(cloudy, pixel_mask=valid, noise=noise)
    assert torch.isfinite(out.loss)
    zeroed = pixels.clone()
    zeroed[:, 3] = 0.0
    assert torch.equal(out.logits, model(zeroed, noise=noise).logits)
    with pytest.raises(ValueError, match=r"pixel_mask must be \(B, \[T,\] H, W\)"):
        model(pixels, pixel_mask=valid[:, 0], noise=noise)


def test_single_image_model_explains_time_series_input():
    with pytest.raises(ValueError, match=r"config.num_frames > 1"):
        GeoViTMAEModel(wavelength_config())(series(channels=4), wavelengths=RGBN)


def test_num_frames_must_be_a_multiple_of_the_tubelet():
    with pytest.raises(ValueError, match="multiple of tubelet_size"):
        GeoViTMAEConfig(num_frames=3, tubelet_size=2)


# ---------------------------------------------------------------- time and location


def metadata_model(dropout=0.0) -> GeoViTMAEModel:
    config = wavelength_config(
        num_frames=4, tubelet_size=2, temporal_encoding=True, location_encoding=True,
        metadata_dropout=dropout,
    )  # fmt: skip
    torch.manual_seed(0)
    return GeoViTMAEModel(config)


def test_time_and_location_change_the_tokens_and_may_be_absent():
    model = metadata_model().eval()
    pixels = series()
    plain = model(pixels, wavelengths=[0.56, 0.665, 0.842]).last_hidden_state
    dated = model(pixels, wavelengths=[0.56, 0.665, 0.842], temporal_coords=TEMPORAL)
    placed = model(pixels, wavelengths=[0.56, 0.665, 0.842], location_coords=LOCATION)
    assert not torch.allclose(plain, dated.last_hidden_state, atol=1e-3)
    assert not torch.allclose(plain, placed.last_hidden_state, atol=1e-3)
    # a sample without a date (NaN) is encoded as if no date were given
    partly = TEMPORAL.clone()
    partly[1] = float("nan")
    mixed = model(pixels, wavelengths=[0.56, 0.665, 0.842], temporal_coords=partly)
    assert torch.allclose(mixed.last_hidden_state[1], plain[1], atol=1e-5)
    assert torch.allclose(mixed.last_hidden_state[0], dated.last_hidden_state[0], atol=1e-5)
    with pytest.raises(ValueError, match=r"\(lat, lon\)"):
        model(pixels, wavelengths=[0.56, 0.665, 0.842], location_coords=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="Reproject"):
        model(pixels, wavelengths=[0.56, 0.665, 0.842], location_coords=[[4e6, 5e5]] * 2)


def test_metadata_dropout_drops_in_training_only():
    model = metadata_model(dropout=1.0)
    pixels, kwargs = series(), {"wavelengths": [0.56, 0.665, 0.842]}
    meta = {"temporal_coords": TEMPORAL, "location_coords": LOCATION}
    model.train()  # dropout 1.0: every sample loses both encodings
    assert torch.allclose(
        model(pixels, **kwargs, **meta).last_hidden_state,
        model(pixels, **kwargs).last_hidden_state,
        atol=1e-5,
    )
    model.eval()
    assert not torch.allclose(
        model(pixels, **kwargs, **meta).last_hidden_state,
        model(pixels, **kwargs).last_hidden_state,
        atol=1e-3,
    )
    # at rate 0.5 some samples keep them and some do not
    model.config.metadata_dropout = 0.5
    model.train()
    torch.manual_seed(3)
    batch = series(batch=16)
    with_meta = model(
        batch, **kwargs, temporal_coords=TEMPORAL[:1].expand(16, -1, -1)
    ).last_hidden_state
    without = model(batch, **kwargs).last_hidden_state
    same = [torch.allclose(a, b, atol=1e-5) for a, b in zip(with_meta, without)]
    assert 0 < sum(same) < 16


def test_metadata_noise_fixes_which_samples_drop_time_and_place():
    model = metadata_model(dropout=0.5).train()
    pixels, kwargs = series(batch=2), {"wavelengths": [0.56, 0.665, 0.842]}
    meta = {"temporal_coords": TEMPORAL[:1].expand(2, -1, -1),
            "location_coords": LOCATION[:1].expand(2, -1)}  # fmt: skip
    # sample 0 keeps both (noise >= rate), sample 1 drops both: as if it had no metadata
    noise = torch.tensor([[0.9, 0.7], [0.1, 0.2]])
    runs = [model(pixels, **kwargs, **meta, metadata_noise=noise).last_hidden_state for _ in "ab"]
    assert torch.equal(runs[0], runs[1])  # the same draws every time, whatever torch's RNG
    bare = model(pixels, **kwargs).last_hidden_state
    assert torch.allclose(runs[0][1], bare[1], atol=1e-5)
    assert not torch.allclose(runs[0][0], bare[0], atol=1e-3)
    # time kept, place dropped for both: equals passing the time alone
    only_time = model(pixels, **kwargs, **meta, metadata_noise=torch.tensor([[0.9, 0.1]] * 2))
    alone = model(pixels, **kwargs, temporal_coords=meta["temporal_coords"],
                  metadata_noise=torch.tensor([[0.9, 0.9]] * 2))  # fmt: skip
    assert torch.allclose(only_time.last_hidden_state, alone.last_hidden_state, atol=1e-5)
    with pytest.raises(ValueError, match=r"metadata_noise must have shape \(batch, 2\)"):
        model(pixels, **kwargs, **meta, metadata_noise=torch.rand(2))


# ---------------------------------------------------------------- training machinery


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_gradient_checkpointing_gives_same_gradients(name):
    torch.manual_seed(0)
    # Dropout draws differ between the two runs: off here, tested on its own above.
    config = GeoViTMAEConfig.from_preset("tiny", **{**OPTIONS[name], "metadata_dropout": 0.0})
    plain = GeoViTMAEForPreTraining(config).train()
    ckpt = GeoViTMAEForPreTraining(config).train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.activation_checkpointing_enable()
    inputs = option_inputs(name)
    noise = torch.rand(2, config.num_patches)
    plain(**inputs, noise=noise).loss.backward()
    ckpt(**inputs, noise=noise).loss.backward()
    for (key, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert a.grad is not None, key
        assert torch.allclose(a.grad, b.grad, atol=1e-6), key


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_bf16_meta_init_and_counts(name):
    config = GeoViTMAEConfig.from_preset("tiny", **OPTIONS[name])
    with torch.device("meta"):
        meta = GeoViTMAEForPreTraining(config)
    assert all(p.device.type == "meta" for p in meta.parameters())
    real = GeoViTMAEForPreTraining(config).to(torch.bfloat16)
    assert count_parameters(meta) == count_parameters(real)
    inputs = option_inputs(name)
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    out = real(**inputs)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    out.loss.backward()
    # FLOPs grow with the tokens of a time series and with the wavelength hypernetwork
    base = GeoViTMAEConfig.from_preset("tiny", num_channels=config.num_channels)
    assert flops_per_image(config) > flops_per_image(base)


def test_wavelength_flops_count_the_hypernetwork_and_the_input_bands():
    conv = GeoViTMAEConfig.from_preset("vit-base", num_channels=13)
    wave = GeoViTMAEConfig.from_preset("vit-base", num_channels=13, patch_embedding="wavelength")
    extra = flops_per_image(wave) - flops_per_image(conv)
    width, pixels = 128, 16 * 16
    hyper = 13 * 2 * (2 * width * width + width * (pixels * 768 + 768 + pixels * 512 + pixels))
    assert extra == 3 * hyper
    assert flops_per_image(wave, num_channels=4) < flops_per_image(wave)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_save_load_round_trip_for_each_option(tmp_path, name):
    config = GeoViTMAEConfig.from_preset("tiny", **OPTIONS[name])
    torch.manual_seed(0)
    model = GeoViTMAEForPreTraining(config).eval()
    model.save_pretrained(tmp_path)
    inputs = option_inputs(name)
    noise = torch.rand(2, config.num_patches)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert reloaded.config.patch_embedding == config.patch_embedding
    assert reloaded.config.num_frames == config.num_frames
    assert torch.equal(reloaded(**inputs, noise=noise).logits, model(**inputs, noise=noise).logits)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert torch.equal(encoder(**inputs).last_hidden_state, model.vit(**inputs).last_hidden_state)
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=3)
    assert isinstance(classifier, GeoViTMAEForImageClassification)
    assert classifier(**inputs, labels=torch.tensor([0, 2])).logits.shape == (2, 3)


# ---------------------------------------------------------------- image processor


def test_processor_feeds_one_wavelength_model_sentinel2_landsat_and_rgb():
    from geofm_hf import GeoViTMAEImageProcessor

    config = wavelength_config(reference_gsd_m=10.0)
    model = GeoViTMAEModel(config).eval()
    processor = GeoViTMAEImageProcessor.from_model_config(config)
    assert processor.band_names is None and processor.return_gsd
    s2 = processor(torch.rand(13, 64, 64), band_names=[b.name for b in S2])
    assert torch.allclose(s2["wavelengths"], S2_WAVELENGTHS)
    assert s2["gsd"].tolist() == [10.0]  # the finest Sentinel-2 band
    landsat_bands = ["B2", "B3", "B4", "B5", "B6", "B7"]
    landsat = processor(
        torch.rand(6, 128, 128), band_names=landsat_bands, sensor="landsat8-oli", do_resize=True
    )
    assert torch.allclose(landsat["wavelengths"], torch.tensor(LANDSAT6))
    assert landsat["gsd"].tolist() == [60.0]  # 30 m pixels, 128 px shrunk to 64
    rgb = processor(torch.rand(3, 64, 64), wavelengths_um=[0.665, 0.56, 0.49], gsd=0.5)
    assert rgb["wavelengths"].tolist() == pytest.approx([0.665, 0.56, 0.49])
    for inputs in (s2, landsat, rgb):
        out = model(**inputs)
        assert out.pooler_output.shape == (1, 192)
    with pytest.raises(ValueError, match="pass gsd="):
        processor(torch.rand(2, 64, 64), band_names=["x", "y"])


def test_processor_wavelengths_for_a_conv_model_match_its_bands():
    from geofm_hf import GeoViTMAEImageProcessor

    bands = ["B02", "B03", "B04"]
    config = GeoViTMAEConfig.from_preset(
        "tiny", band_names=bands, wavelengths_um=[0.49, 0.56, 0.665], image_mean=[0.0] * 3,
        image_std=[1.0] * 3,
    )  # fmt: skip
    processor = GeoViTMAEImageProcessor.from_model_config(config)
    inputs = processor(torch.rand(3, 64, 64), band_names=["B04", "B03", "B02"])
    assert inputs["wavelengths"].tolist() == pytest.approx([0.49, 0.56, 0.665])
    assert "gsd" not in inputs
    model = GeoViTMAEModel(config).eval()
    assert torch.equal(
        model(**inputs).last_hidden_state, model(inputs["pixel_values"]).last_hidden_state
    )


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_planner_counts_each_option_like_the_built_model(name):
    from geofm_hf import planner

    config = GeoViTMAEConfig.from_preset("tiny", **OPTIONS[name])
    with torch.device("meta"):
        model = GeoViTMAEForPreTraining(config)
    assert planner.count_parameters(config, part="total") == count_parameters(model)
    assert planner.count_parameters(config) == count_parameters(model, encoder_only=True)
    # the planner's FLOPs see the option too: more tokens (time series) or the hypernetwork
    base = GeoViTMAEConfig.from_preset("tiny", num_channels=config.num_channels)
    shape, base_shape = planner._resolve_shape(config), planner._resolve_shape(base)
    assert planner._flops_per_image(shape, False) > planner._flops_per_image(base_shape, False)
