"""Geospatial ViT-MAE: encoder, MAE decoder, pretraining and classification heads.

This file is copied next to the weights by ``save_pretrained`` (remote code), so it must only
import ``torch``, ``transformers``, the standard library and ``.configuration_geofm``.

Shapes: B batch, C bands, T frames, t tubelet frames, H/W pixels, p patch side,
L = (T/t)(H/p)(W/p) tokens (T = t = 1 for single images), K kept tokens, D encoder width,
Dd decoder width, E wavelength embedding width, Hn heads, Dh head dim.
"""

from __future__ import annotations

import functools
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

from .configuration_geofm import GeoViTMAEConfig, GeoViTMAEInputError, input_output_costs


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
        band_embedding: ``(C, E)`` or ``(B, C, E)`` wavelength embedding of the input bands
            (``patch_embedding="wavelength"`` only); the MAE decoder turns it into per-band
            output weights.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.LongTensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    band_embedding: torch.Tensor | None = None


@dataclass
class GeoViTMAEForPreTrainingOutput(ModelOutput):
    """Output of :class:`GeoViTMAEForPreTraining`.

    Args:
        loss: scalar mean squared error over the masked patches.
        logits: ``(B, L, p * p * C)`` reconstructed patches, in ``patchify`` layout.
        mask: ``(B, L)`` 1 where masked.
        ids_restore: ``(B, L)`` inverse of the masking permutation.
        hidden_states: encoder hidden states, when requested.
        loss_sum, loss_count: ``loss`` is their ratio: the squared errors summed over the masked
            patches' valid pixel values, and how many were summed (data-parallel training
            normalises by the count over all ranks).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.LongTensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    loss_sum: torch.Tensor | None = None
    loss_count: torch.Tensor | None = None


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


def sincos_3d_position_embedding(
    frames: int, grid_h: int, grid_w: int, dim: int, *, cls_token: bool = True
) -> torch.Tensor:
    """Prithvi's fixed 3D sin-cos table, ``(1 [+ 1] + frames * grid_h * grid_w, dim)``, float32.

    Tokens are ordered (tubelet, row, col); each row is ``[w | h | t]`` with ``6/16``, ``6/16``
    and ``4/16`` of the width, each part a 1D ``[sin | cos]`` of the integer index. Computed in
    float64 as the reference code does (NumPy), then cast.
    """
    if dim % 16 != 0:
        raise ValueError(
            f"3D sin-cos position embedding width must be divisible by 16: found {dim}."
        )

    def one_d(width: int, count: int) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(width // 2, dtype=torch.float64) / (width / 2.0))
        angles = torch.arange(count, dtype=torch.float64)[:, None] * omega  # (count, width/2)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (count, width)

    w_dim = h_dim = dim // 16 * 6
    t_dim = dim // 16 * 4
    w = one_d(w_dim, grid_w).repeat(frames * grid_h, 1)  # (T*h*w, w_dim)
    h = one_d(h_dim, grid_h).repeat_interleave(grid_w, dim=0).repeat(frames, 1)
    t = one_d(t_dim, frames).repeat_interleave(grid_h * grid_w, dim=0)
    emb = torch.cat([w, h, t], dim=1)  # (T*h*w, dim)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()


def _stored_or_3d_table(
    config: GeoViTMAEConfig,
    learned: nn.Parameter | None,
    cache: dict,
    dim: int,
    device: torch.device,
) -> torch.Tensor:
    """``(1, 1 + L, dim)`` positions of a ``"learned"`` or ``"sincos_3d"`` model (at image_size)."""
    if learned is not None:
        return learned
    table = cache.get(device)
    if table is None:
        grid = config.image_size // config.patch_size
        frames = config.num_frames // config.tubelet_size
        table = sincos_3d_position_embedding(frames, grid, grid, dim).unsqueeze(0).to(device)
        cache[device] = table
    return table


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
        if query.device.type == "cpu" and query.dtype == torch.bfloat16 and torch.is_grad_enabled():
            # PyTorch's fused CPU attention has a slow bf16 backward (vit-base decoder: 9x its
            # forward); the plain matmul-softmax-matmul trains ~1.3x faster on AMX
            # (benchmarks/bench_model.py). Same maths; inference keeps the fused kernel.
            attention = eager_attention_forward
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


def _sincos_features(values: torch.Tensor, dim: int, max_period: float) -> torch.Tensor:
    """``(...)`` scalars -> ``(...,  dim)`` float32 ``[sin | cos]`` at geometric frequencies."""
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=values.device) / half
    angles = values.float().unsqueeze(-1) / max_period**exponent  # (..., dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _harmonics(radians: torch.Tensor, count: int) -> torch.Tensor:
    """``(...)`` angles -> ``(..., 2 * count)``: sin/cos of 1..count times the angle (periodic)."""
    k = torch.arange(1, count + 1, dtype=torch.float32, device=radians.device)
    angles = radians.float().unsqueeze(-1) * k
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _gsd_position_table(
    grid_h: int, grid_w: int, dim: int, scale: torch.Tensor, ref_grid: int | None
) -> torch.Tensor:
    """Sin-cos positions at ground distance: ``scale`` ``(B,)`` -> ``(B, 1 + L, dim)`` float32.

    The same layout as :func:`sincos_2d_position_embedding`, with patch ``i`` placed at
    ``i * scale`` reference patches (Scale-MAE: ``scale = gsd / reference_gsd``).
    """
    scale_h = ref_grid / grid_h if ref_grid else 1.0
    scale_w = ref_grid / grid_w if ref_grid else 1.0
    device = scale.device
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32, device=device) / (dim // 4))
    pos_h = torch.arange(grid_h, dtype=torch.float32, device=device) * scale_h
    pos_w = torch.arange(grid_w, dtype=torch.float32, device=device) * scale_w
    hh, ww = torch.meshgrid(pos_h, pos_w, indexing="ij")  # (grid_h, grid_w)
    hh = hh.reshape(1, -1, 1) * scale.float().view(-1, 1, 1) * omega  # (B, L, dim/4)
    ww = ww.reshape(1, -1, 1) * scale.float().view(-1, 1, 1) * omega  # (B, L, dim/4)
    emb = torch.cat([ww.sin(), ww.cos(), hh.sin(), hh.cos()], dim=-1)  # (B, L, dim)
    return torch.cat([emb.new_zeros(emb.shape[0], 1, dim), emb], dim=1)  # (B, 1 + L, dim)


def _position_table(
    cache: _PositionEmbeddingCache,
    grid: tuple[int, int],
    device: torch.device,
    interpolate: bool,
    gsd_scale: torch.Tensor | None,
) -> torch.Tensor:
    """``(1 or B, 1 + L, dim)`` spatial positions, scaled by GSD when ``gsd_scale`` is given."""
    if gsd_scale is None:
        return cache.get(*grid, device, interpolate)
    ref = cache.ref_grid if interpolate and grid != (cache.ref_grid,) * 2 else None
    return _gsd_position_table(*grid, cache.dim, gsd_scale.to(device), ref)


def _add_space_time_positions(
    tokens: torch.Tensor, spatial: torch.Tensor, frames: int, dim: int
) -> torch.Tensor:
    """``tokens`` ``(B, L, D)`` ordered (tubelet, row, col) plus spatial ``(1|B, 1 + hw, D)``
    positions, and, for a time series, a 1D sin-cos position of the tubelet index."""
    batch = tokens.shape[0]
    spatial = spatial[:, 1:]  # (1|B, hw, D)
    if frames == 1:
        return tokens + spatial
    grid = tokens.view(batch, frames, -1, dim)  # (B, T/t, hw, D)
    index = torch.arange(frames, device=tokens.device)
    temporal = _sincos_features(index, dim, 10000.0).to(tokens.dtype)  # (T/t, D)
    grid = grid + spatial.unsqueeze(1) + temporal[None, :, None]
    return grid.reshape(batch, -1, dim)


class GeoViTMAEPatchEmbeddings(nn.Module):
    """``(B, C, H, W)`` pixels (or ``(B, T, C, H, W)`` with ``num_frames > 1``) -> ``(B, L, D)``
    tokens, through one learnt kernel per band."""

    def __init__(self, config: GeoViTMAEConfig) -> None:
        super().__init__()
        self.num_channels = config.num_channels
        self.patch_size = config.patch_size
        self.tubelet_size = config.tubelet_size
        self.video = config.num_frames > 1
        if self.video:
            kernel = (config.tubelet_size, config.patch_size, config.patch_size)
            self.projection = nn.Conv3d(
                config.num_channels, config.hidden_size, kernel_size=kernel, stride=kernel
            )
        else:
            self.projection = nn.Conv2d(
                config.num_channels,
                config.hidden_size,
                kernel_size=config.patch_size,
                stride=config.patch_size,
            )

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.video:
            pixel_values = pixel_values.transpose(1, 2)  # (B, C, T, H, W)
        # Contiguous, not a view: FSDP2 wraps this module as its own unit and warns at every
        # step on every rank that a view output could lose its backward hook to an in-place op.
        return self.projection(pixel_values).flatten(2).transpose(1, 2).contiguous()  # (B, L, D)


class GeoViTMAEWavelengthEncoder(nn.Module):
    """Each band's centre wavelength (and bandwidth) -> a band embedding ``(..., C, E)``.

    Wavelengths and bandwidths (micrometres) are encoded sin/cos in nanometres, then a small MLP
    learns the embedding. The encoder's patch kernels and the decoder's output weights are both
    generated from it.
    """

    def __init__(self, config: GeoViTMAEConfig) -> None:
        super().__init__()
        width = config.wavelength_embed_dim
        self.width = width
        self.fc1 = nn.Linear(width, width)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(width, width)

    def forward(
        self, wavelengths: torch.Tensor, bandwidths: torch.Tensor | None = None
    ) -> torch.Tensor:
        half = self.width // 2
        features = _sincos_features(wavelengths * 1000.0, half, 10000.0)  # (..., C, E/2)
        if bandwidths is None:
            # Unknown bandwidth: that half of the features is left at zero.
            width_features = torch.zeros_like(features)
        else:
            width_features = _sincos_features(bandwidths * 1000.0, half, 10000.0)
        features = torch.cat([features, width_features], dim=-1).to(self.fc1.weight.dtype)
        return self.fc2(self.act(self.fc1(features)))  # (..., C, E)


def _generate(
    band_embedding: torch.Tensor, weight_generator: nn.Linear, bias_generator: nn.Linear
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band weights and biases from the band embedding ``(..., C, E)``, in the generators'
    own dtype. Autocast would cast the weight generator (``E x D*p*p``, ~25M values at vit-base)
    to bf16 on every call to multiply only C rows: memory-bound work that took 3x the fp32
    forward on CPU. The conv or einsum that uses the result is still autocast."""
    with torch.autocast(band_embedding.device.type, enabled=False):
        embedding = band_embedding.to(weight_generator.weight.dtype)
        return weight_generator(embedding), bias_generator(embedding)


