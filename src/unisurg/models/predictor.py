"""V-JEPA predictor: a narrow ViT that maps context latents to latents at masked positions.

[context latents (projected to the predictor width, with their positions);
 learnable mask tokens carrying the positions of the targets] -> pre-norm blocks -> LayerNorm
-> projection back to the encoder width; only the target rows are returned.
Parameter names follow V-JEPA 2 (``predictor_embed``, ``mask_tokens.{i}``, ``predictor_blocks``,
``predictor_norm``, ``predictor_proj``) so its predictor weights load without renaming.
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
from unisurg.models.vit import POS_EMBED_TYPES, _config_from_dict, replace_config


@dataclass
class PredictorConfig:
    """Hyperparameters of a :class:`VideoPredictor` (stored verbatim in checkpoint JSON)."""

    embed_dim: int = 192  # encoder width (input and output)
    predictor_dim: int = 384
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    mlp_hidden_dim: int | None = None
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    pos_embed: str = "rope"
    rope_variant: str = "vjepa2"
    sincos_uniform_power: bool = False
    num_mask_tokens: int = 1  # V-JEPA 2 uses 10 (one per clip-length group); index chosen per call
    zero_init_mask_tokens: bool = True
    drop_path_rate: float = 0.0
    act_checkpoint: bool = False
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.mlp_hidden_dim is None:
            self.mlp_hidden_dim = int(self.predictor_dim * self.mlp_ratio)
        if self.pos_embed not in POS_EMBED_TYPES:
            raise ValueError(f"PredictorConfig.pos_embed={self.pos_embed!r}: expected one of {POS_EMBED_TYPES}")
        if self.rope_variant not in ROPE_VARIANTS:
            raise ValueError(f"PredictorConfig.rope_variant={self.rope_variant!r}: expected one of {ROPE_VARIANTS}")
        if self.predictor_dim % self.num_heads != 0:
            raise ValueError(
                f"PredictorConfig: predictor_dim={self.predictor_dim} is not divisible by num_heads={self.num_heads}"
            )
        if self.num_mask_tokens < 1:
            raise ValueError("PredictorConfig.num_mask_tokens must be >= 1")

    @classmethod
    def from_dict(cls, d: dict, where: str = "predictor config") -> "PredictorConfig":
        return _config_from_dict(cls, d, where)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class VideoPredictor(nn.Module):
    """``forward(z [B,Nc,D], context_idx [B,Nc], target_idx [B,Nt], grid) -> [B, Nt, D]``."""

    def __init__(self, config: PredictorConfig | None = None, **overrides):
        super().__init__()
        if config is None:
            config = PredictorConfig(**overrides)
        elif overrides:
            config = replace_config(config, overrides, "predictor_dim")
        self.config = c = config
        self.predictor_embed = nn.Linear(c.embed_dim, c.predictor_dim)
        self.mask_tokens = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, 1, c.predictor_dim)) for _ in range(c.num_mask_tokens)]
        )
        self.sincos = SinCos3D(c.predictor_dim, c.sincos_uniform_power) if c.pos_embed == "sincos" else None
        self.predictor_blocks = block_stack(c.predictor_dim, c.depth, c.num_heads, c.mlp_hidden_dim,
                                            qkv_bias=c.qkv_bias, norm_eps=c.norm_eps, drop_path_rate=c.drop_path_rate)
        self.predictor_norm = nn.LayerNorm(c.predictor_dim, eps=c.norm_eps)
        self.predictor_proj = nn.Linear(c.predictor_dim, c.embed_dim)
        init_vit_weights(self, self.predictor_blocks, c.init_std)
        if not c.zero_init_mask_tokens:
            with torch.no_grad():
                for t in self.mask_tokens:
                    nn.init.trunc_normal_(t, std=c.init_std, a=-2.0, b=2.0)

    def forward(
        self,
        z: torch.Tensor,
        context_idx: torch.Tensor,
        target_idx: torch.Tensor,
        grid: tuple[int, int, int],
        context_valid: torch.Tensor | None = None,
        target_valid: torch.Tensor | None = None,
        *,
        mask_index: int = 0,
    ) -> torch.Tensor:
        """Predict the latents of the target tokens.

        Args:
            z: context latents from the encoder, [B, Nc, D_enc].
            context_idx / target_idx: token indices [B, Nc] / [B, Nt] in (t, h, w) order.
            grid: the token grid (T', Hp, Wp) of the clip (``encoder.grid(x.shape)``).
            context_valid / target_valid: BoolTensors marking real (True) vs padded (False) entries;
                None means no padding (the fast SDPA path).
            mask_index: which learnable mask token to use (modulo ``num_mask_tokens``).
        Returns:
            [B, Nt, D_enc]; rows at padded target positions are meaningless.
        """
        b, nc, _ = z.shape
        if context_idx.shape != (b, nc):
            raise ValueError(f"context_idx must be [B={b}, Nc={nc}] like z, got {tuple(context_idx.shape)}")
        if target_idx.dim() != 2 or target_idx.shape[0] != b:
            raise ValueError(f"target_idx must be [B={b}, Nt], got {tuple(target_idx.shape)}")
        nt = target_idx.shape[1]
        ctx = self.predictor_embed(z)
        tgt = self.mask_tokens[mask_index % len(self.mask_tokens)].expand(b, nt, -1)
        x = run_context_and_targets(self.predictor_blocks, ctx, tgt, context_idx, target_idx, grid, self.sincos,
                                    self.config, context_valid, target_valid, self.predictor_embed.weight.dtype)
        x = self.predictor_norm(x[:, nc:])
        return self.predictor_proj(x)


def run_context_and_targets(blocks, ctx: torch.Tensor, tgt: torch.Tensor, context_idx: torch.Tensor,
                            target_idx: torch.Tensor, grid, sincos, config, context_valid: torch.Tensor | None,
                            target_valid: torch.Tensor | None, pos_dtype: torch.dtype) -> torch.Tensor:
    """The blocks over ``[context tokens; target (mask) tokens]``, each placed at its token index
    by sin-cos or RoPE positions; padded entries masked out of attention. Shared by the V-JEPA
    predictor and the SurgRec-MAE decoder. ``config`` gives pos_embed, num_heads, rope_variant,
    act_checkpoint; the width is ``ctx``'s; ``pos_dtype`` that of the sin-cos table (the weights')."""
    if sincos is not None:
        table = sincos(tuple(grid), ctx.device, pos_dtype)
        ctx = ctx + table[context_idx]
        tgt = tgt + table[target_idx]
    x = torch.cat([ctx, tgt.to(ctx.dtype)], dim=1)
    rope = None
    if config.pos_embed == "rope":
        idx = torch.cat([context_idx, target_idx], dim=1)
        rope = rope_cos_sin(idx, tuple(grid), ctx.shape[-1] // config.num_heads, config.rope_variant)
    valid = None
    if context_valid is not None or target_valid is not None:
        cv = context_valid if context_valid is not None else torch.ones_like(context_idx, dtype=torch.bool)
        tv = target_valid if target_valid is not None else torch.ones_like(target_idx, dtype=torch.bool)
        valid = torch.cat([cv, tv], dim=1)
    x, _ = run_blocks(blocks, x, rope, key_padding_mask(valid), checkpoint=config.act_checkpoint)
    return x
