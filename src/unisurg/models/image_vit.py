"""2D ViT trunk in timm's key layout (EndoViT, GastroNet, SurgeNet-ViT, MAE/DINO ViTs), built from a state dict."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unisurg.models.blocks import MLP, Attention
from unisurg.models.strict_load import CheckpointError, load_strict

VIT_ANCHOR = "patch_embed.proj.weight"
# timm ViT sizes: width and heads (timm's vit_* definitions).
TIMM_VIT_SIZES = {"tiny": (192, 3), "small": (384, 6), "medium": (512, 8), "base": (768, 12), "large": (1024, 16),
                  "huge": (1280, 16), "giant": (1408, 16), "gigantic": (1664, 16)}
HEADS_BY_VIT_WIDTH = {w: h for w, h in TIMM_VIT_SIZES.values()}
# Entries of ViT checkpoints that are not part of the backbone (classifier, MAE decoder, pooled-feature norm).
VIT_IGNORED = re.compile(r"^(head\.|head_dist\.|decoder|mask_token$|pre_logits\.|attn_pool\.)")





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


