"""EMA target encoder (V-JEPA / BYOL): ``theta_E <- m * theta_E + (1 - m) * theta``."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

MOMENTUM_KINDS = ("constant", "linear", "cosine")


def make_target(online: nn.Module) -> nn.Module:
    """A frozen deep copy of ``online`` to serve as the EMA target (no gradients, eval mode)."""
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return target.eval()


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float | torch.Tensor) -> None:
    """In place ``t <- m t + (1 - m) o`` for every parameter (UniSurg Sec. "EMA target", alpha = 0.99925).

    Uses one fused ``torch._foreach_lerp_`` over all parameters (``t + (1 - m)(o - t)``, the same
    quantity) instead of a Python loop of small kernels; floating buffers are copied from ``online``.
    Parameters are matched by order; the two modules must have the same structure.
    """
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError(
            f"EMA target has {len(t_params)} parameters but the online model has {len(o_params)}; "
            "the target must be a copy of the online module (see make_target)"
        )
    weight = 1.0 - momentum
    if t_params:
        o_data = [o.detach().to(t.dtype) if o.dtype != t.dtype else o.detach() for t, o in zip(t_params, o_params)]
        if isinstance(weight, torch.Tensor):
            torch._foreach_lerp_(t_params, o_data, [weight] * len(t_params))
        else:
            torch._foreach_lerp_(t_params, o_data, float(weight))
    t_bufs = [b for b in target.buffers() if b.is_floating_point()]
    o_bufs = [b for b in online.buffers() if b.is_floating_point()]
    if len(t_bufs) != len(o_bufs):
        raise ValueError(f"EMA target has {len(t_bufs)} floating buffers but the online model has {len(o_bufs)}")
    if t_bufs:
        torch._foreach_copy_(t_bufs, o_bufs)


def momentum_at(step: int, total_steps: int, kind: str = "constant", m0: float = 0.99925, m1: float = 1.0) -> float:
    """EMA momentum at ``step``.

    constant: ``m0`` (UniSurg default). linear: ``m0 + (m1 - m0) s / S`` (V-JEPA). cosine:
    ``m1 - (m1 - m0)(1 + cos(pi s / S)) / 2`` (BYOL). ``s`` is clipped to ``[0, S]``.
    """
    if kind not in MOMENTUM_KINDS:
        raise ValueError(f"momentum schedule kind {kind!r}: expected one of {MOMENTUM_KINDS}")
    if kind == "constant":
        return float(m0)
    if total_steps <= 0:
        raise ValueError(f"a {kind} momentum schedule needs total_steps > 0, got {total_steps}")
    frac = min(max(step / total_steps, 0.0), 1.0)
    if kind == "linear":
        return m0 + (m1 - m0) * frac
    return m1 - (m1 - m0) * (1.0 + math.cos(math.pi * frac)) / 2.0


class MomentumSchedule:
    """Callable ``step -> momentum``; stateless, so resuming at step ``s`` gives the same value."""

    def __init__(self, total_steps: int = 0, kind: str = "constant", m0: float = 0.99925, m1: float = 1.0):
        momentum_at(0, max(total_steps, 1), kind, m0, m1)  # validate now
        self.total_steps, self.kind, self.m0, self.m1 = total_steps, kind, m0, m1

    def __call__(self, step: int) -> float:
        return momentum_at(step, self.total_steps, self.kind, self.m0, self.m1)
