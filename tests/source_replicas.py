"""Random-init replicas of the source architectures geofm_hf converts, for equality tests.

Why replicas: timm (and TerraTorch, which needs timm) import torchvision, and PyPI's torchvision
wheels do not load beside the CPU torch wheel this project pins (constraints/cpu.txt), so neither
can be imported in CI. Each class below is written from the published code of its source and
keeps that code's state-dict names, parameter shapes and arithmetic (fused SDPA attention, exact
GELU, LayerNorm eps, the sin-cos tables, MAE's argsort masking and loss):

- ``TimmViT``: timm 1.0.31 ``timm/models/vision_transformer.py`` ``VisionTransformer`` with
  ``Block``/``Mlp``/``LayerScale`` and ``timm/layers/attention.py`` ``Attention`` (the options
  that change the computation: qk_norm, init_values, reg_tokens, pre_norm, fc_norm,
  global_pool token/avg, class_token).
- ``MAEViT``: facebookresearch/mae ``models_mae.py`` ``MaskedAutoencoderViT`` (SSL4EO-S12's and
  SatMAE's RGB pretraining model; timm blocks, fixed 2D sin-cos tables).
- ``PrithviMAE``: ``prithvi_mae.py`` as shipped in TerraTorch 1.2.13 and the
  ibm-nasa-geospatial Hub repos (3D patch embedding, 3D sin-cos tables, optional time/location
  encoders, MAE decoder; ``encoder.``/``decoder.`` prefixes).

One addition for testing: the masking functions take an optional ``noise`` (Prithvi's already
does), so both sides can be given the same mask.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------------------ timm parts
class Attention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=False, qk_norm=False, norm_layer=None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.norm = nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(self.norm(x.transpose(1, 2).reshape(B, N, C)))


class Mlp(nn.Module):
    def __init__(self, dim, hidden, act_layer=nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.norm = nn.Identity()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.norm(self.act(self.fc1(x))))


class LayerScale(nn.Module):
    def __init__(self, dim, init_values):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Block(nn.Module):
    def __init__(
        self,
        dim,
        num_heads,
        mlp_ratio=4.0,
        qkv_bias=False,
        qk_norm=False,
        init_values=None,
        norm_layer=None,
        act_layer=nn.GELU,
    ):
        super().__init__()
        norm_layer = norm_layer or (lambda d: nn.LayerNorm(d, eps=1e-6))
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_norm, norm_layer)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TimmViT(nn.Module):
    """timm ``VisionTransformer`` (learned ``pos_embed``, cls token first)."""

    def __init__(
        self,
        img_size=224,
        patch_size=16,
        in_chans=3,
        num_classes=1000,
        global_pool="token",
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        qkv_bias=True,
        qk_norm=False,
        init_values=None,
        class_token=True,
        reg_tokens=0,
        pre_norm=False,
        fc_norm=None,
        act_layer=nn.GELU,
        no_embed_class=False,
        dynamic_img_size=False,
    ):
        super().__init__()
        use_fc_norm = global_pool == "avg" if fc_norm is None else fc_norm
        norm_layer = lambda d: nn.LayerNorm(d, eps=1e-6)  # noqa: E731
        self.global_pool = global_pool
        self.num_prefix_tokens = (1 if class_token else 0) + reg_tokens
        self.no_embed_class = no_embed_class
        self.dynamic_img_size = dynamic_img_size
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        self.pos_embed = nn.Parameter(
            torch.randn(1, self.patch_embed.num_patches + self.num_prefix_tokens, embed_dim) * 0.02
        )
        self.norm_pre = norm_layer(embed_dim) if pre_norm else nn.Identity()
        self.blocks = nn.Sequential(
            *[
                Block(
                    embed_dim, num_heads, mlp_ratio, qkv_bias, qk_norm, init_values, None, act_layer
                )
                for _ in range(depth)
            ]
        )
        self.norm = norm_layer(embed_dim) if not use_fc_norm else nn.Identity()
        self.fc_norm = norm_layer(embed_dim) if use_fc_norm else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        _randomise(self)

    def forward_features(self, x):
        x = self.patch_embed(x)
        prefix = [
            t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token) if t is not None
        ]
        x = torch.cat([*prefix, x], dim=1) + self.pos_embed
        x = self.norm_pre(x)
        return self.norm(self.blocks(x))

    def forward_head(self, x):
        x = x[:, 0] if self.global_pool == "token" else x[:, self.num_prefix_tokens :].mean(dim=1)
        return self.head(self.fc_norm(x))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _randomise(module: nn.Module) -> None:
    """Random values everywhere (LayerNorms included), so a swapped weight cannot go unseen."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "pos_embed" in name:
                continue
            p.copy_(torch.randn_like(p) * (0.5 if p.ndim == 1 else 0.2))
        for m in module.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.add_(1.0)


