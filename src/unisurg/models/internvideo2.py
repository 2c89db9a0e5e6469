"""InternVideo2 vision encoder (Wang et al. 2024), the token path SurgMotion probes, in pure PyTorch.

Architecture and parameter names of ``PretrainInternVideo2`` in OpenGVLab/InternVideo
(``InternVideo2/multi_modality/models/backbones/internvideo2/internvideo2.py``), forward with
``x_vis_only=True`` as SurgMotion's ``internvideo_adapter.py`` calls it: a Conv3d patch embedding
(tubelet 1, patch 14), a class token, one learned ``pos_embed`` ``[1, 1 + T * L, D]`` over (t, h, w),
pre-norm blocks with RMSNorm, attention with a fused ``qkv`` (no bias in the 1B/6B models) and
query/key RMSNorm over the full width (``qk_normalization``), layer scale ``ls1`` / ``ls2``, and no final
norm: the output is the residual stream after the last block. The CLIP-distillation heads
(``clip_projector``, ``clip_decoder``, ``final_clip_decoder``, ``clip_pos_embed``) are not on that path.

The official code has a fused CUDA path (flash attention, ``DropoutAddRMSNorm``, flash-attn ``FusedMLP``)
and a pure-PyTorch one; the 1B release was trained with the fused one, whose MLP uses the tanh
approximation of GELU (``activation='gelu_approx'``) while the pure path's ``Mlp`` uses the exact GELU.
``gelu='tanh'`` (default) matches the fused path, ``gelu='exact'`` the pure one; everything else is the
same arithmetic on both paths.

Tokens: patch tokens, class token dropped, ``[B, T * (H/14) * (W/14), D]`` in (t, h, w) order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

GELU_KINDS = {"tanh": "tanh", "exact": "none"}


@dataclass(frozen=True)
class InternVideo2Config:
    """Shape of an InternVideo2 vision encoder (all but ``num_heads`` and ``pos_frames`` read off the weights)."""

    embed_dim: int = 1408
    depth: int = 40
    num_heads: int = 16
    mlp_hidden: int = 6144
    patch_size: int = 14
    tubelet_size: int = 1
    in_chans: int = 3
    qkv_bias: bool = False
    qk_norm: bool = True
    layer_scale: bool = True
    pos_frames: int = 4  # T of pos_embed (frames per forward)
    pos_grid: int = 16  # side of the spatial part of pos_embed
    gelu: str = "tanh"
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.gelu not in GELU_KINDS:
            raise ValueError(f"InternVideo2Config.gelu={self.gelu!r}: expected one of {list(GELU_KINDS)}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"InternVideo2Config: embed_dim {self.embed_dim} is not divisible by "
                             f"num_heads {self.num_heads}")


class RMSNorm(nn.Module):
    """``w * x / sqrt(mean(x^2) + eps)``, computed in float32 (as the official ``RMSNorm``)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class LayerScale(nn.Module):
    """Per-channel ``gamma * x`` (computed in float32 as the official ``force_fp32`` default)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() * self.gamma.float()).to(x.dtype)


class QKNormAttention(nn.Module):
    """Self-attention with a fused ``qkv`` and RMSNorm of q and k over the full width (all heads), through SDPA."""

    def __init__(self, c: InternVideo2Config):
        super().__init__()
        d = c.embed_dim
        self.num_heads = c.num_heads
        self.qkv = nn.Linear(d, 3 * d, bias=c.qkv_bias)
        self.proj = nn.Linear(d, d)
        if c.qk_norm:
            self.q_norm = RMSNorm(d, c.norm_eps)
            self.k_norm = RMSNorm(d, c.norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, d).unbind(2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        h = self.num_heads
        q, k, v = (t.view(b, n, h, d // h).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class GeluMLP(nn.Module):
    """``fc2(gelu(fc1(x)))`` with the exact or the tanh-approximated GELU."""

    def __init__(self, dim: int, hidden: int, gelu: str):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.approximate = GELU_KINDS[gelu]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class InternVideo2Block(nn.Module):
    """``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))`` with RMSNorm."""

    def __init__(self, c: InternVideo2Config):
        super().__init__()
        self.norm1 = RMSNorm(c.embed_dim, c.norm_eps)
        self.attn = QKNormAttention(c)
        self.norm2 = RMSNorm(c.embed_dim, c.norm_eps)
        self.mlp = GeluMLP(c.embed_dim, c.mlp_hidden, c.gelu)
        self.ls1 = LayerScale(c.embed_dim) if c.layer_scale else nn.Identity()
        self.ls2 = LayerScale(c.embed_dim) if c.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class InternVideo2PatchEmbed(nn.Module):
    def __init__(self, c: InternVideo2Config):
        super().__init__()
        k = (c.tubelet_size, c.patch_size, c.patch_size)
        self.proj = nn.Conv3d(c.in_chans, c.embed_dim, kernel_size=k, stride=k)


class InternVideo2Encoder(nn.Module):
    """``[B, C, T, H, W] -> [B, T * Hp * Wp, D]`` for the clip size of ``pos_embed`` (``pos_frames`` frames of
    ``pos_grid * patch_size`` pixels): the residual stream after the last block, class token dropped."""

    def __init__(self, c: InternVideo2Config):
        super().__init__()
        self.config = c
        self.embed_dim = c.embed_dim
        self.patch_embed = InternVideo2PatchEmbed(c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        n = c.pos_frames // c.tubelet_size * c.pos_grid**2
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, c.embed_dim))
        self.blocks = nn.ModuleList([InternVideo2Block(c) for _ in range(c.depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if x.dim() != 5 or x.shape[1] != c.in_chans:
            raise ValueError(f"expected a clip [B, C={c.in_chans}, T, H, W], got shape {tuple(x.shape)}")
        t, h, w = x.shape[2:]
        side = c.pos_grid * c.patch_size
        if (t, h, w) != (c.pos_frames, side, side):
            raise ValueError(
                f"InternVideo2's pos_embed is for {c.pos_frames} frames of {side}x{side} pixels; got T={t}, {h}x{w} "
                "(resize frames to the backbone's img_size; longer clips go through in segments of pos_frames)"
            )
        x = self.patch_embed.proj(x.to(self.patch_embed.proj.weight.dtype)).flatten(2).transpose(1, 2)  # (t, h, w)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return x[:, 1:]
