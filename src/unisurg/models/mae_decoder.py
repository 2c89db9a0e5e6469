"""The light VideoMAE decoder of SurgRec-MAE (Tong et al. 2022, "VideoMAE", section 3.3).

[visible encoder tokens projected to the decoder width, with their positions;
 one shared learnable mask token at every masked position, with its position]
-> a few pre-norm blocks -> LayerNorm -> linear head to the pixels of one tubelet
(``tt * p * p * C`` values in :func:`unisurg.objectives.mae.patchify` order); only the masked
rows are returned. Positions follow the encoder (3D sin-cos added to the tokens, or RoPE inside
attention), so the decoder works for any T, H, W divisible by the tubelet.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from unisurg.models.blocks import Block, init_vit_weights
from unisurg.models.pos_embed import SinCos3D
from unisurg.models.predictor import run_context_and_targets
from unisurg.models.rope import ROPE_VARIANTS
from unisurg.models.vit import POS_EMBED_TYPES, VideoViT, _config_from_dict


@dataclass
class MAEDecoderConfig:
    """Hyperparameters of a :class:`MAEDecoder` (VideoMAE's decoder: 384 wide, 4 deep, 6 heads)."""

    embed_dim: int = 192  # encoder width (input)
    decoder_dim: int = 384
    depth: int = 4
    num_heads: int = 6
    mlp_ratio: float = 4.0
    patch_dim: int = 2 * 16 * 16 * 3  # output values per token: tubelet x patch x patch x channels
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    pos_embed: str = "sincos"
    rope_variant: str = "vjepa2"
    sincos_uniform_power: bool = False
    act_checkpoint: bool = False
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.pos_embed not in POS_EMBED_TYPES:
            raise ValueError(f"MAEDecoderConfig.pos_embed={self.pos_embed!r}: expected one of {POS_EMBED_TYPES}")
        if self.rope_variant not in ROPE_VARIANTS:
            raise ValueError(f"MAEDecoderConfig.rope_variant={self.rope_variant!r}: expected one of {ROPE_VARIANTS}")
        if self.decoder_dim % self.num_heads:
            raise ValueError(f"MAEDecoderConfig: decoder_dim={self.decoder_dim} is not divisible by "
                             f"num_heads={self.num_heads}")
        if min(self.embed_dim, self.decoder_dim, self.depth, self.patch_dim) < 1:
            raise ValueError("MAEDecoderConfig: embed_dim, decoder_dim, depth and patch_dim must be >= 1")

    @classmethod
    def from_dict(cls, d: dict, where: str = "MAE decoder config") -> "MAEDecoderConfig":
        return _config_from_dict(cls, d, where)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def for_encoder(cls, encoder: VideoViT, **overrides) -> "MAEDecoderConfig":
        """Decoder config matching ``encoder``'s width, tubelet and position scheme."""
        c = encoder.config
        base = dict(embed_dim=c.embed_dim, patch_dim=c.tubelet_size * c.patch_size ** 2 * c.in_chans,
                    pos_embed=c.pos_embed, rope_variant=c.rope_variant, sincos_uniform_power=c.sincos_uniform_power,
                    norm_eps=c.norm_eps)
        return cls(**{**base, **overrides})


class MAEDecoder(nn.Module):
    """``forward(z [B,Nc,D], context_idx [B,Nc], target_idx [B,Nt], grid) -> pixels [B, Nt, patch_dim]``."""

    def __init__(self, config: MAEDecoderConfig):
        super().__init__()
        self.config = c = config
        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_dim))
        self.sincos = SinCos3D(c.decoder_dim, c.sincos_uniform_power) if c.pos_embed == "sincos" else None
        hidden = int(c.decoder_dim * c.mlp_ratio)
        self.blocks = nn.ModuleList([Block(c.decoder_dim, c.num_heads, hidden, qkv_bias=c.qkv_bias, norm_eps=c.norm_eps)
                                     for _ in range(c.depth)])
        self.norm = nn.LayerNorm(c.decoder_dim, eps=c.norm_eps)
        self.head = nn.Linear(c.decoder_dim, c.patch_dim)
        init_vit_weights(self, self.blocks, c.init_std)
        with torch.no_grad():  # VideoMAE draws its mask token like the weights
            nn.init.trunc_normal_(self.mask_token, std=c.init_std, a=-2.0, b=2.0)

    def forward(self, z: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor,
                grid: tuple[int, int, int], context_valid: torch.Tensor | None = None,
                target_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruct the pixels of the target (masked) tokens.

        Args:
            z: visible-token latents from the encoder, [B, Nc, D_enc].
            context_idx / target_idx: token indices [B, Nc] / [B, Nt] in (t, h, w) order.
            grid: token grid (T', Hp, Wp) of the clip.
            context_valid / target_valid: False marks padding; None when nothing is padded.
        """
        b, nc, _ = z.shape
        if context_idx.shape != (b, nc):
            raise ValueError(f"context_idx must be [B={b}, Nc={nc}] like z, got {tuple(context_idx.shape)}")
        if target_idx.dim() != 2 or target_idx.shape[0] != b:
            raise ValueError(f"target_idx must be [B={b}, Nt], got {tuple(target_idx.shape)}")
        ctx = self.decoder_embed(z)
        tgt = self.mask_token.expand(b, target_idx.shape[1], -1)
        x = run_context_and_targets(self.blocks, ctx, tgt, context_idx, target_idx, grid, self.sincos, self.config,
                                    context_valid, target_valid, self.decoder_embed.weight.dtype)
        return self.head(self.norm(x[:, nc:]))
