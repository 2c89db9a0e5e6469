"""Pre-norm transformer blocks (ViT; Dosovitskiy et al. 2021) with SDPA attention and optional RoPE.

Parameter names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``) are the
ones V-JEPA / V-JEPA 2 checkpoints use, so their weights load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unisurg.models.rope import apply_rope


def key_padding_mask(valid: torch.Tensor | None) -> torch.Tensor | None:
    """SDPA boolean mask [B, 1, 1, N] (True = may be attended) from per-token validity [B, N].

    Padded keys are hidden from every query; padded queries still attend to the valid keys,
    so their (ignored) outputs stay finite.
    """
    if valid is None:
        return None
    return valid[:, None, None, :]


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop a residual branch per sample during training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLP(nn.Module):
    """Two-layer GELU (exact erf form) feed-forward network."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, through ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"attention width {dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        attn_mask: torch.Tensor | None = None,
        segments: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        """``segments``: lengths of consecutive token sets that attend only within themselves
        (several context sets packed into one sequence; every other layer is per token)."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if rope is not None:
            q = apply_rope(q, *rope)
            k = apply_rope(k, *rope)
        if segments is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        else:
            if attn_mask is not None:
                raise ValueError("packed segments take no attention mask (pack only unpadded token sets)")
            out = torch.cat([F.scaled_dot_product_attention(qs, ks, vs) for qs, ks, vs in
                             zip(q.split(segments, 2), k.split(segments, 2), v.split(segments, 2))], dim=2)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_hidden: int,
        *,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, mlp_hidden)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        attn_mask: torch.Tensor | None = None,
        segments: tuple[int, ...] | None = None,
    ) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), rope=rope, attn_mask=attn_mask, segments=segments))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def run_blocks(
    blocks: nn.ModuleList,
    x: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor] | None,
    attn_mask: torch.Tensor | None,
    *,
    checkpoint: bool = False,
    out_layers: set[int] | None = None,
    segments: tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run ``blocks`` in order (optionally with activation checkpointing); collect raw outputs of ``out_layers``.

    ``segments``: see :meth:`Attention.forward`."""
    collected: list[torch.Tensor] = []
    use_ckpt = checkpoint and torch.is_grad_enabled()
    for i, blk in enumerate(blocks):
        if use_ckpt:
            x = torch.utils.checkpoint.checkpoint(blk, x, rope, attn_mask, segments, use_reentrant=False)
        else:
            x = blk(x, rope=rope, attn_mask=attn_mask, segments=segments)
        if out_layers is not None and i in out_layers:
            collected.append(x)
    return x, collected


@torch.no_grad()
def init_vit_weights(module: nn.Module, blocks: nn.ModuleList, std: float = 0.02) -> None:
    """V-JEPA initialisation: truncated normal (std) for linear/conv weights, zero biases, unit LayerNorms,
    then the output projections of block ``l`` (attn.proj, mlp.fc2) divided by ``sqrt(2 l)``."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv3d, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=std, a=-2.0, b=2.0)  # V-JEPA's bounds are absolute
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for layer_id, blk in enumerate(blocks, start=1):
        blk.attn.proj.weight.div_((2.0 * layer_id) ** 0.5)
        blk.mlp.fc2.weight.div_((2.0 * layer_id) ** 0.5)


def block_stack(dim: int, depth: int, num_heads: int, mlp_hidden_dim: int, *, qkv_bias: bool, norm_eps: float,
                drop_path_rate: float) -> nn.ModuleList:
    """``depth`` pre-norm blocks with a linear stochastic-depth ramp from 0 to ``drop_path_rate``."""
    rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
    return nn.ModuleList([Block(dim, num_heads, mlp_hidden_dim, qkv_bias=qkv_bias, norm_eps=norm_eps, drop_path=r)
                          for r in rates])