class GeoViTMAEWavelengthPatchEmbeddings(nn.Module):
    """Wavelength-conditioned patch embedding: per-band kernels and biases from a hypernetwork.

    The token of a patch is the sum over the bands present of each band's kernel applied to that
    band, plus each band's bias: one convolution with the generated ``(D, C, [t,] p, p)`` kernel.
    Permuting bands together with their wavelengths permutes the kernel's input channels the same
    way, so the output is unchanged.
    """

    def __init__(self, config: GeoViTMAEConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.tubelet_size = config.tubelet_size
        self.video = config.num_frames > 1
        self.hidden_size = config.hidden_size
        kernel = config.tubelet_size * config.patch_size**2
        self.weight_generator = nn.Linear(config.wavelength_embed_dim, kernel * config.hidden_size)
        self.bias_generator = nn.Linear(config.wavelength_embed_dim, config.hidden_size)

    def kernels(self, band_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., C, E)`` -> kernel ``(..., D, C, [t,] p, p)`` and bias ``(..., D)``."""
        p, t = self.patch_size, self.tubelet_size
        *lead, channels, _ = band_embedding.shape
        shape = (*lead, channels, self.hidden_size, t, p, p) if self.video else (
            *lead, channels, self.hidden_size, p, p
        )  # fmt: skip
        # (..., C, D, [t,] p, p) -> (..., D, C, [t,] p, p): the conv weight layout.
        channel_dim = -4 - int(self.video)
        weight, bias = _generate(band_embedding, self.weight_generator, self.bias_generator)
        weight = weight.view(shape).transpose(channel_dim, channel_dim + 1)
        return weight, bias.sum(dim=-2)  # bias (..., D)

    def forward(
        self,
        pixel_values: torch.Tensor,
        band_embedding: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        weight, bias = self.kernels(band_embedding)
        weight, bias = weight.to(pixel_values.dtype), bias.to(pixel_values.dtype)
        if self.video:
            pixel_values = pixel_values.transpose(1, 2)  # (B, C, T, H, W)
        conv = F.conv3d if self.video else F.conv2d
        stride = (self.tubelet_size, self.patch_size, self.patch_size) if self.video else (
            self.patch_size
        )  # fmt: skip
        if band_embedding.ndim == 2:  # one band set for the whole batch
            out = conv(pixel_values, weight, bias, stride=stride)  # (B, D, [T/t,] h, w)
            return out.flatten(2).transpose(1, 2)  # (B, L, D)
        # One band set per sample: a grouped convolution, one group per sample.
        batch = pixel_values.shape[0]
        grouped = pixel_values.reshape(1, -1, *pixel_values.shape[2:])  # (1, B*C, ...)
        out = conv(
            grouped, weight.flatten(0, 1), bias.flatten(), stride=stride, groups=batch
        )  # (1, B*D, ...)
        return out.view(batch, self.hidden_size, -1).transpose(1, 2)  # (B, L, D)


class GeoViTMAEMetadataEncoder(nn.Module):
    """Time (year, day of year) or place (lat, lon) -> sin/cos features -> learnt ``(..., D)``."""

    HARMONICS = 8

    def __init__(self, config: GeoViTMAEConfig, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.projection = nn.Linear(4 * self.HARMONICS, config.hidden_size)

    def forward(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., 2)`` -> encoding ``(..., D)`` and a validity mask ``(...)`` (no NaN)."""
        valid = ~torch.isnan(coords).any(dim=-1)
        coords = torch.nan_to_num(coords.float())
        first, second = coords.unbind(-1)
        if self.kind == "time":
            # Years are not periodic: geometric sin/cos over centuries; the season is periodic.
            features = torch.cat(
                [
                    _sincos_features(first, 2 * self.HARMONICS, 1000.0),
                    _harmonics(second * (2 * torch.pi / 365.25), self.HARMONICS),
                ],
                dim=-1,
            )
        else:
            features = torch.cat(
                [
                    _harmonics(torch.deg2rad(first), self.HARMONICS),
                    _harmonics(torch.deg2rad(second), self.HARMONICS),
                ],
                dim=-1,
            )
        encoded = self.projection(features.to(self.projection.weight.dtype))
        return encoded * valid.unsqueeze(-1).to(encoded.dtype), valid


class GeoViTMAEScaledSincosEncoder(nn.Module):
    """Prithvi-EO-2.0's time or location encoding (``metadata_encoding="prithvi"``): a fixed 1D
    sin-cos of each of the two values on half the width each, times one learnt scale.

    The arithmetic follows the reference (float32, ``pos * (1 / 10000 ** (i / n))``): at years
    ~2000 rad a different rounding order moves the sines by ~1e-4.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.first_width = width // 2
        self.second_width = width - self.first_width
        self.scale = nn.Parameter(torch.ones(1))

    @staticmethod
    def _sincos(values: torch.Tensor, width: int) -> torch.Tensor:
        omega = torch.arange(width // 2, dtype=torch.float32, device=values.device)
        omega = 1.0 / 10000 ** (omega / (width / 2.0))  # (width/2,)
        angles = values.float().reshape(-1, 1) * omega  # (M, width/2)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (M, width)

    def forward(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., 2)`` -> encoding ``(..., width)`` and a validity mask ``(...)`` (no NaN)."""
        valid = ~torch.isnan(coords).any(dim=-1)
        coords = torch.nan_to_num(coords.float())
        lead = coords.shape[:-1]
        first = self._sincos(coords[..., 0], self.first_width).view(*lead, -1)
        second = self._sincos(coords[..., 1], self.second_width).view(*lead, -1)
        encoded = (self.scale.float() * torch.cat([first, second], dim=-1)).to(self.scale.dtype)
        return encoded * valid.unsqueeze(-1).to(encoded.dtype), valid


def _metadata_encoder(config: GeoViTMAEConfig, kind: str, width: int) -> nn.Module | None:
    flag = config.temporal_encoding if kind == "time" else config.location_encoding
    if not flag:
        return None
    if getattr(config, "metadata_encoding", "harmonics") == "prithvi":
        return GeoViTMAEScaledSincosEncoder(width)
    return GeoViTMAEMetadataEncoder(config, kind)


def _add_metadata(
    tokens: torch.Tensor,
    frames: int,
    tubelet: int,
    temporal: nn.Module | None,
    location: nn.Module | None,
    temporal_coords: torch.Tensor | None,
    location_coords: torch.Tensor | None,
    keep: Callable[[int, torch.device, int], torch.Tensor | None],
) -> torch.Tensor:
    """``tokens`` ``(B, L, D)`` ordered (tubelet, row, col) plus the time encoding of each
    tubelet (the mean over its frames) and the location encoding of each sample."""
    batch, _, width = tokens.shape
    if temporal_coords is not None:
        encoded, _ = temporal(temporal_coords.to(tokens.device))  # (B, T, D)
        encoded = encoded.view(batch, frames, tubelet, width).mean(dim=2)  # (B, T/t, D)
        kept = keep(batch, tokens.device, 0)
        if kept is not None:
            encoded = encoded * kept.view(-1, 1, 1).to(encoded.dtype)
        tokens = tokens.view(batch, frames, -1, width) + encoded.unsqueeze(2).to(tokens.dtype)
        tokens = tokens.view(batch, -1, width)
    if location_coords is not None:
        encoded, _ = location(location_coords.to(tokens.device))  # (B, D)
        kept = keep(batch, tokens.device, 1)
        if kept is not None:
            encoded = encoded * kept.view(-1, 1).to(encoded.dtype)
        tokens = tokens + encoded.unsqueeze(1).to(tokens.dtype)
    return tokens


class GeoViTMAEEmbeddings(nn.Module):
    """Patch (or tubelet) tokens plus fixed sin-cos positions, optional time and location
    encodings, and the cls token."""

    def __init__(self, config: GeoViTMAEConfig) -> None:
        super().__init__()
        self.config = config
        if config.patch_embedding == "wavelength":
            # Outside the patch embeddings: accelerate's FSDP2 wraps the input embeddings as their
            # own unit, and the decoder needs this embedding too.
            self.wavelength_encoder = GeoViTMAEWavelengthEncoder(config)
            self.patch_embeddings = GeoViTMAEWavelengthPatchEmbeddings(config)
        else:
            self.wavelength_encoder = None
            self.patch_embeddings = GeoViTMAEPatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.temporal_embedding = _metadata_encoder(config, "time", config.hidden_size)
        self.location_embedding = _metadata_encoder(config, "place", config.hidden_size)
        self.positions = _PositionEmbeddingCache(
            config.hidden_size, config.image_size // config.patch_size
        )
        # A learnt table is a weight of the checkpoint (timm layout); the 3D sin-cos one is not.
        self.position_embeddings = (
            nn.Parameter(torch.zeros(1, 1 + config.num_patches, config.hidden_size))
            if config.position_embedding == "learned"
            else None
        )
        self._fixed_3d: dict = {}

    def _keep(
        self, batch: int, device: torch.device, which: int, noise: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Per-sample keep mask ``(B,)`` of the time (``which=0``) or place (1) encoding for
        metadata dropout in training, else ``None``; from ``noise`` ``(B, 2)`` when given."""
        rate = self.config.metadata_dropout
        if not self.training or rate <= 0:
            return None
        if noise is None:
            return torch.rand(batch, device=device) >= rate
        return noise[:, which].to(device) >= rate

    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        band_embedding: torch.Tensor | None = None,
        gsd_scale: torch.Tensor | None = None,
        temporal_coords: torch.Tensor | None = None,
        location_coords: torch.Tensor | None = None,
        metadata_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns tokens ``(B, L, D)`` and the cls token ``(1, 1, D)``, positions added."""
        config = self.config
        grid = (
            pixel_values.shape[-2] // config.patch_size,
            pixel_values.shape[-1] // config.patch_size,
        )
        frames = config.num_frames // config.tubelet_size
        tokens = self.patch_embeddings(pixel_values, band_embedding=band_embedding)  # (B, L, D)
        if config.position_embedding == "sincos":
            table = _position_table(
                self.positions, grid, pixel_values.device, interpolate_pos_encoding, gsd_scale
            ).to(self.cls_token.dtype)  # (1|B, 1 + hw, D)
            tokens = _add_space_time_positions(tokens, table, frames, config.hidden_size)
        else:
            table = _stored_or_3d_table(
                config, self.position_embeddings, self._fixed_3d, config.hidden_size, tokens.device
            ).to(tokens.dtype)  # (1, 1 + L, D), every token of every tubelet
            tokens = tokens + table[:, 1:]
        tokens = _add_metadata(
            tokens,
            frames,
            config.tubelet_size,
            self.temporal_embedding,
            self.location_embedding,
            temporal_coords,
            location_coords,
            functools.partial(self._keep, noise=metadata_noise),
        )
        return tokens, self.cls_token + table[:1, :1]


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
        raise GeoViTMAEInputError(
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


# The model's remote code, copied next to the weights by write_remote_code. The image
# processor's files are image_processing_geofm.PROCESSOR_CODE_FILES (its own save copies them).
MODEL_CODE_FILES = ("configuration_geofm.py", "modeling_geofm.py", "pipeline_geofm.py")


def write_remote_code(config: GeoViTMAEConfig, save_directory) -> None:
    """Makes an export folder load with ``trust_remote_code=True`` where geofm_hf is absent.

    Every export path calls it before writing ``config.json`` (``save_pretrained``, the
    streaming save of pretraining, hence the converters and every recipe): it copies this file,
    ``configuration_geofm.py`` and ``pipeline_geofm.py`` into ``save_directory``, names every
    head in ``config.auto_map`` (transformers only records the class being saved; a pretraining
    export must also load through ``AutoModel``) and the pipeline in ``config.custom_pipelines``,
    so ``pipeline("image-feature-extraction", trust_remote_code=True)`` takes multispectral
    arrays. The image processor's file travels with ``processor.save_pretrained``.
    """
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).parent
    config.auto_map = {**dict(getattr(config, "auto_map", None) or {}), **_AUTO_MAP}
    for name in MODEL_CODE_FILES:
        # Code loaded from an export without the pipeline (an old one) has no file to pass on.
        if (here / name).is_file():
            shutil.copyfile(here / name, save_directory / name)
    if (here / "pipeline_geofm.py").is_file():
        config.custom_pipelines = {
            **dict(getattr(config, "custom_pipelines", None) or {}),
            "image-feature-extraction": _CUSTOM_PIPELINE,
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
        """``PreTrainedModel.save_pretrained``, plus what :func:`write_remote_code` adds: every
        head in ``auto_map`` and the feature-extraction pipeline next to the weights."""
        if not Path(save_directory).is_file():  # transformers reports that case itself
            write_remote_code(self.config, save_directory)
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        # MAE's init: xavier-uniform linears (and the patch projection seen as a linear), zero
        # biases, unit norms, N(0, 0.02) tokens. `init` respects already-loaded weights.
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.Conv2d, nn.Conv3d)):
            init.xavier_uniform_(module.weight.view(module.weight.shape[0], -1))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, GeoViTMAEEmbeddings):
            init.normal_(module.cls_token, std=std)
            if module.position_embeddings is not None:
                init.trunc_normal_(module.position_embeddings, std=std)
        elif isinstance(module, GeoViTMAEScaledSincosEncoder):
            init.constant_(module.scale, 0.1)  # Prithvi's init of its learnt scale
        elif isinstance(module, GeoViTMAEDecoder):
            init.normal_(module.mask_token, std=std)
            if module.decoder_position_embeddings is not None:
                init.trunc_normal_(module.decoder_position_embeddings, std=std)


