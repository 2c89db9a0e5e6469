"""Pyramid Vision Transformer v2 (Wang et al. 2022, "PVT v2", Sec. 3), one of SurgeNet's backbones (PVTv2-B2).

Four stages; each starts with an overlapping patch embedding (conv 7x7/4 for stage 1, 3x3/2 after, padding
k//2, then LayerNorm) and runs pre-norm blocks whose attention uses spatial reduction (keys/values from a
``sr x sr`` strided conv of the map + LayerNorm; Sec. 3.1 "linear SRA" is not supported) and whose MLP has a
3x3 depthwise conv between its two linears (Sec. 3.3 "convolutional feed-forward"). Each stage ends with a
LayerNorm.

Parameter names follow the whai362/PVT and SurgeNet releases (``patch_embedS.{proj,norm}``,
``blockS.B.{norm1,attn.{q,kv,sr,norm,proj},norm2,mlp.{fc1,dwconv.dwconv,fc2}}``, ``normS``).
``forward(images [N, C, H, W]) -> [N, (H/32)*(W/32), C_last]``: the last stage's tokens after its norm, in
raster order. The number of heads per stage is not stored in the weights (``heads``; B2: 1, 2, 5, 8).

LayerNorm epsilons are those of the release: 1e-6 in the blocks and stage norms (``norm_layer``), the
``nn.LayerNorm`` default 1e-5 in the patch embeddings and the spatial-reduction norm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unisurg.models.strict_load import CheckpointError, RequiredKeys

PVT_V2_B2_HEADS = (1, 2, 5, 8)
BLOCK_EPS = 1e-6
EMBED_EPS = 1e-5  # nn.LayerNorm default, as in the release's patch embedding and spatial reduction


@dataclass
class PVTv2Config:
    depths: tuple[int, ...] = (3, 4, 6, 3)  # PVTv2-B2
    dims: tuple[int, ...] = (64, 128, 320, 512)
    heads: tuple[int, ...] = PVT_V2_B2_HEADS
    mlp_ratios: tuple[int, ...] = (8, 8, 4, 4)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    qkv_bias: bool = True
    in_chans: int = 3


class OverlapPatchEmbed(nn.Module):
    """Strided conv with overlapping windows + LayerNorm; ``[N, C, H, W] -> ([N, h*w, D], h, w)``."""

    def __init__(self, cin: int, dim: int, kernel: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, kernel, stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim, eps=EMBED_EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys/values come from the map reduced by an ``sr x sr`` strided conv."""

    def __init__(self, dim: int, heads: int, sr: int, qkv_bias: bool):
        super().__init__()
        if dim % heads:
            raise ValueError(f"PVT v2 attention: width {dim} is not divisible by {heads} heads")
        self.heads, self.sr_ratio = heads, sr
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        if sr > 1:
            self.sr = nn.Conv2d(dim, dim, sr, stride=sr)
            self.norm = nn.LayerNorm(dim, eps=EMBED_EPS)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        n, length, d = x.shape
        q = self.q(x).reshape(n, length, self.heads, d // self.heads).transpose(1, 2)
        src = x
        if self.sr_ratio > 1:
            src = self.sr(x.transpose(1, 2).reshape(n, d, h, w)).flatten(2).transpose(1, 2)
            src = self.norm(src)
        k, v = self.kv(src).reshape(n, -1, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, d))


class DepthwiseConv(nn.Module):
    """3x3 depthwise conv applied to a token sequence laid out on its ``h x w`` grid."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        n, _, d = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(n, d, h, w)).flatten(2).transpose(1, 2)


class ConvMLP(nn.Module):
    """``fc2(GELU(dwconv(fc1(x))))`` (PVT v2 Sec. 3.3)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class PVTv2Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, sr: int, qkv_bias: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_EPS)
        self.attn = SpatialReductionAttention(dim, heads, sr, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_EPS)
        self.mlp = ConvMLP(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x), h, w)


