"""Configuration of the geospatial ViT-MAE models, with the paper's named size presets.

This file is copied next to the weights by ``save_pretrained`` (remote code), so it must only
import ``transformers`` and the standard library.
"""

from __future__ import annotations

import copy
from typing import Any

from transformers import PreTrainedConfig

# Encoder shapes from Tsaris et al. 2024, Table I (see shared/PAPER.md). The MAE decoder is not
# published: every size uses the standard MAE decoder (512 wide, 8 layers, 16 heads). The image size
# is not published either: 224 px is the standard.
PRESETS: dict[str, dict[str, Any]] = {
    # Not in the paper: a few-MB model for tests and the CPU demo on 64 x 64 chips.
    "tiny": {
        "hidden_size": 192,
        "num_hidden_layers": 4,
        "num_attention_heads": 3,
        "intermediate_size": 768,
        "patch_size": 8,
        "image_size": 64,
        "decoder_hidden_size": 128,
        "decoder_num_hidden_layers": 2,
        "decoder_num_attention_heads": 4,
        "decoder_intermediate_size": 512,
    },
    # 87M in the paper.
    "vit-base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "patch_size": 16,
    },
    # 635M in the paper.
    "vit-huge": {
        "hidden_size": 1280,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "intermediate_size": 5120,
        "patch_size": 14,
    },
    # 914M in the paper.
    "vit-1b": {
        "hidden_size": 1536,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "intermediate_size": 6144,
        "patch_size": 14,
    },
    # 3,067M in the paper. Head dim 88: attention must not assume a power of two.
    "vit-3b": {
        "hidden_size": 2816,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "intermediate_size": 11264,
        "patch_size": 14,
        "qk_norm": True,
    },
    # 5,349M in the paper. The paper's table prints width 1792 / MLP 15360 / 16 heads, which gives
    # only ~3.8B parameters; width 2816 at depth 56 gives 5.33B and matches the stated count.
    "vit-5b": {
        "hidden_size": 2816,
        "num_hidden_layers": 56,
        "num_attention_heads": 32,
        "intermediate_size": 11264,
        "patch_size": 14,
        "qk_norm": True,
    },
    # 14,720M in the paper. Head dim 105.
    "vit-15b": {
        "hidden_size": 5040,
        "num_hidden_layers": 48,
        "num_attention_heads": 48,
        "intermediate_size": 20160,
        "patch_size": 14,
        "qk_norm": True,
    },
    # vit-15b with 45 heads x 112 instead of 48 x 105: the same weight shapes (qkv and output
    # projections are width x width) and parameter count (+28 QK-norm values per block), but a
    # head dim every fused SDPA kernel takes unpadded -- 105 runs flash only, padded to 112
    # (+6.7 % attention work), and the unfused path in fp32 (docs/frontier.md). A different
    # model, not a re-parametrisation: vit-15b weights do not load into it.
    "vit-15b-h112": {
        "hidden_size": 5040,
        "num_hidden_layers": 48,
        "num_attention_heads": 45,
        "intermediate_size": 20160,
        "patch_size": 14,
        "qk_norm": True,
    },
}

# Encoder parameter counts the paper reports (224 px, 3 channels), used by the tests.
PAPER_PARAMETER_COUNTS: dict[str, int] = {
    "vit-base": 87_000_000,
    "vit-huge": 635_000_000,
    "vit-1b": 914_000_000,
    "vit-3b": 3_067_000_000,
    "vit-5b": 5_349_000_000,
    "vit-15b": 14_720_000_000,
}


class GeoViTMAEInputError(ValueError):
    """An input the model cannot take (dtype, shape, bands, non-finite pixels, labels), raised
    before any compute with one message: what was expected, what was found, what to do.

    Defined here, in a file every export carries as remote code, so ``except
    GeoViTMAEInputError`` works with or without geofm_hf installed; a ``ValueError`` so code that
    caught the earlier errors still does.
    """