# What the patch projection takes: anything else is raw counts (integers) or needs a cast.
_PIXEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass
class _Inputs:
    """Validated optional inputs, shared by the encoder and the decoder of one forward."""

    wavelengths: torch.Tensor | None = None  # (C,) or (B, C) um, wavelength models only
    bandwidths: torch.Tensor | None = None  # same shape as wavelengths
    gsd_scale: torch.Tensor | None = None  # (B,) gsd / reference_gsd_m
    temporal_coords: torch.Tensor | None = None  # (B, T, 2)
    location_coords: torch.Tensor | None = None  # (B, 2)


def _as_tensor(value, device: torch.device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=torch.float32)
    return torch.as_tensor(value, dtype=torch.float32, device=device)


def _check_wavelengths(
    config: GeoViTMAEConfig, name: str, value, batch: int, channels: int, device: torch.device
) -> torch.Tensor:
    value = _as_tensor(value, device)
    if value.shape not in ((channels,), (batch, channels)):
        raise GeoViTMAEInputError(
            f"{name} must have shape (C,) = ({channels},) or (B, C) = ({batch}, {channels}), one "
            f"value per input band in micrometres: found shape {tuple(value.shape)}."
        )
    if not torch.isfinite(value).all() or (value <= 0).any():
        raise GeoViTMAEInputError(
            f"{name} must be positive and finite (micrometres): found {value.tolist()}."
        )
    if name == "wavelengths" and (value > 100).any():
        raise GeoViTMAEInputError(
            f"wavelengths are in micrometres (0.4-15 for optical and thermal bands): found "
            f"{value.tolist()}, which look like nanometres; divide by 1000."
        )
    return value


