"""Layers whose weights carry a leading probe dimension ``P``: P independent networks in one module.

Training 20 probes as 20 ``nn.Module``s launches 20x the kernels and runs the frozen tokens through
20 Python loops; stacking the weights turns every linear layer into one ``bmm`` over ``[P, M, D]``
and every attention into one SDPA call over ``P * B`` sequences, so the probes share kernel
launches and the memory traffic of the input tokens. Each probe's parameters only ever touch its
own slice, so gradients stay independent: the gradient of ``sum_p loss_p`` w.r.t. probe ``p``'s
weights is exactly the gradient of ``loss_p`` alone.

Activations are laid out ``[P, B, N, W]`` (probe, batch, tokens, width).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from unisurg.evaluation.query_pooling import shared_query_attention


def per_probe_generators(n_probes: int, seed: int) -> list[torch.Generator]:
    """One CPU generator per probe (seed + p), so probe ``p`` is initialised the same whatever ``P`` is."""
    return [torch.Generator().manual_seed(int(seed) + p) for p in range(n_probes)]


@torch.no_grad()
def trunc_normal_per_probe_(weight: torch.Tensor, std: float, generators: list[torch.Generator],
                            cut: float | None = None) -> None:
    """Truncated normal init of each probe's slice ``weight[p]`` from its own generator, cut at +-2 std
    (``cut=None``) or at +-``cut`` absolute (V-JEPA 2's ``trunc_normal_(std=0.02)`` cuts at +-2: untruncated)."""
    a = 2 * std if cut is None else cut
    for p, g in enumerate(generators):
        w = torch.empty(weight.shape[1:], dtype=torch.float32)
        nn.init.trunc_normal_(w, std=std, a=-a, b=a, generator=g)
        weight[p].copy_(w)


class MultiLinear(nn.Module):
    """``P`` independent affine maps: ``y[p] = x[p] @ weight[p] + bias[p]``.

    ``weight`` is ``[P, in, out]`` (note: transposed w.r.t. ``nn.Linear.weight``) so that the
    forward is a single ``baddbmm``.
    """

    def __init__(self, n_probes: int, d_in: int, d_out: int, bias: bool = True):
        super().__init__()
        self.n_probes, self.d_in, self.d_out = n_probes, d_in, d_out
        self.weight = nn.Parameter(torch.zeros(n_probes, d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(n_probes, d_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[P, ..., in]`` -> ``[P, ..., out]``."""
        shape = x.shape
        x2 = x.reshape(shape[0], -1, shape[-1])
        w = self.weight.to(x2.dtype)
        if self.bias is None:
            y = torch.bmm(x2, w)
        else:
            y = torch.baddbmm(self.bias.to(x2.dtype)[:, None, :], x2, w)
        return y.view(*shape[:-1], self.d_out)

    def after_affine(self, xn: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """``self(scale[p] * xn + shift[p])`` for a probe-shared ``xn`` ``[..., in]`` -> ``[P, ..., out]``.

        The affine step is folded into the weights (``xn @ (scale[:, None] * W) + (shift @ W + b)``), so every
        probe multiplies the one shared ``xn`` and the backward needs no gradient with respect to it: a
        frozen input (the first block's tokens) then costs one weight-gradient product, not two products.
        """
        shape = xn.shape
        w = self.weight
        b = self.bias[:, None, :] if self.bias is not None else w.new_zeros(w.shape[0], 1, w.shape[-1])
        w_fold = scale[:, :, None] * w
        b_fold = torch.baddbmm(b, shift[:, None, :], w)  # [P, 1, out]
        x2 = xn.reshape(1, -1, shape[-1])
        dev = xn.device.type
        if torch.amp.is_autocast_available(dev) and torch.is_autocast_enabled(dev):
            x2 = x2.to(torch.get_autocast_dtype(dev))  # cast the one shared copy, not the P-fold expanded view
        x2 = x2.expand(w.shape[0], *x2.shape[1:])  # stride 0 over probes: no copy
        y = torch.baddbmm(b_fold.to(x2.dtype), x2, w_fold.to(x2.dtype))
        return y.view(w.shape[0], *shape[:-1], self.d_out)

    def extra_repr(self) -> str:
        return f"n_probes={self.n_probes}, in={self.d_in}, out={self.d_out}, bias={self.bias is not None}"


class MultiLayerNorm(nn.Module):
    """``P`` LayerNorms: a shared normalisation then each probe's own scale and shift.

    Accepts ``[P, ..., D]`` or a probe-shared ``[...,  D]`` input (normalised once, then broadcast
    to ``[P, ..., D]`` by the affine step). The first self-attention block does not call it: it folds
    the affine step into its qkv weights instead (:meth:`MultiLinear.after_affine`).
    """

    def __init__(self, n_probes: int, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(n_probes, dim))
        self.bias = nn.Parameter(torch.zeros(n_probes, dim))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """The probe-independent half: zero mean, unit variance over the last dimension."""
        return F.layer_norm(x, (self.dim,), eps=self.eps)

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        xn = self.normalise(x)
        lead = x.dim() - 1 if shared else x.dim() - 2  # dims between P and D
        view = (self.weight.shape[0],) + (1,) * lead + (self.dim,)
        w = self.weight.to(xn.dtype).view(view)
        b = self.bias.to(xn.dtype).view(view)
        return torch.addcmul(b, xn.unsqueeze(0) if shared else xn, w)


class MultiMLP(nn.Module):
    """``P`` two-layer GELU (exact erf) feed-forward networks."""

    def __init__(self, n_probes: int, dim: int, hidden: int):
        super().__init__()
        self.fc1 = MultiLinear(n_probes, dim, hidden)
        self.fc2 = MultiLinear(n_probes, hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``[P, B, N, W]`` -> ``[P*B, H, N, W/H]`` (the layout SDPA batches over)."""
    P, B, N, W = x.shape
    return x.reshape(P * B, N, n_heads, W // n_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor, P: int) -> torch.Tensor:
    """``[P*B, H, N, dh]`` -> ``[P, B, N, H*dh]``."""
    PB, H, N, dh = x.shape
    return x.transpose(1, 2).reshape(P, PB // P, N, H * dh)


# up to this many keys, bf16 attention on CPU runs in fp32 (below)
CPU_FP32_ATTENTION_MAX_KEYS = 768


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SDPA; on CPU, bfloat16 inputs over at most ``CPU_FP32_ATTENTION_MAX_KEYS`` keys are attended in float32.

    PyTorch's CPU flash-attention kernel is slower in bf16 than in fp32 over short sequences at the probes'
    head size (this project's AVX512-BF16 CPU, forward + backward, 80 sequences x 16 heads of 16: 256 tokens
    0.50 s vs 0.30 s, 512 tokens 1.56 s vs 1.24 s, but 1024 tokens 4.05 s vs 4.46 s), while the probes' matmuls
    are 3-5x faster in bf16; so under CPU autocast short attentions stay in fp32.
    """
    if q.device.type == "cpu" and q.dtype == torch.bfloat16 and k.shape[-2] <= CPU_FP32_ATTENTION_MAX_KEYS:
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(torch.bfloat16)
    return F.scaled_dot_product_attention(q, k, v)


class MultiSelfAttention(nn.Module):
    """``P`` multi-head self-attentions (fused qkv projection); one SDPA call over ``P*B`` sequences."""

    def __init__(self, n_probes: int, dim: int, n_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"probe width {dim} is not divisible by probe.heads={n_heads}; "
                             "choose heads dividing the width (or set probe.width)")
        self.n_heads = n_heads
        self.qkv = MultiLinear(n_probes, dim, 3 * dim, bias=qkv_bias)
        self.proj = MultiLinear(n_probes, dim, dim)

    def forward(self, x: torch.Tensor, affine: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``x``: ``[P, B, N, W]``; or, with ``affine = (scale, shift)`` (a LayerNorm's ``[P, W]`` weight and
        bias), the probe-shared normalised ``[B, N, W]``, whose affine step is folded into the qkv projection."""
        qkv = self.qkv(x) if affine is None else self.qkv.after_affine(x, *affine)
        P, W = qkv.shape[0], qkv.shape[-1] // 3
        q, k, v = qkv.split(W, dim=-1)
        out = attention(_heads(q, self.n_heads), _heads(k, self.n_heads), _heads(v, self.n_heads))
        return self.proj(_merge_heads(out, P))


class MultiCrossAttention(nn.Module):
    """``P`` multi-head cross-attentions: queries ``[P, B, Q, W]`` attend to tokens ``[P, B, N, W]``.

    Queries ``[P, 1, 1, W]`` (one per probe, broadcast over the batch) take the path of
    :func:`~unisurg.evaluation.query_pooling.shared_query_attention`, which never projects the tokens.
    """

    def __init__(self, n_probes: int, dim: int, n_heads: int, qkv_bias: bool = True, proj: bool = True):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"probe width {dim} is not divisible by probe.heads={n_heads}")
        self.n_heads = n_heads
        self.q = MultiLinear(n_probes, dim, dim, bias=qkv_bias)
        self.kv = MultiLinear(n_probes, dim, 2 * dim, bias=qkv_bias)
        # V-JEPA 2's CrossAttention has no output projection (its `self.proj` is commented out); proj=False is that
        self.proj = MultiLinear(n_probes, dim, dim) if proj else None

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        P, B, Q, W = q.shape
        if B == 1 and Q == 1:  # one query shared by the batch (the probe's): no key / value projection
            out = shared_query_attention(self.q(q).view(P, W), x, self.kv.weight, self.kv.bias, self.n_heads)
            return out if self.proj is None else self.proj(out)
        k, v = self.kv(x).split(W, dim=-1)
        out = attention(_heads(self.q(q), self.n_heads), _heads(k, self.n_heads), _heads(v, self.n_heads))
        out = _merge_heads(out, P)
        return out if self.proj is None else self.proj(out)


class MultiBlock(nn.Module):
    """``P`` pre-norm transformer blocks: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    ``shared=True``: ``x`` is the probe-shared ``[B, N, W]`` input of the first block, normalised once for
    all probes, each probe's ``norm1`` scale and shift folded into its qkv weights: the projection of the
    frozen tokens then needs no input gradient (at 20 probes x 4 x 256 tokens x width 256, one thread, the
    first block's forward + backward took 0.92x the time in fp32 and 0.97x in bf16 autocast; 1024 tokens:
    0.93x, 0.97x).
    """

    def __init__(self, n_probes: int, dim: int, n_heads: int, mlp_hidden: int, eps: float = 1e-6):
        super().__init__()
        self.norm1 = MultiLayerNorm(n_probes, dim, eps)
        self.attn = MultiSelfAttention(n_probes, dim, n_heads)
        self.norm2 = MultiLayerNorm(n_probes, dim, eps)
        self.mlp = MultiMLP(n_probes, dim, mlp_hidden)

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        if shared:  # one normalisation for all probes; each probe's norm1 affine folded into its qkv weights
            x = x.unsqueeze(0) + self.attn(self.norm1.normalise(x), affine=(self.norm1.weight, self.norm1.bias))
        else:
            x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MultiCrossBlock(nn.Module):
    """``P`` cross-attention blocks (V-JEPA 2 attentive pooler): ``q + xattn(q, norm1(x))``, then
    ``q + mlp(norm2(q))``; the query itself is not normalised."""

    def __init__(self, n_probes: int, dim: int, n_heads: int, mlp_hidden: int, eps: float = 1e-6, proj: bool = True):
        super().__init__()
        self.norm1 = MultiLayerNorm(n_probes, dim, eps)
        self.xattn = MultiCrossAttention(n_probes, dim, n_heads, proj=proj)
        self.norm2 = MultiLayerNorm(n_probes, dim, eps)
        self.mlp = MultiMLP(n_probes, dim, mlp_hidden)

    def forward(self, q: torch.Tensor, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        q = q + self.xattn(q, self.norm1(x, shared=shared))
        return q + self.mlp(self.norm2(q))


def depth_rescale_(block: nn.Module, layer_id: int) -> None:
    """Divide a block's residual output projections by ``sqrt(2 * layer_id)`` (V-JEPA's init rescale)."""
    with torch.no_grad():
        for lin in (getattr(getattr(block, "attn", None), "proj", None),
                    getattr(getattr(block, "xattn", None), "proj", None),
                    block.mlp.fc2):
            if lin is not None:
                lin.weight.div_(math.sqrt(2.0 * layer_id))


def vjepa2_rescale_(self_blocks, cross_block: nn.Module) -> None:
    """V-JEPA 2's ``AttentivePooler._rescale_blocks`` (SPEC Sec. 9): self-attention block ``l`` (from 1)
    divides ``attn.proj`` and ``mlp.fc2`` by ``sqrt(2 l)``; the cross block divides only ``mlp.fc2``, by
    ``sqrt(2 L)`` with ``L`` = the last self-attention block's index (1 when there is none)."""
    with torch.no_grad():
        last = 1
        for i, blk in enumerate(self_blocks, start=1):
            blk.attn.proj.weight.div_(math.sqrt(2.0 * i))
            blk.mlp.fc2.weight.div_(math.sqrt(2.0 * i))
            last = i
        cross_block.mlp.fc2.weight.div_(math.sqrt(2.0 * last))
