"""EfficientViT (Liu et al. 2023, "EfficientViT: Memory Efficient Vision Transformer with Cascaded Group
Attention", Sec. 3), the architecture of GSViT (EfficientViT-M5).

Everything is conv + BatchNorm (``Conv2d_BN``: a bias-free conv ``c`` and a BatchNorm ``bn``, evaluated with its
running statistics). A 4-layer 3x3/2 conv stem (stride 16), then three stages of sandwich blocks
``dw0 -> ffn0 -> mixer -> dw1 -> ffn1`` (each a residual: depthwise 3x3 conv, 1x1 ReLU FFN of ratio 2,
cascaded group attention in local windows; Sec. 3.1-3.2); between stages a "subsample" of
(residual dw + FFN), an inverted-residual patch merging with squeeze-excitation and stride 2, (residual dw + FFN).

Cascaded group attention (Sec. 3.2): the input channels are split in ``h`` chunks; head ``i`` sees chunk ``i``
plus the previous head's output, projects it to q/k/v with a 1x1 Conv2d_BN, refines q by a depthwise
``k_i x k_i`` conv, and adds a learned bias per head and relative offset ``(|dy|, |dx|)`` to the logits. Attention
runs inside non-overlapping ``window x window`` windows (the map zero-padded to a multiple) when the map is larger
than a window.

The positional biases are tied to the trained feature-map sizes (``resolution``: the image size of the release,
224 for every EfficientViT-M*), so the model accepts exactly that image size, as the release does.

Parameter names follow the microsoft/Cream EfficientViT release (``patch_embed.{0,2,4,6}``, ``blocks{1,2,3}.I.``,
``dw0.m``, ``ffn0.m.pw1``, ``mixer.m.attn.{qkvs,dws,proj.1,attention_biases,attention_bias_idxs}``; squeeze-
excitation ``se.{fc1,fc2}`` as timm's ``SEModule``). ``forward(images [N, C, H, W]) -> [N, h*w, C_last]``: the
last stage's map (4 x 4 at 224 px) in raster order.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unisurg.models.strict_load import CheckpointError, RequiredKeys


@dataclass
class EfficientViTConfig:
    embed_dims: tuple[int, ...] = (192, 288, 384)  # EfficientViT-M5
    depths: tuple[int, ...] = (1, 3, 4)
    num_heads: tuple[int, ...] = (3, 3, 4)
    key_dims: tuple[int, ...] = (16, 16, 16)
    value_dims: tuple[int, ...] = (64, 96, 96)  # int(embed_dim / (key_dim * heads) * key_dim) per stage
    window_sizes: tuple[int, ...] = (7, 7, 7)
    kernels: tuple[int, ...] = (7, 5, 3, 3)  # depthwise kernel on q, per head
    se_dims: tuple[int, ...] = (192, 288)  # squeeze-excitation width of each patch merging
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3

    def resolutions(self) -> list[int]:
        """Feature-map side of each stage: img/16, then ceil-halved by each stride-2 merging."""
        res = [self.img_size // self.patch_size]
        for _ in self.embed_dims[1:]:
            res.append((res[-1] - 1) // 2 + 1)
        return res


class ConvBN(nn.Sequential):
    """Bias-free conv ``c`` followed by BatchNorm ``bn`` (names of the release's ``Conv2d_BN``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, padding: int = 0, groups: int = 1):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))


class Residual(nn.Module):
    """``x + m(x)`` (stochastic depth of the release is a training-only detail)."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


class FFN(nn.Module):
    """1x1 ConvBN -> ReLU -> 1x1 ConvBN."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.pw1 = ConvBN(dim, hidden)
        self.act = nn.ReLU()
        self.pw2 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.act(self.pw1(x)))


