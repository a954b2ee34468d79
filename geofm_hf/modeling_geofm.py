"""Geospatial ViT-MAE: encoder, MAE decoder, pretraining and classification heads.

This file is copied next to the weights by ``save_pretrained`` (remote code), so it must only
import ``torch``, ``transformers``, the standard library and ``.configuration_geofm``.

Shapes: B batch, C bands, H/W pixels, p patch side, L = (H/p)(W/p) patches, K kept patches,
D encoder width, Dd decoder width, Hn heads, Dh head dim.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import ImageClassifierOutput, SemanticSegmenterOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_geofm import GeoViTMAEConfig


@dataclass
class GeoViTMAEModelOutput(ModelOutput):
    """Output of :class:`GeoViTMAEModel`.

    Args:
        last_hidden_state: ``(B, 1 + K, D)`` encoder output after the final LayerNorm; the cls
            token first. ``K = L`` without masking.
        pooler_output: ``(B, D)`` image feature, per ``config.pooling`` (cls token or mean of
            patch tokens).
        mask: ``(B, L)`` 1 where a patch was masked, 0 where kept; ``None`` without masking.
        ids_restore: ``(B, L)`` inverse of the masking permutation; ``None`` without masking.
        hidden_states: input of every block plus the final output, when requested.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.LongTensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class GeoViTMAEForPreTrainingOutput(ModelOutput):
    """Output of :class:`GeoViTMAEForPreTraining`.

    Args:
        loss: scalar mean squared error over the masked patches.
        logits: ``(B, L, p * p * C)`` reconstructed patches, in ``patchify`` layout.
        mask: ``(B, L)`` 1 where masked.
        ids_restore: ``(B, L)`` inverse of the masking permutation.
        hidden_states: encoder hidden states, when requested.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.LongTensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


def sincos_2d_position_embedding(
    grid_h: int,
    grid_w: int,
    dim: int,
    *,
    ref_grid: int | None = None,
    cls_token: bool = True,
) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding, ``(1 [+ 1] + grid_h * grid_w, dim)``, float32.

    The layout is MAE's: ``[sin(w) | cos(w) | sin(h) | cos(h)]`` per token, row-major patches, a
    zero row for the cls token; identical to the table transformers' ViTMAE stores, so weights move
    between the two unchanged. The embedding is a continuous function of position, so a grid of
    another size is *interpolated* exactly by evaluating it at fractional positions spanning the
    ``ref_grid`` the model was trained on (no bicubic resampling of a table).
    """
    if dim % 4 != 0:
        raise ValueError(f"Position embedding width must be divisible by 4: found {dim}.")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # (dim/4,)
    scale_h = ref_grid / grid_h if ref_grid else 1.0
    scale_w = ref_grid / grid_w if ref_grid else 1.0
    pos_h = torch.arange(grid_h, dtype=torch.float64) * scale_h
    pos_w = torch.arange(grid_w, dtype=torch.float64) * scale_w
    hh, ww = torch.meshgrid(pos_h, pos_w, indexing="ij")  # (grid_h, grid_w) each
    out_w = ww.reshape(-1, 1) * omega  # (L, dim/4)
    out_h = hh.reshape(-1, 1) * omega  # (L, dim/4)
    emb = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)  # (L, dim)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)  # (1 + L, dim)
    return emb.float()