class GeoViTMAEConfig(PreTrainedConfig):
    r"""Configuration of a geospatial ViT-MAE (encoder, MAE decoder and the band contract).

    The config is the only constructor argument of every model class. Build one from a named size
    with :meth:`from_preset` (``"tiny"``, ``"vit-base"``, ``"vit-huge"``, ``"vit-1b"``,
    ``"vit-3b"``, ``"vit-5b"``, ``"vit-15b"``).

    Args:
        hidden_size (`int`, defaults to 768): width of the encoder.
        num_hidden_layers (`int`, defaults to 12): number of encoder blocks.
        num_attention_heads (`int`, defaults to 12): heads per encoder block; must divide
            `hidden_size` (the head dimension need not be a power of two).
        intermediate_size (`int`, defaults to 3072): hidden width of the encoder MLP.
        hidden_act (`str`, defaults to `"gelu"`): MLP activation (any `transformers` ACT2FN key).
        hidden_dropout_prob (`float`, defaults to 0.0): dropout after attention and MLP.
        attention_probs_dropout_prob (`float`, defaults to 0.0): dropout on attention weights.
        initializer_range (`float`, defaults to 0.02): std of the normal init of tokens.
        layer_norm_eps (`float`, defaults to 1e-6): LayerNorm epsilon (MAE uses 1e-6).
        image_size (`int`, defaults to 224): side of the square input the position embeddings are
            laid out for. Other sizes work with ``interpolate_pos_encoding=True``.
        patch_size (`int`, defaults to 16): side of the square patches.
        num_channels (`int`, *optional*): number of input bands; defaults to ``len(band_names)``,
            or 3 without band names. Must equal ``len(band_names)`` when both are given.
        qkv_bias (`bool`, defaults to `True`): bias on the query/key/value projection.
        qk_norm (`bool`, defaults to `False`): LayerNorm on queries and keys per head (ViT-22B's
            fix for attention-logit growth; on for the multi-billion presets).
        decoder_hidden_size (`int`, defaults to 512): width of the MAE decoder.
        decoder_num_hidden_layers (`int`, defaults to 8): number of decoder blocks.
        decoder_num_attention_heads (`int`, defaults to 16): heads per decoder block.
        decoder_intermediate_size (`int`, defaults to 2048): hidden width of the decoder MLP.
        mask_ratio (`float`, defaults to 0.75): fraction of patches masked during pretraining.
        norm_pix_loss (`bool`, defaults to `True`): regress per-patch normalised pixels (MAE's
            better-performing target).
        pooling (`str`, defaults to `"cls"`): image feature for classification and
            ``pooler_output``: the cls token (`"cls"`) or the mean of patch tokens (`"mean"`).
        band_names (`list[str]`, *optional*): the band order the weights expect, e.g.
            ``["B01", ..., "B12"]``. The image processor reorders inputs to this order by name.
        wavelengths_um (`list[float]`, *optional*): centre wavelength of each band, micrometres.
        gsd_m (`list[float]`, *optional*): native ground sample distance of each band, metres.
        image_mean (`list[float]`, *optional*): per-band mean the weights were trained with.
        image_std (`list[float]`, *optional*): per-band std the weights were trained with.
        patch_embedding (`str`, defaults to `"conv"`): how pixels become tokens. `"conv"`: one
            learnt kernel per band of ``band_names`` (the weights are tied to that band set, as in
            ViTMAE). `"wavelength"`: a small hypernetwork maps each band's centre wavelength (and
            bandwidth, where given) to that band's patch kernel and bias, and the token is the sum
            over the bands present, so any number and order of bands works; ``forward`` then
            needs ``wavelengths``. The MAE decoder predicts the input's bands the same way.
        wavelength_embed_dim (`int`, defaults to 128): width of the per-band wavelength embedding
            of the `"wavelength"` hypernetwork.
        wavelength_bandwidths (`bool`, defaults to `False`): the hypernetwork also reads each
            band's bandwidth (``forward(bandwidths=...)``, returned by the processor from the
            sensor tables). Set when pretraining fed them; a model pretrained without them
            refuses them (its bandwidth inputs never saw data).
        num_frames (`int`, defaults to 1): frames per sample. Above 1, ``pixel_values`` is a
            time series ``(B, T, C, H, W)`` (the transformers video layout) and tokens are
            space-time tubelets.
        tubelet_size (`int`, defaults to 1): frames per tubelet; must divide ``num_frames``.
        reference_gsd_m (`float`, *optional*): ground sample distance (metres per pixel) of the
            pretraining images. When set, a ``gsd`` input scales the position embedding by
            ``gsd / reference_gsd_m`` (Scale-MAE), so a patch at another resolution is placed at
            its true ground distance.
        temporal_encoding (`bool`, defaults to `False`): accept ``temporal_coords``
            ``(B, T, 2)`` (year, day of year), encoded sin/cos -> learnt projection, added to the
            tokens of each frame.
        location_encoding (`bool`, defaults to `False`): accept ``location_coords`` ``(B, 2)``
            (latitude, longitude in degrees), encoded sin/cos -> learnt projection, added to
            every token.
        metadata_dropout (`float`, defaults to 0.0): in training, probability of dropping the
            time and the location encoding of a sample (each independently), so either may be
            absent at inference.
        metadata_encoding (`str`, defaults to `"harmonics"`): how ``temporal_coords`` and
            ``location_coords`` are encoded. `"harmonics"`: sin/cos harmonics -> a learnt
            projection. `"prithvi"`: Prithvi-EO-2.0's fixed 1D sin-cos of each value on half the
            width, times one learnt scale, in the encoder and again (at its width) in the MAE
            decoder; needs ``tubelet_size=1`` and ``metadata_dropout=0`` (Prithvi drops metadata by
            leaving the coordinates out).
        position_embedding (`str`, defaults to `"sincos"`): token positions. `"sincos"`: MAE's
            fixed 2D sin-cos table (plus a 1D sin-cos of the tubelet index for time series),
            computed, never stored. `"learned"`: a stored table ``(1, 1 + L, D)`` per stack
            (encoder and MAE decoder), as timm ViTs keep it; only at ``image_size``.
            `"sincos_3d"`: Prithvi's fixed 3D sin-cos table (width split 6/16 columns, 6/16 rows,
            4/16 tubelet index, concatenated), computed; only at ``image_size``. Imported
            checkpoints use the layout of their source, so positions are never replaced.
        preset (`str`, *optional*): name of the preset the config was built from (informative).
    """

    model_type = "geofm_vit_mae"

    def __init__(
        self,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-6,
        image_size: int = 224,
        patch_size: int = 16,
        num_channels: int | None = None,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        decoder_hidden_size: int = 512,
        decoder_num_hidden_layers: int = 8,
        decoder_num_attention_heads: int = 16,
        decoder_intermediate_size: int = 2048,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        pooling: str = "cls",
        band_names: list[str] | None = None,
        wavelengths_um: list[float] | None = None,
        gsd_m: list[float] | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        patch_embedding: str = "conv",
        wavelength_embed_dim: int = 128,
        wavelength_bandwidths: bool = False,
        num_frames: int = 1,
        tubelet_size: int = 1,
        reference_gsd_m: float | None = None,
        temporal_encoding: bool = False,
        location_encoding: bool = False,
        metadata_dropout: float = 0.0,
        position_embedding: str = "sincos",
        metadata_encoding: str = "harmonics",
        preset: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.image_size = image_size
        self.patch_size = patch_size
        # Without an explicit count the band list decides it, so a config can never silently
        # disagree with the bands it names.
        if num_channels is None:
            num_channels = len(band_names) if band_names is not None else 3
        self.num_channels = num_channels
        self.qkv_bias = qkv_bias
        self.qk_norm = qk_norm
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_num_hidden_layers = decoder_num_hidden_layers
        self.decoder_num_attention_heads = decoder_num_attention_heads
        self.decoder_intermediate_size = decoder_intermediate_size
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.pooling = pooling
        self.band_names = list(band_names) if band_names is not None else None
        self.wavelengths_um = list(wavelengths_um) if wavelengths_um is not None else None
        self.gsd_m = list(gsd_m) if gsd_m is not None else None
        self.image_mean = list(image_mean) if image_mean is not None else None
        self.image_std = list(image_std) if image_std is not None else None
        self.patch_embedding = patch_embedding
        self.wavelength_embed_dim = wavelength_embed_dim
        self.wavelength_bandwidths = wavelength_bandwidths
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        self.reference_gsd_m = float(reference_gsd_m) if reference_gsd_m is not None else None
        self.temporal_encoding = temporal_encoding
        self.location_encoding = location_encoding
        self.metadata_dropout = metadata_dropout
        self.position_embedding = position_embedding
        self.metadata_encoding = metadata_encoding
        self.preset = preset
        super().__init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        for width, heads, what in (
            (self.hidden_size, self.num_attention_heads, ""),
            (self.decoder_hidden_size, self.decoder_num_attention_heads, "decoder_"),
        ):
            if width % heads != 0:
                raise ValueError(
                    f"{what}hidden_size must be divisible by {what}num_attention_heads: expected a "
                    f"multiple of {heads}, found {width} ({width} / {heads} = {width / heads:.3f})."
                )
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"image_size must be divisible by patch_size: expected a multiple of "
                f"{self.patch_size}, found {self.image_size}."
            )
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1): found {self.mask_ratio}.")
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean': found {self.pooling!r}.")
        for name in ("band_names", "wavelengths_um", "gsd_m", "image_mean", "image_std"):
            values = getattr(self, name)
            if values is not None and len(values) != self.num_channels:
                raise ValueError(
                    f"{name} must have one entry per band: expected {self.num_channels} "
                    f"(num_channels), found {len(values)}: {values}."
                )
        if self.band_names is not None and len(set(self.band_names)) != len(self.band_names):
            raise ValueError(f"band_names must be unique: found {self.band_names}.")
        if self.image_std is not None and any(float(s) <= 0 for s in self.image_std):
            raise ValueError(f"image_std must be positive for every band: found {self.image_std}.")
        if self.patch_embedding not in ("conv", "wavelength"):
            raise ValueError(
                f"patch_embedding must be 'conv' or 'wavelength': found {self.patch_embedding!r}."
            )
        if self.wavelength_embed_dim < 4 or self.wavelength_embed_dim % 4:
            raise ValueError(
                "wavelength_embed_dim must be a positive multiple of 4: found "
                f"{self.wavelength_embed_dim}."
            )
        if self.num_frames < 1 or self.tubelet_size < 1 or self.num_frames % self.tubelet_size:
            raise ValueError(
                f"num_frames must be a positive multiple of tubelet_size ({self.tubelet_size}): "
                f"found num_frames={self.num_frames}."
            )
        if self.reference_gsd_m is not None and not self.reference_gsd_m > 0:
            raise ValueError(f"reference_gsd_m must be positive: found {self.reference_gsd_m}.")
        if self.position_embedding not in ("sincos", "learned", "sincos_3d"):
            raise ValueError(
                "position_embedding must be 'sincos', 'learned' or 'sincos_3d': found "
                f"{self.position_embedding!r}."
            )
        if self.position_embedding == "sincos_3d" and (
            self.hidden_size % 16 or self.decoder_hidden_size % 16
        ):
            raise ValueError(
                "position_embedding='sincos_3d' splits the width in sixteenths: expected "
                f"hidden_size and decoder_hidden_size divisible by 16, found {self.hidden_size} "
                f"and {self.decoder_hidden_size}."
            )
        if self.position_embedding != "sincos" and self.reference_gsd_m is not None:
            raise ValueError(
                "reference_gsd_m (GSD-scaled positions) needs position_embedding='sincos': found "
                f"{self.position_embedding!r}."
            )
        if self.metadata_encoding not in ("harmonics", "prithvi"):
            raise ValueError(
                "metadata_encoding must be 'harmonics' or 'prithvi': found "
                f"{self.metadata_encoding!r}."
            )
        if self.metadata_encoding == "prithvi" and (
            self.tubelet_size != 1 or self.metadata_dropout != 0
        ):
            raise ValueError(
                "metadata_encoding='prithvi' encodes each frame's date and has no dropout: "
                f"expected tubelet_size=1 and metadata_dropout=0, found {self.tubelet_size} and "
                f"{self.metadata_dropout}."
            )
        if not 0.0 <= self.metadata_dropout <= 1.0:
            raise ValueError(f"metadata_dropout must be in [0, 1]: found {self.metadata_dropout}.")

    @property
    def num_patches(self) -> int:
        """Tokens per sample at ``image_size``: patches per frame times tubelets per series."""
        return (self.num_frames // self.tubelet_size) * (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GeoViTMAEConfig:
        """Build the config of a named size preset, with field overrides.

        Example: ``GeoViTMAEConfig.from_preset("vit-3b", num_channels=13, band_names=[...])``.
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}: expected one of {', '.join(PRESETS)}.")
        fields = copy.deepcopy(PRESETS[name])
        fields.update(overrides)
        fields.setdefault("preset", name)
        return cls(**fields)


def input_output_costs(config: Any) -> dict[str, int]:
    """Parameters and per-sample forward FLOPs of the parts the model options change, from the
    config's fields alone (a :class:`GeoViTMAEConfig`, any object with its fields, or a dict), so
    the planner counts any option without building a model.

    Returns ``encoder_input`` (patch embedding, wavelength hypernetwork, time/location encoders),
    ``decoder_output`` (the MAE output head or its per-band generators), ``pixels_per_token``
    (``tubelet_size * patch_size**2``), ``tokens`` (per sample, all frames) and
    ``hypernetwork_flops`` (forward FLOPs of generating the kernels for ``num_channels`` bands,
    once per batch; 0 for conv).
    """

    def get(key: str, default: Any) -> Any:
        value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
        return default if value is None else value

    channels = get("num_channels", None)
    if channels is None:
        bands = get("band_names", None)
        channels = len(bands) if bands else 3
    width, dec_width = get("hidden_size", 768), get("decoder_hidden_size", 512)
    patch, tubelet = get("patch_size", 16), get("tubelet_size", 1)
    frames, side = get("num_frames", 1), get("image_size", 224)
    pixels = tubelet * patch**2
    if get("patch_embedding", "conv") == "wavelength":
        embed = get("wavelength_embed_dim", 128)
        mlp = 2 * (embed * embed + embed)
        encoder_gen = embed * pixels * width + pixels * width + embed * width + width
        decoder_gen = embed * pixels * dec_width + pixels * dec_width + embed * pixels + pixels
        encoder_input, decoder_output = mlp + encoder_gen, decoder_gen
        hyper = channels * 2 * (2 * embed * embed + embed * (pixels * width + width))
        hyper += channels * 2 * embed * (pixels * dec_width + pixels)
    else:
        encoder_input = channels * pixels * width + width
        decoder_output = dec_width * pixels * channels + pixels * channels
        hyper = 0
    metadata = 4 * 8 + 1  # 8 sin/cos harmonics of 2 values -> a width-wide linear layer
    for flag in ("temporal_encoding", "location_encoding"):
        if get(flag, False) and get("metadata_encoding", "harmonics") == "prithvi":
            encoder_input += 1  # one learnt scale each in the encoder and the decoder
            decoder_output += 1
        elif get(flag, False):
            encoder_input += metadata * width
    tokens = (frames // tubelet) * (side // patch) ** 2
    if get("position_embedding", "sincos") == "learned":  # stored tables, cls row included
        encoder_input += (tokens + 1) * width
        decoder_output += (tokens + 1) * dec_width
    return {
        "encoder_input": encoder_input,
        "decoder_output": decoder_output,
        "pixels_per_token": pixels,
        "tokens": tokens,
        "hypernetwork_flops": hyper,
    }


__all__ = [
    "PAPER_PARAMETER_COUNTS",
    "PRESETS",
    "GeoViTMAEConfig",
    "GeoViTMAEInputError",
    "input_output_costs",
]