class PVTv2(nn.Module):
    """PVT v2 trunk: ``[N, C, H, W] -> [N, (H/32)*(W/32), dims[-1]]`` (last stage after its norm)."""

    def __init__(self, c: PVTv2Config | None = None):
        super().__init__()
        c = c or PVTv2Config()
        self.config = c
        self.num_stages = len(c.dims)
        for s in range(self.num_stages):
            cin = c.in_chans if s == 0 else c.dims[s - 1]
            kernel, stride = (7, 4) if s == 0 else (3, 2)
            setattr(self, f"patch_embed{s + 1}", OverlapPatchEmbed(cin, c.dims[s], kernel, stride))
            setattr(self, f"block{s + 1}", nn.ModuleList(
                PVTv2Block(c.dims[s], c.heads[s], c.mlp_ratios[s], c.sr_ratios[s], c.qkv_bias)
                for _ in range(c.depths[s])))
            setattr(self, f"norm{s + 1}", nn.LayerNorm(c.dims[s], eps=BLOCK_EPS))
        self.embed_dim = c.dims[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.patch_embed1.proj.weight.dtype)
        n = x.shape[0]
        for s in range(1, self.num_stages + 1):
            x, h, w = getattr(self, f"patch_embed{s}")(x)
            for blk in getattr(self, f"block{s}"):
                x = blk(x, h, w)
            x = getattr(self, f"norm{s}")(x)
            if s < self.num_stages:
                x = x.transpose(1, 2).reshape(n, -1, h, w)
        return x


def pvt_v2_config(sd: dict[str, torch.Tensor], *, source: str, heads: tuple[int, ...] | None = None) -> PVTv2Config:
    """Depths, widths, MLP and spatial-reduction ratios of a PVT v2 state dict; ``heads`` (not stored in the
    weights) defaults to B2's (1, 2, 5, 8)."""
    sd = RequiredKeys(sd, source=source)
    if "patch_embed1.proj.weight" not in sd:
        raise CheckpointError(f"{source}: no 'patch_embed1.proj.weight': not a PVT v2 state dict")
    n_stages = max(int(m.group(1)) for k in sd if (m := re.match(r"patch_embed(\d+)\.", k)))
    heads = tuple(heads) if heads is not None else PVT_V2_B2_HEADS
    if len(heads) != n_stages:
        raise CheckpointError(f"{source}: {n_stages} stages but {len(heads)} head counts given ({heads}); pass "
                              "?heads=h1,h2,... with one number per stage")
    depths, dims, ratios, srs = [], [], [], []
    for s in range(1, n_stages + 1):
        ids = {int(m.group(1)) for k in sd if (m := re.match(rf"block{s}\.(\d+)\.", k))}
        if not ids or ids != set(range(max(ids) + 1)):
            raise CheckpointError(f"{source}: block indices under 'block{s}.' must be 0..N-1, found {sorted(ids)}")
        depths.append(max(ids) + 1)
        dim = sd[f"patch_embed{s}.proj.weight"].shape[0]
        dims.append(dim)
        ratios.append(sd[f"block{s}.0.mlp.fc1.weight"].shape[0] // dim)
        sr_w = sd.get(f"block{s}.0.attn.sr.weight")
        if sr_w is not None and sr_w.shape[-1] == 1:
            raise CheckpointError(f"{source}: 'block{s}.0.attn.sr.weight' is 1x1: the linear-SRA variant "
                                  "(pvt_v2_*_li) is not supported")
        srs.append(1 if sr_w is None else sr_w.shape[-1])
    return PVTv2Config(depths=tuple(depths), dims=tuple(dims), heads=heads, mlp_ratios=tuple(ratios),
                       sr_ratios=tuple(srs), qkv_bias="block1.0.attn.q.bias" in sd,
                       in_chans=sd["patch_embed1.proj.weight"].shape[1])
