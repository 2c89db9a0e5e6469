"""CAFormer (Yu et al. 2023, "MetaFormer Baselines for Vision", Sec. 3.3), the architecture of SurgeNetXL.

Four stages of MetaFormer blocks ``x = r1 * x + mixer(norm1(x)); x = r2 * x + mlp(norm2(x))`` on channels-last
feature maps ``[N, H, W, C]``; stages 1-2 mix tokens with an inverted separable convolution (SepConv), stages 3-4
with self-attention (head width 32). Downsampling: a 7x7/4 conv stem (then a bias-free LayerNorm), then 3x3/2
convs preceded by a bias-free LayerNorm. ``r`` is a learned per-channel residual scale in stages 3-4 only.

Two activation flavours exist in released weights: the ImageNet CAFormer uses StarReLU (``s * relu(x)^2 + b``,
learned scalars ``act.scale``/``act.bias``), SurgeNet's CAFormer replaces it by a plain ReLU (no parameters);
:func:`caformer_config` tells them apart from the keys.

Parameter names follow the SurgeNet / sail-sg release (``downsample_layers.S.{conv,pre_norm,post_norm}``,
``stages.S.B.{norm1,token_mixer,res_scale1,norm2,mlp,res_scale2}``, final ``norm``), so their state dicts load
without renaming. ``forward(images [N, C, H, W]) -> [N, (H/32)*(W/32), C_last]``: the last stage's feature map in
raster order, before the final norm (which the release applies only after global average pooling).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unisurg.models.strict_load import CheckpointError, RequiredKeys

CAFORMER_HEAD_DIM = 32  # attention head width of every CAFormer (Yu et al. 2023, Table 1 / released code)
STEM = (7, 4, 2)  # kernel, stride, padding of the first downsampling
DOWN = (3, 2, 1)  # the three later downsamplings


@dataclass
class CAFormerConfig:
    depths: tuple[int, ...] = (3, 3, 9, 3)  # CAFormer-S18
    dims: tuple[int, ...] = (64, 128, 320, 512)
    mixers: tuple[str, ...] = ("sepconv", "sepconv", "attention", "attention")
    res_scale: tuple[bool, ...] = (False, False, True, True)
    num_heads: tuple[int, ...] = (0, 0, 10, 16)  # attention stages only (dim // 32)
    star_relu: bool = False  # True: StarReLU (ImageNet release); False: ReLU (SurgeNet)
    mlp_ratio: int = 4
    sepconv_ratio: int = 2
    sepconv_kernel: int = 7
    in_chans: int = 3
    eps: float = 1e-6


class StarReLU(nn.Module):
    """``scale * relu(x)^2 + bias`` with learned scalars (Yu et al. 2023, Sec. 3.2, Eq. 5)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.relu(x) ** 2 + self.bias


def activation(star: bool) -> nn.Module:
    return StarReLU() if star else nn.ReLU()


class BiasFreeLayerNorm(nn.Module):
    """LayerNorm over the last (channel) axis with a scale and no bias (MetaFormer's norm; weight name kept)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, None, self.eps)


class ChannelScale(nn.Module):
    """Learned per-channel multiplier (the residual scale ``res_scale``; Shleifer et al. 2021)."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class Downsampling(nn.Module):
    """Conv downsampling on ``[N, H, W, C]`` (stem: conv then norm; later: norm then conv)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, *, stem: bool, eps: float):
        super().__init__()
        self.stem = stem
        if not stem:
            self.pre_norm = BiasFreeLayerNorm(cin, eps)
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding)
        if stem:
            self.post_norm = BiasFreeLayerNorm(cout, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem:  # x: [N, C, H, W] image
            return self.post_norm(self.conv(x).permute(0, 2, 3, 1))
        x = self.pre_norm(x).permute(0, 3, 1, 2)
        return self.conv(x).permute(0, 2, 3, 1)


class SepConv(nn.Module):
    """Inverted separable conv token mixer (MobileNetV2-style; Yu et al. 2023, Sec. 3.3): pointwise expand,
    activation, depthwise ``k x k``, pointwise project; no biases."""

    def __init__(self, dim: int, c: CAFormerConfig):
        super().__init__()
        mid = c.sepconv_ratio * dim
        self.pwconv1 = nn.Linear(dim, mid, bias=False)
        self.act1 = activation(c.star_relu)
        self.dwconv = nn.Conv2d(mid, mid, c.sepconv_kernel, padding=c.sepconv_kernel // 2, groups=mid, bias=False)
        self.pwconv2 = nn.Linear(mid, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.pwconv1(x)).permute(0, 3, 1, 2)
        return self.pwconv2(self.dwconv(x).permute(0, 2, 3, 1))


class SelfAttention(nn.Module):
    """Multi-head self-attention over all ``H*W`` positions (fused qkv, no biases), through SDPA."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        inner = num_heads * CAFORMER_HEAD_DIM
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.proj = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(n, h * w, 3, self.num_heads, CAFORMER_HEAD_DIM).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(n, h, w, -1))


