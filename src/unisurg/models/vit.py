"""Video ViT encoder over tubelets (V-JEPA / V-JEPA 2 architecture).

Input ``[B, C, T, H, W]`` -> Conv3d tubelet embedding (``tubelet x patch x patch``) -> tokens in
(t, h, w) order -> pre-norm blocks -> final LayerNorm -> ``[B, N, D]``,
``N = (T / tubelet) * (H / patch) * (W / patch)``. Positions are either a fixed 3D sin-cos table
recomputed for the actual grid, or 3D RoPE applied inside attention; both work for any T, H, W
divisible by the tubelet, so the same weights run at T = 16 and T = 64.

With ``context_idx`` only the listed tokens go through the blocks (after patch embedding and
positions): this is the context encoder of masked latent prediction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from unisurg.models.blocks import (
    block_stack,
    init_vit_weights,
    key_padding_mask,
    run_blocks,
)
from unisurg.models.pos_embed import SinCos3D
from unisurg.models.rope import ROPE_VARIANTS, rope_cos_sin

POS_EMBED_TYPES = ("rope", "sincos")


@dataclass
class EncoderConfig:
    """All hyperparameters of a :class:`VideoViT` (stored verbatim in checkpoint JSON)."""

    embed_dim: int = 192
    depth: int = 4
    num_heads: int = 3
    mlp_ratio: float = 4.0
    mlp_hidden_dim: int | None = None  # None: int(embed_dim * mlp_ratio), as V-JEPA computes it
    patch_size: int = 16
    tubelet_size: int = 2
    in_chans: int = 3
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    pos_embed: str = "rope"  # "rope" | "sincos"
    rope_variant: str = "vjepa2"  # "vjepa2" | "standard" (see unisurg.models.rope)
    sincos_uniform_power: bool = False
    drop_path_rate: float = 0.0
    act_checkpoint: bool = False
    init_std: float = 0.02
    name: str = "custom"  # preset name, informative only

    def __post_init__(self) -> None:
        if self.mlp_hidden_dim is None:
            self.mlp_hidden_dim = int(self.embed_dim * self.mlp_ratio)
        if self.pos_embed not in POS_EMBED_TYPES:
            raise ValueError(f"EncoderConfig.pos_embed={self.pos_embed!r}: expected one of {POS_EMBED_TYPES}")
        if self.rope_variant not in ROPE_VARIANTS:
            raise ValueError(f"EncoderConfig.rope_variant={self.rope_variant!r}: expected one of {ROPE_VARIANTS}")
        if self.embed_dim % self.num_heads != 0:
            raise ValueError(
                f"EncoderConfig: embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}"
            )

    @classmethod
    def from_dict(cls, d: dict, where: str = "encoder config") -> "EncoderConfig":
        """Build from a JSON dict; unknown keys are an error naming them."""
        return _config_from_dict(cls, d, where)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def replace_config(config, overrides: dict, width_field: str):
    """``dataclasses.replace`` that recomputes the derived MLP width when the width or ratio changes."""
    if "mlp_hidden_dim" not in overrides and ({width_field, "mlp_ratio"} & set(overrides)):
        overrides = {**overrides, "mlp_hidden_dim": None}
    return dataclasses.replace(config, **overrides)


def _config_from_dict(cls, d: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    return cls(**d)


def token_grid(shape: tuple[int, ...], tubelet_size: int, patch_size: int) -> tuple[int, int, int]:
    """(T', Hp, Wp) of a clip shaped [..., T, H, W]; errors name the dimension that does not divide."""
    t, h, w = shape[-3:]
    problems = []
    if t % tubelet_size:
        problems.append(f"T={t} is not divisible by the tubelet size {tubelet_size}")
    if h % patch_size:
        problems.append(f"H={h} is not divisible by the patch size {patch_size}")
    if w % patch_size:
        problems.append(f"W={w} is not divisible by the patch size {patch_size}")
    if problems:
        raise ValueError(f"clip of shape {tuple(shape)}: " + "; ".join(problems) + " (crop or pad the clip)")
    return t // tubelet_size, h // patch_size, w // patch_size


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[b, idx[b, j]] for every b, j: [B, N, D] x [B, K] -> [B, K, D]."""
    return torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))


class TubeletEmbed(nn.Module):
    """Non-overlapping ``tubelet x patch x patch`` Conv3d; [B,C,T,H,W] -> [B, N, D] in (t, h, w) order."""

    def __init__(self, in_chans: int, dim: int, tubelet_size: int, patch_size: int):
        super().__init__()
        k = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.to(self.proj.weight.dtype)).flatten(2).transpose(1, 2)


class VideoViT(nn.Module):
    """Video ViT encoder. ``forward(x [B,C,T,H,W]) -> [B, N, D]``; with ``context_idx`` -> [B, Nc, D]."""

    def __init__(self, config: EncoderConfig | None = None, **overrides):
        super().__init__()
        if config is None:
            config = EncoderConfig(**overrides)
        elif overrides:
            config = replace_config(config, overrides, "embed_dim")
        self.config = config
        c = config
        self.embed_dim = c.embed_dim
        self.num_heads = c.num_heads
        self.patch_size = c.patch_size
        self.tubelet_size = c.tubelet_size
        self.patch_embed = TubeletEmbed(c.in_chans, c.embed_dim, c.tubelet_size, c.patch_size)
        self.sincos = SinCos3D(c.embed_dim, c.sincos_uniform_power) if c.pos_embed == "sincos" else None
        self.blocks = block_stack(c.embed_dim, c.depth, c.num_heads, c.mlp_hidden_dim, qkv_bias=c.qkv_bias,
                                  norm_eps=c.norm_eps, drop_path_rate=c.drop_path_rate)
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        init_vit_weights(self, self.blocks, c.init_std)

    @property
    def act_checkpoint(self) -> bool:
        return self.config.act_checkpoint

    @act_checkpoint.setter
    def act_checkpoint(self, value: bool) -> None:
        self.config.act_checkpoint = bool(value)

    def grid(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid (T', Hp, Wp) for an input of shape [B, C, T, H, W]."""
        return token_grid(shape, self.tubelet_size, self.patch_size)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Tubelet embedding plus sin-cos positions (if used): [B,C,T,H,W] -> ([B, N, D], grid)."""
        if x.dim() == 4:
            # a single image: V-JEPA's convention is to repeat it over one tubelet
            x = x[:, :, None].expand(-1, -1, self.tubelet_size, -1, -1)
        if x.dim() != 5:
            raise ValueError(f"VideoViT expects [B, C, T, H, W] (or an image [B, C, H, W]), got shape {tuple(x.shape)}")
        if x.shape[1] != self.config.in_chans:
            raise ValueError(
                f"VideoViT expects {self.config.in_chans} channels in dim 1 of [B, C, T, H, W], got shape "
                f"{tuple(x.shape)} (a [B, T, C, H, W] clip must be permuted to [B, C, T, H, W])"
            )
        grid = self.grid(x.shape)
        tokens = self.patch_embed(x)
        if self.sincos is not None:
            # the table is added in the weights' precision (fp32 under autocast), as V-JEPA adds its fp32 buffer
            tokens = tokens + self.sincos(grid, tokens.device, self.patch_embed.proj.weight.dtype)
        return tokens, grid

    def forward(
        self,
        x: torch.Tensor,
        context_idx: torch.Tensor | None = None,
        context_valid: torch.Tensor | None = None,
        *,
        out_layers: list[int] | None = None,
        embedded: tuple[torch.Tensor, tuple[int, int, int]] | None = None,
        segments: tuple[int, ...] | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Encode a clip.

        Args:
            x: [B, C, T, H, W].
            context_idx: optional LongTensor [B, Nc] of token indices (t, h, w order) to keep; only these
                are processed by the blocks.
            context_valid: optional BoolTensor [B, Nc]; False marks padding, hidden from attention. Pass
                None when no sample is padded, so SDPA can use its fastest kernels.
            out_layers: if given, return a list of the final-normed outputs of these block indices
                instead of the last output.
            embedded: ``self.embed(x)`` already computed (several context sets of one clip share it).
            segments: ``context_idx`` is several unpadded context sets one after the other, of these
                lengths; each attends only within itself (see ``unisurg.train.packed_context``).
        """
        tokens, grid = self.embed(x) if embedded is None else embedded
        if context_idx is not None:
            if context_idx.dim() != 2 or context_idx.shape[0] != tokens.shape[0]:
                raise ValueError(
                    f"context_idx must be [B={tokens.shape[0]}, Nc], got shape {tuple(context_idx.shape)}"
                )
            tokens = gather_tokens(tokens, context_idx)
            pos_idx = context_idx
        else:
            if context_valid is not None:
                raise ValueError("context_valid given without context_idx")
            pos_idx = torch.arange(tokens.shape[1], device=tokens.device)
        rope = None
        if self.config.pos_embed == "rope":
            rope = rope_cos_sin(pos_idx, grid, self.embed_dim // self.num_heads, self.config.rope_variant)
        attn_mask = key_padding_mask(context_valid)
        wanted = None if out_layers is None else {i % len(self.blocks) for i in out_layers}
        if segments is not None and (context_idx is None or sum(segments) != context_idx.shape[1]):
            raise ValueError(f"segments {segments} must add up to the context_idx length")
        tokens, collected = run_blocks(
            self.blocks, tokens, rope, attn_mask, checkpoint=self.config.act_checkpoint, out_layers=wanted,
            segments=segments,
        )
        if out_layers is not None:
            by_layer = dict(zip(sorted(wanted), collected))
            return [self.norm(by_layer[i % len(self.blocks)]) for i in out_layers]
        return self.norm(tokens)

    def extra_repr(self) -> str:
        c = self.config
        return f"name={c.name}, pos_embed={c.pos_embed}, tubelet={c.tubelet_size}x{c.patch_size}x{c.patch_size}"
