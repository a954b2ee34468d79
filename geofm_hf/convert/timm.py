"""timm ``VisionTransformer`` <-> geofm_hf, without importing timm (it is optional).

A timm module is read through its attributes and ``state_dict()``; :func:`to_timm` returns a
timm-layout state dict and the ``VisionTransformer`` keyword arguments that rebuild it, so
``timm.create_model(name, **kwargs).load_state_dict(state_dict)`` works where timm is installed.
:func:`save_timm_folder` writes timm's own hub format (``config.json`` + ``model.safetensors``),
which ``timm.create_model("local-dir:<folder>", pretrained=True)`` loads, or ``push_to_hub`` of
that folder makes an ``hf-hub:`` model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..modeling_geofm import (
    GeoViTMAEModel,
    GeoViTMAEPreTrainedModel,
    sincos_2d_position_embedding,
)
from .layout import Conversion, UnsupportedSourceError, convert_mae_layout

_TIMM_EPS = 1e-6  # timm VisionTransformer's LayerNorm (and its qk_norm) default


def is_timm_vit(obj: Any) -> bool:
    return (
        isinstance(obj, nn.Module)
        and hasattr(obj, "patch_embed")
        and hasattr(obj, "blocks")
        and hasattr(obj, "pos_embed")
    )


def from_timm_module(module: nn.Module, **band_contract) -> Conversion:
    """A :class:`GeoViTMAEModel` with the weights and features of a timm ``VisionTransformer``.

    Reads what the state dict cannot tell (heads, LayerNorm eps, activation, pooling) from the
    module, and refuses what has no exact counterpart (layer scale, register tokens, pre-norm,
    a norm after pooling, attention pooling, no class token, dynamic image size, another
    activation).
    """
    problems = []
    if getattr(module, "cls_token", None) is None:
        problems.append("no class token (class_token=False)")
    if getattr(module, "reg_token", None) is not None:
        problems.append("register tokens (reg_tokens > 0)")
    if getattr(module, "no_embed_class", False):
        problems.append("no position embedding for the class token (no_embed_class=True)")
    if getattr(module, "dynamic_img_size", False):
        problems.append("dynamic image size (positions resampled per input)")
    if not isinstance(getattr(module, "norm_pre", nn.Identity()), nn.Identity):
        problems.append("a norm before the blocks (pre_norm=True)")
    if not isinstance(getattr(module, "fc_norm", nn.Identity()), nn.Identity):
        problems.append("a norm after pooling (fc_norm)")
    pool = getattr(module, "global_pool", "token")
    if pool not in ("token", "avg"):
        problems.append(f"global_pool={pool!r} (only 'token' and 'avg' map)")
    first = module.blocks[0]
    act = getattr(first.mlp, "act", None)
    if not (isinstance(act, nn.GELU) and act.approximate == "none"):
        problems.append(f"MLP activation {act!r} (only exact GELU maps)")
    for part in ("ls1", "ls2"):
        if not isinstance(getattr(first, part, nn.Identity()), nn.Identity):
            problems.append("layer scale (init_values)")
            break
    if problems:
        raise UnsupportedSourceError(
            "This timm VisionTransformer uses parts geofm_hf cannot reproduce exactly: "
            + "; ".join(problems)
            + ". Nothing was converted."
        )
    state = {k: v.detach() for k, v in module.state_dict().items()}
    conversion = convert_mae_layout(
        state,
        num_heads=first.attn.num_heads,
        layer_norm_eps=first.norm1.eps,
        pooling="cls" if pool == "token" else "mean",
        **band_contract,
    )
    conversion.model.to(next(module.parameters()).dtype)
    return conversion


def to_timm(model: GeoViTMAEPreTrainedModel) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The encoder of ``model`` as a timm-layout state dict and ``VisionTransformer`` kwargs.

    ``timm.models.vision_transformer.VisionTransformer(**kwargs)`` (or ``timm.create_model(
    "vit_base_patch16_224", **kwargs)``) then ``load_state_dict(state_dict)`` gives a model whose
    ``forward_features`` equals our ``last_hidden_state`` and whose pooled features (``num_classes=0``)
    equal our ``pooler_output``. Refuses what timm's ViT cannot express: wavelength patch
    embeddings, time series, the 3D sin-cos table, GSD scaling, time/location encodings, a
    LayerNorm eps other than timm's 1e-6, an activation other than GELU.
    """
    config = model.config
    base: GeoViTMAEModel = getattr(model, "vit", model)
    problems = []
    if config.patch_embedding != "conv":
        problems.append(f"patch_embedding={config.patch_embedding!r}")
    if config.num_frames != 1:
        problems.append(f"a time series (num_frames={config.num_frames})")
    if config.position_embedding == "sincos_3d":
        problems.append("the 3D sin-cos position table")
    if config.temporal_encoding or config.location_encoding:
        problems.append("time/location encodings")
    if config.reference_gsd_m is not None:
        problems.append("GSD-scaled positions (reference_gsd_m)")
    if config.layer_norm_eps != _TIMM_EPS:
        problems.append(f"LayerNorm eps {config.layer_norm_eps} (timm's ViT uses {_TIMM_EPS})")
    if config.hidden_act != "gelu":
        problems.append(f"activation {config.hidden_act!r} (timm's ViT uses exact GELU)")
    if problems:
        raise ValueError(
            "A timm VisionTransformer cannot express this model: " + "; ".join(problems) + "."
        )
    ours = base.state_dict()
    grid = config.image_size // config.patch_size
    if config.position_embedding == "learned":
        pos = ours["embeddings.position_embeddings"]
    else:
        pos = sincos_2d_position_embedding(grid, grid, config.hidden_size)[None]
    out: dict[str, torch.Tensor] = {
        "cls_token": ours["embeddings.cls_token"],
        "pos_embed": pos.to(ours["embeddings.cls_token"].dtype),
        "patch_embed.proj.weight": ours["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": ours["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": ours["layernorm.weight"],
        "norm.bias": ours["layernorm.bias"],
    }
    names = {
        "layernorm_before": "norm1",
        "attention.qkv": "attn.qkv",
        "attention.q_norm": "attn.q_norm",
        "attention.k_norm": "attn.k_norm",
        "attention.o_proj": "attn.proj",
        "layernorm_after": "norm2",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    for key, value in ours.items():
        if not key.startswith("encoder.layers."):
            continue
        index, rest = key[len("encoder.layers.") :].split(".", 1)
        module, _, param = rest.rpartition(".")
        out[f"blocks.{index}.{names[module]}.{param}"] = value
    kwargs = {
        "img_size": config.image_size,
        "patch_size": config.patch_size,
        "in_chans": config.num_channels,
        "embed_dim": config.hidden_size,
        "depth": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "mlp_ratio": config.intermediate_size / config.hidden_size,
        "qkv_bias": config.qkv_bias,
        "qk_norm": config.qk_norm,
        "class_token": True,
        "global_pool": "token" if config.pooling == "cls" else "avg",
        # Our final norm comes before pooling: timm's fc_norm (after pooling) stays off.
        "fc_norm": False,
        "num_classes": 0,
    }
    return {k: v.detach().clone() for k, v in out.items()}, kwargs


# timm's registered ViTs, by (width, depth, heads, patch, image size): an encoder of one of these
# shapes is named as it; any other is built from `vit_base_patch16_224`, whose defaults the model
# arguments of `to_timm` all override.
_TIMM_NAMES = {
    (192, 12, 3, 16, 224): "vit_tiny_patch16_224",
    (192, 12, 3, 16, 384): "vit_tiny_patch16_384",
    (384, 12, 6, 8, 224): "vit_small_patch8_224",
    (384, 12, 6, 16, 224): "vit_small_patch16_224",
    (384, 12, 6, 32, 224): "vit_small_patch32_224",
    (768, 12, 12, 8, 224): "vit_base_patch8_224",
    (768, 12, 12, 16, 224): "vit_base_patch16_224",
    (768, 12, 12, 32, 224): "vit_base_patch32_224",
    (1024, 24, 16, 16, 224): "vit_large_patch16_224",
    (1024, 24, 16, 32, 224): "vit_large_patch32_224",
    (1280, 32, 16, 14, 224): "vit_huge_patch14_224",
}


def timm_architecture(model: GeoViTMAEPreTrainedModel) -> str:
    """The timm model name to build ``model``'s encoder with (plus :func:`to_timm`'s kwargs)."""
    c = model.config
    shape = (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.patch_size, c.image_size)
    return _TIMM_NAMES.get(shape, "vit_base_patch16_224")


def timm_pretrained_cfg(model: GeoViTMAEPreTrainedModel) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` for ``model``: input size, our per-band mean/std, the bands.

    timm's ``PretrainedCfg`` has no field for band names, so they go in ``description`` (and
    :func:`save_timm_folder` keeps them as a list beside it). Without statistics the mean is 0
    and the std 1: the encoder then takes its input as given, already normalised.
    """
    c = model.config
    bands = c.band_names or [f"channel {i}" for i in range(c.num_channels)]
    return {
        "architecture": timm_architecture(model),
        "input_size": (c.num_channels, c.image_size, c.image_size),
        "fixed_input_size": True,
        "mean": tuple(c.image_mean) if c.image_mean else (0.0,) * c.num_channels,
        "std": tuple(c.image_std) if c.image_std else (1.0,) * c.num_channels,
        "num_classes": 0,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "description": "geofm_hf GeoViTMAE encoder; input bands, in order: " + ", ".join(bands),
    }


def save_timm_folder(model: GeoViTMAEPreTrainedModel, folder: str | Path) -> Path:
    """Writes ``model``'s encoder in timm's hub format: ``config.json`` + ``model.safetensors``.

    ``timm.create_model(f"local-dir:{folder}", pretrained=True)`` rebuilds it (architecture,
    ``in_chans``, image size) with our weights and ``pretrained_cfg`` (mean/std per band);
    ``config.json`` also keeps the band contract (``geofm_hf``: band names, wavelengths) that
    timm itself ignores. Refuses what :func:`to_timm` refuses.
    """
    from safetensors.torch import save_file

    state, kwargs = to_timm(model)
    pretrained_cfg = timm_pretrained_cfg(model)
    c = model.config
    config = {
        "architecture": pretrained_cfg["architecture"],
        "num_classes": 0,
        "num_features": c.hidden_size,
        "model_args": kwargs,
        "pretrained_cfg": pretrained_cfg,
        "geofm_hf": {
            "band_names": c.band_names,
            "wavelengths_um": c.wavelengths_um,
            "image_mean": c.image_mean,
            "image_std": c.image_std,
        },
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    return folder


__all__ = [
    "from_timm_module",
    "is_timm_vit",
    "save_timm_folder",
    "timm_architecture",
    "timm_pretrained_cfg",
    "to_timm",
]