# ------------------------------------------------------------------------- sin-cos tables
def _sincos_1d(dim, pos):
    omega = np.arange(dim // 2, dtype=float) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def mae_2d_sincos(dim, grid_size, cls_token=True):
    """MAE ``util/pos_embed.get_2d_sincos_pos_embed`` (w first, then h)."""
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape(2, 1, grid_size, grid_size)
    emb = np.concatenate([_sincos_1d(dim // 2, grid[0]), _sincos_1d(dim // 2, grid[1])], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


def prithvi_3d_sincos(dim, grid_size, cls_token=True):
    """Prithvi ``get_3d_sincos_pos_embed``: [w | h | t] with 6/16, 6/16, 4/16 of the width."""
    t, h, w = grid_size
    w_dim = h_dim = dim // 16 * 6
    t_dim = dim // 16 * 4
    w_emb = np.tile(_sincos_1d(w_dim, np.arange(w)), (t * h, 1))
    h_emb = np.tile(np.repeat(_sincos_1d(h_dim, np.arange(h)), w, axis=0), (t, 1))
    t_emb = np.repeat(_sincos_1d(t_dim, np.arange(t)), h * w, axis=0)
    emb = np.concatenate([w_emb, h_emb, t_emb], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


def random_masking(x, mask_ratio, noise=None):
    N, L, D = x.shape
    len_keep = int(L * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(N, L, device=x.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
    mask = torch.ones([N, L], device=x.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, dim=1, index=ids_restore)
    return x_masked, mask, ids_restore


def _mae_loss(target, pred, mask, norm_pix_loss):
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


# ---------------------------------------------------------------------------- MAE (2D)
class MAEViT(nn.Module):
    """facebookresearch/mae ``MaskedAutoencoderViT`` (timm blocks, LayerNorm eps 1e-6)."""

    def __init__(
        self,
        img_size=224,
        patch_size=16,
        in_chans=3,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        decoder_embed_dim=512,
        decoder_depth=8,
        decoder_num_heads=16,
        mlp_ratio=4.0,
        norm_pix_loss=False,
    ):
        super().__init__()
        norm = lambda d: nn.LayerNorm(d, eps=1e-6)  # noqa: E731
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(mae_2d_sincos(embed_dim, grid), requires_grad=False)
        self.blocks = nn.ModuleList(
            [
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm)
                for _ in range(depth)
            ]
        )
        self.norm = norm(embed_dim)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            mae_2d_sincos(decoder_embed_dim, grid), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            [
                Block(
                    decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm
                )
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = norm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans)
        self.norm_pix_loss = norm_pix_loss
        _randomise(self)

    def patchify(self, imgs):
        p = self.patch_size
        n, c, hh, ww = imgs.shape
        h, w = hh // p, ww // p
        x = imgs.reshape(n, c, h, p, w, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(n, h * w, p**2 * c)

    def forward_encoder(self, x, mask_ratio, noise=None):
        x = self.patch_embed(x) + self.pos_embed[:, 1:, :]
        mask = ids_restore = None
        if mask_ratio:
            x, mask, ids_restore = random_masking(x, mask_ratio, noise)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]

    def forward(self, imgs, mask_ratio=0.75, noise=None):
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        loss = _mae_loss(self.patchify(imgs), pred, mask, self.norm_pix_loss)
        return loss, pred, mask


# ------------------------------------------------------------------------------ Prithvi
def _sincos_1d_torch(dim, pos):
    omega = torch.arange(dim // 2, dtype=pos.dtype) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = torch.einsum("m,d->md", pos.reshape(-1), omega)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


class TemporalEncoder(nn.Module):
    def __init__(self, embed_dim, trainable_scale=False):
        super().__init__()
        self.year_embed_dim = embed_dim // 2
        self.julian_day_embed_dim = embed_dim - self.year_embed_dim
        if trainable_scale:
            self.scale = nn.Parameter(torch.full((1,), 0.1))
        else:
            self.register_buffer("scale", torch.ones(1))

    def forward(self, temporal_coords, tokens_per_frame=None):
        shape = (*temporal_coords.shape[:2], -1)
        year = _sincos_1d_torch(self.year_embed_dim, temporal_coords[:, :, 0].flatten())
        day = _sincos_1d_torch(self.julian_day_embed_dim, temporal_coords[:, :, 1].flatten())
        embedding = self.scale * torch.cat([year.reshape(shape), day.reshape(shape)], dim=-1)
        if tokens_per_frame is not None:
            embedding = torch.repeat_interleave(embedding, tokens_per_frame, dim=1)
        return embedding


class LocationEncoder(nn.Module):
    def __init__(self, embed_dim, trainable_scale=False):
        super().__init__()
        self.lat_embed_dim = embed_dim // 2
        self.lon_embed_dim = embed_dim - self.lat_embed_dim
        if trainable_scale:
            self.scale = nn.Parameter(torch.full((1,), 0.1))
        else:
            self.register_buffer("scale", torch.ones(1))

    def forward(self, location_coords):
        shape = (location_coords.shape[0], 1, -1)
        lat = _sincos_1d_torch(self.lat_embed_dim, location_coords[:, 0].flatten()).reshape(shape)
        lon = _sincos_1d_torch(self.lon_embed_dim, location_coords[:, 1].flatten()).reshape(shape)
        return self.scale * torch.cat([lat, lon], dim=-1)


class PrithviViT(nn.Module):
    def __init__(
        self, img_size, patch_size, num_frames, in_chans, embed_dim, depth, num_heads, mlp_ratio,
        coords_encoding=(),
    ):  # fmt: skip
        super().__init__()
        self.patch_size = patch_size
        self.num_frames = num_frames
        self.grid = [
            num_frames // patch_size[0],
            img_size // patch_size[1],
            img_size // patch_size[2],
        ]
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(in_chans, embed_dim, patch_size, patch_size)
        self.temporal_encoding = "time" in coords_encoding
        self.location_encoding = "location" in coords_encoding
        if self.temporal_encoding:
            self.temporal_embed_enc = TemporalEncoder(embed_dim, True)
        if self.location_encoding:
            self.location_embed_enc = LocationEncoder(embed_dim, True)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", prithvi_3d_sincos(embed_dim, self.grid))
        # Prithvi passes torch's nn.LayerNorm: eps 1e-5.
        self.blocks = nn.ModuleList(
            [
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm)
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x, mask_ratio=0.75, noise=None, temporal_coords=None, location_coords=None):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:, :]
        if self.temporal_encoding and temporal_coords is not None:
            x = x + self.temporal_embed_enc(temporal_coords, x.shape[1] // self.num_frames)
        if self.location_encoding and location_coords is not None:
            x = x + self.location_embed_enc(location_coords)
        mask = ids_restore = None
        if mask_ratio:
            x, mask, ids_restore = random_masking(x, mask_ratio, noise)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore


class MAEDecoder(nn.Module):
    def __init__(
        self,
        patch_size,
        grid,
        in_chans,
        encoder_embed_dim,
        decoder_embed_dim,
        depth,
        num_heads,
        mlp_ratio,
        coords_encoding=(),
    ):
        super().__init__()
        self.num_frames = grid[0] * patch_size[0]
        self.temporal_encoding = "time" in coords_encoding
        self.location_encoding = "location" in coords_encoding
        if self.temporal_encoding:
            self.temporal_embed_dec = TemporalEncoder(decoder_embed_dim, True)
        if self.location_encoding:
            self.location_embed_dec = LocationEncoder(decoder_embed_dim, True)
        self.decoder_embed = nn.Linear(encoder_embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer("decoder_pos_embed", prithvi_3d_sincos(decoder_embed_dim, grid))
        self.decoder_blocks = nn.ModuleList(
            [
                Block(
                    decoder_embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm
                )
                for _ in range(depth)
            ]
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, int(np.prod(patch_size)) * in_chans)

    def forward(self, hidden_states, ids_restore, temporal_coords=None, location_coords=None):
        x = self.decoder_embed(hidden_states)
        cls_token = x[:, :1, :]
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x = torch.gather(x, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        cls_token = cls_token + self.decoder_pos_embed[:, :1, :]
        x = x + self.decoder_pos_embed[:, 1:, :]
        if self.temporal_encoding and temporal_coords is not None:
            x = x + self.temporal_embed_dec(temporal_coords, x.shape[1] // self.num_frames)
        if self.location_encoding and location_coords is not None:
            x = x + self.location_embed_dec(location_coords)
        x = torch.cat([cls_token, x], dim=1)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:, :]


class PrithviMAE(nn.Module):
    """Prithvi MAE; ``forward`` takes ``(B, C, T, H, W)`` as the original does."""

    def __init__(
        self, img_size=224, patch_size=(1, 16, 16), num_frames=4, in_chans=6, embed_dim=768,
        depth=12, num_heads=12, decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16,
        mlp_ratio=4.0, norm_pix_loss=False, coords_encoding=(),
    ):  # fmt: skip
        super().__init__()
        self.encoder = PrithviViT(
            img_size, patch_size, num_frames, in_chans, embed_dim, depth, num_heads, mlp_ratio,
            coords_encoding,
        )  # fmt: skip
        self.decoder = MAEDecoder(
            patch_size, self.encoder.grid, in_chans, embed_dim, decoder_embed_dim, decoder_depth,
            decoder_num_heads, mlp_ratio, coords_encoding,
        )  # fmt: skip
        self.patch_size = patch_size
        self.norm_pix_loss = norm_pix_loss
        _randomise(self)

    def patchify(self, x):
        b, c, tt, hh, ww = x.shape
        s, p, q = self.patch_size
        x = x.reshape(b, c, tt // s, s, hh // p, p, ww // q, q)
        x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # b t h w s p q c
        return x.reshape(b, (tt // s) * (hh // p) * (ww // q), s * p * q * c)

    def forward_features(self, x, temporal_coords=None, location_coords=None):
        return self.encoder(x, 0.0, None, temporal_coords, location_coords)[0]

    def forward(
        self, pixel_values, mask_ratio=0.75, noise=None, temporal_coords=None, location_coords=None
    ):
        latent, mask, ids_restore = self.encoder(
            pixel_values, mask_ratio, noise, temporal_coords, location_coords
        )
        pred = self.decoder(latent, ids_restore, temporal_coords, location_coords)
        return _mae_loss(self.patchify(pixel_values), pred, mask, self.norm_pix_loss), pred, mask


# ---------------------------------------------------------------------------- Scale-MAE
def scalemae_2d_sincos_with_resolution(dim, grid_size, res):
    """Scale-MAE ``get_2d_sincos_pos_embed_with_resolution`` (torch, float32), cls row included."""
    grid_h = torch.arange(grid_size, dtype=torch.float32)
    grid_w = torch.arange(grid_size, dtype=torch.float32)
    grid = torch.stack(torch.meshgrid(grid_w, grid_h, indexing="xy"), dim=0)
    grid = torch.einsum("chw,n->cnhw", grid, res)
    _, n, h, w = grid.shape
    emb = torch.cat(
        [_sincos_1d_torch(dim // 2, grid[0]), _sincos_1d_torch(dim // 2, grid[1])], dim=1
    )
    emb = emb.reshape(n, h * w, dim)
    return torch.cat([torch.zeros([n, 1, dim]), emb], dim=1)


class ScaleMAE(MAEViT):
    """Scale-MAE ``models_mae.MaskedAutoencoderViT``: the MAE encoder with positions computed
    per sample from ``input_res`` (the stored ``pos_embed`` is the res-1 table, unused), and a
    decoder ending in an FPN + FCN head instead of ``decoder_pred`` (kept here as stand-in
    modules under the same names, enough for the decoder's state-dict layout)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        dec = self.decoder_embed.out_features
        del self.decoder_pred
        self.mask_token_decoder = nn.Parameter(torch.zeros(1, 1, dec))
        self.fpn = nn.Conv2d(dec, dec, 1)
        self.fcn = nn.Conv2d(dec, 3, 1)
        _randomise(self)

    def forward_encoder(self, x, mask_ratio=0.0, input_res=None):
        _, _, h, w = x.shape
        x = self.patch_embed(x)
        grid = int(((h * w) / self.patch_size**2) ** 0.5)
        pos_embed = scalemae_2d_sincos_with_resolution(x.shape[-1], grid, input_res)
        x = x + pos_embed[:, 1:, :]
        cls = (self.cls_token + pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)
