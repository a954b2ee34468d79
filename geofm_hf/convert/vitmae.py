"""Import weights from transformers' own ViTMAE, so public MAE checkpoints seed geospatial runs."""

from __future__ import annotations

import re

import torch

from ..configuration_geofm import GeoViTMAEConfig
from ..modeling_geofm import GeoViTMAEForPreTraining, sincos_2d_position_embedding

# transformers 5 names the blocks `layers.N.attention.{q,k,v,o}_proj`; checkpoints written by
# transformers 4 use `encoder.layer.N.attention.attention.{query,key,value}`. Both are accepted.
_LEGACY_RENAMES = [
    (r"\.encoder\.layer\.(\d+)\.", r".layers.\1."),
    (r"\.attention\.attention\.query\.", ".attention.q_proj."),
    (r"\.attention\.attention\.key\.", ".attention.k_proj."),
    (r"\.attention\.attention\.value\.", ".attention.v_proj."),
    (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]


def _modern_names(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state_dict.items():
        new = key
        for pattern, repl in _LEGACY_RENAMES:
            new = re.sub(pattern, repl, new)
        renamed[new] = value
    return renamed


def config_from_vitmae(hf_config, **overrides) -> GeoViTMAEConfig:
    """The :class:`GeoViTMAEConfig` of the same shape as a transformers ``ViTMAEConfig``."""
    fields = {
        "hidden_size": hf_config.hidden_size,
        "num_hidden_layers": hf_config.num_hidden_layers,
        "num_attention_heads": hf_config.num_attention_heads,
        "intermediate_size": hf_config.intermediate_size,
        "hidden_act": hf_config.hidden_act,
        "layer_norm_eps": hf_config.layer_norm_eps,
        "image_size": hf_config.image_size,
        "patch_size": hf_config.patch_size,
        "num_channels": hf_config.num_channels,
        "qkv_bias": hf_config.qkv_bias,
        "decoder_hidden_size": hf_config.decoder_hidden_size,
        "decoder_num_hidden_layers": hf_config.decoder_num_hidden_layers,
        "decoder_num_attention_heads": hf_config.decoder_num_attention_heads,
        "decoder_intermediate_size": hf_config.decoder_intermediate_size,
        "mask_ratio": hf_config.mask_ratio,
        "norm_pix_loss": hf_config.norm_pix_loss,
        "initializer_range": hf_config.initializer_range,
    }
    # ViTMAE checkpoints are RGB photographs; say so, so band checks work downstream.
    if hf_config.num_channels == 3:
        fields["band_names"] = ["red", "green", "blue"]
    fields.update(overrides)
    return GeoViTMAEConfig(**fields)


def from_transformers_vitmae(model, **config_overrides) -> GeoViTMAEForPreTraining:
    """A :class:`GeoViTMAEForPreTraining` holding the weights of a transformers ``ViTMAE`` model.

    ``model`` is a ``ViTMAEForPreTraining`` (encoder and decoder are converted) or a
    ``ViTMAEModel`` (the decoder keeps its fresh init). With the same ``noise`` both give the same
    loss and logits. Raises ``ValueError`` when the source's position embeddings are not MAE's
    fixed sin-cos table (this package computes them, it does not store them).
    """
    hf_config = model.config
    if getattr(hf_config, "model_type", None) != "vit_mae":
        raise ValueError(
            f"Expected a transformers ViTMAE model (model_type 'vit_mae'), found "
            f"{type(model).__name__} with model_type {getattr(hf_config, 'model_type', None)!r}."
        )
    config = config_from_vitmae(hf_config, **config_overrides)
    source = _modern_names(model.state_dict())
    if not any(k.startswith("vit.") for k in source):
        source = {f"vit.{k}": v for k, v in source.items()}  # a bare ViTMAEModel

    grid = config.image_size // config.patch_size
    for key, width in (
        ("vit.embeddings.position_embeddings", config.hidden_size),
        ("decoder.decoder_pos_embed", config.decoder_hidden_size),
    ):
        if key in source:
            expected = sincos_2d_position_embedding(grid, grid, width)
            found = source.pop(key)[0].float().cpu()
            if found.shape != expected.shape or not torch.allclose(found, expected, atol=1e-4):
                raise ValueError(
                    f"{key} is not MAE's fixed 2D sin-cos table of shape {tuple(expected.shape)} "
                    f"(found shape {tuple(found.shape)}); only fixed-position ViTMAE checkpoints "
                    "can be imported."
                )

    target: dict[str, torch.Tensor] = {}
    for prefix, ours in (
        ("vit.layers.", "vit.encoder.layers."),
        ("decoder.decoder_layers.", "decoder.decoder_layers.layers."),
    ):
        indices = sorted(
            {int(k[len(prefix) :].split(".")[0]) for k in source if k.startswith(prefix)}
        )
        for i in indices:
            src, dst = f"{prefix}{i}.", f"{ours}{i}."
            for part in ("weight", "bias"):
                pieces = [source.pop(f"{src}attention.{n}_proj.{part}", None) for n in "qkv"]
                if all(p is not None for p in pieces):
                    target[f"{dst}attention.qkv.{part}"] = torch.cat(pieces, dim=0)
                elif any(p is not None for p in pieces):
                    raise ValueError(f"Block {src} has only some of q/k/v {part}s.")
            for name in list(source):
                if name.startswith(src):
                    target[dst + name[len(src) :]] = source.pop(name)
    target.update(source)  # embeddings, final norms, decoder embed/pred/mask token

    converted = GeoViTMAEForPreTraining(config)
    missing, unexpected = converted.load_state_dict(target, strict=False)
    if unexpected:
        raise ValueError(f"Weights with no place in GeoViTMAEForPreTraining: {sorted(unexpected)}")
    allowed_missing = (
        {k for k in missing if k.startswith("decoder.")}
        if not any(k.startswith("decoder.") for k in target)
        else set()
    )
    if set(missing) - allowed_missing:
        raise ValueError(
            f"Weights missing from the source model: {sorted(set(missing) - allowed_missing)}"
        )
    return converted.to(next(model.parameters()).dtype)


__all__ = ["config_from_vitmae", "from_transformers_vitmae"]
