"""Model shape and parameter count: what the cost model knows of a preset or config, analytically
(no model is built, so a 15B count runs on a laptop)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["count_parameters"]

_CONFIG_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "image_size": 224,
    "patch_size": 16,
    "num_channels": 3,
    "qkv_bias": True,
    "qk_norm": False,
    "decoder_hidden_size": 512,
    "decoder_num_hidden_layers": 8,
    "decoder_num_attention_heads": 16,
    "decoder_intermediate_size": 2048,
    "mask_ratio": 0.75,
    # Model options (issue 11): their input/output costs come from input_output_costs.
    "num_frames": 1,
    "tubelet_size": 1,
    "patch_embedding": "conv",
    "wavelength_embed_dim": 128,
    "temporal_encoding": False,
    "location_encoding": False,
    "position_embedding": "sincos",
    "metadata_encoding": "harmonics",
}


@dataclass(frozen=True)
class _Shape:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    image_size: int
    patch_size: int
    num_channels: int
    qkv_bias: bool
    qk_norm: bool
    decoder_hidden_size: int
    decoder_num_hidden_layers: int
    decoder_num_attention_heads: int
    decoder_intermediate_size: int
    mask_ratio: float
    name: str
    num_frames: int = 1
    tubelet_size: int = 1
    patch_embedding: str = "conv"
    wavelength_embed_dim: int = 128
    temporal_encoding: bool = False
    location_encoding: bool = False
    position_embedding: str = "sincos"
    metadata_encoding: str = "harmonics"

    @property
    def num_patches(self) -> int:
        """Tokens per sample: patches per frame times tubelets."""
        return (self.num_frames // self.tubelet_size) * (self.image_size // self.patch_size) ** 2

    @property
    def io_costs(self) -> dict[str, int]:
        from geofm_hf.configuration_geofm import input_output_costs

        return input_output_costs(self.__dict__)

    @property
    def kept_tokens(self) -> int:
        """Tokens the encoder sees while pretraining: the kept patches plus cls."""
        return int(self.num_patches * (1 - self.mask_ratio)) + 1


def _resolve_shape(config_or_preset: Any, image_size: int | None = None) -> _Shape:
    """Accepts a preset name, a ``GeoViTMAEConfig`` (or any object with its fields) or a dict."""
    if isinstance(config_or_preset, str):
        from geofm_hf.configuration_geofm import PRESETS

        if config_or_preset not in PRESETS:
            raise ValueError(
                f"Unknown preset {config_or_preset!r}: expected one of {', '.join(PRESETS)}."
            )
        fields = {**_CONFIG_DEFAULTS, **PRESETS[config_or_preset]}
        name = config_or_preset
    elif isinstance(config_or_preset, dict):
        fields = {**_CONFIG_DEFAULTS, **config_or_preset}
        name = str(config_or_preset.get("preset") or "custom")
    else:
        fields = {k: getattr(config_or_preset, k, v) for k, v in _CONFIG_DEFAULTS.items()}
        name = str(getattr(config_or_preset, "preset", None) or "custom")
    if fields.get("num_channels") is None:
        bands = fields.get("band_names")
        fields["num_channels"] = len(bands) if bands else 3
    if image_size is not None:
        fields["image_size"] = image_size
    for key in ("hidden_size", "num_attention_heads", "decoder_hidden_size"):
        if not isinstance(fields[key], int) or fields[key] <= 0:
            raise ValueError(f"{key} must be a positive integer: found {fields[key]!r}.")
    if fields["hidden_size"] % fields["num_attention_heads"]:
        raise ValueError(
            f"num_attention_heads ({fields['num_attention_heads']}) must divide hidden_size "
            f"({fields['hidden_size']})."
        )
    if fields["image_size"] % fields["patch_size"]:
        raise ValueError(
            f"image_size ({fields['image_size']}) must be a multiple of patch_size "
            f"({fields['patch_size']})."
        )
    return _Shape(**{k: fields[k] for k in _CONFIG_DEFAULTS}, name=name)


def _block_params(width: int, mlp: int, heads: int, qkv_bias: bool, qk_norm: bool) -> int:
    qkv = 3 * width * width + (3 * width if qkv_bias else 0)
    out = width * width + width
    mlp_params = 2 * width * mlp + mlp + width
    norms = 4 * width + (4 * (width // heads) if qk_norm else 0)
    return qkv + out + mlp_params + norms


def _count(shape: _Shape) -> dict[str, int]:
    d, dd = shape.hidden_size, shape.decoder_hidden_size
    enc_block = _block_params(
        d, shape.intermediate_size, shape.num_attention_heads, shape.qkv_bias, shape.qk_norm
    )
    dec_block = _block_params(
        dd,
        shape.decoder_intermediate_size,
        shape.decoder_num_attention_heads,
        shape.qkv_bias,
        shape.qk_norm,
    )
    io = shape.io_costs
    encoder = io["encoder_input"] + d + shape.num_hidden_layers * enc_block + 2 * d
    decoder = (d * dd + dd) + dd + shape.decoder_num_hidden_layers * dec_block + 2 * dd
    decoder += io["decoder_output"]
    return {
        "encoder": encoder,
        "decoder": decoder,
        "total": encoder + decoder,
        "encoder_block": enc_block,
        "decoder_block": dec_block,
    }


def count_parameters(config_or_preset: Any, *, part: str = "encoder") -> int:
    """Analytic parameter count without building the model (works for 15B on a laptop).

    ``part``: ``"encoder"`` (what the paper reports, ``GeoViTMAEModel``) or ``"total"``
    (encoder + MAE decoder, ``GeoViTMAEForPreTraining``). Positions are fixed sin-cos tables,
    not parameters, except with ``position_embedding="learned"`` (stored tables, counted).
    """
    counts = _count(_resolve_shape(config_or_preset))
    if part not in ("encoder", "total"):
        raise ValueError(f"part must be 'encoder' or 'total': found {part!r}.")
    return counts[part]