class SqueezeExcite(nn.Module):
    """``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))`` with 1x1 convs with bias (Hu et al. 2018; timm ``SEModule``)."""

    def __init__(self, dim: int, reduced: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(s)


class PatchMerging(nn.Module):
    """Inverted residual with stride 2: 1x1 expand x4, ReLU, depthwise 3x3/2, ReLU, SE, 1x1 project."""

    def __init__(self, dim: int, out_dim: int, se_dim: int):
        super().__init__()
        hidden = 4 * dim
        self.conv1 = ConvBN(dim, hidden)
        self.act = nn.ReLU()
        self.conv2 = ConvBN(hidden, hidden, 3, 2, 1, groups=hidden)
        self.se = SqueezeExcite(hidden, se_dim)
        self.conv3 = ConvBN(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.se(self.act(self.conv2(self.act(self.conv1(x))))))


def relative_offset_index(side: int) -> torch.Tensor:
    """``[side^2, side^2]`` index of the offset ``(|dy|, |dx|)`` between two window positions, offsets numbered
    in order of first appearance when scanning pairs in raster order (the release's ``attention_bias_idxs``)."""
    points = list(itertools.product(range(side), range(side)))
    numbering: dict[tuple[int, int], int] = {}
    idx = []
    for p in points:
        for q in points:
            off = (abs(p[0] - q[0]), abs(p[1] - q[1]))
            idx.append(numbering.setdefault(off, len(numbering)))
    return torch.tensor(idx, dtype=torch.long).view(len(points), len(points))


class CascadedGroupAttention(nn.Module):
    """Cascaded group attention over one ``side x side`` window (Liu et al. 2023, Sec. 3.2, Eq. 2-3)."""

    def __init__(self, dim: int, key_dim: int, value_dim: int, heads: int, side: int, kernels: tuple[int, ...]):
        super().__init__()
        self.key_dim, self.value_dim, self.heads = key_dim, value_dim, heads
        chunk = dim // heads
        self.qkvs = nn.ModuleList(ConvBN(chunk, 2 * key_dim + value_dim) for _ in range(heads))
        self.dws = nn.ModuleList(ConvBN(key_dim, key_dim, kernels[i], 1, kernels[i] // 2, groups=key_dim)
                                 for i in range(heads))
        self.proj = nn.Sequential(nn.ReLU(), ConvBN(value_dim * heads, dim))
        idx = relative_offset_index(side)
        self.attention_biases = nn.Parameter(torch.zeros(heads, int(idx.max()) + 1))
        self.register_buffer("attention_bias_idxs", idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        bias = self.attention_biases[:, self.attention_bias_idxs]
        chunks = x.chunk(self.heads, dim=1)
        outs = []
        feat = chunks[0]
        for i in range(self.heads):
            if i > 0:
                feat = feat + chunks[i]
            q, k, v = self.qkvs[i](feat).split([self.key_dim, self.key_dim, self.value_dim], dim=1)
            q = self.dws[i](q)
            # explicit softmax attention: windows are <= 49 tokens with 16-wide keys (no gain from SDPA), and this
            # order of operations reproduces the release to float rounding
            logits = q.flatten(2).transpose(1, 2) @ k.flatten(2) * self.key_dim ** -0.5 + bias[i]
            feat = (v.flatten(2) @ logits.softmax(dim=-1).transpose(1, 2)).view(n, self.value_dim, h, w)
            outs.append(feat)
        return self.proj(torch.cat(outs, 1))


class LocalWindowAttention(nn.Module):
    """Cascaded group attention inside non-overlapping windows of a ``resolution``-sided map."""

    def __init__(self, dim: int, key_dim: int, value_dim: int, heads: int, resolution: int, window: int,
                 kernels: tuple[int, ...]):
        super().__init__()
        self.resolution, self.window = resolution, window
        self.attn = CascadedGroupAttention(dim, key_dim, value_dim, heads, min(window, resolution), kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if (h, w) != (self.resolution, self.resolution):
            raise ValueError(f"EfficientViT: feature map {h}x{w}, but the positional biases were trained for "
                             f"{self.resolution}x{self.resolution}: feed images of the model's img_size")
        r = self.window
        if h <= r and w <= r:
            return self.attn(x)
        ph, pw = -h % r, -w % r
        y = F.pad(x.permute(0, 2, 3, 1), (0, 0, 0, pw, 0, ph))
        nh, nw = (h + ph) // r, (w + pw) // r
        y = y.view(n, nh, r, nw, r, c).transpose(2, 3).reshape(n * nh * nw, r, r, c).permute(0, 3, 1, 2)
        y = self.attn(y)
        y = y.permute(0, 2, 3, 1).view(n, nh, nw, r, r, c).transpose(2, 3).reshape(n, nh * r, nw * r, c)
        return y[:, :h, :w].permute(0, 3, 1, 2)


class EfficientViTBlock(nn.Module):
    """Sandwich block ``dw0 -> ffn0 -> mixer -> dw1 -> ffn1``, each residual (Liu et al. 2023, Sec. 3.1)."""

    def __init__(self, dim: int, key_dim: int, value_dim: int, heads: int, resolution: int, window: int,
                 kernels: tuple[int, ...]):
        super().__init__()
        self.dw0 = Residual(ConvBN(dim, dim, 3, 1, 1, groups=dim))
        self.ffn0 = Residual(FFN(dim, 2 * dim))
        self.mixer = Residual(LocalWindowAttention(dim, key_dim, value_dim, heads, resolution, window, kernels))
        self.dw1 = Residual(ConvBN(dim, dim, 3, 1, 1, groups=dim))
        self.ffn1 = Residual(FFN(dim, 2 * dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


def _dw_ffn(dim: int) -> nn.Sequential:
    return nn.Sequential(Residual(ConvBN(dim, dim, 3, 1, 1, groups=dim)), Residual(FFN(dim, 2 * dim)))


class EfficientViT(nn.Module):
    """EfficientViT trunk without the classifier: ``[N, C, H, W] -> [N, h*w, embed_dims[-1]]``."""

    def __init__(self, c: EfficientViTConfig | None = None):
        super().__init__()
        c = c or EfficientViTConfig()
        self.config = c
        d0 = c.embed_dims[0]
        self.patch_embed = nn.Sequential(
            ConvBN(c.in_chans, d0 // 8, 3, 2, 1), nn.ReLU(), ConvBN(d0 // 8, d0 // 4, 3, 2, 1), nn.ReLU(),
            ConvBN(d0 // 4, d0 // 2, 3, 2, 1), nn.ReLU(), ConvBN(d0 // 2, d0, 3, 2, 1))
        res = c.resolutions()
        stages: list[list[nn.Module]] = [[] for _ in c.embed_dims]
        for s, dim in enumerate(c.embed_dims):
            if s > 0:  # subsample from the previous stage
                prev = c.embed_dims[s - 1]
                stages[s] += [_dw_ffn(prev), PatchMerging(prev, dim, c.se_dims[s - 1]), _dw_ffn(dim)]
            stages[s] += [EfficientViTBlock(dim, c.key_dims[s], c.value_dims[s], c.num_heads[s], res[s],
                                            c.window_sizes[s], c.kernels) for _ in range(c.depths[s])]
        for s, mods in enumerate(stages):
            setattr(self, f"blocks{s + 1}", nn.Sequential(*mods))
        self.embed_dim = c.embed_dims[-1]

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images.to(self.patch_embed[0].c.weight.dtype))
        for s in range(len(self.config.embed_dims)):
            x = getattr(self, f"blocks{s + 1}")(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_map(images).flatten(2).transpose(1, 2)


def efficientvit_config(sd: dict[str, torch.Tensor], *, source: str, img_size: int = 224,
                        window: int = 7) -> EfficientViTConfig:
    """Widths, depths, heads, key/value widths, q-kernels and SE widths of an EfficientViT state dict (names as
    in :class:`EfficientViT`). The image size and window, not stored in the weights, are given; they are
    checked against the stored ``attention_bias_idxs`` of each stage."""
    sd = RequiredKeys(sd, source=source)
    n_stages = max((int(m.group(1)) for k in sd if (m := re.match(r"blocks(\d+)\.", k))), default=0)
    if n_stages < 1 or "patch_embed.0.c.weight" not in sd:
        raise CheckpointError(f"{source}: no 'patch_embed.0.c.weight' / 'blocksN.' entries: not an EfficientViT")
    dims, depths, heads, kdims, vdims, se = [], [], [], [], [], []
    kernels: list[int] = []
    firsts: list[str] = []  # the first attention module of each stage
    for s in range(1, n_stages + 1):
        attn_blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(rf"blocks{s}\.(\d+)\.mixer\.", k))})
        if not attn_blocks:
            raise CheckpointError(f"{source}: no attention block under 'blocks{s}.'")
        first = f"blocks{s}.{attn_blocks[0]}.mixer.m.attn"
        firsts.append(first)
        depths.append(len(attn_blocks))
        dims.append(sd[f"blocks{s}.{attn_blocks[0]}.dw0.m.c.weight"].shape[0])
        h = len({int(m.group(1)) for k in sd if (m := re.match(rf"{re.escape(first)}\.qkvs\.(\d+)\.", k))})
        heads.append(h)
        kd = sd[f"{first}.dws.0.c.weight"].shape[0]
        kdims.append(kd)
        vdims.append(sd[f"{first}.qkvs.0.c.weight"].shape[0] - 2 * kd)
        ks = [sd[f"{first}.dws.{i}.c.weight"].shape[-1] for i in range(h)]
        kernels = ks if len(ks) > len(kernels) else kernels
        if s > 1:
            key = f"blocks{s}.1.se.fc1.weight"
            if key not in sd:
                raise CheckpointError(f"{source}: missing key {key!r} (the patch merging before stage {s})")
            se.append(sd[key].shape[0])
    c = EfficientViTConfig(embed_dims=tuple(dims), depths=tuple(depths), num_heads=tuple(heads),
                           key_dims=tuple(kdims), value_dims=tuple(vdims), window_sizes=(window,) * n_stages,
                           kernels=tuple(kernels), se_dims=tuple(se), img_size=img_size,
                           in_chans=sd["patch_embed.0.c.weight"].shape[1])
    for s, (r, first) in enumerate(zip(c.resolutions(), firsts), start=1):
        key = f"{first}.attention_bias_idxs"
        side = min(window, r)
        if tuple(sd[key].shape) != (side * side, side * side):
            raise CheckpointError(
                f"{source}: {key!r} has shape {tuple(sd[key].shape)}, but img_size={img_size} and window={window} "
                f"give {side}x{side} attention windows in stage {s}; the file was trained for another image size "
                "or window (pass ?resolution= / ?window=)")
    return c
