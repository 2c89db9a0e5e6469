"""TimeSformer with divided space-time attention (Bertasius et al. 2021), Endo-FM's backbone, in pure PyTorch.

Architecture and parameter names of ``models/timesformer.py`` (``VisionTransformer``,
``attention_type='divided_space_time'``) in med-air/Endo-FM: a per-frame Conv2d patch embedding, a class
token, a learned spatial ``pos_embed`` ``[1, 1 + Np, D]`` and a learned ``time_embed`` ``[1, T0, D]``
(both resized with nearest-neighbour interpolation when the clip differs, as the official forward does),
blocks that first attend over time (``temporal_norm1``, ``temporal_attn``, ``temporal_fc``) and then over
space within each frame (``norm1``, ``attn``; the class token joins every frame and its updates are
averaged over frames), then an MLP; a final ``norm``.

Token layout: the official model keeps patch tokens in (h, w, t) order (time fastest). Here they are kept
in (t, h, w) order throughout (same arithmetic, permuted), and the output is the patch tokens after the
final norm, class token dropped, ``[B, T * Hp * Wp, D]`` in (t, h, w) order. (SurgMotion's Endo-FM
adapter drops the class token too but returns the official (h, w, t) order.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unisurg.models.blocks import MLP, Attention


@dataclass(frozen=True)
class TimeSformerConfig:
    """Shape of a divided space-time TimeSformer (all but ``num_heads`` can be read off the weights)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden: int = 3072
    patch_size: int = 16
    in_chans: int = 3
    pos_grid: int = 14  # side of the spatial pos_embed grid (img_size / patch_size at training)
    time_frames: int = 8  # length of time_embed (frames at training)
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"TimeSformerConfig: embed_dim {self.embed_dim} is not divisible by "
                             f"num_heads {self.num_heads}")


class PatchEmbed2d(nn.Module):
    """Per-frame ``Conv2d(kernel = stride = p)`` patch embedding."""

    def __init__(self, c: TimeSformerConfig):
        super().__init__()
        self.proj = nn.Conv2d(c.in_chans, c.embed_dim, kernel_size=c.patch_size, stride=c.patch_size)


class DividedSpaceTimeBlock(nn.Module):
    """One TimeSformer block (Bertasius et al. 2021, Sec. 3, "divided space-time attention").

    ``x``: ``[B, 1 + T * Np, D]``, class token first, patch tokens in (t, h, w) order.
    1. temporal: each spatial location attends over the T frames; ``temporal_fc`` projects the update.
    2. spatial: each frame's patches plus a copy of the class token attend among themselves; the class
       token's per-frame updates are averaged over frames.
    3. MLP. All three are residual; the spatial residual is added to the temporally updated tokens.
    """

    def __init__(self, c: TimeSformerConfig):
        super().__init__()
        d = c.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=c.norm_eps)
        self.attn = Attention(d, c.num_heads)
        self.temporal_norm1 = nn.LayerNorm(d, eps=c.norm_eps)
        self.temporal_attn = Attention(d, c.num_heads)
        self.temporal_fc = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=c.norm_eps)
        self.mlp = MLP(d, c.mlp_hidden)

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        b, _, d = x.shape
        cls, patches = x[:, :1], x[:, 1:]
        n = patches.shape[1] // t
        # temporal attention: sequences of T tokens, one per spatial location
        seq = patches.reshape(b, t, n, d).transpose(1, 2).reshape(b * n, t, d)
        res_t = self.temporal_attn(self.temporal_norm1(seq)).reshape(b, n, t, d).transpose(1, 2).reshape(b, t * n, d)
        xt = patches + self.temporal_fc(res_t)
        # spatial attention: one sequence per frame, the class token prepended to each
        frames = xt.reshape(b * t, n, d)
        cls_rep = cls.expand(b, t, d).reshape(b * t, 1, d)
        res_s = self.attn(self.norm1(torch.cat((cls_rep, frames), dim=1)))
        cls_res = res_s[:, 0].reshape(b, t, d).mean(1, keepdim=True)
        patch_res = res_s[:, 1:].reshape(b, t * n, d)
        x = torch.cat((cls + cls_res, xt + patch_res), dim=1)
        return x + self.mlp(self.norm2(x))


class TimeSformerEncoder(nn.Module):
    """``[B, C, T, H, W] -> [B, T * Hp * Wp, D]``: patch tokens after the final norm, (t, h, w) order."""

    def __init__(self, c: TimeSformerConfig):
        super().__init__()
        self.config = c
        self.embed_dim = c.embed_dim
        self.patch_embed = PatchEmbed2d(c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + c.pos_grid**2, c.embed_dim))
        self.time_embed = nn.Parameter(torch.zeros(1, c.time_frames, c.embed_dim))
        self.blocks = nn.ModuleList([DividedSpaceTimeBlock(c) for _ in range(c.depth)])
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)

    def spatial_pos(self, hp: int, wp: int) -> torch.Tensor:
        """Patch part of ``pos_embed`` for an ``hp x wp`` grid ``[1, hp*wp, D]``; nearest-neighbour resize as in
        the official ``forward_features`` when the grid differs from the training one."""
        table = self.pos_embed[:, 1:]
        g = self.config.pos_grid
        if (hp, wp) == (g, g):
            return table
        grid = table.transpose(1, 2).reshape(1, -1, g, g)
        return F.interpolate(grid, size=(hp, wp), mode="nearest").flatten(2).transpose(1, 2)

    def temporal_pos(self, t: int) -> torch.Tensor:
        """``time_embed`` for ``t`` frames ``[1, t, D]`` (nearest-neighbour resize as in the official code)."""
        if t == self.config.time_frames:
            return self.time_embed
        return F.interpolate(self.time_embed.transpose(1, 2), size=t, mode="nearest").transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if x.dim() != 5 or x.shape[1] != c.in_chans:
            raise ValueError(f"expected a clip [B, C={c.in_chans}, T, H, W], got shape {tuple(x.shape)}")
        b, _, t, h, w = x.shape
        if h % c.patch_size or w % c.patch_size:
            raise ValueError(f"frame size {h}x{w} is not divisible by the patch size {c.patch_size}")
        frames = x.transpose(1, 2).reshape(b * t, c.in_chans, h, w).to(self.patch_embed.proj.weight.dtype)
        feat = self.patch_embed.proj(frames)
        hp, wp = feat.shape[-2:]
        tokens = feat.flatten(2).transpose(1, 2)  # [B*T, Np, D]
        tokens = tokens + self.spatial_pos(hp, wp)
        d = tokens.shape[-1]
        tokens = tokens.reshape(b, t, hp * wp, d) + self.temporal_pos(t)[:, :, None]
        cls = self.cls_token + self.pos_embed[:, :1]
        x = torch.cat((cls.expand(b, 1, d), tokens.reshape(b, t * hp * wp, d)), dim=1)
        for blk in self.blocks:
            x = blk(x, t)
        return self.norm(x)[:, 1:]
