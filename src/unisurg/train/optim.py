"""AdamW with decay / no-decay parameter groups and the step-indexed LR, weight-decay and EMA schedules.

Every schedule is a pure function of the global step (0-based: the value used *for* that step),
so a resumed run needs only the step to continue the same curves; no scheduler state is saved.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from unisurg.models.ema import momentum_at
from unisurg.train.pretrain_config import EmaConfig, OptimConfig
from unisurg.typed_config import ConfigError


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """V-JEPA's rule: biases and every 1-D parameter (LayerNorm scales and shifts) get no weight decay.

    Multi-dimensional parameters (weights, mask tokens, positions if learned) are decayed.
    """
    return name.endswith("bias") or param.ndim <= 1


def param_groups(module: nn.Module) -> list[dict]:
    """Two AdamW groups over the trainable parameters of ``module``: decayed and not (``is_no_decay``).

    The no-decay group carries ``"no_decay": True`` so the weight-decay schedule leaves it at 0.
    """
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if is_no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "no_decay": False}, {"params": no_decay, "no_decay": True, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(module: nn.Module, cfg: OptimConfig, device: torch.device,
                    groups: list[dict] | None = None) -> torch.optim.AdamW:
    """AdamW over ``module`` with the fused kernel (CUDA and CPU; ~5x the multi-tensor ``foreach`` path
    on CPU for the bench-s model), falling back to ``foreach`` where fused is unsupported.

    LR and weight decay are set every step by :func:`set_hyperparams`; the values here are step 0's.
    ``groups``: ready parameter groups (e.g. :func:`layer_decay_groups`) instead of :func:`param_groups`.
    """
    kw = dict(lr=cfg.start_lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    try:
        return torch.optim.AdamW(param_groups(module) if groups is None else groups, fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(param_groups(module) if groups is None else groups, foreach=True, **kw)


def warmup_steps(cfg: OptimConfig, iterations_per_epoch: int) -> int:
    if cfg.warmup_steps is not None:
        return int(cfg.warmup_steps)
    return int(round(cfg.warmup_epochs * iterations_per_epoch))


def lr_at(step: int, total: int, warmup: int, start_lr: float, peak_lr: float, final_lr: float,
          kind: str = "cosine") -> float:
    """Learning rate for 0-based ``step`` of ``total`` (paper section 4.1: "cosine learning-rate schedule"
    with warmup, as V-JEPA's ``WarmupCosineSchedule``).

    Warmup (``step < warmup``): linear, ``start + (peak - start) * step / warmup``.
    Then, with progress ``p = (step - warmup) / (total - warmup)`` clipped to [0, 1]:
    cosine ``final + (peak - final)(1 + cos(pi p)) / 2``; linear ``peak + (final - peak) p``;
    constant ``peak``.
    """
    if step < warmup:
        return start_lr + (peak_lr - start_lr) * step / warmup
    if kind == "constant":
        return peak_lr
    p = min(max((step - warmup) / max(total - warmup, 1), 0.0), 1.0)
    if kind == "linear":
        return peak_lr + (final_lr - peak_lr) * p
    if kind == "cosine":
        return final_lr + (peak_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"optim.lr_schedule={kind!r}: expected cosine, linear or constant")


def wd_at(step: int, total: int, wd: float, final_wd: float | None) -> float:
    """Weight decay for ``step``: constant ``wd`` (paper: 0.04), or V-JEPA's cosine from ``wd`` to
    ``final_wd``: ``final + (wd - final)(1 + cos(pi step / total)) / 2``."""
    if final_wd is None or final_wd == wd:
        return wd
    p = min(max(step / max(total, 1), 0.0), 1.0)
    return final_wd + (wd - final_wd) * 0.5 * (1.0 + math.cos(math.pi * p))


@dataclass(frozen=True)
class StepHyperparams:
    """The scheduled values of one step: learning rate, weight decay, EMA momentum."""

    lr: float
    weight_decay: float
    momentum: float


class Schedules:
    """LR, weight decay and EMA momentum as functions of the global step."""

    def __init__(self, optim: OptimConfig, ema: EmaConfig, total_steps: int, iterations_per_epoch: int):
        self.optim, self.ema = optim, ema
        self.total = int(total_steps)
        self.warmup = warmup_steps(optim, iterations_per_epoch)
        if self.warmup > self.total:
            raise ConfigError(f"optim.warmup_steps/warmup_epochs: a warmup of {self.warmup} steps exceeds the "
                              f"{self.total} training steps (schedule.epochs x iterations_per_epoch); shorten it")

    def __call__(self, step: int) -> StepHyperparams:
        o = self.optim
        lr = lr_at(step, self.total, self.warmup, o.start_lr, o.lr, o.final_lr, o.lr_schedule)
        wd = wd_at(step, self.total, o.weight_decay, o.final_weight_decay)
        m = momentum_at(step, self.total, self.ema.schedule, self.ema.momentum, self.ema.final_momentum)
        return StepHyperparams(lr, wd, m)


def set_hyperparams(optimizer: torch.optim.Optimizer, hyper: StepHyperparams) -> None:
    """Write this step's LR (times the group's ``lr_scale``, see :func:`layer_decay_groups`) into every group
    and its weight decay into the decayed groups (Python floats: no sync)."""
    for group in optimizer.param_groups:
        group["lr"] = hyper.lr * group.get("lr_scale", 1.0)
        group["weight_decay"] = 0.0 if group.get("no_decay") else hyper.weight_decay


def grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Global L2 norm of the gradients (a device tensor, no sync); clips them to ``max_norm`` if > 0."""
    params = [p for p in params if p.grad is not None]
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    return torch.nn.utils.get_total_norm([p.grad for p in params], foreach=True)


def layer_decay_scale(layer: int, n_layers: int, decay: float) -> float:
    """Layer-wise learning-rate decay (BEiT's fine-tuning recipe, as VideoMAE fine-tunes):
    layer ``i`` of ``0..n_layers`` (0 = embeddings, ``n_layers`` = the head side) trains at
    ``decay ** (n_layers - i)`` times the base LR, so lower layers move less."""
    return float(decay ** (n_layers - layer))


def layer_decay_groups(module: nn.Module, layer_of, n_layers: int, decay: float) -> list[dict]:
    """AdamW groups per (layer, decay / no decay): ``layer_of(name) -> 0..n_layers``; each group carries
    ``lr_scale`` (:func:`layer_decay_scale`) and ``no_decay`` (:func:`is_no_decay`: biases and 1-D tensors)."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        layer = int(layer_of(name))
        if not 0 <= layer <= n_layers:
            raise ValueError(f"layer_decay_groups: {name} got layer {layer}, outside 0..{n_layers}")
        nd = is_no_decay(name, p)
        g = groups.setdefault((layer, nd), {"params": [], "no_decay": nd, "layer": layer,
                                            "lr_scale": layer_decay_scale(layer, n_layers, decay)})
        if nd:
            g["weight_decay"] = 0.0
        g["params"].append(p)
    return [groups[k] for k in sorted(groups)]
