"""EndoMamba (Tian et al., MICCAI 2025, arXiv:2502.19090): a VideoMamba-style state-space video encoder, pure PyTorch.

Architecture (the authors' ``videomamba/video_sm/models/endomamba*.py`` in nekocatso/EndoMamba):

* patch embedding: ``Conv3d`` with kernel ``(tubelet, P, P)`` (tubelet 1 in the released models), a learned
  spatial position table per frame (``pos_embed``; it also covers an optional per-frame class token), and a fixed
  sinusoidal *temporal* position (Vaswani et al. 2017, Sec. 3.5) added to the patch tokens of frame ``t``;
* ``depth`` Mamba blocks (Gu & Dao 2023) in "Add -> RMSNorm -> mixer" form (residual kept in float32): the first
  ``num_spatial_layers`` (default ``depth // 2``) scan each frame on its own and in both directions (Vim's
  bidirectional mixer, Zhu et al. 2024: a second convolution / projection / SSM set, suffix ``_b``, run on the
  reversed sequence); the remaining layers scan the whole clip *causally* in (t, h, w) order (EndoMamba Sec. 2.1,
  "spatial bidirectional, temporal causal scanning");
* a final ``RMSNorm(residual + hidden)``.

:func:`selective_scan_reference` is the pure-PyTorch recurrence of ``mamba_ssm``'s ``selective_scan_ref`` (the
definition, and the CPU path); :func:`selective_scan_chunked` computes the same in parallel chunks (the CUDA path
without ``mamba_ssm``); on CUDA, ``mamba_ssm``'s fused kernel is used when that package is installed (same
arguments, same result up to float rounding).

Tokens: ``forward(x [B, C, T, H, W]) -> [B, T' * Hp * Wp, D]`` in (t, h, w) order (all patch tokens of frame 0 in
raster order, then frame 1, ...), the per-frame class tokens (fine-tuned variant) dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unisurg.models.image_vit import resample_pos_grid
from unisurg.models.pos_embed import sincos_1d

try:  # optional fused CUDA kernel (pip install mamba-ssm); the reference scan below is the definition
    from mamba_ssm.ops.selective_scan_interface import (
        selective_scan_fn as _fused_selective_scan,
    )
except ImportError:  # pragma: no cover - depends on the environment
    _fused_selective_scan = None


SCAN_CHUNK = 16  # steps per parallel chunk of the pure-PyTorch scan (memory grows with its square)


@dataclass
class EndoMambaConfig:
    embed_dim: int = 384  # EndoMamba-S
    depth: int = 24
    num_spatial_layers: int = 12  # first layers: per-frame bidirectional; the rest: clip-wide causal
    patch_size: int = 16
    tubelet_size: int = 1
    in_chans: int = 3
    pos_grid: tuple[int, int] = (14, 14)  # patch grid of the stored spatial position table (224 px / 16)
    cls_token: bool = False  # the fine-tuned models prepend a class token to every frame
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None  # ceil(embed_dim / 16) when None (Mamba's "auto")
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if not 0 <= self.num_spatial_layers <= self.depth:
            raise ValueError(f"num_spatial_layers={self.num_spatial_layers} must lie in [0, depth={self.depth}]")
        if self.dt_rank is None:
            self.dt_rank = math.ceil(self.embed_dim / 16)
        self.pos_grid = tuple(self.pos_grid)

    @property
    def d_inner(self) -> int:
        return self.expand * self.embed_dim


# ---------------------------------------------------------------- the selective scan


def selective_scan_reference(u, delta, A, B, C, D, z, delta_bias):
    """Selective SSM scan (Gu & Dao 2023, Alg. 2), ``mamba_ssm.selective_scan_ref`` semantics, in float32.

    ``u, delta, z``: ``[b, d, L]``; ``A``: ``[d, n]`` (negative reals); ``B, C``: ``[b, n, L]`` (input-dependent);
    ``D``, ``delta_bias``: ``[d]``. With ``dt = softplus(delta + delta_bias)``:
    ``h_l = exp(dt_l A) h_{l-1} + dt_l B_l u_l``, ``y_l = C_l . h_l + D u_l``, output ``y * silu(z)`` in ``u``'s dtype.
    """
    dtype = u.dtype
    u, z = u.float(), z.float()
    dt = F.softplus(delta.float() + delta_bias.float()[:, None])
    B, C = B.float(), C.float()
    dA = torch.exp(torch.einsum("bdl,dn->bdln", dt, A.float()))
    dBu = torch.einsum("bdl,bnl,bdl->bdln", dt, B, u)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for i in range(u.shape[2]):  # the recurrence: sequential by definition
        h = dA[:, :, i] * h + dBu[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, i]))
    y = torch.stack(ys, dim=2) + u * D.float()[:, None]
    return (y * F.silu(z)).to(dtype)


def segment_sums(a: torch.Tensor) -> torch.Tensor:
    """``out[..., t, s] = sum_{s < r <= t} a[..., r]`` for ``s <= t``, ``-inf`` above the diagonal; ``a``: ``[..., k]``.

    Summed directly (masked cumulative sum, as Mamba-2's ``segsum``, Dao & Gu 2024) rather than as a difference of
    prefix sums, which loses precision when the prefix sums are large.
    """
    k = a.shape[-1]
    x = a[..., :, None].expand(*a.shape, k)  # x[..., r, s] = a_r
    strict = torch.ones(k, k, dtype=torch.bool, device=a.device).tril(-1)
    out = torch.cumsum(x.masked_fill(~strict, 0.0), dim=-2)
    return out.masked_fill(~torch.ones(k, k, dtype=torch.bool, device=a.device).tril(), float("-inf"))


def selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, chunk: int = SCAN_CHUNK):
    """:func:`selective_scan_reference` computed ``chunk`` steps at a time in parallel, in float32.

    Within a chunk, with log-decays ``a_r = dt_r A`` (<= 0 since ``A < 0``),
    ``h_t = exp(sum_{r<=t} a_r) h_0 + sum_{s<=t} exp(sum_{s<r<=t} a_r) dt_s B_s u_s``: every exponent is <= 0;
    the state ``h`` is carried from chunk to chunk. Memory ``O(b d n chunk^2)``; ``L / chunk`` Python steps instead
    of ``L``. Equal to the recurrence up to float rounding (tested against it).
    """
    dtype = u.dtype
    u, z = u.float(), z.float()
    dt = F.softplus(delta.float() + delta_bias.float()[:, None])
    A, B, C = A.float(), B.float(), C.float()
    b, d, L = u.shape
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for l0 in range(0, L, chunk):
        l1 = min(l0 + chunk, L)
        a = dt[:, :, None, l0:l1] * A[None, :, :, None]  # log-decay per step [b, d, n, k]
        dBu = (dt[:, :, l0:l1] * u[:, :, l0:l1])[:, :, None] * B[:, None, :, l0:l1]  # [b, d, n, k]
        H = torch.einsum("bdnts,bdns->bdnt", torch.exp(segment_sums(a)), dBu)
        H = H + torch.exp(torch.cumsum(a, dim=-1)) * h[..., None]
        ys.append(torch.einsum("bdnt,bnt->bdt", H, C[:, :, l0:l1]))
        h = H[..., -1]
    y = torch.cat(ys, dim=2) + u * D.float()[:, None]
    return (y * F.silu(z)).to(dtype)


def selective_scan(u, delta, A, B, C, D, z, delta_bias):
    """The scan on the tensors' device: on CUDA ``mamba_ssm``'s fused kernel when installed, else
    :func:`selective_scan_chunked` (``L / 16`` launches instead of ``3 L``); on the CPU the recurrence
    (:func:`selective_scan_reference`, measured faster there: ``benchmarks/selective_scan.py``)."""
    if u.is_cuda:
        if _fused_selective_scan is not None:
            return _fused_selective_scan(u.contiguous(), delta.contiguous(), A.float(), B.contiguous(),
                                         C.contiguous(), D.float(), z=z.contiguous(), delta_bias=delta_bias.float(),
                                         delta_softplus=True)
        return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias)
    return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias)


# ---------------------------------------------------------------- layers


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` (Zhang & Sennrich 2019), computed in float32 as mamba_ssm's reference."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        out = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return out.to(self.weight.dtype)


def _a_log_name(suffix: str) -> str:
    """The authors' name of log(-A): ``A_log`` forward, ``A_b_log`` backward (Vim's spelling)."""
    return "A_b_log" if suffix == "_b" else "A_log"


class MambaMixer(nn.Module):
    """Mamba mixer (Gu & Dao 2023, Fig. 3) with the authors' parameter names; ``bidirectional`` adds Vim's reversed
    scan (its own ``conv1d_b``, ``x_proj_b``, ``dt_proj_b``, ``A_b_log``, ``D_b``; both directions share ``in_proj``,
    their gated outputs are summed before ``out_proj``)."""

    def __init__(self, c: EndoMambaConfig, bidirectional: bool):
        super().__init__()
        self.c = c
        self.bidirectional = bidirectional
        di = c.d_inner
        self.in_proj = nn.Linear(c.embed_dim, 2 * di, bias=False)
        self.out_proj = nn.Linear(di, c.embed_dim, bias=False)
        for s in ("", "_b") if bidirectional else ("",):
            setattr(self, "conv1d" + s, nn.Conv1d(di, di, c.d_conv, groups=di, padding=c.d_conv - 1))
            setattr(self, "x_proj" + s, nn.Linear(di, c.dt_rank + 2 * c.d_state, bias=False))
            setattr(self, "dt_proj" + s, nn.Linear(c.dt_rank, di))
            setattr(self, _a_log_name(s), nn.Parameter(torch.log(torch.arange(1, c.d_state + 1.0)).repeat(di, 1)))
            setattr(self, "D" + s, nn.Parameter(torch.ones(di)))

    def _direction(self, xz: torch.Tensor, s: str) -> torch.Tensor:
        """Gated SSM output ``[b, d_inner, L]`` of one direction for ``xz = in_proj(x)`` as ``[b, 2 d_inner, L]``."""
        c = self.c
        x, z = xz.chunk(2, dim=1)
        conv = getattr(self, "conv1d" + s)
        x = F.silu(F.conv1d(x, conv.weight, conv.bias, padding=c.d_conv - 1, groups=c.d_inner)[..., : xz.shape[-1]])
        dt, B, C = getattr(self, "x_proj" + s)(x.transpose(1, 2)).split([c.dt_rank, c.d_state, c.d_state], dim=-1)
        dt_proj = getattr(self, "dt_proj" + s)
        delta = F.linear(dt, dt_proj.weight).transpose(1, 2)  # bias goes into the scan (softplus(delta + bias))
        A = -torch.exp(getattr(self, _a_log_name(s)).float())
        return selective_scan(x, delta, A, B.transpose(1, 2), C.transpose(1, 2), getattr(self, "D" + s), z,
                              dt_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xz = self.in_proj(x).transpose(1, 2)
        y = self._direction(xz, "")
        if self.bidirectional:
            y = y + self._direction(xz.flip(-1), "_b").flip(-1)
        return self.out_proj(y.transpose(1, 2))


class MambaBlock(nn.Module):
    """``residual = residual + hidden`` (float32); ``hidden = mixer(RMSNorm(residual))`` (mamba_ssm's Block)."""

    def __init__(self, c: EndoMambaConfig, bidirectional: bool):
        super().__init__()
        self.mixer = MambaMixer(c, bidirectional)
        self.norm = RMSNorm(c.embed_dim, c.norm_eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        residual = hidden.float() if residual is None else residual + hidden.float()
        return self.mixer(self.norm(residual)), residual


def temporal_sincos(num_frames: int, dim: int, device=None) -> torch.Tensor:
    """Sinusoidal position of frames ``0..T-1`` ``[T, dim]``, frequencies ``10000^(-2k/dim)`` (Vaswani et al. 2017,
    Sec. 3.5), *interleaved* as the authors' ``PositionalEncoding``: ``sin`` on even channels, ``cos`` on odd ones."""
    table = sincos_1d(dim, torch.arange(num_frames, device=device, dtype=torch.float32))  # [sin... | cos...]
    return table.view(num_frames, 2, dim // 2).transpose(1, 2).reshape(num_frames, dim)


class EndoMambaEncoder(nn.Module):
    """The EndoMamba encoder with the authors' parameter names (``patch_embed.proj``, ``pos_embed``, ``cls_token``,
    ``layers.N.{mixer, norm}``, ``norm_f``); ``forward(x [B, C, T, H, W]) -> [B, T' * Hp * Wp, D]`` in (t, h, w) order.
    :meth:`forward_frames` keeps the per-frame layout ``[B, T', (1 +) Hp * Wp, D]`` with the class tokens."""

    def __init__(self, c: EndoMambaConfig):
        super().__init__()
        self.config = c
        self.patch_embed = nn.Module()
        k = (c.tubelet_size, c.patch_size, c.patch_size)
        self.patch_embed.proj = nn.Conv3d(c.in_chans, c.embed_dim, k, stride=k)
        if c.cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        n_pos = c.pos_grid[0] * c.pos_grid[1] + int(c.cls_token)
        self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, c.embed_dim))
        self.layers = nn.ModuleList(MambaBlock(c, bidirectional=i < c.num_spatial_layers) for i in range(c.depth))
        self.norm_f = RMSNorm(c.embed_dim, c.norm_eps)
        self.embed_dim = c.embed_dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens + spatial and temporal positions: ``[B, T', (1 +) Np, D]`` (class token first, no time)."""
        c = self.config
        proj = self.patch_embed.proj
        x = proj(x.to(proj.weight.dtype))
        b, d, t, hp, wp = x.shape
        x = x.permute(0, 2, 3, 4, 1).reshape(b * t, hp * wp, d)
        pos = self.pos_embed
        n_pre = int(c.cls_token)
        pos_patch = resample_pos_grid(pos[:, n_pre:], c.pos_grid, (hp, wp))  # other input sizes
        x = (x + pos_patch).reshape(b, t, hp * wp, d)
        x = x + temporal_sincos(t, d, x.device).to(x.dtype)[None, :, None]
        if c.cls_token:
            cls = (self.cls_token + pos[:, :1]).expand(b, t, 1, d)
            x = torch.cat([cls.to(x.dtype), x], dim=2)
        return x

    def forward_frames(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.config.in_chans:
            raise ValueError(f"expected a clip [B, C={self.config.in_chans}, T, H, W], got shape {tuple(x.shape)}")
        h = self.embed(x)
        b, t, n, d = h.shape
        residual = None
        for layer in self.layers:
            if layer.mixer.bidirectional:  # each frame on its own
                h, residual = layer(h.reshape(b * t, n, d), None if residual is None else residual.reshape(b * t, n, d))
            else:  # the whole clip, causally, in (t, token) order
                h, residual = layer(h.reshape(b, t * n, d), None if residual is None else residual.reshape(b, t * n, d))
        out = self.norm_f(residual + h.float())
        return out.reshape(b, t, n, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.forward_frames(x)
        if self.config.cls_token:
            out = out[:, :, 1:]
        return out.flatten(1, 2)