def _check_inputs(
    config: GeoViTMAEConfig,
    pixel_values: torch.Tensor,
    interpolate: bool,
    wavelengths=None,
    bandwidths=None,
    gsd=None,
    temporal_coords=None,
    location_coords=None,
) -> _Inputs:
    """Validates every input against the config and says what to do when one is wrong, before
    any compute: each problem is one :class:`GeoViTMAEInputError`."""
    frames = config.num_frames
    layout = "(batch, frames, channels, height, width)" if frames > 1 else (
        "(batch, channels, height, width)"
    )  # fmt: skip
    if not isinstance(pixel_values, torch.Tensor):
        raise GeoViTMAEInputError(
            f"pixel_values must be a torch.Tensor {layout}: found {type(pixel_values).__name__}. "
            "Use GeoViTMAEImageProcessor (it returns tensors), or torch.from_numpy(array) on "
            "normalised float32 values."
        )
    if pixel_values.dtype not in _PIXEL_DTYPES:
        raise GeoViTMAEInputError(
            "pixel_values must be normalised floating-point values (float32, bfloat16 or "
            f"float16): found {str(pixel_values.dtype).removeprefix('torch.')}. "
            + (
                "Call .float() on them."
                if pixel_values.is_floating_point()
                else "Raw digital numbers need the per-band normalisation: use "
                "GeoViTMAEImageProcessor, or .float() and normalise with config.image_mean / "
                "config.image_std."
            )
        )
    if pixel_values.ndim != (5 if frames > 1 else 4):
        hint = (
            f" This model takes time series of num_frames={frames} frames."
            if frames > 1
            else " Time series need a model with config.num_frames > 1."
            if pixel_values.ndim == 5
            else " One image needs a batch dimension: pixel_values.unsqueeze(0)."
            if pixel_values.ndim == 3
            else ""
        )
        raise GeoViTMAEInputError(
            f"pixel_values must be {layout}: found shape {tuple(pixel_values.shape)}.{hint}"
        )
    if frames > 1 and pixel_values.shape[1] != frames:
        raise GeoViTMAEInputError(
            f"Expected {frames} frames (config.num_frames), found {pixel_values.shape[1]} in "
            f"pixel_values of shape {tuple(pixel_values.shape)}."
        )
    batch = pixel_values.shape[0]
    channels, height, width = pixel_values.shape[-3:]
    if 0 in pixel_values.shape:
        raise GeoViTMAEInputError(
            f"pixel_values must hold at least one image with at least one band and one pixel: "
            f"found shape {tuple(pixel_values.shape)} {layout}."
        )
    device = pixel_values.device
    out = _Inputs()
    if config.patch_embedding == "wavelength":
        if wavelengths is None:
            raise GeoViTMAEInputError(
                "This model embeds each band by its wavelength: pass wavelengths=[...] (one "
                f"centre wavelength per input band, micrometres; shape (C,) or (B, C)) for the "
                f"{channels} input bands. GeoViTMAEImageProcessor returns them from band names."
            )
        out.wavelengths = _check_wavelengths(
            config, "wavelengths", wavelengths, batch, channels, device
        )
        if bandwidths is not None and not config.wavelength_bandwidths:
            raise GeoViTMAEInputError(
                "bandwidths were given, but this model was pretrained without them "
                "(config.wavelength_bandwidths=False): its hypernetwork never saw a bandwidth, so "
                "they would change its embeddings arbitrarily. Drop bandwidths."
            )
        if bandwidths is not None:
            out.bandwidths = _check_wavelengths(
                config, "bandwidths", bandwidths, batch, channels, device
            ).expand_as(out.wavelengths)
        # One band set for the batch (the usual case) embeds once; the per-sample path is a
        # grouped convolution.
        if out.wavelengths.ndim == 2 and bool((out.wavelengths == out.wavelengths[:1]).all()):
            same_widths = out.bandwidths is None or bool(
                (out.bandwidths == out.bandwidths[:1]).all()
            )
            if same_widths:
                out.wavelengths = out.wavelengths[0]
                out.bandwidths = None if out.bandwidths is None else out.bandwidths[0]
    else:
        if channels != config.num_channels:
            bands = f" ({', '.join(config.band_names)})" if config.band_names else ""
            raise GeoViTMAEInputError(
                f"Expected {config.num_channels} input bands{bands}, found {channels}. Use "
                "GeoViTMAEImageProcessor to select and order bands by name."
            )
        if wavelengths is not None and config.wavelengths_um is not None:
            # A conv model is tied to its band order: wavelengths that disagree with it mean the
            # bands are not the ones the kernels were learnt for.
            given = _check_wavelengths(config, "wavelengths", wavelengths, batch, channels, device)
            expected = torch.tensor(config.wavelengths_um, dtype=torch.float32, device=device)
            if not torch.allclose(given, expected.expand_as(given), atol=1e-3):
                raise GeoViTMAEInputError(
                    f"The input's wavelengths {given.tolist()} are not the bands this model was "
                    f"trained on ({config.wavelengths_um} um, {config.band_names}). Reorder the "
                    "bands with GeoViTMAEImageProcessor, or use a patch_embedding='wavelength' "
                    "model for other sensors."
                )
    patch = config.patch_size
    if height % patch or width % patch:
        raise GeoViTMAEInputError(
            f"Image height and width must be divisible by the patch size {patch}: found "
            f"{height}x{width}. Crop or tile the input to {config.image_size}x{config.image_size} "
            "(GeoViTMAEImageProcessor refuses other sizes unless asked to resize or pad)."
        )
    position = getattr(config, "position_embedding", "sincos")
    if position != "sincos" and (height, width) != (config.image_size, config.image_size):
        raise GeoViTMAEInputError(
            f"This model's position_embedding={position!r} table is laid out for "
            f"{config.image_size}x{config.image_size} images: found {height}x{width}. It is not "
            "resampled (that would change the model's output): tile or crop the input to "
            f"{config.image_size}x{config.image_size}."
        )
    if not interpolate and (height, width) != (config.image_size, config.image_size):
        raise GeoViTMAEInputError(
            f"Expected {config.image_size}x{config.image_size} images, found {height}x{width}; "
            "pass interpolate_pos_encoding=True to run at another size."
        )
    if gsd is not None:
        if config.reference_gsd_m is None:
            raise GeoViTMAEInputError(
                "gsd was given but config.reference_gsd_m (the pretraining GSD) is not set, so "
                "positions cannot be scaled: set reference_gsd_m in the config or drop gsd."
            )
        gsd = _as_tensor(gsd, device)
        if gsd.ndim > 1 or gsd.numel() not in (1, batch):
            raise GeoViTMAEInputError(
                f"gsd must be a number or have shape (B,) = ({batch},) (metres per pixel): found "
                f"shape {tuple(gsd.shape)}."
            )
        if not torch.isfinite(gsd).all() or (gsd <= 0).any():
            raise GeoViTMAEInputError(
                f"gsd must be positive metres per pixel: found {gsd.tolist()}."
            )
        out.gsd_scale = (gsd / config.reference_gsd_m).reshape(-1).expand(batch)
    for name, value, enabled, shape in (
        ("temporal_coords", temporal_coords, config.temporal_encoding, (batch, frames, 2)),
        ("location_coords", location_coords, config.location_encoding, (batch, 2)),
    ):
        if value is None:
            continue
        flag = "temporal_encoding" if name == "temporal_coords" else "location_encoding"
        if not enabled:
            raise GeoViTMAEInputError(
                f"{name} was given but this model was built without config.{flag}=True, so it "
                f"has no weights to encode it: drop {name} or use a model trained with it."
            )
        value = _as_tensor(value, device)
        if tuple(value.shape) != shape:
            what = "(year, day of year) per frame" if name == "temporal_coords" else "(lat, lon)"
            raise GeoViTMAEInputError(
                f"{name} must have shape {shape}, {what}: found {tuple(value.shape)}."
            )
        if name == "location_coords":
            finite = value[~torch.isnan(value).any(dim=-1)]
            if (finite[:, 0].abs() > 90).any() or (finite[:, 1].abs() > 360).any():
                raise GeoViTMAEInputError(
                    "location_coords must be (latitude, longitude) in degrees: found "
                    f"{value.tolist()}. Reproject from the raster CRS to EPSG:4326 first."
                )
        setattr(out, name, value)
    return out


