"""State dicts in the MAE family's layout -> geofm_hf models.

One layout covers timm's ``VisionTransformer`` (``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``), the
MAE reference code and its descendants (the same encoder plus ``decoder_embed``,
``mask_token``, ``decoder_pos_embed``, ``decoder_blocks.N``, ``decoder_norm``,
``decoder_pred``: SSL4EO-S12, SatMAE's RGB model) and Prithvi (the same names under
``encoder.`` / ``decoder.``, a 3D patch embedding and a 3D sin-cos table). Everything that has
no exact counterpart in :class:`GeoViTMAEConfig` is refused by name, never approximated.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch

from ..configuration_geofm import GeoViTMAEConfig
from ..modeling_geofm import (
    GeoViTMAEForPreTraining,
    GeoViTMAEModel,
    sincos_2d_position_embedding,
    sincos_3d_position_embedding,
)


class UnsupportedSourceError(ValueError):
    """The source uses something geofm_hf has no exact equivalent for; nothing was converted."""


@dataclass
class Conversion:
    """A converted model and what the conversion did that a reader of the card must know."""

    model: GeoViTMAEModel | GeoViTMAEForPreTraining
    notes: list[str] = field(default_factory=list)


# Parts that change the computation and have no counterpart: the key pattern and the reason.
_REFUSED = [
    (
        r"^patch_embed\.\d+\.|(^|\.)channel_embed|(^|\.)channel_cls_embed",
        "grouped channels (SatMAE's multispectral model: one patch embedding per band group, "
        "a channel-group embedding, group tokens) have no counterpart in a one-kernel-per-band "
        "patch embedding",
    ),
    (
        r"^(fpn|fcn|fcn_high|fcn_low)\.|^mask_token_decoder$",
        "Scale-MAE's decoder (FPN + FCN heads reconstructing two frequency bands) has no "
        "counterpart in the MAE decoder; pass encoder_only=True to import its encoder",
    ),
    (r"\.ls[12]\.gamma$|\.ls[12]\.", "layer scale (timm init_values) has no counterpart"),
    (r"^reg_token$", "register tokens have no counterpart"),
    (r"^norm_pre\.", "a pre-norm after the embeddings (timm pre_norm) has no counterpart"),
    (r"^fc_norm\.", "a norm after pooling (timm fc_norm) has no counterpart"),
    (r"^attn_pool\.", "attention pooling (timm global_pool='map') has no counterpart"),
    (r"\.attn\.norm\.", "a norm inside attention (timm scale_attn_norm) has no counterpart"),
    (r"\.mlp\.norm\.", "a norm inside the MLP (timm scale_mlp_norm) has no counterpart"),
    (r"^patch_embed\.norm\.", "a norm after the patch embedding has no counterpart"),
    (r"vpt_prompt_embeddings", "visual prompt tokens (VPT) have no counterpart"),
]

_SCALE_MAE_DECODER = (
    r"^(fpn|fcn|fcn_high|fcn_low|decoder_embed|decoder_blocks|decoder_norm|pos_emb_projection)\."
    r"|^(mask_token|mask_token_decoder|decoder_pos_embed)$"
)

# Prithvi-EO-2.0 TL: one learnt scale per encoding, in the encoder and in the decoder.
_METADATA = {
    "temporal_embed_enc.scale": "vit.embeddings.temporal_embedding.scale",
    "location_embed_enc.scale": "vit.embeddings.location_embedding.scale",
    "temporal_embed_dec.scale": "decoder.temporal_embedding.scale",
    "location_embed_dec.scale": "decoder.location_embedding.scale",
}

_BLOCK = {
    "norm1": "layernorm_before",
    "attn.qkv": "attention.qkv",
    "attn.q_norm": "attention.q_norm",
    "attn.k_norm": "attention.k_norm",
    "attn.proj": "attention.o_proj",
    "norm2": "layernorm_after",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_DROPPED_HEAD = re.compile(r"^head\.")


def normalise_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strips wrappers (``module.``, ``_timm_module.``) and Prithvi's ``encoder.``/``decoder.``
    prefixes, so every source reads as the flat MAE layout."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = key
        for prefix in ("module.", "_timm_module."):
            if new.startswith(prefix):
                new = new[len(prefix) :]
        new = new.replace("_timm_module.", "")
        if new.startswith("encoder.") and not new.startswith("encoder.layer"):
            new = new[len("encoder.") :]
        elif new.startswith("decoder.") and not new.startswith("decoder.layers"):
            new = new[len("decoder.") :]
        if new in out:
            raise UnsupportedSourceError(f"Two source weights map to the same name {new!r}.")
        out[new] = value
    return out


def is_mae_layout(state_dict: dict[str, torch.Tensor]) -> bool:
    keys = normalise_keys(state_dict)
    return "cls_token" in keys and any(re.match(r"blocks\.\d+\.attn\.qkv\.", k) for k in keys)


def _refuse_unmapped(keys) -> None:
    reasons: dict[str, list[str]] = {}
    for key in keys:
        for pattern, reason in _REFUSED:
            if re.search(pattern, key):
                reasons.setdefault(reason, []).append(key)
                break
    if reasons:
        lines = [
            f"- {reason} (source weights: {', '.join(sorted(k)[:4])})"
            for reason, k in reasons.items()
        ]
        raise UnsupportedSourceError(
            "This checkpoint uses parts geofm_hf cannot reproduce exactly, so it is not "
            "converted (an approximate import would give different features without a word):\n"
            + "\n".join(lines)
        )


def _stack(
    src: dict[str, torch.Tensor], prefix: str, dst_prefix: str, what: str
) -> tuple[dict[str, torch.Tensor], int]:
    """Moves ``{prefix}N.<timm name>`` to ``{dst_prefix}N.<our name>``; returns (weights, depth)."""
    out: dict[str, torch.Tensor] = {}
    indices = sorted({int(k[len(prefix) :].split(".")[0]) for k in src if k.startswith(prefix)})
    if indices != list(range(len(indices))):
        raise UnsupportedSourceError(f"{what} block indices are not 0..N-1: found {indices}.")
    for i in indices:
        block = f"{prefix}{i}."
        for key in [k for k in src if k.startswith(block)]:
            rest = key[len(block) :]
            module, _, param = rest.rpartition(".")
            if module not in _BLOCK:
                raise UnsupportedSourceError(
                    f"{what} block weight {key!r} has no counterpart in a pre-norm ViT block "
                    f"(expected one of {sorted(_BLOCK)})."
                )
            out[f"{dst_prefix}{i}.{_BLOCK[module]}.{param}"] = src.pop(key)
    return out, len(indices)


def _positions(
    table: torch.Tensor | None, frames: int, grid: int, width: int, what: str
) -> tuple[str, torch.Tensor | None]:
    """Which position layout a stored table is: ("sincos"|"sincos_3d", None) when it equals
    the fixed table of that layout, else ("learned", table)."""
    if table is None:
        raise UnsupportedSourceError(
            f"The source stores no {what} table; geofm_hf cannot tell which positions it was "
            "trained with."
        )
    found = table.reshape(1, -1, width).float().cpu()
    if frames == 1:
        expected = sincos_2d_position_embedding(grid, grid, width)[None]
        if found.shape == expected.shape and torch.allclose(found, expected, atol=1e-5):
            return "sincos", None
    if width % 16 == 0:
        expected = sincos_3d_position_embedding(frames, grid, grid, width)[None]
        if found.shape == expected.shape and torch.allclose(found, expected, atol=1e-5):
            return "sincos_3d", None
    return "learned", table.reshape(1, -1, width)


def convert_mae_layout(
    state_dict: dict[str, torch.Tensor],
    *,
    num_heads: int,
    decoder_num_heads: int | None = None,
    num_frames: int = 1,
    layer_norm_eps: float = 1e-6,
    hidden_act: str = "gelu",
    norm_pix_loss: bool = False,
    mask_ratio: float = 0.75,
    pooling: str = "cls",
    require_position: str | None = None,
    missing_final_norm: str = "error",
    encoder_only: bool = False,
    **band_contract,
) -> Conversion:
    """A geofm_hf model holding the weights of a timm / MAE / Prithvi layout state dict.

    The state dict holds no head counts, LayerNorm epsilon or activation: pass them
    (``num_heads``; ``decoder_num_heads`` when the source has an MAE decoder; timm's and MAE's
    LayerNorm eps is 1e-6, Prithvi's 1e-5). ``require_position`` (``"sincos_3d"`` for Prithvi)
    refuses a stored position table that is not that fixed table. ``missing_final_norm``:
    ``"error"`` (default) or ``"identity"`` for sources whose reference loader leaves the final
    LayerNorm at its initial weight 1, bias 0 (torchgeo's SSL4EO-S12 loader); the conversion's
    notes say when that happened. ``band_contract``: ``band_names``, ``wavelengths_um``, ``gsd_m``,
    ``image_mean``, ``image_std`` for the config. Returns a :class:`GeoViTMAEForPreTraining` when
    the source has an MAE decoder (and ``encoder_only`` is false), else a :class:`GeoViTMAEModel`.
    """
    src = normalise_keys(state_dict)
    notes: list[str] = []
    scale_mae = any(re.match(r"^(fpn|fcn|fcn_high|fcn_low)\.|^mask_token_decoder$", k) for k in src)
    if scale_mae and encoder_only:
        for key in [k for k in src if re.match(_SCALE_MAE_DECODER, k)]:
            src.pop(key)
        # Scale-MAE computes positions per sample from the input's resolution (the stored
        # table is the resolution-1 one): geofm_hf's GSD-scaled sin-cos is the same function
        # with gsd / reference_gsd_m in the place of Scale-MAE's input_res.
        band_contract.setdefault("reference_gsd_m", 1.0)
        notes.append(
            "Scale-MAE encoder: positions are scaled per sample as in Scale-MAE; pass Scale-MAE's "
            "input_res as gsd (reference_gsd_m=1.0). Its FPN/FCN decoder was not imported."
        )
    _refuse_unmapped(src)
    dropped = sorted(k for k in src if _DROPPED_HEAD.match(k))
    for key in dropped:
        src.pop(key)
    if dropped:
        notes.append(f"Dropped the source's classification head ({', '.join(dropped)}).")
    if "patch_embed.proj.weight" not in src or "cls_token" not in src:
        raise UnsupportedSourceError(
            "Expected a ViT with a patch_embed.proj convolution and a cls_token: found "
            f"{sorted(src)[:12]}... A ViT without a class token is not supported."
        )
    kernel = src.pop("patch_embed.proj.weight")
    if kernel.ndim == 5:  # Prithvi's Conv3d: (D, C, t, p, p)
        tubelet = kernel.shape[2]
        if num_frames == 1 and tubelet == 1:
            kernel = kernel[:, :, 0]  # a single-frame model keeps a 2D patch embedding
    elif kernel.ndim == 4:
        tubelet = 1
    else:
        raise UnsupportedSourceError(f"patch_embed.proj.weight has shape {tuple(kernel.shape)}.")
    hidden, channels, patch = kernel.shape[0], kernel.shape[1], kernel.shape[-1]
    if kernel.shape[-2] != patch:
        raise UnsupportedSourceError(
            f"Only square patches are supported: found {tuple(kernel.shape)}."
        )
    if num_frames % tubelet:
        raise UnsupportedSourceError(
            f"num_frames={num_frames} is not a multiple of the source's tubelet size {tubelet}."
        )
    target: dict[str, torch.Tensor] = {
        "vit.embeddings.patch_embeddings.projection.weight": kernel,
        "vit.embeddings.cls_token": src.pop("cls_token").reshape(1, 1, hidden),
    }
    if "patch_embed.proj.bias" not in src:
        raise UnsupportedSourceError(
            "The patch embedding has no bias (timm pre_norm / CLIP style)."
        )
    target["vit.embeddings.patch_embeddings.projection.bias"] = src.pop("patch_embed.proj.bias")

    encoder, depth = _stack(src, "blocks.", "vit.encoder.layers.", "Encoder")
    target.update(encoder)
    if depth == 0:
        raise UnsupportedSourceError("The source has no transformer blocks (blocks.N.*).")
    if "norm.weight" in src:
        target["vit.layernorm.weight"] = src.pop("norm.weight")
        target["vit.layernorm.bias"] = src.pop("norm.bias")
    elif missing_final_norm == "identity":
        target["vit.layernorm.weight"] = torch.ones(hidden, dtype=kernel.dtype)
        target["vit.layernorm.bias"] = torch.zeros(hidden, dtype=kernel.dtype)
        notes.append(
            "The source has no final LayerNorm weights; as its reference loader does, the final "
            "LayerNorm keeps weight 1 and bias 0."
        )
    else:
        raise UnsupportedSourceError(
            "The source has no final LayerNorm (norm.weight/norm.bias). If its reference loader "
            "leaves that norm at its initial values, pass missing_final_norm='identity'."
        )

    metadata = {_METADATA[k]: src.pop(k).reshape(1) for k in list(src) if k in _METADATA}
    unknown = [k for k in src if re.search(r"(temporal|location)_embed", k)]
    if unknown:
        raise UnsupportedSourceError(
            f"Time/location encoder weights {unknown} are not Prithvi-EO-2.0's (one scale each)."
        )
    tokens_per_frame_sq = None
    pos = src.pop("pos_embed", None)
    frames = num_frames // tubelet
    if pos is not None and pos.shape[-1] == hidden:
        tokens = pos.reshape(-1, hidden).shape[0] - 1
        tokens_per_frame_sq = tokens // frames
    grid = math.isqrt(tokens_per_frame_sq) if tokens_per_frame_sq else 0
    if grid == 0 or grid * grid * frames + 1 != pos.reshape(-1, hidden).shape[0]:
        shape = None if pos is None else tuple(pos.shape)
        raise UnsupportedSourceError(
            f"pos_embed must hold 1 + {frames} x grid^2 rows of width {hidden} (cls token, then a "
            f"square grid per tubelet): found {shape}. (SatMAE's temporal model stores a "
            "narrower table and concatenates a timestamp encoding, which does not map.)"
        )
    mode, learned = _positions(pos, frames, grid, hidden, "pos_embed")

    decoder = "decoder_embed.weight" in src and not encoder_only
    dec_hidden = None
    if decoder:
        if decoder_num_heads is None:
            raise UnsupportedSourceError(
                "The source has an MAE decoder: pass decoder_num_heads (MAE and Prithvi use 16)."
            )
        dec_hidden = src["decoder_embed.weight"].shape[0]
        dec_target, dec_depth = _stack(
            src, "decoder_blocks.", "decoder.decoder_layers.layers.", "Decoder"
        )
        target.update(dec_target)
        for ours, theirs in (
            ("decoder.decoder_embed", "decoder_embed"),
            ("decoder.decoder_norm", "decoder_norm"),
            ("decoder.decoder_pred", "decoder_pred"),
        ):
            for part in ("weight", "bias"):
                key = f"{theirs}.{part}"
                if key not in src:
                    raise UnsupportedSourceError(f"The source's MAE decoder lacks {key}.")
                target[f"{ours}.{part}"] = src.pop(key)
        if "mask_token" not in src:
            raise UnsupportedSourceError("The source's MAE decoder lacks mask_token.")
        target["decoder.mask_token"] = src.pop("mask_token").reshape(1, 1, dec_hidden)
        dec_pos = src.pop("decoder_pos_embed", None)
        dec_mode, dec_learned = _positions(dec_pos, frames, grid, dec_hidden, "decoder_pos_embed")
        if dec_mode != mode:
            # One option covers both stacks: keep both tables as stored (exact).
            mode, learned = "learned", pos.reshape(1, -1, hidden)
            dec_learned = dec_pos.reshape(1, -1, dec_hidden)
        if mode == "learned":
            target["decoder.decoder_position_embeddings"] = dec_learned
        expected_pred = tubelet * patch * patch * channels
        if target["decoder.decoder_pred.weight"].shape[0] != expected_pred:
            raise UnsupportedSourceError(
                f"decoder_pred predicts {target['decoder.decoder_pred.weight'].shape[0]} values per "
                f"token; an MAE decoder for {channels} bands, {tubelet}x{patch}x{patch} patches "
                f"predicts {expected_pred}."
            )
    else:
        leftovers = [k for k in src if k.startswith(("decoder_", "mask_token"))]
        for key in leftovers:
            src.pop(key)
        if leftovers:
            notes.append("Kept the encoder only (encoder_only=True): the MAE decoder was dropped.")
    if require_position is not None and mode != require_position:
        raise UnsupportedSourceError(
            f"The stored position tables are not the fixed {require_position!r} table this "
            "source's reference code computes: the checkpoint does not match its architecture."
        )
    if mode == "learned":
        target["vit.embeddings.position_embeddings"] = learned
        notes.append(
            "The source's position embedding table is not a fixed sin-cos table: it is kept as "
            "a stored table (position_embedding='learned')."
        )
    if src:
        raise UnsupportedSourceError(f"Source weights with no place in geofm_hf: {sorted(src)}.")
    if not decoder:
        metadata = {k: v for k, v in metadata.items() if k.startswith("vit.")}
    if metadata:
        has = {
            kind: any(f".{kind}_embedding." in k for k in metadata)
            for kind in ("temporal", "location")
        }
        for kind, present in has.items():
            in_decoder = f"decoder.{kind}_embedding.scale" in metadata
            if decoder and present and not in_decoder:
                raise UnsupportedSourceError(
                    f"The source encodes {kind} in the encoder but not in the decoder; "
                    "Prithvi-EO-2.0 does both."
                )
        target.update(metadata)
        notes.append(
            "Time/location encodings as in Prithvi-EO-2.0 (metadata_encoding='prithvi'): pass "
            "temporal_coords (B, T, 2) as (year, day of year) and location_coords (B, 2) as "
            "(lat, lon); either may be left out, as in Prithvi."
        )

    block = "vit.encoder.layers.0."
    qk_norm = f"{block}attention.q_norm.weight" in target
    fields = {
        "hidden_size": hidden,
        "num_hidden_layers": depth,
        "num_attention_heads": num_heads,
        "intermediate_size": target[f"{block}mlp.fc1.weight"].shape[0],
        "hidden_act": hidden_act,
        "layer_norm_eps": layer_norm_eps,
        "image_size": grid * patch,
        "patch_size": patch,
        "num_channels": channels,
        "qkv_bias": f"{block}attention.qkv.bias" in target,
        "qk_norm": qk_norm,
        "num_frames": num_frames,
        "tubelet_size": tubelet,
        "position_embedding": mode,
        "temporal_encoding": has["temporal"] if metadata else False,
        "location_encoding": has["location"] if metadata else False,
        "metadata_encoding": "prithvi" if metadata else "harmonics",
        "pooling": pooling,
        "mask_ratio": mask_ratio,
        "norm_pix_loss": norm_pix_loss,
        **{k: v for k, v in band_contract.items() if v is not None},
    }
    if decoder:
        dec_block = "decoder.decoder_layers.layers.0."
        fields.update(
            decoder_hidden_size=dec_hidden,
            decoder_num_hidden_layers=dec_depth,
            decoder_num_attention_heads=decoder_num_heads,
            decoder_intermediate_size=target[f"{dec_block}mlp.fc1.weight"].shape[0],
        )
        if (f"{dec_block}attention.qkv.bias" in target) != fields["qkv_bias"]:
            raise UnsupportedSourceError("The encoder and decoder disagree on the qkv bias.")
    try:
        config = GeoViTMAEConfig(**fields)
    except ValueError as e:
        raise UnsupportedSourceError(f"The source's shape does not make a valid config: {e}") from e
    if not decoder:
        target = {k[len("vit.") :]: v for k, v in target.items()}
    model = (GeoViTMAEForPreTraining if decoder else GeoViTMAEModel)(config)
    dtype = kernel.dtype
    missing, unexpected = model.load_state_dict(target, strict=False)
    if missing or unexpected:
        raise UnsupportedSourceError(
            f"Converted weights do not fill the model: missing {sorted(missing)}, unexpected "
            f"{sorted(unexpected)}."
        )
    return Conversion(model.to(dtype).eval(), notes)


__all__ = ["Conversion", "UnsupportedSourceError", "convert_mae_layout", "is_mae_layout"]
