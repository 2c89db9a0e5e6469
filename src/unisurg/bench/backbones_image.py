"""Image backbones applied frame by frame, in pure PyTorch (no timm, no torchvision).

* :class:`ImageViT` loads timm-format ViT state dicts (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
  ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``, ``norm``): EndoViT
  (MAE ViT-B/16 on Endo700k), SurgeNet-ViT, MAE / DeiT-style ViTs. Tokens: the patch tokens after the final
  norm (class and register tokens dropped).
* :class:`ResNetTrunk` loads torchvision-format ResNet-50 state dicts (``conv1``, ``bn1``, ``layerS.B.{conv1..3,
  bn1..3, downsample.0/1}``): GastroNet, SurgeNet ResNet-50. Tokens: the last-stage feature map, stride 32.
* :class:`FrameByFrame` runs either on every frame of a clip: ``[B, C, T, H, W] -> [B, T * Np, D]`` with
  tokens in (t, h, w) order (all tokens of frame 0 in raster order, then frame 1, ...).

Checkpoints are read with ``torch.load(weights_only=True)``; training files that wrap the weights
(``{"model": ...}``, ``{"state_dict": ...}``, DINO ``{"teacher": ...}``) and prefix them (``module.``,
``backbone.``) are unwrapped by locating an anchor key; ``?key=`` / ``?prefix=`` choose explicitly.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unisurg.bench.backbones import (IMAGENET_MEAN, IMAGENET_STD, Backbone, BackboneSpecError, SpecOptions,
                                     fingerprint_path, vit_size_name)
from unisurg.models.checkpoint import torch_load_weights
from unisurg.models.integrity import read_safetensors
from unisurg.models.blocks import MLP, Attention
from unisurg.models.strict_load import CheckpointError, load_strict

log = logging.getLogger(__name__)

VIT_ANCHOR = "patch_embed.proj.weight"
RESNET_ANCHOR = "layer1.0.conv1.weight"
# Where training scripts keep the weights, in order of preference (DINO: the teacher is the evaluated model).
CONTAINER_KEYS = ("model", "state_dict", "teacher", "model_state_dict", "module", "net", "network", "target_encoder")
# timm ViT sizes: width and heads (timm's vit_* definitions).
TIMM_VIT_SIZES = {"tiny": (192, 3), "small": (384, 6), "medium": (512, 8), "base": (768, 12), "large": (1024, 16),
                  "huge": (1280, 16), "giant": (1408, 16), "gigantic": (1664, 16)}
HEADS_BY_VIT_WIDTH = {w: h for w, h in TIMM_VIT_SIZES.values()}
# Entries of ViT checkpoints that are not part of the backbone (classifier, MAE decoder, pooled-feature norm).
VIT_IGNORED = re.compile(r"^(head\.|head_dist\.|decoder|mask_token$|pre_logits\.|attn_pool\.)")
DEFAULT_CHUNK = 64  # frames per forward of an image model


# ---------------------------------------------------------------- reading weight files


def read_weights(path: str | Path):
    """``torch.load(weights_only=True)`` (mmap when possible) or safetensors; argparse Namespaces (MAE/EndoViT
    training args) are allowed, nothing else that needs unpickling code."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch_load_weights(path)


def _has_anchor(d: dict, anchor: str) -> bool:
    return any(isinstance(k, str) and (k == anchor or k.endswith("." + anchor)) for k in d)