def _valid_pixels(
    config: GeoViTMAEConfig,
    pixel_values: torch.Tensor,
    pixel_mask: torch.Tensor | None,
    check: bool,
) -> torch.Tensor | None:
    """The pixel mask the model uses: ``pixel_mask`` with non-finite pixels marked invalid too.

    Without a mask, non-finite values would spread into every token through attention, so they
    are refused (when ``check``: the callers skip it in training, where the test would cost a
    host sync per step and a non-finite loss is caught anyway). With a mask the merge needs no
    sync: NaN or inf under any band makes that pixel invalid.
    """
    if pixel_mask is not None:
        expected = (*pixel_values.shape[:-3], *pixel_values.shape[-2:])  # (B, [T,] H, W)
        if tuple(pixel_mask.shape) != expected:
            raise GeoViTMAEInputError(
                f"pixel_mask must be (B, [T,] H, W) = {expected} for pixel_values of shape "
                f"{tuple(pixel_values.shape)}, 1 where a pixel is valid: found "
                f"{tuple(pixel_mask.shape)}."
            )
        finite = torch.isfinite(pixel_values).all(dim=-3)  # (B, [T,] H, W)
        return pixel_mask.to(device=pixel_values.device, dtype=torch.bool) & finite
    # A traced graph (torch.export, ONNX) has no data-dependent branch: the exported model
    # checks nothing, its callers' inputs are checked where they are prepared.
    if not check or torch.compiler.is_exporting() or torch.compiler.is_compiling():
        return None
    bad = ~torch.isfinite(pixel_values)
    if not bool(bad.any()):
        return None
    counts = bad.movedim(-3, 0).flatten(1).sum(dim=1).tolist()  # per band
    names = config.band_names if config.band_names and len(config.band_names) == len(counts) else (
        [f"channel {i}" for i in range(len(counts))]
    )  # fmt: skip
    per_band = ", ".join(f"{n} ({c})" for n, c in zip(names, counts) if c)
    raise GeoViTMAEInputError(
        f"pixel_values holds {sum(counts)} non-finite values (NaN or inf), in bands {per_band}: "
        "expected finite normalised values, as one NaN spreads into every feature of its image. "
        "Pass pixel_mask (B, [T,] H, W), 1 where a pixel is valid (non-finite pixels are then "
        "masked too), or prepare the input with GeoViTMAEImageProcessor, which fills and masks "
        "nodata."
    )


def _check_class_labels(
    labels: torch.Tensor, shape: tuple[int, ...], what: str, multi_label: bool = False
) -> torch.Tensor:
    """Class-index ``labels`` of ``shape`` as int64, refusing what a cast would silently change
    (fractional values, soft labels); multi-label targets as float."""
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    if multi_label:
        if tuple(labels.shape) != shape:
            raise GeoViTMAEInputError(
                f"labels for problem_type='multi_label_classification' must be {what} of shape "
                f"{shape}, one 0/1 (or probability) per class: found {tuple(labels.shape)}."
            )
        return labels.float()
    if tuple(labels.shape) != shape:
        soft = len(shape) == 1 and labels.ndim == 2 and labels.shape[0] == shape[0]
        raise GeoViTMAEInputError(
            f"labels must be {what} of shape {shape}: found shape {tuple(labels.shape)}."
            + (
                " The model takes class indices (labels.argmax(-1) of one-hot rows); for "
                "several classes per image set config.problem_type="
                "'multi_label_classification'."
                if soft
                else ""
            )
        )
    if labels.is_floating_point() and bool((labels != labels.round()).any()):
        fractional = labels[labels != labels.round()].flatten()[:3].tolist()
        raise GeoViTMAEInputError(
            f"labels must be {what}: found fractional values such as {fractional}, which a cast "
            "to integers would silently change. Pass integer class indices; soft or one-hot "
            "targets per class go with config.problem_type='multi_label_classification'."
        )
    if labels.is_complex() or labels.dtype == torch.bool:
        raise GeoViTMAEInputError(f"labels must be {what} (integers): found dtype {labels.dtype}.")
    return labels.long()