class _PositionEmbeddingCache:
    """Computes the fixed sin-cos tables on first use, per grid and device.

    They are not buffers: a model built on the ``meta`` device (15B planning, FSDP init) has no
    values to materialise, and checkpoints stay free of constants.
    """

    def __init__(self, dim: int, ref_grid: int) -> None:
        self.dim = dim
        self.ref_grid = ref_grid
        self._tables: dict[tuple, torch.Tensor] = {}

    def get(
        self, grid_h: int, grid_w: int, device: torch.device, interpolate: bool
    ) -> torch.Tensor:
        ref = self.ref_grid if interpolate and (grid_h, grid_w) != (self.ref_grid,) * 2 else None
        key = (grid_h, grid_w, ref, device)
        table = self._tables.get(key)
        if table is None:
            table = sincos_2d_position_embedding(grid_h, grid_w, self.dim, ref_grid=ref)
            table = table.unsqueeze(0).to(device)  # (1, 1 + L, dim)
            self._tables[key] = table
        return table


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention: ``(B, Hn, N, Dh)`` in, ``(B, N, Hn, Dh)`` out (the SDPA layout)."""
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, Hn, N, N)
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (B, N, Hn, Dh)
    return output, weights


class GeoViTMAEAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection and optional QK-LayerNorm."""

    def __init__(self, config: GeoViTMAEConfig, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        # transformers' SDPA wrapper reads this: without it the attention silently becomes causal.
        self.is_causal = False
        self.dropout = config.attention_probs_dropout_prob
        # One (D -> 3D) matmul instead of three: fewer, larger GEMMs are faster on every backend.
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=config.qkv_bias)
        if config.qk_norm:
            self.q_norm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps)
            self.k_norm = nn.LayerNorm(self.head_dim, eps=config.layer_norm_eps)
        else:
            self.q_norm = self.k_norm = None
        self.o_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, tokens, width = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, Hn, N, Dh)
        if self.q_norm is not None:
            query, key = self.q_norm(query), self.k_norm(key)
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, weights = attention(
            self,
            query,
            key,
            value,
            None,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
        )  # (B, N, Hn, Dh)
        return self.o_proj(output.reshape(batch, tokens, width)), weights