def select_state_dict(obj, anchor: str, *, source: str, key: str | None = None,
                      prefix: str | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The backbone state dict inside a checkpoint object, prefix removed, and notes on what was chosen.

    The container is ``obj[key]`` if given, else ``obj`` itself when it holds ``anchor`` (possibly under a prefix),
    else the first of :data:`CONTAINER_KEYS` (then any other entry) that does. The prefix is the one in front of
    ``anchor``; entries outside it (e.g. a DINO projection head) are left out and counted in the notes.
    """
    notes: list[str] = []
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    if key is not None:
        if not isinstance(obj.get(key), dict):
            raise CheckpointError(f"{source}: no dict entry {key!r} (top-level keys: {sorted(map(str, obj))[:20]})")
        obj = obj[key]
        notes.append(f"weights taken from entry {key!r}")
    elif not _has_anchor(obj, anchor):
        names = [k for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)]
        names += [k for k, v in obj.items() if isinstance(v, dict) and k not in names]
        found = [k for k in names if _has_anchor(obj[k], anchor)]
        if not found:
            raise CheckpointError(
                f"{source}: no {anchor!r} entry at the top level or in any of {names or 'its'} sub-dicts "
                f"(top-level keys: {sorted(map(str, obj))[:20]}); is this the right kind of model?"
            )
        obj = obj[found[0]]
        notes.append(f"weights taken from entry {found[0]!r}")
    if prefix is None:
        prefixes = sorted({k[: -len(anchor)] for k in obj if isinstance(k, str) and
                           (k == anchor or k.endswith("." + anchor))})
        if len(prefixes) > 1:
            raise CheckpointError(
                f"{source}: {anchor!r} appears under several prefixes {prefixes}; choose one with ?prefix=..."
            )
        prefix = prefixes[0]
    elif prefix + anchor not in obj:
        raise CheckpointError(f"{source}: no key {prefix + anchor!r} (prefix {prefix!r} given)")
    sd = {k[len(prefix):]: v for k, v in obj.items() if isinstance(k, str) and k.startswith(prefix)}
    dropped = len(obj) - len(sd)
    if prefix:
        notes.append(f"key prefix {prefix!r} removed")
    if dropped:
        notes.append(f"{dropped} entries outside {prefix or 'the backbone'!r} left out")
    return sd, notes


def sniff_image_state_dict(obj) -> str | None:
    """'timm-vit', 'resnet50' or None for a checkpoint object, from its anchor keys."""
    for anchor, kind in ((VIT_ANCHOR, "timm-vit"), (RESNET_ANCHOR, "resnet50")):
        try:
            sd, _ = select_state_dict(obj, anchor, source="?")
        except CheckpointError:
            continue
        if kind == "timm-vit" and getattr(sd.get(VIT_ANCHOR), "dim", lambda: 0)() == 4:
            return kind
        if kind == "resnet50" and "conv1.weight" in sd:
            return kind
    return None


# ---------------------------------------------------------------- frame by frame


class FrameByFrame(nn.Module):
    """Apply an image model (``[N, C, H, W] -> [N, Np, D]``) to every frame of ``[B, C, T, H, W]``.

    Returns ``[B, T * Np, D]`` in (t, h, w) order. Frames go through in chunks of ``chunk`` to bound memory.
    """

    def __init__(self, image_model: nn.Module, chunk: int = DEFAULT_CHUNK, in_chans: int = 3):
        super().__init__()
        if chunk < 1:
            raise ValueError(f"FrameByFrame: chunk must be >= 1, got {chunk}")
        self.image_model = image_model
        self.chunk = int(chunk)
        self.in_chans = in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # a batch of images: one frame each
            x = x[:, :, None]
        if x.dim() != 5 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected a clip [B, C={self.in_chans}, T, H, W], got shape {tuple(x.shape)} "
                "(a [B, T, C, H, W] clip must be permuted to [B, C, T, H, W])"
            )
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        outs = [self.image_model(f) for f in frames.split(self.chunk)]
        tokens = outs[0] if len(outs) == 1 else torch.cat(outs)
        return tokens.reshape(b, t * tokens.shape[1], tokens.shape[2])


def image_backbone(frame_model: nn.Module, *, name: str, spec: str, embed_dim: int, img_size: int, patch_size: int,
                   fingerprint: str, chunk: int = DEFAULT_CHUNK, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   in_chans: int = 3) -> Backbone:
    """A :class:`Backbone` of kind 'image' around ``frame_model`` (``num_frames`` 1, ``tubelet_size`` 1)."""
    return Backbone(
        name=name, spec=spec, model=FrameByFrame(frame_model, chunk, in_chans).eval(), embed_dim=embed_dim,
        num_frames=1, img_size=img_size, patch_size=patch_size, tubelet_size=1, mean=tuple(mean), std=tuple(std),
        kind="image", fingerprint=fingerprint,
    )


# ---------------------------------------------------------------- 2D ViT (timm layout)


@dataclass
class ImageViTConfig:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden_dim: int
    patch_size: int
    pos_grid: tuple[int, int]  # patch grid of the stored pos_embed table
    in_chans: int = 3
    qkv_bias: bool = True
    patch_bias: bool = True
    norm_eps: float = 1e-6
    class_token: bool = True
    num_reg_tokens: int = 0
    pos_embed_prefix: bool = True  # the table also covers the class/register tokens (timm: not no_embed_class)
    layer_scale: bool = False
    pre_norm: bool = False
    final_norm: str = "norm"  # "norm" | "fc_norm" | "none"

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.num_reg_tokens


class LayerScale(nn.Module):
    """Per-channel residual scale (Touvron et al. 2021, CaiT Sec. 2.1), timm name ``gamma``."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class ImageViTBlock(nn.Module):
    """Pre-norm ViT block in timm's naming: ``x + ls1(attn(norm1(x)))``, ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, c: ImageViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.attn = Attention(c.embed_dim, c.num_heads, qkv_bias=c.qkv_bias)
        self.ls1 = LayerScale(c.embed_dim) if c.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.mlp = MLP(c.embed_dim, c.mlp_hidden_dim)
        self.ls2 = LayerScale(c.embed_dim) if c.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


def resample_pos_grid(table: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """Patch position table [1, gh*gw, D] resized to a new grid by bicubic interpolation (antialiased when
    shrinking), as timm does for inputs of another size (Dosovitskiy et al. 2021, Sec. 3.2 "Fine-tuning and
    higher resolution"). Computed in float32."""
    if tuple(old) == tuple(new):
        return table
    d = table.shape[-1]
    grid = table.float().reshape(1, old[0], old[1], d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, mode="bicubic", align_corners=False, antialias=True)
    return grid.permute(0, 2, 3, 1).reshape(1, new[0] * new[1], d).to(table.dtype)


class ImageViT(nn.Module):
    """ViT (Dosovitskiy et al. 2021) with timm's parameter names; ``forward(images [N,C,H,W]) -> patch tokens
    [N, Np, D]`` after the final norm, in raster order. Learned absolute positions, resized for other sizes."""

    def __init__(self, c: ImageViTConfig):
        super().__init__()
        self.config = c
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(c.in_chans, c.embed_dim, c.patch_size, c.patch_size, bias=c.patch_bias)
        if c.class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        if c.num_reg_tokens:
            self.reg_token = nn.Parameter(torch.zeros(1, c.num_reg_tokens, c.embed_dim))
        n_pos = c.pos_grid[0] * c.pos_grid[1] + (c.num_prefix_tokens if c.pos_embed_prefix else 0)
        self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, c.embed_dim))
        if c.pre_norm:
            self.norm_pre = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.blocks = nn.ModuleList([ImageViTBlock(c) for _ in range(c.depth)])
        if c.final_norm in ("norm", "fc_norm"):
            setattr(self, c.final_norm, nn.LayerNorm(c.embed_dim, eps=c.norm_eps))

    def _prefix_tokens(self, n: int) -> list[torch.Tensor]:
        out = []
        if self.config.class_token:
            out.append(self.cls_token.expand(n, -1, -1))
        if self.config.num_reg_tokens:
            out.append(self.reg_token.expand(n, -1, -1))
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        c = self.config
        n, _, h, w = images.shape
        if h % c.patch_size or w % c.patch_size:
            raise ValueError(f"image size {h}x{w} is not divisible by the patch size {c.patch_size}")
        proj = self.patch_embed.proj
        x = proj(images.to(proj.weight.dtype)).flatten(2).transpose(1, 2)
        grid = (h // c.patch_size, w // c.patch_size)
        n_pre = c.num_prefix_tokens if c.pos_embed_prefix else 0
        pos_patch = resample_pos_grid(self.pos_embed[:, n_pre:], c.pos_grid, grid)
        if c.pos_embed_prefix:
            x = torch.cat(self._prefix_tokens(n) + [x], dim=1)
            x = x + torch.cat([self.pos_embed[:, :n_pre], pos_patch], dim=1)
        else:
            x = torch.cat(self._prefix_tokens(n) + [x + pos_patch], dim=1)
        if c.pre_norm:
            x = self.norm_pre(x)
        for blk in self.blocks:
            x = blk(x)
        if c.final_norm != "none":
            x = getattr(self, c.final_norm)(x)
        return x[:, c.num_prefix_tokens:]


def parse_timm_arch(arch: str) -> tuple[int, int, int, int | None]:
    """'vit_base_patch16_224' -> (width 768, heads 12, patch 16, img 224); img None when the name has none."""
    m = re.fullmatch(r"vit_([a-z]+)_patch(\d+)(?:_(\d+))?(?:[._].*)?", arch)
    if not m or m.group(1) not in TIMM_VIT_SIZES:
        raise BackboneSpecError(
            f"arch={arch!r}: expected a timm ViT name 'vit_<size>_patch<P>[_<img>]' with size one of "
            f"{list(TIMM_VIT_SIZES)}, e.g. vit_base_patch16_224"
        )
    width, heads = TIMM_VIT_SIZES[m.group(1)]
    return width, heads, int(m.group(2)), int(m.group(3)) if m.group(3) else None


def image_vit_config(sd: dict[str, torch.Tensor], *, source: str, num_heads: int | None = None,
                     norm_eps: float = 1e-6) -> ImageViTConfig:
    """Architecture of a timm-format ViT state dict from its tensor shapes (heads from ``num_heads`` or width)."""
    w = sd.get(VIT_ANCHOR)
    if w is None or w.dim() != 4:
        raise CheckpointError(f"{source}: {VIT_ANCHOR!r} must be a Conv2d weight [D, C, P, P], got "
                              f"{None if w is None else tuple(w.shape)}")
    dim, in_chans, ph, pw = w.shape
    if ph != pw:
        raise CheckpointError(f"{source}: non-square patches {ph}x{pw} are not supported")
    ids = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not ids or ids != set(range(max(ids) + 1)):
        raise CheckpointError(f"{source}: block indices must be 0..N-1, found {sorted(ids)}")
    for unsupported in ("blocks.0.attn.q_norm.weight", "blocks.0.mlp.fc1_g.weight", "blocks.0.attn.q_proj.weight",
                        "dist_token"):
        if unsupported in sd:
            raise CheckpointError(f"{source}: {unsupported!r}: this ViT variant is not supported by our 2D ViT")
    if "pos_embed" not in sd:
        raise CheckpointError(f"{source}: missing key 'pos_embed' (ViTs without absolute positions are not supported)")
    class_token = "cls_token" in sd
    n_reg = sd["reg_token"].shape[1] if "reg_token" in sd else 0
    n_prefix = int(class_token) + n_reg
    n_pos = sd["pos_embed"].shape[1]
    if math.isqrt(n_pos - n_prefix) ** 2 == n_pos - n_prefix and n_pos > n_prefix:
        pos_prefix, n_patch = True, n_pos - n_prefix
    elif math.isqrt(n_pos) ** 2 == n_pos:
        pos_prefix, n_patch = False, n_pos
    else:
        raise CheckpointError(f"{source}: 'pos_embed' has {n_pos} positions, not a square patch grid "
                              f"(with or without the {n_prefix} class/register tokens)")
    g = math.isqrt(n_patch)
    if num_heads is None:
        if dim not in HEADS_BY_VIT_WIDTH:
            raise CheckpointError(f"{source}: cannot infer the heads of width {dim}; pass ?num_heads= or ?arch=")
        num_heads = HEADS_BY_VIT_WIDTH[dim]
    if "norm.weight" in sd:
        final = "norm"
    elif "fc_norm.weight" in sd:
        final = "fc_norm"  # MAE fine-tuned with global pooling: the only final norm, applied to every token
    else:
        final = "none"
    return ImageViTConfig(
        embed_dim=dim, depth=max(ids) + 1, num_heads=num_heads, mlp_hidden_dim=sd["blocks.0.mlp.fc1.weight"].shape[0]
        if "blocks.0.mlp.fc1.weight" in sd else 4 * dim, patch_size=ph, pos_grid=(g, g), in_chans=in_chans,
        qkv_bias="blocks.0.attn.qkv.bias" in sd, patch_bias="patch_embed.proj.bias" in sd, norm_eps=norm_eps,
        class_token=class_token, num_reg_tokens=n_reg, pos_embed_prefix=pos_prefix,
        layer_scale="blocks.0.ls1.gamma" in sd, pre_norm="norm_pre.weight" in sd, final_norm=final,
    )


def build_image_vit(sd: dict[str, torch.Tensor], *, source: str, num_heads: int | None = None,
                    norm_eps: float = 1e-6) -> tuple[ImageViT, list[str]]:
    """Strictly load a timm-format ViT state dict into :class:`ImageViT`; returns (model, notes)."""
    cfg = image_vit_config(sd, source=source, num_heads=num_heads, norm_eps=norm_eps)
    notes = []
    ignored = sorted(k for k in sd if VIT_IGNORED.match(k) or (k.startswith("fc_norm.") and cfg.final_norm == "norm"))
    if ignored:
        notes.append(f"{len(ignored)} non-backbone entries ignored (e.g. {ignored[0]})")
    sd = {k: v for k, v in sd.items() if k not in set(ignored)}
    with torch.device("meta"):
        model = ImageViT(cfg)
    load_strict(model, sd, source=source, assign=True)
    return model.eval(), notes


# ---------------------------------------------------------------- ResNet (torchvision layout)


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


# ---------------------------------------------------------------- loaders


def _weights_path(arg: str, spec: str) -> Path:
    path = Path(arg)
    if not path.is_file():
        raise FileNotFoundError(f"backbone spec {spec!r}: weights file not found: {path}")
    return path


def load_timm_vit(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``timm-vit:PATH[?arch=vit_base_patch16_224&num_heads=&eps=&key=&prefix=&chunk=]``."""
    path = _weights_path(arg, spec)
    arch = opts.take("arch")
    num_heads = opts.take("num_heads", cast=int)
    eps = opts.take("eps", 1e-6, cast=float)
    chunk = opts.take("chunk", DEFAULT_CHUNK, cast=int)
    sd, notes = select_state_dict(read_weights(path), VIT_ANCHOR, source=str(path), key=opts.take("key"),
                                  prefix=opts.take("prefix"))
    arch_img = None
    if arch is not None:
        width, heads, patch, arch_img = parse_timm_arch(arch)
        w = sd[VIT_ANCHOR]
        if (w.shape[0], w.shape[-1]) != (width, patch):
            raise BackboneSpecError(f"backbone spec {spec!r}: arch {arch} means width {width}, patch {patch}; the "
                                    f"weights have width {w.shape[0]}, patch {w.shape[-1]}")
        num_heads = num_heads or heads
    model, more = build_image_vit(sd, source=str(path), num_heads=num_heads, norm_eps=eps)
    for note in notes + more:
        log.info("%s: %s", path, note)
    c = model.config
    return image_backbone(
        model, name=f"{vit_size_name(c.embed_dim)}/{c.patch_size} ({path.stem})", spec=spec, embed_dim=c.embed_dim,
        img_size=arch_img or c.pos_grid[0] * c.patch_size, patch_size=c.patch_size, fingerprint=fingerprint_path(path),
        chunk=chunk, in_chans=c.in_chans,
    )


def load_resnet50(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``resnet50:PATH[?key=&prefix=&chunk=]``: tokens = last-stage feature map (stride 32), 224 px by default."""
    path = _weights_path(arg, spec)
    chunk = opts.take("chunk", DEFAULT_CHUNK, cast=int)
    sd, notes = select_state_dict(read_weights(path), RESNET_ANCHOR, source=str(path), key=opts.take("key"),
                                  prefix=opts.take("prefix"))
    model, more = build_resnet(sd, source=str(path))
    for note in notes + more:
        log.info("%s: %s", path, note)
    c = model.config
    label = f"ResNet-{3 * sum(c.depths) + 2}"
    if c.groups != 1 or c.widths != ResNetConfig().widths:
        label += f" (width {c.widths[0]}, groups {c.groups})"
    return image_backbone(
        model, name=f"{label} ({path.stem})", spec=spec, embed_dim=model.embed_dim, img_size=224, patch_size=32,
        fingerprint=fingerprint_path(path), chunk=chunk, in_chans=c.in_chans,
    )