def _check_metadata_noise(noise: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    if noise is not None and tuple(noise.shape) != (batch, 2):
        raise GeoViTMAEInputError(
            f"metadata_noise must have shape (batch, 2) = ({batch}, 2), one value for the time "
            f"and one for the place encoding of each sample: found {tuple(noise.shape)}."
        )
    return noise


def _apply_pixel_mask(pixel_values: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
    """Zeroes invalid pixels: ``pixel_mask`` ``(B, [T,] H, W)`` bool, 1 = valid, for all bands
    (checked by :func:`_valid_pixels`)."""
    valid = pixel_mask.unsqueeze(-3)
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

    def band_embedding(self, inputs: _Inputs) -> torch.Tensor | None:
        """``(C, E)`` or ``(B, C, E)`` wavelength embedding of the input bands (wavelength models)."""
        if inputs.wavelengths is None or self.config.patch_embedding != "wavelength":
            return None
        return self.embeddings.wavelength_encoder(inputs.wavelengths, inputs.bandwidths)

    def forward(
        self,
        pixel_values: torch.Tensor,
        wavelengths: torch.Tensor | None = None,
        bandwidths: torch.Tensor | None = None,
        gsd: torch.Tensor | float | None = None,
        temporal_coords: torch.Tensor | None = None,
        location_coords: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        pixel_mask: torch.Tensor | None = None,
        metadata_noise: torch.Tensor | None = None,
    ) -> GeoViTMAEModelOutput | tuple:
        """Encodes ``pixel_values`` ``(B, C, H, W)`` (``(B, T, C, H, W)`` for a time-series
        model), optionally masking ``mask_ratio`` of the tokens (``noise`` ``(B, L)`` fixes which).

        ``wavelengths`` ``(C,)`` or ``(B, C)`` (micrometres; required by wavelength models) and
        ``bandwidths`` name the input bands; ``gsd`` (metres per pixel, a number or ``(B,)``)
        scales positions; ``temporal_coords`` ``(B, T, 2)`` (year, day of year) and
        ``location_coords`` ``(B, 2)`` (lat, lon degrees) are optional metadata. ``pixel_mask``
        ``(B, [T,] H, W)`` (1 = valid, as the image processor and the pretraining stream return
        it) sets invalid pixels to 0, the normalised band mean, so fill values and NaN never enter
        the network. ``metadata_noise`` ``(B, 2)`` in [0, 1) fixes which samples' time (column 0)
        and place (column 1) encodings ``metadata_dropout`` drops in training (below the rate:
        dropped), as ``noise`` fixes the mask: a resumed run then draws what it drew before.
        """
        inputs = _check_inputs(
            self.config,
            pixel_values,
            interpolate_pos_encoding,
            wavelengths,
            bandwidths,
            gsd,
            temporal_coords,
            location_coords,
        )
        pixel_mask = _valid_pixels(self.config, pixel_values, pixel_mask, not self.training)
        if pixel_mask is not None:
            pixel_values = _apply_pixel_mask(pixel_values, pixel_mask)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        band_embedding = self.band_embedding(inputs)
        tokens, cls_token = self.embeddings(
            pixel_values,
            interpolate_pos_encoding,
            band_embedding=band_embedding,
            gsd_scale=inputs.gsd_scale,
            temporal_coords=inputs.temporal_coords,
            location_coords=inputs.location_coords,
            metadata_noise=_check_metadata_noise(metadata_noise, pixel_values.shape[0]),
        )  # (B, L, D)
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
            band_embedding=band_embedding,
        )
        return output if return_dict is not False else output.to_tuple()


class GeoViTMAEDecoder(nn.Module):
    """MAE decoder: kept tokens + mask tokens, unshuffled, -> per-token pixel predictions."""

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
        pixels = config.tubelet_size * config.patch_size**2
        self.pixels_per_token = pixels
        if config.patch_embedding == "wavelength":
            # Output weights per band from the encoder's wavelength embedding: the decoder
            # reconstructs whichever bands came in.
            self.decoder_pred = None
            self.weight_generator = nn.Linear(
                config.wavelength_embed_dim, pixels * config.decoder_hidden_size
            )
            self.bias_generator = nn.Linear(config.wavelength_embed_dim, pixels)
        else:
            self.decoder_pred = nn.Linear(config.decoder_hidden_size, pixels * config.num_channels)
        self.positions = _PositionEmbeddingCache(
            config.decoder_hidden_size, config.image_size // config.patch_size
        )
        self.decoder_position_embeddings = (
            nn.Parameter(torch.zeros(1, 1 + config.num_patches, config.decoder_hidden_size))
            if config.position_embedding == "learned"
            else None
        )
        self._fixed_3d: dict = {}
        # Prithvi-EO-2.0 encodes time and place again in the decoder, at its width.
        prithvi = getattr(config, "metadata_encoding", "harmonics") == "prithvi"
        width = config.decoder_hidden_size
        self.temporal_embedding = _metadata_encoder(config, "time", width) if prithvi else None
        self.location_embedding = _metadata_encoder(config, "place", width) if prithvi else None

    def predict(self, hidden: torch.Tensor, band_embedding: torch.Tensor | None) -> torch.Tensor:
        """``(B, L, Dd)`` -> ``(B, L, t*p*p*C)``, bands last inside a token (``patchify``)."""
        if self.decoder_pred is not None:
            return self.decoder_pred(hidden)
        batch, length, width = hidden.shape
        q = self.pixels_per_token
        lead = band_embedding.shape[:-1]  # (C,) or (B, C)
        weight, bias = _generate(band_embedding, self.weight_generator, self.bias_generator)
        weight = weight.view(*lead, q, width).to(hidden.dtype)
        bias = bias.to(hidden.dtype)  # (..., C, q)
        if band_embedding.ndim == 2:
            # One band set: a plain linear layer whose rows are ordered (q, C), so its output is
            # already in patchify's layout (an einsum to (B, L, q, C) copied that large output
            # into place, forward and backward: +4-6 % of a vit-base step at batch 32 on CPU).
            channels = lead[0]
            rows = weight.transpose(0, 1).reshape(q * channels, width)
            return F.linear(hidden, rows, bias.T.reshape(q * channels))
        else:
            out = torch.einsum("bld,bcqd->blqc", hidden, weight)
            out = out + bias.transpose(1, 2).unsqueeze(1)  # (B, L, q, C)
        return out.reshape(batch, length, -1)

    def forward(
        self,
        latent: torch.Tensor,
        ids_restore: torch.Tensor,
        grid: tuple[int, int],
        interpolate_pos_encoding: bool = False,
        band_embedding: torch.Tensor | None = None,
        gsd_scale: torch.Tensor | None = None,
        temporal_coords: torch.Tensor | None = None,
        location_coords: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``latent`` ``(B, 1 + K, D)`` -> logits ``(B, L, t*p*p*C)``."""
        hidden = self.decoder_embed(latent)  # (B, 1 + K, Dd)
        batch, kept, width = hidden.shape
        length = ids_restore.shape[1]
        mask_tokens = self.mask_token.expand(batch, length + 1 - kept, -1)  # (B, L - K, Dd)
        patches = torch.cat([hidden[:, 1:], mask_tokens], dim=1)  # (B, L, Dd) shuffled order
        patches = torch.gather(
            patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, width)
        )  # (B, L, Dd) token order
        if self.config.position_embedding == "sincos":
            table = _position_table(
                self.positions, grid, hidden.device, interpolate_pos_encoding, gsd_scale
            ).to(hidden.dtype)  # (1|B, 1 + hw, Dd)
            frames = self.config.num_frames // self.config.tubelet_size
            patches = _add_space_time_positions(patches, table, frames, width)
            cls = hidden[:, :1]  # the cls position is 0
        else:
            table = _stored_or_3d_table(
                self.config, self.decoder_position_embeddings, self._fixed_3d, width, hidden.device
            ).to(hidden.dtype)  # (1, 1 + L, Dd)
            patches = patches + table[:, 1:]
            cls = hidden[:, :1] + table[:, :1]
        if self.temporal_embedding is not None or self.location_embedding is not None:
            config = self.config
            patches = _add_metadata(
                patches,
                config.num_frames // config.tubelet_size,
                config.tubelet_size,
                self.temporal_embedding,
                self.location_embedding,
                temporal_coords if self.temporal_embedding is not None else None,
                location_coords if self.location_embedding is not None else None,
                lambda batch, device, which: None,  # the decoder never drops metadata
            )
        hidden = torch.cat([cls, patches], dim=1)  # (B, 1 + L, Dd)
        hidden, _ = self.decoder_layers(hidden)
        return self.predict(self.decoder_norm(hidden)[:, 1:], band_embedding)  # (B, L, t*p*p*C)


class GeoViTMAEForPreTraining(GeoViTMAEPreTrainedModel):
    """Masked-autoencoder pretraining: encoder on the kept tokens, decoder on all of them, loss on
    the masked ones."""

    def __init__(self, config: GeoViTMAEConfig) -> None:
        super().__init__(config)
        self.vit = GeoViTMAEModel(config)
        self.decoder = GeoViTMAEDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vit.embeddings.patch_embeddings

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, L, p * p * C)``, channels last inside a patch (MAE layout);
        ``(B, T, C, H, W)`` -> ``(B, L, t * p * p * C)`` with tokens ordered (tubelet, row, col)."""
        p = self.config.patch_size
        if pixel_values.ndim == 5:
            batch, frames, channels, height, width = pixel_values.shape
            t = self.config.tubelet_size
            x = pixel_values.reshape(batch, frames // t, t, channels, height // p, p, width // p, p)
            x = x.permute(0, 1, 4, 6, 2, 5, 7, 3)  # (B, T/t, H/p, W/p, t, p, p, C)
            return x.reshape(batch, -1, t * p * p * channels)
        batch, channels, height, width = pixel_values.shape
        x = pixel_values.reshape(batch, channels, height // p, p, width // p, p)
        x = x.permute(0, 2, 4, 3, 5, 1)  # (B, H/p, W/p, p, p, C)
        return x.reshape(batch, (height // p) * (width // p), p * p * channels)

    def unpatchify(
        self, patches: torch.Tensor, image_size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """``(B, L, t * p * p * C)`` -> ``(B, C, H, W)`` (``(B, T, C, H, W)`` for a time-series
        model); the inverse of :meth:`patchify`."""
        config = self.config
        height, width = image_size or (config.image_size, config.image_size)
        p, t = config.patch_size, config.tubelet_size
        frames = config.num_frames
        per_token = t * p * p
        # A wavelength model reconstructs whichever bands came in: the count is in the shape.
        channels = (
            patches.shape[2] // per_token
            if config.patch_embedding == "wavelength"
            else config.num_channels
        )
        grid_h, grid_w = height // p, width // p
        length = (frames // t) * grid_h * grid_w
        if length != patches.shape[1] or patches.shape[2] != per_token * channels:
            raise GeoViTMAEInputError(
                f"Expected patches of shape (B, {length}, {per_token * channels}) for a "
                f"{height}x{width} image, found {tuple(patches.shape)}."
            )
        batch = patches.shape[0]
        if frames > 1:
            x = patches.reshape(batch, frames // t, grid_h, grid_w, t, p, p, channels)
            x = x.permute(0, 1, 4, 7, 2, 5, 3, 6)  # (B, T/t, t, C, H/p, p, W/p, p)
            return x.reshape(batch, frames, channels, height, width)
        x = patches.reshape(batch, grid_h, grid_w, p, p, channels)
        x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, H/p, p, W/p, p)
        return x.reshape(batch, channels, height, width)

    def forward_loss(
        self,
        pixel_values: torch.Tensor,
        logits: torch.Tensor,
        mask: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean squared error per token, averaged over the masked tokens only.

        With ``pixel_mask`` ``(B, [T,] H, W)`` (1 = valid) only valid pixels count: the error is
        averaged over the valid pixel values of the masked patches (``norm_pix_loss`` uses the
        valid pixels' mean/variance); a batch with no valid masked pixel gives a zero loss.
        """
        total, count = self.forward_loss_terms(pixel_values, logits, mask, pixel_mask)
        return total / count.clamp_min(1)

    def forward_loss_terms(
        self,
        pixel_values: torch.Tensor,
        logits: torch.Tensor,
        mask: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of squared errors, number of pixel values summed) over the masked patches'
        valid pixel values: :meth:`forward_loss` is their ratio. Data-parallel training divides
        the sum of every rank's sums by the sum of their counts, so a cloudy rank's few valid
        pixels weigh what they weigh in one process over the global batch."""
        target = self.patchify(pixel_values).to(logits.dtype)  # (B, L, t*p*p*C)
        if pixel_mask is None:
            if self.config.norm_pix_loss:
                mean = target.mean(dim=-1, keepdim=True)
                var = target.var(dim=-1, keepdim=True)
                target = (target - mean) / (var + 1.0e-6) ** 0.5
            total = (((logits - target) ** 2) * mask.unsqueeze(-1)).sum()
            return total, mask.sum() * target.shape[-1]
        valid = pixel_mask.to(device=target.device, dtype=target.dtype).unsqueeze(-3)
        valid = self.patchify(valid.expand(pixel_values.shape))  # (B, L, t*p*p*C)
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
        return (((logits - target) ** 2) * weight).sum(), weight.sum()

    def forward(
        self,
        pixel_values: torch.Tensor,
        wavelengths: torch.Tensor | None = None,
        bandwidths: torch.Tensor | None = None,
        gsd: torch.Tensor | float | None = None,
        temporal_coords: torch.Tensor | None = None,
        location_coords: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        pixel_mask: torch.Tensor | None = None,
        metadata_noise: torch.Tensor | None = None,
    ) -> GeoViTMAEForPreTrainingOutput | tuple:
        """MAE step on ``pixel_values`` (see :meth:`GeoViTMAEModel.forward` for the other
        inputs); ``noise`` ``(B, L)`` fixes the mask. ``pixel_mask`` ``(B, [T,] H, W)``
        (1 = valid) keeps invalid pixels out of the input and the loss."""
        inputs = _check_inputs(
            self.config,
            pixel_values,
            interpolate_pos_encoding,
            wavelengths,
            bandwidths,
            gsd,
            temporal_coords,
            location_coords,
        )
        pixel_mask = _valid_pixels(self.config, pixel_values, pixel_mask, not self.training)
        if pixel_mask is not None:
            pixel_values = _apply_pixel_mask(pixel_values, pixel_mask)
        encoded = self.vit(
            pixel_values,
            wavelengths=wavelengths,
            bandwidths=bandwidths,
            gsd=gsd,
            temporal_coords=temporal_coords,
            location_coords=location_coords,
            noise=noise,
            mask_ratio=self.config.mask_ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=output_hidden_states,
            metadata_noise=metadata_noise,
        )
        p = self.config.patch_size
        grid = (pixel_values.shape[-2] // p, pixel_values.shape[-1] // p)
        logits = self.decoder(
            encoded.last_hidden_state,
            encoded.ids_restore,
            grid,
            interpolate_pos_encoding,
            # One wavelength embedding feeds both the encoder's kernels and the decoder's outputs.
            band_embedding=encoded.band_embedding,
            gsd_scale=inputs.gsd_scale,
            temporal_coords=inputs.temporal_coords,
            location_coords=inputs.location_coords,
        )
        # The loss is taken in float32 even under autocast: MSE of near-equal numbers in bf16
        # loses most of its mantissa.
        loss_sum, loss_count = self.forward_loss_terms(
            pixel_values.float(), logits.float(), encoded.mask.float(), pixel_mask
        )
        output = GeoViTMAEForPreTrainingOutput(
            loss=loss_sum / loss_count.clamp_min(1),
            loss_sum=loss_sum,
            loss_count=loss_count,
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
        wavelengths: torch.Tensor | None = None,
        bandwidths: torch.Tensor | None = None,
        gsd: torch.Tensor | float | None = None,
        temporal_coords: torch.Tensor | None = None,
        location_coords: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        pixel_mask: torch.Tensor | None = None,
    ) -> ImageClassifierOutput | tuple:
        """Class logits ``(B, num_labels)``; cross-entropy (or BCE for multi-label) with labels.
        ``pixel_mask`` ``(B, H, W)`` (1 = valid) sets invalid pixels to the band mean.

        ``labels``: ``(B,)`` class indices (integers, or floats holding integers); with
        ``config.problem_type="multi_label_classification"`` ``(B, num_labels)`` 0/1 or soft
        targets. Fractional class indices and soft labels for a single-label model are refused
        (a cast to integers would silently change them), before any compute."""
        if labels is not None:
            labels = _check_class_labels(
                labels,
                (len(pixel_values),)
                if self.config.problem_type != "multi_label_classification"
                else (len(pixel_values), self.config.num_labels),
                "class indices in 0..num_labels-1, one per image"
                if self.config.problem_type != "multi_label_classification"
                else "targets",
                multi_label=self.config.problem_type == "multi_label_classification",
            )
        encoded = self.vit(
            pixel_values,
            wavelengths=wavelengths,
            bandwidths=bandwidths,
            gsd=gsd,
            temporal_coords=temporal_coords,
            location_coords=location_coords,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=output_hidden_states,
            pixel_mask=pixel_mask,
        )
        logits = self.classifier(encoded.pooler_output)  # (B, num_labels)
        loss = None
        if labels is not None:
            multi = self.config.problem_type == "multi_label_classification"
            labels = labels.to(logits.device)
            if multi:
                loss = F.binary_cross_entropy_with_logits(logits.float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels)
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
    if config.patch_embedding != "conv" or config.num_frames > 1:
        raise ValueError(
            "select_input_bands narrows the per-band kernels of a single-image conv model: found "
            f"patch_embedding={config.patch_embedding!r}, num_frames={config.num_frames}. A "
            "wavelength model takes any subset of bands as is: pass their wavelengths."
        )
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


def flops_per_image(
    config: GeoViTMAEConfig, training: bool = True, num_channels: int | None = None
) -> float:
    """Matmul FLOPs of one MAE step per sample (forward, x3 with backward), for MFU.

    Counts the GEMMs and attention products that dominate; norms and elementwise ops are
    omitted, as is customary for model-FLOPs utilisation. A time series counts all its
    tubelets. For a wavelength model ``num_channels`` is the input's band count (default
    ``config.num_channels``), and the hypernetwork that generates the kernels is counted once per
    sample (an upper bound: it runs once per batch).
    """
    channels = num_channels or config.num_channels
    length = config.num_patches
    kept = int(length * (1 - config.mask_ratio))
    costs = input_output_costs({**config.to_dict(), "num_channels": channels})
    pixels = costs["pixels_per_token"]  # per token and band

    def stack(tokens: int, width: int, mlp: int, layers: int) -> float:
        per_layer = 2 * tokens * (4 * width * width + 2 * width * mlp) + 4 * tokens * tokens * width
        return layers * per_layer

    patch = 2 * length * channels * pixels * config.hidden_size
    enc = stack(kept + 1, config.hidden_size, config.intermediate_size, config.num_hidden_layers)
    dec_embed = 2 * (kept + 1) * config.hidden_size * config.decoder_hidden_size
    dec = stack(
        length + 1,
        config.decoder_hidden_size,
        config.decoder_intermediate_size,
        config.decoder_num_hidden_layers,
    )
    pred = 2 * (length + 1) * config.decoder_hidden_size * pixels * channels
    hyper = costs["hypernetwork_flops"]
    forward = patch + enc + dec_embed + dec + pred + hyper
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
    "sincos_3d_position_embedding",
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


def _check_regression_targets(
    labels: torch.Tensor, pixel_values: torch.Tensor, num_labels: int
) -> torch.Tensor:
    """Per-pixel regression targets ``(B, H, W)`` as float32 on the pixels' device."""
    if num_labels != 1:
        raise GeoViTMAEInputError(
            f"problem_type='regression' predicts one value per pixel: expected num_labels=1, "
            f"found {num_labels}. Build the config with num_labels=1."
        )
    labels = torch.as_tensor(labels)
    shape = (len(pixel_values), *pixel_values.shape[-2:])
    if tuple(labels.shape) != shape:
        raise GeoViTMAEInputError(
            f"labels for problem_type='regression' must be one float per pixel of shape "
            f"{shape} (NaN where unknown): found shape {tuple(labels.shape)}."
        )
    return labels.to(device=pixel_values.device, dtype=torch.float32)


class GeoViTMAEForSemanticSegmentation(GeoViTMAEPreTrainedModel):
    """Encoder (no masking) + :class:`GeoViTMAESegmentationHead`; per-pixel class logits at the
    input resolution. Config fields (defaults written into the config on first use):
    ``segmentation_layers`` (four 1-based block indices; default evenly spaced, ending at the
    last), ``segmentation_hidden_size`` (256), ``segmentation_dropout`` (0.1) and
    ``semantic_loss_ignore_index`` (255, transformers' name).

    A time-series model (``num_frames`` T > 1) maps a series ``(B, T, C, H, W)`` to one
    ``(H, W)`` map per sample: at each of the four depths the tokens of the T/t tubelets at
    one grid position are averaged before the head (TerraTorch's temporal mean pooling; its
    other choice, concatenating the frames' features, would tie the head's width to T). The
    frames have already exchanged information in every attention block, with their dates when
    the model encodes them, so the mean keeps what the encoder found in the sequence, and the
    head is the same, weights included, whatever the number of frames."""

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
        pixel_mask: torch.Tensor | None = None,
        temporal_coords: torch.Tensor | None = None,
        location_coords: torch.Tensor | None = None,
        **kwargs,
    ) -> SemanticSegmenterOutput | tuple:
        """Logits ``(B, num_labels, H, W)``; with ``labels`` ``(B, H, W)`` (class index, or
        ``semantic_loss_ignore_index`` for unlabelled pixels) the mean cross-entropy. Fractional
        labels are refused (a cast would silently change them). ``pixel_mask`` ``(B, [T,] H,
        W)`` (1 = valid) sets invalid pixels to the band mean. ``pixel_values`` are ``(B, T, C,
        H, W)`` for a time-series model, with ``temporal_coords`` ``(B, T, 2)`` (year, day of
        year) and ``location_coords`` ``(B, 2)`` (lat, lon degrees) as the encoder takes them;
        the labels stay one ``(B, H, W)`` map per series.

        With ``config.problem_type="regression"`` (and ``num_labels=1``) the logits ``(B, 1, H,
        W)`` are per-pixel predictions of a continuous target, ``labels`` ``(B, H, W)`` floats
        with NaN where the target is unknown, and the loss the mean squared error over the known
        pixels only (0 for a batch without one)."""
        regression = self.config.problem_type == "regression"
        if regression and labels is not None:
            labels = _check_regression_targets(labels, pixel_values, self.config.num_labels)
        elif labels is not None and isinstance(pixel_values, torch.Tensor):
            shape = (len(pixel_values), *pixel_values.shape[-2:])
            labels = _check_class_labels(labels, shape, "one class index per pixel (B, H, W)").to(
                pixel_values.device
            )
        encoded = self.vit(
            pixel_values,
            temporal_coords=temporal_coords,
            location_coords=location_coords,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=True,
            pixel_mask=pixel_mask,
        )
        p = self.config.patch_size
        grid_h, grid_w = pixel_values.shape[-2] // p, pixel_values.shape[-1] // p
        grids = []
        for i in self.config.segmentation_layers:
            # hidden_states[i] is block i's output (index 0 is the embedding); drop the cls token.
            tokens = encoded.hidden_states[i][:, 1:]  # (B, L, D), L = (T/t) * h * w
            # Tokens are ordered (tubelet, row, col): the mean over tubelets, one grid a sample.
            tokens = tokens.unflatten(1, (-1, grid_h * grid_w)).mean(dim=1)  # (B, h * w, D)
            grids.append(tokens.transpose(1, 2).reshape(tokens.shape[0], -1, grid_h, grid_w))
        logits = self.decode_head(grids)  # (B, K, 4h, 4w)
        logits = F.interpolate(
            logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False
        )  # (B, K, H, W)
        loss = None
        if labels is not None and regression:
            known = torch.isfinite(labels)  # NaN targets (nodata) take no part in the loss
            error = (logits[:, 0].float() - labels.nan_to_num()) ** 2
            loss = (error * known).sum() / known.sum().clamp(min=1)
        elif labels is not None:
            loss = F.cross_entropy(
                logits.float(),
                labels.to(logits.device),
                ignore_index=self.config.semantic_loss_ignore_index,
            )
        output = SemanticSegmenterOutput(
            loss=loss,
            logits=logits,
            hidden_states=encoded.hidden_states if output_hidden_states else None,
        )
        return output if return_dict is not False else output.to_tuple()
