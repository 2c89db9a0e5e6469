"""VideoMAE / VideoMAE V2 ViT in OpenGVLab's native parameter layout (pure PyTorch).

Architecture of ``models/modeling_finetune.py`` (``VisionTransformer``) and of the encoder of
``models/modeling_pretrain.py`` (``PretrainVisionTransformerEncoder``) in OpenGVLab/VideoMAEv2 (the same
layout as MCG-NJU/VideoMAE): a Conv3d tubelet embedding, a fixed 1-D sinusoid table over the flattened
token index, pre-norm blocks whose attention has one fused ``qkv`` weight without bias plus separate
``q_bias`` and ``v_bias`` (the key bias is zero), optional layer-scale ``gamma_1`` / ``gamma_2``, and a final
LayerNorm that is ``norm`` (pretraining encoder) or ``fc_norm`` (``use_mean_pooling`` fine-tuning model).

Parameter names match the official ones, so an official state dict (prefix removed) loads with
``strict=True``. Tokens: every patch token after the final norm, ``[B, T/tubelet * H/p * W/p, D]`` in
(t, h, w) order (Conv3d output flattened, as the official ``PatchEmbed`` does). SurgMotion's adapter
(``evals/foundation_phase_probing/modelcustom/adapters/videomae_adapter.py``) applies ``fc_norm`` to every
token instead of mean-pooling; :class:`SegmentedVideoEncoder` adds its 64 -> 4 x 16 frame split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unisurg.models.blocks import MLP

FINAL_NORMS = ("fc_norm", "norm", "none")


@dataclass(frozen=True)
class VideoMAEConfig:
    """Shape of a native-layout VideoMAE ViT (everything but ``num_heads`` can be read off the weights)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden: int = 3072
    patch_size: int = 16
    tubelet_size: int = 2
    in_chans: int = 3
    qkv_bias: bool = True  # q_bias / v_bias present
    layer_scale: bool = False  # gamma_1 / gamma_2 present (init_values > 0)
    learned_pos_tokens: int = 0  # > 0: a learned pos_embed of that many tokens; 0: the fixed sinusoid table
    final_norm: str = "fc_norm"  # which LayerNorm closes the encoder: fc_norm | norm | none
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.final_norm not in FINAL_NORMS:
            raise ValueError(f"VideoMAEConfig.final_norm={self.final_norm!r}: expected one of {FINAL_NORMS}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"VideoMAEConfig: embed_dim {self.embed_dim} is not divisible by "
                             f"num_heads {self.num_heads}")


def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    """VideoMAE's ``get_sinusoid_encoding_table``: ``[n_position, dim]``, ``angle = p / 10000^(2 floor(j/2) / dim)``,
    sin on even channels and cos on odd ones (interleaved, unlike :func:`unisurg.models.pos_embed.sincos_1d`).

    Computed in float64 (the official code uses numpy float64) and cast to float32.
    """
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    exponent = 2 * torch.div(j, 2, rounding_mode="floor") / dim
    angles = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), exponent)
    table = torch.empty_like(angles)
    table[:, 0::2] = angles[:, 0::2].sin()
    table[:, 1::2] = angles[:, 1::2].cos()
    return table.float()


