"""The linear probe SurgRec actually runs: a linear head on a fresh LayerNorm of the mean-pooled tokens.

In Siiichenggg/SurgRec-open-source (``surgrec_video/models/modeling_finetune.py``,
``entrypoints/run_class_finetuning_videomae.py``): with mean pooling the backbone's final norm is an
identity and ``fc_norm`` (a new ``LayerNorm(eps=1e-6)``) normalises the token mean; the flag
``--frozen_backbone`` (``type=bool, default=True``: always true) freezes every parameter but
``head``, so ``fc_norm`` stays at its initial identity affine: the head reads
``LayerNorm(mean(tokens))`` without a learnt scale or shift. The head is ``nn.Linear`` initialised
``trunc_normal(std 0.02)`` then multiplied (weight and bias) by ``init_scale = 0.001``.

Difference kept: our backbones return tokens after their final norm (SurgRec's mean pools the tokens
before it); stated in the protocol table.

:class:`MultiLinearProbe` holds ``P`` such heads (one per lr x wd pair), ``[B, N, D]`` or pooled
``[B, D]`` -> ``[P, B, K]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unisurg.evaluation.probe_layers import (
    MultiLinear,
    per_probe_generators,
    trunc_normal_per_probe_,
)

LN_EPS = 1e-6  # VideoMAE's partial(nn.LayerNorm, eps=1e-6)


class MultiLinearProbe(nn.Module):
    """``P`` heads ``Linear(LayerNorm_noaffine(mean over tokens))`` (module docstring)."""

    def __init__(self, spec, n_probes: int, seed: int = 0, init_scale: float = 1e-3):
        super().__init__()
        self.spec, self.n_probes, self.checkpoint = spec, n_probes, False
        self.head = MultiLinear(n_probes, spec.embed_dim, spec.out_dim)
        trunc_normal_per_probe_(self.head.weight, spec.init_std, per_probe_generators(n_probes, seed))
        with torch.no_grad():
            self.head.weight.mul_(init_scale)  # the bias is 0, so its scaling is a no-op

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() == 3:
            tokens = tokens.mean(dim=1)
        if tokens.dim() != 2 or tokens.shape[-1] != self.spec.embed_dim:
            raise ValueError(f"linear probe expects tokens [B, N, {self.spec.embed_dim}] or pooled [B, D], got "
                             f"{tuple(tokens.shape)}")
        x = F.layer_norm(tokens.float(), (self.spec.embed_dim,), eps=LN_EPS).to(tokens.dtype)
        return self.head(x.unsqueeze(0).expand(self.n_probes, *x.shape))

    def select(self, index: int) -> "MultiLinearProbe":
        one = MultiLinearProbe(self.spec, 1, seed=0)
        with torch.no_grad():
            one.head.weight.copy_(self.head.weight[index:index + 1])
            one.head.bias.copy_(self.head.bias[index:index + 1])
        return one.to(self.head.weight.device)