class MetaFormerMLP(nn.Module):
    """Bias-free two-layer MLP with the configured activation."""

    def __init__(self, dim: int, c: CAFormerConfig):
        super().__init__()
        self.fc1 = nn.Linear(dim, c.mlp_ratio * dim, bias=False)
        self.act = activation(c.star_relu)
        self.fc2 = nn.Linear(c.mlp_ratio * dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class MetaFormerBlock(nn.Module):
    """``x = r1 x + mixer(norm1 x); x = r2 x + mlp(norm2 x)`` (Yu et al. 2023, Eq. 1-2, with res-scale)."""

    def __init__(self, dim: int, stage: int, c: CAFormerConfig):
        super().__init__()
        self.norm1 = BiasFreeLayerNorm(dim, c.eps)
        mixer = c.mixers[stage]
        self.token_mixer = SepConv(dim, c) if mixer == "sepconv" else SelfAttention(dim, c.num_heads[stage])
        self.res_scale1 = ChannelScale(dim) if c.res_scale[stage] else nn.Identity()
        self.norm2 = BiasFreeLayerNorm(dim, c.eps)
        self.mlp = MetaFormerMLP(dim, c)
        self.res_scale2 = ChannelScale(dim) if c.res_scale[stage] else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res_scale1(x) + self.token_mixer(self.norm1(x))
        return self.res_scale2(x) + self.mlp(self.norm2(x))


class CAFormer(nn.Module):
    """CAFormer trunk: ``[N, C, H, W] -> [N, (H/32)*(W/32), dims[-1]]`` (last stage, raster order)."""

    def __init__(self, c: CAFormerConfig | None = None):
        super().__init__()
        c = c or CAFormerConfig()
        self.config = c
        chans = (c.in_chans, *c.dims)
        self.downsample_layers = nn.ModuleList(
            Downsampling(chans[s], chans[s + 1], *(STEM if s == 0 else DOWN), stem=s == 0, eps=c.eps)
            for s in range(len(c.dims))
        )
        self.stages = nn.ModuleList(
            nn.Sequential(*(MetaFormerBlock(c.dims[s], s, c) for _ in range(c.depths[s]))) for s in range(len(c.dims))
        )
        self.norm = nn.LayerNorm(c.dims[-1], eps=c.eps)  # kept for strict loading; used only by pooled()
        self.embed_dim = c.dims[-1]

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """Last-stage features, channels last ``[N, H/32, W/32, C]``."""
        x = images.to(self.downsample_layers[0].conv.weight.dtype)
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return x

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """The release's image embedding: ``norm(mean over positions)`` ``[N, C]``."""
        return self.norm(self.feature_map(images).mean((1, 2)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_map(images).flatten(1, 2)


def caformer_config(sd: dict[str, torch.Tensor], *, source: str) -> CAFormerConfig:
    """Depths, widths, mixers, heads and activation of a CAFormer state dict (names as in :class:`CAFormer`)."""
    sd = RequiredKeys(sd, source=source)
    n_stages = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"stages\.(\d+)\.", k))), default=-1)
    if n_stages < 1 or "downsample_layers.0.conv.weight" not in sd:
        raise CheckpointError(f"{source}: no 'downsample_layers.0.conv.weight' / 'stages.N.' entries: not a CAFormer")
    depths, dims, mixers, heads, res = [], [], [], [], []
    for s in range(n_stages):
        ids = {int(m.group(1)) for k in sd if (m := re.match(rf"stages\.{s}\.(\d+)\.", k))}
        if not ids or ids != set(range(max(ids) + 1)):
            raise CheckpointError(f"{source}: block indices under 'stages.{s}.' must be 0..N-1, found {sorted(ids)}")
        depths.append(max(ids) + 1)
        key = f"downsample_layers.{s}.conv.weight"
        if key not in sd:
            raise CheckpointError(f"{source}: missing key {key!r}")
        dims.append(sd[key].shape[0])
        if f"stages.{s}.0.token_mixer.qkv.weight" in sd:
            mixers.append("attention")
            inner = sd[f"stages.{s}.0.token_mixer.qkv.weight"].shape[0] // 3
            if inner % CAFORMER_HEAD_DIM:
                raise CheckpointError(f"{source}: 'stages.{s}.0.token_mixer.qkv.weight': attention width {inner} is "
                                      f"not a multiple of the CAFormer head width {CAFORMER_HEAD_DIM}")
            heads.append(inner // CAFORMER_HEAD_DIM)
        elif f"stages.{s}.0.token_mixer.pwconv1.weight" in sd:
            mixers.append("sepconv")
            heads.append(0)
        else:
            raise CheckpointError(f"{source}: stage {s} has neither 'token_mixer.qkv' (attention) nor "
                                  "'token_mixer.pwconv1' (SepConv): another MetaFormer variant, not supported")
        res.append(f"stages.{s}.0.res_scale1.scale" in sd)
    if any(k.endswith(".layer_scale1.scale") for k in sd):
        raise CheckpointError(f"{source}: 'layer_scale' entries: a MetaFormer with layer scale is not supported")
    star = any(k.endswith("mlp.act.scale") for k in sd)
    first_sep = next((s for s, m in enumerate(mixers) if m == "sepconv"), None)
    ratio, kernel = 2, 7
    if first_sep is not None:
        ratio = sd[f"stages.{first_sep}.0.token_mixer.pwconv1.weight"].shape[0] // dims[first_sep]
        kernel = sd[f"stages.{first_sep}.0.token_mixer.dwconv.weight"].shape[-1]
    return CAFormerConfig(
        depths=tuple(depths), dims=tuple(dims), mixers=tuple(mixers), res_scale=tuple(res), num_heads=tuple(heads),
        star_relu=star, mlp_ratio=sd["stages.0.0.mlp.fc1.weight"].shape[0] // dims[0], sepconv_ratio=ratio,
        sepconv_kernel=kernel, in_chans=sd["downsample_layers.0.conv.weight"].shape[1],
    )