class QVBiasAttention(nn.Module):
    """Self-attention with a fused bias-free ``qkv`` weight and separate ``q_bias`` / ``v_bias`` (BEiT / VideoMAE):
    the fused bias is ``cat(q_bias, 0, v_bias)``; softmax scale ``head_dim ** -0.5``; run through SDPA."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).view(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class VideoMAEBlock(nn.Module):
    """Pre-norm block ``x + g1 * attn(norm1(x))``, ``x + g2 * mlp(norm2(x))`` (``g`` = layer scale if present)."""

    def __init__(self, c: VideoMAEConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.attn = QVBiasAttention(c.embed_dim, c.num_heads, c.qkv_bias)
        self.norm2 = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.mlp = MLP(c.embed_dim, c.mlp_hidden)
        if c.layer_scale:
            self.gamma_1 = nn.Parameter(torch.ones(c.embed_dim))
            self.gamma_2 = nn.Parameter(torch.ones(c.embed_dim))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(self.norm1(x))
        x = x + (a if self.gamma_1 is None else self.gamma_1 * a)
        m = self.mlp(self.norm2(x))
        return x + (m if self.gamma_2 is None else self.gamma_2 * m)


class PatchEmbed3d(nn.Module):
    """Tubelet embedding ``Conv3d(kernel = stride = (tubelet, p, p))``, flattened to ``[B, N, D]``, (t, h, w) order."""

    def __init__(self, c: VideoMAEConfig):
        super().__init__()
        k = (c.tubelet_size, c.patch_size, c.patch_size)
        self.proj = nn.Conv3d(c.in_chans, c.embed_dim, kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VideoMAEEncoder(nn.Module):
    """``[B, C, T, H, W] -> [B, T/tubelet * H/p * W/p, D]``: patch tokens after the final norm, (t, h, w) order.

    The fixed sinusoid table is indexed by the flattened token number (as in the official code), so it is
    built for the token count of the input and cached per (count, device).
    """

    def __init__(self, c: VideoMAEConfig):
        super().__init__()
        self.config = c
        self.embed_dim = c.embed_dim
        self.patch_embed = PatchEmbed3d(c)
        if c.learned_pos_tokens:
            self.pos_embed = nn.Parameter(torch.zeros(1, c.learned_pos_tokens, c.embed_dim))
        self.blocks = nn.ModuleList([VideoMAEBlock(c) for _ in range(c.depth)])
        if c.final_norm == "fc_norm":
            self.fc_norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        elif c.final_norm == "norm":
            self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self._tables: dict[tuple[int, str], torch.Tensor] = {}

    def _position(self, n: int, ref: torch.Tensor) -> torch.Tensor:
        if self.config.learned_pos_tokens:
            if n != self.config.learned_pos_tokens:
                raise ValueError(
                    f"VideoMAE learned pos_embed has {self.config.learned_pos_tokens} tokens, the clip gives {n}; "
                    "feed the clip size the checkpoint was trained for"
                )
            return self.pos_embed.to(ref.dtype)
        key = (n, str(ref.device))
        if key not in self._tables:
            self._tables[key] = sinusoid_table(n, self.embed_dim).to(ref.device)[None]
        return self._tables[key].to(ref.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.config.in_chans:
            raise ValueError(f"expected a clip [B, C={self.config.in_chans}, T, H, W], got shape {tuple(x.shape)}")
        t, h, w = x.shape[2:]
        p, tub = self.config.patch_size, self.config.tubelet_size
        if t % tub or h % p or w % p:
            raise ValueError(f"clip T={t}, {h}x{w} is not divisible by tubelet {tub} / patch {p}")
        x = self.patch_embed(x.to(self.patch_embed.proj.weight.dtype))
        x = x + self._position(x.shape[1], x)
        for blk in self.blocks:
            x = blk(x)
        if self.config.final_norm == "fc_norm":
            x = self.fc_norm(x)
        elif self.config.final_norm == "norm":
            x = self.norm(x)
        return x


class SegmentedVideoEncoder(nn.Module):
    """Run ``encoder`` on consecutive ``segment_frames``-frame pieces of a longer clip and concatenate the tokens.

    SurgMotion's VideoMAE V2 adapter splits a 64-frame clip into 4 x 16 frames (VideoMAE's native clip) and
    concatenates the per-segment tokens in segment order; since the segments follow each other in time the
    result is in (t, h, w) order over the whole clip. The segments go through as one batch (same result as
    SurgMotion's loop). ``T`` must be a multiple of ``segment_frames``, or at most one segment long.
    """

    def __init__(self, encoder: nn.Module, segment_frames: int):
        super().__init__()
        if segment_frames < 1:
            raise ValueError(f"segment_frames must be >= 1, got {segment_frames}")
        self.encoder = encoder
        self.segment_frames = int(segment_frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected a clip [B, C, T, H, W], got shape {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        s = self.segment_frames
        if t <= s:
            return self.encoder(x)
        if t % s:
            raise ValueError(
                f"a clip of {t} frames does not split into {s}-frame segments; use a multiple of {s} frames "
                "(option num_frames) or change the segment length (option segment_frames)"
            )
        k = t // s
        pieces = x.reshape(b, c, k, s, h, w).permute(0, 2, 1, 3, 4, 5).reshape(b * k, c, s, h, w)
        tokens = self.encoder(pieces)
        return tokens.reshape(b, k * tokens.shape[1], tokens.shape[2])
