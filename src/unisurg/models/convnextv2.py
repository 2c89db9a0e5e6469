"""ConvNeXt V2 (Woo et al. 2023, "ConvNeXt V2", Sec. 3-4), one of SurgeNet's backbones (ConvNeXtV2-T).

A 4x4/4 conv stem + channels-first LayerNorm, then four stages of blocks
``x + pwconv2(GRN(GELU(pwconv1(LN(dwconv7x7(x))))))`` separated by LayerNorm + 2x2/2 conv downsamplings.
GRN (global response normalisation, Sec. 3 Eq. 1-3): ``gamma * (x * N(x)) + beta + x`` with
``N(x) = ||x||_spatial / mean_channels(||x||_spatial)``.

Parameter names follow the facebookresearch/ConvNeXt-V2 and SurgeNet releases (``downsample_layers.S.{0,1}``,
``stages.S.B.{dwconv,norm,pwconv1,grn,pwconv2}``, final ``norm``). ``forward(images [N, C, H, W]) ->
[N, (H/32)*(W/32), C_last]``: the last stage's feature map in raster order, before the final norm (which the
release applies only after global average pooling).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unisurg.models.strict_load import CheckpointError, RequiredKeys

GRN_EPS = 1e-6  # the release's epsilon in N(x)


@dataclass
class ConvNeXtV2Config:
    depths: tuple[int, ...] = (3, 3, 9, 3)  # ConvNeXtV2-T
    dims: tuple[int, ...] = (96, 192, 384, 768)
    in_chans: int = 3
    eps: float = 1e-6


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``[N, C, H, W]``."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class GRN(nn.Module):
    """Global response normalisation on channels-last ``[N, H, W, C]`` (Woo et al. 2023, Eq. 1-3)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + GRN_EPS)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """``x + pwconv2(GRN(GELU(pwconv1(LN(dwconv(x))))))`` on ``[N, C, H, W]``."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.pwconv2(self.grn(self.act(self.pwconv1(y))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    """ConvNeXt V2 trunk: ``[N, C, H, W] -> [N, (H/32)*(W/32), dims[-1]]`` (last stage, raster order)."""

    def __init__(self, c: ConvNeXtV2Config | None = None):
        super().__init__()
        c = c or ConvNeXtV2Config()
        self.config = c
        stem = nn.Sequential(nn.Conv2d(c.in_chans, c.dims[0], 4, stride=4), ChannelsFirstLayerNorm(c.dims[0], c.eps))
        layers = [stem]
        for s in range(1, len(c.dims)):
            layers.append(nn.Sequential(ChannelsFirstLayerNorm(c.dims[s - 1], c.eps),
                                        nn.Conv2d(c.dims[s - 1], c.dims[s], 2, stride=2)))
        self.downsample_layers = nn.ModuleList(layers)
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtV2Block(c.dims[s], c.eps) for _ in range(c.depths[s]))) for s in range(len(c.dims))
        )
        self.norm = nn.LayerNorm(c.dims[-1], eps=c.eps)  # kept for strict loading; used only by pooled()
        self.embed_dim = c.dims[-1]

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """Last-stage features ``[N, C, H/32, W/32]``."""
        x = images.to(self.downsample_layers[0][0].weight.dtype)
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return x

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """The release's image embedding: ``norm(mean over positions)`` ``[N, C]``."""
        return self.norm(self.feature_map(images).mean((2, 3)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_map(images).flatten(2).transpose(1, 2)


def convnextv2_config(sd: dict[str, torch.Tensor], *, source: str) -> ConvNeXtV2Config:
    """Depths and widths of a ConvNeXt V2 state dict (names as in :class:`ConvNeXtV2`)."""
    sd = RequiredKeys(sd, source=source)
    if "downsample_layers.0.0.weight" not in sd:
        raise CheckpointError(f"{source}: no 'downsample_layers.0.0.weight': not a ConvNeXt V2 state dict")
    if not any(".grn.gamma" in k for k in sd):
        raise CheckpointError(f"{source}: no '.grn.gamma' entries: a ConvNeXt V1 (no GRN) is not supported")
    n_stages = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"stages\.(\d+)\.", k)))
    depths, dims = [], []
    for s in range(n_stages):
        ids = {int(m.group(1)) for k in sd if (m := re.match(rf"stages\.{s}\.(\d+)\.", k))}
        if not ids or ids != set(range(max(ids) + 1)):
            raise CheckpointError(f"{source}: block indices under 'stages.{s}.' must be 0..N-1, found {sorted(ids)}")
        depths.append(max(ids) + 1)
        key = f"stages.{s}.0.dwconv.weight"
        if key not in sd:
            raise CheckpointError(f"{source}: missing key {key!r}")
        dims.append(sd[key].shape[0])
    return ConvNeXtV2Config(depths=tuple(depths), dims=tuple(dims),
                            in_chans=sd["downsample_layers.0.0.weight"].shape[1])