class GeoViTMAEMLP(nn.Module):
    def __init__(self, config: GeoViTMAEConfig, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class GeoViTMAELayer(nn.Module):
    """Pre-norm transformer block; the unit FSDP wraps and activation checkpointing recomputes."""

    def __init__(
        self, config: GeoViTMAEConfig, hidden_size: int, num_heads: int, intermediate_size: int
    ) -> None:
        super().__init__()
        self.layernorm_before = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.attention = GeoViTMAEAttention(config, hidden_size, num_heads)
        self.layernorm_after = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = GeoViTMAEMLP(config, hidden_size, intermediate_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attention(self.layernorm_before(hidden_states))
        hidden_states = hidden_states + self.dropout(attended)
        return hidden_states + self.dropout(self.mlp(self.layernorm_after(hidden_states)))


class GeoViTMAEStack(nn.Module):
    """A stack of blocks with activation checkpointing (encoder and decoder share it)."""

    def __init__(
        self,
        config: GeoViTMAEConfig,
        num_layers: int,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            GeoViTMAELayer(config, hidden_size, num_heads, intermediate_size)
            for _ in range(num_layers)
        )
        # `PreTrainedModel.gradient_checkpointing_enable` flips this flag and sets
        # `_gradient_checkpointing_func` on every module that has it.
        self.gradient_checkpointing = False

    def forward(
        self, hidden_states: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        all_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                hidden_states = self._gradient_checkpointing_func(layer.__call__, hidden_states)
            else:
                hidden_states = layer(hidden_states)
            if output_hidden_states:
                all_states = (*all_states, hidden_states)
        return hidden_states, all_states


class GeoViTMAEPatchEmbeddings(nn.Module):
    """``(B, C, H, W)`` pixels -> ``(B, L, D)`` patch tokens."""

    def __init__(self, config: GeoViTMAEConfig) -> None:
        super().__init__()
        self.num_channels = config.num_channels
        self.patch_size = config.patch_size
        self.projection = nn.Conv2d(
            config.num_channels,
            config.hidden_size,
            kernel_size=config.patch_size,
            stride=config.patch_size,
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projection(pixel_values).flatten(2).transpose(1, 2)  # (B, L, D)


class GeoViTMAEEmbeddings(nn.Module):
    """Patch tokens plus fixed sin-cos positions, and the cls token."""

    def __init__(self, config: GeoViTMAEConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embeddings = GeoViTMAEPatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.positions = _PositionEmbeddingCache(
            config.hidden_size, config.image_size // config.patch_size
        )

    def forward(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns patch tokens ``(B, L, D)`` and the cls token ``(1, 1, D)``, positions added."""
        grid_h = pixel_values.shape[2] // self.config.patch_size
        grid_w = pixel_values.shape[3] // self.config.patch_size
        table = self.positions.get(grid_h, grid_w, pixel_values.device, interpolate_pos_encoding)
        table = table.to(self.cls_token.dtype)  # (1, 1 + L, D)
        tokens = self.patch_embeddings(pixel_values) + table[:, 1:]  # (B, L, D)
        return tokens, self.cls_token + table[:, :1]


def random_masking(
    tokens: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keeps a random ``1 - mask_ratio`` of the tokens of each sample (MAE's argsort shuffle).

    ``noise`` ``(B, L)`` makes the choice injectable: the lowest-noise patches are kept.
    Returns kept tokens ``(B, K, D)``, mask ``(B, L)`` (1 = masked) and ids_restore ``(B, L)``.
    """
    batch, length, width = tokens.shape
    len_keep = int(length * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(batch, length, device=tokens.device)
    elif noise.shape != (batch, length):
        raise ValueError(
            f"noise must have shape (batch, num_patches) = {(batch, length)}: found "
            f"{tuple(noise.shape)}."
        )
    ids_shuffle = torch.argsort(noise.to(tokens.device), dim=1)  # (B, L) ascending noise
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # (B, L)
    ids_keep = ids_shuffle[:, :len_keep]  # (B, K)
    kept = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, width))  # (B, K, D)
    mask = torch.ones(batch, length, device=tokens.device, dtype=tokens.dtype)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # (B, L) back in patch order
    return kept, mask, ids_restore


_AUTO_MAP = {
    "AutoConfig": "configuration_geofm.GeoViTMAEConfig",
    "AutoModel": "modeling_geofm.GeoViTMAEModel",
    "AutoModelForPreTraining": "modeling_geofm.GeoViTMAEForPreTraining",
    "AutoModelForImageClassification": "modeling_geofm.GeoViTMAEForImageClassification",
    "AutoModelForSemanticSegmentation": "modeling_geofm.GeoViTMAEForSemanticSegmentation",
}


_CUSTOM_PIPELINE = {
    "impl": "pipeline_geofm.GeoViTMAEFeatureExtractionPipeline",
    "pt": ["AutoModel"],
    "type": "image",
}


class GeoViTMAEPreTrainedModel(PreTrainedModel):
    """Weight init, the Auto-class glue and the FSDP wrap unit shared by all heads."""

    config_class = GeoViTMAEConfig
    config: GeoViTMAEConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    # FSDP (accelerate's TRANSFORMER_BASED_WRAP) shards by this block class.
    _no_split_modules = ["GeoViTMAELayer"]
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained``, with every head in ``auto_map``.

        transformers only records the class being saved; a pretraining checkpoint must also load
        through ``AutoModel`` (the encoder) with ``trust_remote_code=True``.
        """
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.update(_AUTO_MAP)
        self.config.auto_map = auto_map
        # The feature-extraction pipeline for multispectral arrays travels with the weights.
        pipeline_file = Path(__file__).with_name("pipeline_geofm.py")
        if pipeline_file.is_file():
            self.config.custom_pipelines = {"image-feature-extraction": _CUSTOM_PIPELINE}
        out = super().save_pretrained(save_directory, *args, **kwargs)
        if pipeline_file.is_file():
            shutil.copyfile(pipeline_file, Path(save_directory) / pipeline_file.name)
        return out

    def _init_weights(self, module: nn.Module) -> None:
        # MAE's init: xavier-uniform linears (and the patch projection seen as a linear), zero
        # biases, unit norms, N(0, 0.02) tokens. `init` respects already-loaded weights.
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, GeoViTMAEEmbeddings):
            init.normal_(module.cls_token, std=std)
        elif isinstance(module, GeoViTMAEDecoder):
            init.normal_(module.mask_token, std=std)


def _check_pixel_values(config: GeoViTMAEConfig, pixel_values: torch.Tensor, interpolate: bool):
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must be (batch, channels, height, width): found shape "
            f"{tuple(pixel_values.shape)}."
        )
    channels, height, width = pixel_values.shape[1:]
    if channels != config.num_channels:
        bands = f" ({', '.join(config.band_names)})" if config.band_names else ""
        raise ValueError(
            f"Expected {config.num_channels} input bands{bands}, found {channels}. Use "
            "GeoViTMAEImageProcessor to select and order bands by name."
        )
    patch = config.patch_size
    if height % patch or width % patch:
        raise ValueError(
            f"Image size must be divisible by the patch size {patch}: found {height}x{width}."
        )
    if not interpolate and (height, width) != (config.image_size, config.image_size):
        raise ValueError(
            f"Expected {config.image_size}x{config.image_size} images, found {height}x{width}; "
            "pass interpolate_pos_encoding=True to run at another size."
        )


def _apply_pixel_mask(pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    batch, _, height, width = pixel_values.shape
    if tuple(pixel_mask.shape) != (batch, height, width):
        raise ValueError(
            f"pixel_mask must be (B, H, W) = {(batch, height, width)} for pixel_values of shape "
            f"{tuple(pixel_values.shape)}: found {tuple(pixel_mask.shape)}."
        )
    valid = pixel_mask.to(device=pixel_values.device, dtype=torch.bool)[:, None]
    return torch.where(valid, pixel_values, torch.zeros((), dtype=pixel_values.dtype,
                                                        device=pixel_values.device))  # fmt: skip


class GeoViTMAEModel(GeoViTMAEPreTrainedModel):
    """The encoder. Without ``mask_ratio`` it sees every patch (feature extraction)."""

    # Loading the encoder alone from a pretraining checkpoint leaves the MAE decoder behind.
    _keys_to_ignore_on_load_unexpected = [r"^decoder\."]

    def __init__(self, config: GeoViTMAEConfig) -> None:
        super().__init__(config)
        self.embeddings = GeoViTMAEEmbeddings(config)
        self.encoder = GeoViTMAEStack(
            config,
            config.num_hidden_layers,
            config.hidden_size,
            config.num_attention_heads,
            config.intermediate_size,
        )
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        pixel_mask: torch.Tensor | None = None,
    ) -> GeoViTMAEModelOutput | tuple:
        """Encodes ``pixel_values`` ``(B, C, H, W)``, optionally masking ``mask_ratio`` of the
        patches (``noise`` ``(B, L)`` fixes which). ``pixel_mask`` ``(B, H, W)`` (1 = valid, as
        the image processor and the pretraining stream return it) sets invalid pixels to 0, the
        normalised band mean, so fill values and NaN never enter the network."""
        _check_pixel_values(self.config, pixel_values, interpolate_pos_encoding)
        if pixel_mask is not None:
            pixel_values = _apply_pixel_mask(pixel_values, pixel_mask)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        tokens, cls_token = self.embeddings(pixel_values, interpolate_pos_encoding)  # (B, L, D)
        mask = ids_restore = None
        if mask_ratio:
            tokens, mask, ids_restore = random_masking(tokens, mask_ratio, noise)  # (B, K, D)
        tokens = torch.cat([cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        hidden, all_states = self.encoder(tokens, output_hidden_states)  # (B, 1 + K, D)
        hidden = self.layernorm(hidden)
        pooled = hidden[:, 0] if self.config.pooling == "cls" else hidden[:, 1:].mean(dim=1)
        output = GeoViTMAEModelOutput(
            last_hidden_state=hidden,
            pooler_output=pooled,
            mask=mask,
            ids_restore=ids_restore,
            hidden_states=all_states,
        )
        return output if return_dict is not False else output.to_tuple()


class GeoViTMAEDecoder(nn.Module):
    """MAE decoder: kept tokens + mask tokens, unshuffled, -> per-patch pixel predictions."""

    def __init__(self, config: GeoViTMAEConfig) -> None:
        super().__init__()
        self.config = config
        self.decoder_embed = nn.Linear(config.hidden_size, config.decoder_hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_hidden_size))
        self.decoder_layers = GeoViTMAEStack(
            config,
            config.decoder_num_hidden_layers,
            config.decoder_hidden_size,
            config.decoder_num_attention_heads,
            config.decoder_intermediate_size,
        )
        self.decoder_norm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        self.decoder_pred = nn.Linear(
            config.decoder_hidden_size, config.patch_size**2 * config.num_channels
        )
        self.positions = _PositionEmbeddingCache(
            config.decoder_hidden_size, config.image_size // config.patch_size
        )

    def forward(
        self,
        latent: torch.Tensor,
        ids_restore: torch.Tensor,
        grid: tuple[int, int],
        interpolate_pos_encoding: bool = False,
    ) -> torch.Tensor:
        """``latent`` ``(B, 1 + K, D)`` -> logits ``(B, L, p * p * C)``."""
        hidden = self.decoder_embed(latent)  # (B, 1 + K, Dd)
        batch, kept, width = hidden.shape
        length = ids_restore.shape[1]
        mask_tokens = self.mask_token.expand(batch, length + 1 - kept, -1)  # (B, L - K, Dd)
        patches = torch.cat([hidden[:, 1:], mask_tokens], dim=1)  # (B, L, Dd) shuffled order
        patches = torch.gather(
            patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, width)
        )  # (B, L, Dd) patch order
        hidden = torch.cat([hidden[:, :1], patches], dim=1)  # (B, 1 + L, Dd)
        table = self.positions.get(*grid, hidden.device, interpolate_pos_encoding)
        hidden = hidden + table.to(hidden.dtype)
        hidden, _ = self.decoder_layers(hidden)
        return self.decoder_pred(self.decoder_norm(hidden))[:, 1:]  # (B, L, p*p*C)


class GeoViTMAEForPreTraining(GeoViTMAEPreTrainedModel):
    """Masked-autoencoder pretraining: encoder on the kept patches, decoder on all of them, loss on
    the masked ones."""

    def __init__(self, config: GeoViTMAEConfig) -> None:
        super().__init__(config)
        self.vit = GeoViTMAEModel(config)
        self.decoder = GeoViTMAEDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vit.embeddings.patch_embeddings

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, L, p * p * C)``, channels last inside a patch (MAE layout)."""
        batch, channels, height, width = pixel_values.shape
        p = self.config.patch_size
        x = pixel_values.reshape(batch, channels, height // p, p, width // p, p)
        x = x.permute(0, 2, 4, 3, 5, 1)  # (B, H/p, W/p, p, p, C)
        return x.reshape(batch, (height // p) * (width // p), p * p * channels)

    def unpatchify(
        self, patches: torch.Tensor, image_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """``(B, L, p * p * C)`` -> ``(B, C, H, W)``; the inverse of :meth:`patchify`."""
        height, width = image_size or (self.config.image_size, self.config.image_size)
        p, channels = self.config.patch_size, self.config.num_channels
        grid_h, grid_w = height // p, width // p
        if grid_h * grid_w != patches.shape[1] or patches.shape[2] != p * p * channels:
            raise ValueError(
                f"Expected patches of shape (B, {grid_h * grid_w}, {p * p * channels}) for a "
                f"{height}x{width} image, found {tuple(patches.shape)}."
            )
        x = patches.reshape(patches.shape[0], grid_h, grid_w, p, p, channels)
        x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, H/p, p, W/p, p)
        return x.reshape(patches.shape[0], channels, height, width)

    def forward_loss(
        self,
        pixel_values: torch.Tensor,
        logits: torch.Tensor,
        mask: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean squared error per patch, averaged over the masked patches only.

        With ``pixel_mask`` ``(B, H, W)`` (1 = valid) only valid pixels count: the error is
        averaged over the valid pixel values of the masked patches (``norm_pix_loss`` uses the
        valid pixels' mean/variance); a batch with no valid masked pixel gives a zero loss.
        """
        target = self.patchify(pixel_values).to(logits.dtype)  # (B, L, p*p*C)
        if pixel_mask is None:
            if self.config.norm_pix_loss:
                mean = target.mean(dim=-1, keepdim=True)
                var = target.var(dim=-1, keepdim=True)
                target = (target - mean) / (var + 1.0e-6) ** 0.5
            per_patch = ((logits - target) ** 2).mean(dim=-1)  # (B, L)
            return (per_patch * mask).sum() / mask.sum()
        channels = pixel_values.shape[1]
        valid = pixel_mask.to(device=target.device, dtype=target.dtype)[:, None]
        valid = self.patchify(valid.expand(-1, channels, -1, -1))  # (B, L, p*p*C)
        # NaN/fill under invalid pixels must not reach the sums (NaN * 0 is NaN).
        target = torch.where(valid > 0, target, torch.zeros_like(target))
        if self.config.norm_pix_loss:
            count = valid.sum(dim=-1, keepdim=True)
            mean = target.sum(dim=-1, keepdim=True) / count.clamp_min(1)
            var = (((target - mean) * valid) ** 2).sum(dim=-1, keepdim=True) / (
                count - 1
            ).clamp_min(1)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        weight = valid * mask.unsqueeze(-1)
        return (((logits - target) ** 2) * weight).sum() / weight.sum().clamp_min(1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        pixel_mask: torch.Tensor | None = None,
    ) -> GeoViTMAEForPreTrainingOutput | tuple:
        """MAE step on ``pixel_values`` ``(B, C, H, W)``; ``noise`` ``(B, L)`` fixes the mask.
        ``pixel_mask`` ``(B, H, W)`` (1 = valid) keeps invalid pixels out of the input and the
        loss."""
        if pixel_mask is not None:
            pixel_values = _apply_pixel_mask(pixel_values, pixel_mask)
        encoded = self.vit(
            pixel_values,
            noise=noise,
            mask_ratio=self.config.mask_ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=output_hidden_states,
        )
        p = self.config.patch_size
        grid = (pixel_values.shape[2] // p, pixel_values.shape[3] // p)
        logits = self.decoder(
            encoded.last_hidden_state, encoded.ids_restore, grid, interpolate_pos_encoding
        )
        # The loss is taken in float32 even under autocast: MSE of near-equal numbers in bf16
        # loses most of its mantissa.
        loss = self.forward_loss(
            pixel_values.float(), logits.float(), encoded.mask.float(), pixel_mask
        )
        output = GeoViTMAEForPreTrainingOutput(
            loss=loss,
            logits=logits,
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            hidden_states=encoded.hidden_states,
        )
        return output if return_dict is not False else output.to_tuple()


class GeoViTMAEForImageClassification(GeoViTMAEPreTrainedModel):
    """Encoder (no masking) + a linear head on the pooled feature (``config.pooling``)."""

    def __init__(self, config: GeoViTMAEConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = GeoViTMAEModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vit.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        pixel_mask: torch.Tensor | None = None,
    ) -> ImageClassifierOutput | tuple:
        """Class logits ``(B, num_labels)``; cross-entropy (or BCE for multi-label) with labels.
        ``pixel_mask`` ``(B, H, W)`` (1 = valid) sets invalid pixels to the band mean."""
        encoded = self.vit(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=output_hidden_states,
            pixel_mask=pixel_mask,
        )
        logits = self.classifier(encoded.pooler_output)  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.config.problem_type == "multi_label_classification":
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels.to(logits.device).long())
        output = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=encoded.hidden_states
        )
        return output if return_dict is not False else output.to_tuple()


def select_input_bands(
    model: GeoViTMAEPreTrainedModel, band_names: list[str], processor: Any = None
) -> None:
    """Restricts a model, in place, to an explicit subset of its input bands.

    The patch projection keeps the input channels of the named bands (in the given order) and the
    config's band contract is narrowed to match: an RGB dataset on a multispectral model uses the
    weights learnt for those very bands instead of zero-filled inputs. For a pretraining model the
    decoder's output channels are narrowed the same way. ``processor`` (the model's
    :class:`GeoViTMAEImageProcessor`) is narrowed to the same bands in the same call; a processor
    loaded later from the saved model follows its narrowed config.
    """
    config = model.config
    if not config.band_names:
        raise ValueError(
            "The model's config has no band_names, so bands cannot be selected by name: expected "
            f"a config with band_names, found None (num_channels={config.num_channels})."
        )
    missing = [b for b in band_names if b not in config.band_names]
    if missing:
        raise ValueError(f"Bands {missing} are not among the model's bands {config.band_names}.")
    if len(set(band_names)) != len(band_names):
        raise ValueError(f"band_names must be unique: found {band_names}.")
    index = [config.band_names.index(b) for b in band_names]
    idx = torch.tensor(index)
    base = model.vit if hasattr(model, "vit") else model
    conv = base.embeddings.patch_embeddings.projection
    new_conv = nn.Conv2d(len(index), conv.out_channels, conv.kernel_size, conv.stride)
    with torch.no_grad():
        new_conv.weight.copy_(conv.weight[:, idx.to(conv.weight.device)])
        new_conv.bias.copy_(conv.bias)
    base.embeddings.patch_embeddings.projection = new_conv.to(conv.weight.device, conv.weight.dtype)
    base.embeddings.patch_embeddings.num_channels = len(index)
    decoder = getattr(model, "decoder", None)
    if decoder is not None:
        p2 = config.patch_size**2
        old = decoder.decoder_pred
        # patchify puts channels last inside a patch: output unit = pixel * C + channel.
        rows = torch.tensor([pix * config.num_channels + c for pix in range(p2) for c in index])
        new_pred = nn.Linear(old.in_features, p2 * len(index))
        with torch.no_grad():
            new_pred.weight.copy_(old.weight[rows.to(old.weight.device)])
            new_pred.bias.copy_(old.bias[rows.to(old.bias.device)])
        decoder.decoder_pred = new_pred.to(old.weight.device, old.weight.dtype)
    old_bands = list(config.band_names)
    for field in ("band_names", "wavelengths_um", "gsd_m", "image_mean", "image_std"):
        values = getattr(config, field)
        if values is not None:
            setattr(config, field, [values[i] for i in index])
    config.num_channels = len(index)
    if processor is not None:
        processor.select_bands(band_names, reference=old_bands)


def count_parameters(model: nn.Module, encoder_only: bool = False) -> int:
    """Parameter count (works on the ``meta`` device); ``encoder_only`` counts ``vit`` alone."""
    module = getattr(model, "vit", model) if encoder_only else model
    return sum(p.numel() for p in module.parameters())


def flops_per_image(config: GeoViTMAEConfig, training: bool = True) -> float:
    """Matmul FLOPs of one MAE step per image (forward, x3 with backward), for MFU.

    Counts the GEMMs and attention products that dominate; norms and elementwise ops are
    omitted, as is customary for model-FLOPs utilisation.
    """
    length = config.num_patches
    kept = int(length * (1 - config.mask_ratio))

    def stack(tokens: int, width: int, mlp: int, layers: int) -> float:
        per_layer = 2 * tokens * (4 * width * width + 2 * width * mlp) + 4 * tokens * tokens * width
        return layers * per_layer

    patch = 2 * length * config.num_channels * config.patch_size**2 * config.hidden_size
    enc = stack(kept + 1, config.hidden_size, config.intermediate_size, config.num_hidden_layers)
    dec_embed = 2 * (kept + 1) * config.hidden_size * config.decoder_hidden_size
    dec = stack(
        length + 1,
        config.decoder_hidden_size,
        config.decoder_intermediate_size,
        config.decoder_num_hidden_layers,
    )
    pred = (
        2 * (length + 1) * config.decoder_hidden_size * config.patch_size**2 * config.num_channels
    )
    forward = patch + enc + dec_embed + dec + pred
    return 3 * forward if training else forward


__all__ = [
    "GeoViTMAEForImageClassification",
    "GeoViTMAEForPreTraining",
    "GeoViTMAEForPreTrainingOutput",
    "GeoViTMAEForSemanticSegmentation",
    "GeoViTMAELayer",
    "GeoViTMAEModel",
    "GeoViTMAEModelOutput",
    "GeoViTMAEPreTrainedModel",
    "count_parameters",
    "flops_per_image",
    "select_input_bands",
    "sincos_2d_position_embedding",
]


class GeoViTMAESegmentationHead(nn.Module):
    """UPerNet-style head over four encoder depths (as Prithvi/TerraTorch and ViTDet use a
    plain ViT): the token grids of four evenly spaced blocks become a pyramid at 4x, 2x, 1x and
    1/2x the patch grid, fused top-down (FPN), concatenated at the finest level and classified;
    the logits are upsampled to the input resolution."""

    def __init__(self, config: GeoViTMAEConfig) -> None:
        super().__init__()
        width, channels = config.hidden_size, config.segmentation_hidden_size

        def norm(ch: int) -> nn.Module:
            # GroupNorm, not BatchNorm: no running statistics to go stale at batch size 1-2 per
            # device, and nothing rank-dependent under FSDP.
            groups = max(g for g in range(1, 33) if ch % g == 0)
            return nn.GroupNorm(groups, ch)

        def up(times: int) -> nn.Module:
            layers: list[nn.Module] = []
            for i in range(times):
                layers.append(nn.ConvTranspose2d(width, width, 2, stride=2))
                if i < times - 1:
                    layers += [norm(width), nn.GELU()]
            return nn.Sequential(*layers)

        self.rescale = nn.ModuleList([up(2), up(1), nn.Identity(), nn.MaxPool2d(2)])
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, channels, 1, bias=False), norm(channels), nn.ReLU())
            for _ in range(4)
        )
        self.smooth = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                          norm(channels), nn.ReLU())
            for _ in range(4)
        )  # fmt: skip
        self.fuse = nn.Sequential(
            nn.Conv2d(4 * channels, channels, 3, padding=1, bias=False), norm(channels), nn.ReLU()
        )
        self.dropout = nn.Dropout2d(config.segmentation_dropout)
        self.classifier = nn.Conv2d(channels, config.num_labels, 1)

    def forward(self, grids: list[torch.Tensor]) -> torch.Tensor:
        """Four ``(B, D, h, w)`` token grids, shallow to deep -> ``(B, K, 4h, 4w)`` logits."""
        feats = [lat(scale(g)) for g, scale, lat in zip(grids, self.rescale, self.lateral)]
        for i in range(len(feats) - 1, 0, -1):  # top-down: coarse context into finer levels
            feats[i - 1] = feats[i - 1] + F.interpolate(
                feats[i], size=feats[i - 1].shape[-2:], mode="bilinear", align_corners=False
            )
        size = feats[0].shape[-2:]
        outs = [
            F.interpolate(sm(f), size=size, mode="bilinear", align_corners=False)
            for f, sm in zip(feats, self.smooth)
        ]
        return self.classifier(self.dropout(self.fuse(torch.cat(outs, dim=1))))


class GeoViTMAEForSemanticSegmentation(GeoViTMAEPreTrainedModel):
    """Encoder (no masking) + :class:`GeoViTMAESegmentationHead`; per-pixel class logits at the
    input resolution. Config fields (defaults written into the config on first use):
    ``segmentation_layers`` (four 1-based block indices; default evenly spaced, ending at the
    last), ``segmentation_hidden_size`` (256), ``segmentation_dropout`` (0.1) and
    ``semantic_loss_ignore_index`` (255, transformers' name)."""

    def __init__(self, config: GeoViTMAEConfig) -> None:
        depth = config.num_hidden_layers
        defaults = {
            "segmentation_layers": [max(1, round(depth * k / 4)) for k in (1, 2, 3, 4)],
            "segmentation_hidden_size": 256,
            "segmentation_dropout": 0.1,
            "semantic_loss_ignore_index": 255,
        }
        for key, value in defaults.items():
            if getattr(config, key, None) is None:
                setattr(config, key, value)
        layers = list(config.segmentation_layers)
        if len(layers) != 4 or not all(1 <= i <= depth for i in layers):
            raise ValueError(
                f"segmentation_layers must be four block indices in 1..{depth}: found {layers}."
            )
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = GeoViTMAEModel(config)
        self.decode_head = GeoViTMAESegmentationHead(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vit.embeddings.patch_embeddings

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.ConvTranspose2d):
            init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
            init.zeros_(module.bias)
        elif isinstance(module, nn.GroupNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SemanticSegmenterOutput | tuple:
        """Logits ``(B, num_labels, H, W)``; with ``labels`` ``(B, H, W)`` (class index, or
        ``semantic_loss_ignore_index`` for unlabelled pixels) the mean cross-entropy."""
        encoded = self.vit(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=True,
        )
        p = self.config.patch_size
        grid_h, grid_w = pixel_values.shape[2] // p, pixel_values.shape[3] // p
        grids = []
        for i in self.config.segmentation_layers:
            # hidden_states[i] is block i's output (index 0 is the embedding); drop the cls token.
            tokens = encoded.hidden_states[i][:, 1:]  # (B, L, D)
            grids.append(tokens.transpose(1, 2).reshape(tokens.shape[0], -1, grid_h, grid_w))
        logits = self.decode_head(grids)  # (B, K, 4h, 4w)
        logits = F.interpolate(
            logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False
        )  # (B, K, H, W)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.float(),
                labels.to(logits.device).long(),
                ignore_index=self.config.semantic_loss_ignore_index,
            )
        output = SemanticSegmenterOutput(
            loss=loss,
            logits=logits,
            hidden_states=encoded.hidden_states if output_hidden_states else None,
        )
        return output if return_dict is not False else output.to_tuple()
