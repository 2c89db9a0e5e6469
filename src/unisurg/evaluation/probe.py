"""Attentive probes on frozen tokens (V-JEPA 2 style), ``P`` of them trained at once.

Architecture of one probe (docs/benchmark.md; V-JEPA 2's attentive classifier):

* optional input projection ``D -> width`` (only when ``width != D``);
* ``depth - 1`` pre-norm self-attention blocks over all frozen tokens;
* one cross-attention block in which a single learnable query token attends to the tokens;
* a linear head on the query's output.

:class:`MultiProbe` holds ``P`` such probes with stacked weights (see :mod:`unisurg.evaluation.probe_layers`):
``forward(tokens [B, N, D]) -> [P, B, out]``, one frozen token batch feeding every probe.
:meth:`MultiProbe.select` extracts probe ``p`` as a 1-probe module (what is saved as the best probe).

:class:`MultiDenseDecoder` is the light decoder of the dense tasks (segmentation, depth):
per patch token, ``LayerNorm -> Linear -> GELU -> Linear`` to ``out_channels * s * s`` values,
rearranged into an ``s x s`` pixel block per patch (``s`` = patch size), i.e. a learnt
patch-wise upsampling to the input resolution; tubelets of a video backbone are averaged first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from unisurg.evaluation.linear_probe import MultiLinearProbe
from unisurg.evaluation.probe_layers import (
    MultiBlock,
    MultiCrossBlock,
    MultiLayerNorm,
    MultiLinear,
    depth_rescale_,
    per_probe_generators,
    trunc_normal_per_probe_,
    vjepa2_rescale_,
)


# a group of probes runs in one pass while one MLP activation of the group is at most this (fp32 bytes)
CHUNK_BYTES = 32 << 20


@dataclass(frozen=True)
class ProbeSpec:
    """Everything needed to rebuild a probe (stored in ``probe.json``)."""

    kind: str  # "attentive" | "linear" | "dense"
    embed_dim: int  # D of the frozen tokens
    out_dim: int  # classes / targets / output channels
    width: int  # probe width (== embed_dim unless projected)
    depth: int = 4  # attentive: depth-1 self-attention blocks + 1 cross-attention block
    heads: int = 16
    mlp_ratio: float = 4.0
    hidden: int = 256  # dense decoder hidden width
    patch_size: int = 16  # dense decoder: pixels per token side
    grid: tuple[int, int, int] | None = None  # dense decoder: token grid (T', Hp, Wp)
    init_std: float = 0.02
    eps: float = 1e-6
    # V-JEPA 2's AttentiveClassifier (the official probe format, unisurg.evaluation.official_probe): cross_proj=False,
    # eps=1e-5, init="vjepa2" (trunc_normal std 0.02 cut at +-2 absolute, its residual rescale)
    cross_proj: bool = True  # output projection after the cross-attention (ours); False = the official probe
    init: str = "unisurg"  # "unisurg": cut at +-2 std, every residual projection / sqrt(2 l); "vjepa2": theirs

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["grid"] = list(self.grid) if self.grid is not None else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ProbeSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"probe spec: unknown keys {unknown}; valid keys: {sorted(fields)}")
        d = dict(d)
        if d.get("grid") is not None:
            d["grid"] = tuple(int(v) for v in d["grid"])
        return cls(**d)


def build_probe(spec: ProbeSpec, n_probes: int, seed: int = 0) -> nn.Module:
    """A :class:`MultiProbe` or :class:`MultiDenseDecoder` of ``n_probes`` probes from ``spec``."""
    if spec.kind == "attentive":
        return MultiProbe(spec, n_probes, seed)
    if spec.kind == "dense":
        return MultiDenseDecoder(spec, n_probes, seed)
    if spec.kind == "linear":  # SurgRec's head: Linear on a LayerNorm of the mean token (unisurg.evaluation.linear_probe)
        return MultiLinearProbe(spec, n_probes, seed)
    raise ValueError(f"probe kind {spec.kind!r}: use 'attentive', 'linear' or 'dense'")


class _Stacked(nn.Module):
    """Shared machinery: per-probe init and extraction of one probe."""

    spec: ProbeSpec
    n_probes: int

    def _init_weights(self, seed: int) -> None:
        gens = per_probe_generators(self.n_probes, seed)
        for name, m in self.named_modules():
            if isinstance(m, MultiLinear):
                trunc_normal_per_probe_(m.weight, self.spec.init_std, gens,
                                        cut=2.0 if getattr(self.spec, "init", "unisurg") == "vjepa2" else None)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, MultiLayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def select(self, index: int) -> "_Stacked":
        """Probe ``index`` as a new 1-probe module (weights copied)."""
        if not 0 <= index < self.n_probes:
            raise IndexError(f"probe index {index} outside 0..{self.n_probes - 1}")
        one = type(self)(self.spec, 1, seed=0)
        with torch.no_grad():
            src = dict(self.named_parameters())
            for name, p in one.named_parameters():
                p.copy_(src[name][index:index + 1])
        return one.to(next(self.parameters()).device)

    @classmethod
    def stack(cls, probes: list["_Stacked"]) -> "_Stacked":
        """Concatenate 1-probe (or multi-probe) modules of the same spec into one module."""
        spec = probes[0].spec
        if any(p.spec != spec for p in probes):
            raise ValueError("stack: all probes must share one ProbeSpec")
        out = cls(spec, sum(p.n_probes for p in probes), seed=0)
        with torch.no_grad():
            params = [dict(p.named_parameters()) for p in probes]
            for name, dst in out.named_parameters():
                dst.copy_(torch.cat([ps[name].detach().cpu() for ps in params]))
        return out


class MultiProbe(_Stacked):
    """``P`` attentive probes: ``tokens [B, N, D] -> [P, B, out_dim]`` (see the module docstring)."""

    def __init__(self, spec: ProbeSpec, n_probes: int, seed: int = 0, checkpoint: bool = False):
        super().__init__()
        if spec.depth < 1:
            raise ValueError(f"probe.depth={spec.depth}: need at least the cross-attention block (depth >= 1)")
        self.spec, self.n_probes, self.checkpoint = spec, n_probes, checkpoint
        self.chunk = 0  # probes per pass; 0: probes_per_chunk's rule
        W, P = spec.width, n_probes
        hidden = int(W * spec.mlp_ratio)
        self.proj_in = MultiLinear(P, spec.embed_dim, W) if W != spec.embed_dim else None
        self.blocks = nn.ModuleList([MultiBlock(P, W, spec.heads, hidden, spec.eps) for _ in range(spec.depth - 1)])
        self.query = nn.Parameter(torch.zeros(P, 1, 1, W))  # [P, B=1, Q=1, W], broadcast over the batch
        self.cross = MultiCrossBlock(P, W, spec.heads, hidden, spec.eps, proj=spec.cross_proj)
        self.head = MultiLinear(P, W, spec.out_dim)
        if spec.init not in ("unisurg", "vjepa2"):
            raise ValueError(f"probe init {spec.init!r}: use 'unisurg' or 'vjepa2'")
        self._init_weights(seed)
        cut = 2 * spec.init_std if spec.init == "unisurg" else 2.0  # V-JEPA 2 truncates at +-2 absolute
        with torch.no_grad():
            gens = per_probe_generators(P, seed + 10_000)
            for p, g in enumerate(gens):
                nn.init.trunc_normal_(self.query.data[p], std=spec.init_std, a=-cut, b=cut, generator=g)
        if spec.init == "vjepa2":
            vjepa2_rescale_(self.blocks, self.cross)
        else:
            for i, blk in enumerate(self.blocks, start=1):
                depth_rescale_(blk, i)
            depth_rescale_(self.cross, len(self.blocks) + 1)

    def probes_per_chunk(self, tokens: torch.Tensor) -> int:
        """How many probes run through one pass: on CPU, all of them while an MLP activation of the group stays
        under :data:`CHUNK_BYTES`, else groups that fit; on accelerators all (``chunk`` set on the module
        overrides; 0 = this rule)."""
        if self.chunk:
            return min(self.chunk, self.n_probes)
        if tokens.device.type not in ("cpu", "meta"):
            return self.n_probes
        B, N = (tokens.shape[-3], tokens.shape[-2]) if tokens.dim() >= 3 else (tokens.shape[0], 1)
        hidden = int(self.spec.width * self.spec.mlp_ratio)
        per_probe = B * N * hidden * 4  # fp32 bytes of one probe's MLP hidden activation
        return max(1, min(self.n_probes, CHUNK_BYTES // max(1, per_probe)))

    def forward(self, tokens: torch.Tensor, *, whole: bool = False) -> torch.Tensor:
        """``tokens``: probe-shared ``[B, N, D]`` (pooled ``[B, D]``, or per-probe ``[P, B, N, D]``) -> ``[P, B, out]``.

        Large activations run in groups of probes (:meth:`probes_per_chunk`): each group's tensors then stay
        in the CPU's caches, where one pass over all 20 probes was bound by memory traffic in its element-wise
        layers (20 probes, batch 4, width 256, one thread, fp32: at 1024 tokens groups of 4 take 0.85x the time
        of one pass; at 256 tokens groups of 8 take 0.88x the time of groups of 16, and groups of 2-8 are level
        at both sizes). The probes are independent, so the result is the same.
        """
        c = self.probes_per_chunk(tokens) if not whole else self.n_probes
        if c < self.n_probes:
            params = dict(self.named_parameters())
            outs = []
            for lo in range(0, self.n_probes, c):
                group = {k: v[lo:lo + c] for k, v in params.items()}
                part = tokens if tokens.dim() != 4 else tokens[lo:lo + c]
                outs.append(functional_call(self, group, (part,), {"whole": True}))
            return torch.cat(outs)
        if tokens.dim() == 2:  # pooled features [B, D]: one token per sample
            tokens = tokens[:, None]
        if tokens.dim() not in (3, 4) or tokens.shape[-1] != self.spec.embed_dim:
            raise ValueError(f"probe expects tokens [B, N, {self.spec.embed_dim}] (or [P, B, N, D]), got "
                             f"{tuple(tokens.shape)}")
        shared = tokens.dim() == 3
        x = tokens
        if self.proj_in is not None:
            x = self.proj_in(x.unsqueeze(0).expand(self.proj_in.weight.shape[0], *x.shape) if shared else x)
            shared = False
        for blk in self.blocks:
            if self.checkpoint and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, shared, use_reentrant=False)
            else:
                x = blk(x, shared=shared)
            shared = False
        # the query stays [P, 1, 1, W]: shared by the batch, so the cross block needs no key / value projection
        q = self.cross(self.query.to(x.dtype), x, shared=shared)
        return self.head(q[:, :, 0])


class MultiDenseDecoder(_Stacked):
    """``P`` light dense decoders: tokens ``[B, T'*Hp*Wp, D]`` -> maps ``[P, B, C, Hp*s, Wp*s]``."""

    def __init__(self, spec: ProbeSpec, n_probes: int, seed: int = 0):
        super().__init__()
        if spec.grid is None:
            raise ValueError("a dense decoder needs the token grid (T', Hp, Wp) in its ProbeSpec")
        self.spec, self.n_probes = spec, n_probes
        s = spec.patch_size
        self.norm = MultiLayerNorm(n_probes, spec.embed_dim, spec.eps)
        self.fc1 = MultiLinear(n_probes, spec.embed_dim, spec.hidden)
        self.fc2 = MultiLinear(n_probes, spec.hidden, spec.out_dim * s * s)
        self._init_weights(seed)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        T, Hp, Wp = self.spec.grid
        B, N, D = tokens.shape
        if N != T * Hp * Wp or D != self.spec.embed_dim:
            raise ValueError(f"dense decoder expects tokens [B, {T * Hp * Wp}, {self.spec.embed_dim}] "
                             f"(grid {self.spec.grid}), got {tuple(tokens.shape)}")
        x = tokens.view(B, T, Hp * Wp, D).mean(dim=1)  # tubelets of one (repeated) image -> one map
        h = self.fc2(F.gelu(self.fc1(self.norm(x, shared=True))))  # [P, B, Hp*Wp, C*s*s]
        s, C, P = self.spec.patch_size, self.spec.out_dim, self.n_probes
        h = h.view(P, B, Hp, Wp, C, s, s).permute(0, 1, 4, 2, 5, 3, 6)
        return h.reshape(P, B, C, Hp * s, Wp * s)
