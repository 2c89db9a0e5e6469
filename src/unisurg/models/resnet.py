"""ResNet-50 trunk in torchvision's key layout (SelfSupSurg, GastroNet ResNet, SurgVLP's image tower)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unisurg.models.strict_load import CheckpointError, load_strict

RESNET_ANCHOR = "layer1.0.conv1.weight"





class Bottleneck(nn.Module):
    """ResNet bottleneck (He et al. 2016, Fig. 5 right), stride on the 3x3 conv (torchvision's "v1.5")."""

    def __init__(self, in_ch: int, width: int, out_ch: int, stride: int, groups: int, downsample: bool,
                 eps: float = 1e-5):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=eps)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=eps)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=eps)
        self.downsample = (nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                         nn.BatchNorm2d(out_ch, eps=eps)) if downsample else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


@dataclass
class ResNetConfig:
    depths: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)  # bottleneck (3x3) widths per stage
    outs: tuple[int, ...] = (256, 512, 1024, 2048)  # stage output channels
    stem: int = 64
    groups: int = 1
    in_chans: int = 3


class ResNetTrunk(nn.Module):
    """ResNet without pooling/classifier; ``forward(images [N,C,H,W]) -> [N, (H/32)*(W/32), C_out]`` (raster order)."""

    def __init__(self, c: ResNetConfig | None = None):
        super().__init__()
        c = c or ResNetConfig()
        self.config = c
        self.conv1 = nn.Conv2d(c.in_chans, c.stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(c.stem)
        in_ch = c.stem
        for s, (n, width, out) in enumerate(zip(c.depths, c.widths, c.outs)):
            blocks = []
            for i in range(n):
                stride = (1 if s == 0 else 2) if i == 0 else 1
                blocks.append(Bottleneck(in_ch, width, out, stride, c.groups, downsample=(i == 0)))
                in_ch = out
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.embed_dim = in_ch

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.conv1.weight.dtype)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), kernel_size=3, stride=2, padding=1)
        for s in range(len(self.config.depths)):
            x = getattr(self, f"layer{s + 1}")(x)
        return x.flatten(2).transpose(1, 2)


def resnet_config(sd: dict[str, torch.Tensor], *, source: str) -> ResNetConfig:
    """Stage depths and widths of a torchvision-format bottleneck ResNet state dict."""
    if "conv1.weight" not in sd:
        raise CheckpointError(f"{source}: missing key 'conv1.weight'")
    if "layer1.0.conv3.weight" not in sd:
        raise CheckpointError(f"{source}: no 'layer1.0.conv3.weight': basic-block ResNets (18/34) are not supported")
    depths, widths, outs = [], [], []
    for s in range(1, 5):
        ids = {int(m.group(1)) for k in sd if (m := re.match(rf"layer{s}\.(\d+)\.", k))}
        if not ids:
            raise CheckpointError(f"{source}: no 'layer{s}.N.' entries (a 4-stage torchvision ResNet is expected)")
        if ids != set(range(max(ids) + 1)):
            raise CheckpointError(f"{source}: non-contiguous block indices under 'layer{s}.': {sorted(ids)}")
        depths.append(max(ids) + 1)
        for key in (f"layer{s}.0.conv1.weight", f"layer{s}.0.conv2.weight", f"layer{s}.0.conv3.weight"):
            if key not in sd:
                raise CheckpointError(f"{source}: missing key {key!r}")
        widths.append(sd[f"layer{s}.0.conv1.weight"].shape[0])
        outs.append(sd[f"layer{s}.0.conv3.weight"].shape[0])
    groups = widths[0] // sd["layer1.0.conv2.weight"].shape[1]
    return ResNetConfig(tuple(depths), tuple(widths), tuple(outs), sd["conv1.weight"].shape[0], groups,
                        sd["conv1.weight"].shape[1])


def build_resnet(sd: dict[str, torch.Tensor], *, source: str) -> tuple[ResNetTrunk, list[str]]:
    """Strictly load a torchvision-format ResNet state dict (``fc.*`` ignored; a missing ``num_batches_tracked``,
    absent from old files and unused in eval mode, is filled with 0)."""
    cfg = resnet_config(sd, source=source)
    notes = []
    sd = dict(sd)
    dropped = [k for k in sd if k.startswith("fc.")]
    for k in dropped:
        del sd[k]
    if dropped:
        notes.append("classifier 'fc' ignored")
    with torch.device("meta"):
        model = ResNetTrunk(cfg)
    for k in model.state_dict():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.zeros((), dtype=torch.long)
    load_strict(model, sd, source=source, assign=True)
    return model.eval(), notes


