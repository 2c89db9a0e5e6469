"""AdamW for stacked probes: every probe its own learning rate and weight decay, one set of kernels.

Per probe ``p`` this is exactly ``torch.optim.AdamW`` (Loshchilov & Hutter 2019, Alg. 2 with
PyTorch's conventions): decoupled decay ``theta <- theta (1 - lr_p wd_p)``, then
``theta <- theta - lr_p / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)``. The lr and wd of all
probes are ``[P]`` tensors on the device, so a step has no host synchronisation.

Which parameters decay follows the V-JEPA 2 probe recipe: biases and per-probe 1-D parameters
(LayerNorm scales) get no weight decay; matrices and the query token do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def cosine_factor(step: int, total: int, warmup: int = 0) -> float:
    """Learning-rate multiplier: linear warmup over ``warmup`` steps, then cosine from 1 to 0 at ``total``.

    ``step`` counts from 0 (the factor used for the first update). With ``warmup=0`` the first
    update uses the full rate and the last (``step = total - 1``) a small positive one.
    """
    if total <= 0:
        return 1.0
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def decays(name: str, param: torch.Tensor, decay_all: bool = False) -> bool:
    """Whether a stacked parameter ``[P, ...]`` gets weight decay (not biases, not per-probe vectors), or every
    parameter with ``decay_all`` (SurgMotion's AdamW has one param group with all the probe's parameters)."""
    return decay_all or (not name.endswith("bias") and param.dim() - 1 > 1)


class BatchedAdamW:
    """AdamW over parameters stacked ``[P, ...]``, with ``lrs[p]`` and ``wds[p]`` for probe ``p``."""

    def __init__(self, module: nn.Module, lrs: Sequence[float], wds: Sequence[float],
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, decay_all: bool = False):
        self.params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("BatchedAdamW: the module has no trainable parameter")
        P = self.params[0][1].shape[0]
        if len(lrs) != P or len(wds) != P:
            raise ValueError(f"BatchedAdamW: {P} probes but {len(lrs)} learning rates and {len(wds)} weight decays")
        for n, p in self.params:
            if p.shape[0] != P:
                raise ValueError(f"BatchedAdamW: parameter {n} has leading dim {p.shape[0]}, expected P={P}")
        dev = self.params[0][1].device
        self.base_lr = torch.tensor(list(lrs), dtype=torch.float64, device=dev)
        self.wd = torch.tensor(list(wds), dtype=torch.float64, device=dev)
        self.betas, self.eps, self.decay_all = betas, eps, decay_all
        self.factor = 1.0
        self.t = 0
        self.state = {n: (torch.zeros_like(p), torch.zeros_like(p)) for n, p in self.params}

    @property
    def param_groups(self) -> list[dict]:
        """One group of every parameter: what ``torch.amp.GradScaler.unscale_`` walks."""
        return [{"params": [p for _, p in self.params]}]

    def set_factor(self, factor: float) -> None:
        """Scale every probe's learning rate by ``factor`` (the schedule) from the next step on."""
        self.factor = float(factor)

    def zero_grad(self) -> None:
        for _, p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
        lr64 = self.base_lr * self.factor
        per_dtype = {}
        for name, p in self.params:
            g = p.grad
            if g is None:
                continue
            m, v = self.state[name]
            view = (-1,) + (1,) * (p.dim() - 1)
            if p.dtype not in per_dtype:  # [P] vectors in the parameters' precision, computed once per step
                per_dtype[p.dtype] = ((1.0 - lr64 * self.wd).to(p.dtype), (lr64 / bc1).to(p.dtype))
            keep, step_size = per_dtype[p.dtype]
            m.lerp_(g, 1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            if decays(name, p, self.decay_all):
                p.mul_(keep.view(view))
            denom = (v.sqrt() / math.sqrt(bc2)).add_(self.eps)
            p.sub_(step_size.view(view) * m / denom)
