"""The total UniSurg objective (paper section 3.4.4) with a switch per term.

    L = L_motion + lambda_st * L_st + lambda_var * L_var

With every extra switched off (``UniSurgLossConfig.plain_vjepa()``) it is exactly V-JEPA's L1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from unisurg.objectives.affinity import affinity_distillation_loss, gram_affinity_loss
from unisurg.objectives.motion import (
    dense_motion_map,
    dense_motion_prediction_loss,
    motion_prediction_loss,
    motion_score,
    topk_motion_tubes,
    topk_motion_weights,
)
from unisurg.objectives.prediction import l1_prediction_loss
from unisurg.objectives.tokens import check_token_batch, check_tubelet
from unisurg.objectives.variance import channel_std, variance_loss

_CHOICES = {
    "motion_scope": ("all", "topk"),
    "motion_mode": ("topk", "dense"),
    "affinity_mode": ("kl", "gram_smoothl1"),
}


@dataclass
class UniSurgLossConfig:
    """Switches and hyper-parameters of the UniSurg loss; defaults are the paper's (section 4.1).

    motion_weighting: weight the L1 by motion (off = plain L1 term).
    motion_mode: "topk" (paper: top-K masked tubes, softmax weights) or "dense" (authors' code:
        per-token weight 1 + dense_strength * m).
    motion_scope: for "topk" mode, "all" masked tubes count (default, docs/objectives.md) or only J_h
        ("topk", the literal formula). Must be "all" in dense mode.
    affinity / affinity_mode: L_st on, as KL of softmax affinities ("kl", paper) or smooth-L1
        between cosine Gram matrices ("gram_smoothl1", authors' code); gram_beta is its beta.
    variance: L_var on.
    """

    motion_weighting: bool = True
    motion_scope: Literal["all", "topk"] = "all"
    motion_mode: Literal["topk", "dense"] = "topk"
    k: int = 3
    gamma: float = 2.0
    dense_strength: float = 2.0
    affinity: bool = True
    affinity_mode: Literal["kl", "gram_smoothl1"] = "kl"
    tau: float = 0.1
    gram_beta: float = 1.0
    lambda_st: float = 0.1
    variance: bool = True
    lambda_var: float = 0.3
    sigma0: float = 1.0

    @classmethod
    def plain_vjepa(cls) -> "UniSurgLossConfig":
        """Every extra off: the V-JEPA L1 baseline (SurgRec-JEPA)."""
        return cls(motion_weighting=False, affinity=False, variance=False)

    def validate(self) -> None:
        """Raise ValueError naming the field and the allowed values."""
        for name in ("motion_weighting", "affinity", "variance"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"loss.{name} must be true or false, got {getattr(self, name)!r}")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"loss.{name} must be one of {list(choices)}, got {getattr(self, name)!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"loss.k (top-K motion tubes) must be an integer >= 1, got {self.k!r}")
        rules = {"gamma": (0.0, False), "dense_strength": (0.0, False), "tau": (0.0, True),
                 "gram_beta": (0.0, False), "lambda_st": (0.0, False), "lambda_var": (0.0, False),
                 "sigma0": (0.0, True)}
        for name, (low, strict) in rules.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < low or (strict and value == low):
                need = f"> {low}" if strict else f">= {low}"
                raise ValueError(f"loss.{name} must be a finite number {need}, got {value!r}")
        if self.motion_weighting and self.motion_mode == "dense" and self.motion_scope != "all":
            raise ValueError("loss.motion_scope='topk' has no meaning with loss.motion_mode='dense' "
                             "(the dense weights cover every token); set motion_scope to 'all'")


def _mask_field(masks: Any, name: str) -> torch.Tensor:
    """Read ``name`` from a mapping (``masks["target_idx"]``) or an object (``masks.target_idx``)."""
    if isinstance(masks, Mapping):
        if name not in masks:
            raise ValueError(f"masks has no key '{name}' (keys: {sorted(masks)}); the mask collator must "
                             "provide target_idx, target_valid and masked_tubes")
        return masks[name]
    if not hasattr(masks, name):
        raise ValueError(f"masks ({type(masks).__name__}) has no field '{name}'; the mask collator must "
                         "provide target_idx, target_valid and masked_tubes")
    return getattr(masks, name)


def unisurg_loss(x: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, masks: Any,
                 cfg: UniSurgLossConfig, tubelet: tuple[int, int, int] = (2, 16, 16)) -> dict[str, torch.Tensor]:
    """The UniSurg objective on one batch (paper section 3.4.4).

    x: clip [B, C, T, H, W] (normalised pixels, used only for the motion weights);
    pred / target: [B, Nt, D] predictor outputs and layer-normed EMA targets at target_idx;
    masks: mapping or object with target_idx [B, Nt], target_valid [B, Nt], masked_tubes [B, S].

    Returns tensors (no host sync): "loss" (the total, differentiable), "l_pred" (L_motion, or the
    plain L1 when motion weighting is off), "l_st", "l_var" (0 when switched off), and detached
    diagnostics: "l1" (unweighted L1), "pred_std" / "target_std" (mean per-channel std over the
    valid tokens; a collapse shows as pred_std -> 0).
    """
    cfg.validate()
    target_idx = _mask_field(masks, "target_idx")
    target_valid = _mask_field(masks, "target_valid")
    masked_tubes = _mask_field(masks, "masked_tubes")
    check_token_batch(pred, target, target_idx, target_valid)
    _, hp, wp = check_tubelet(x, tubelet, need_time=cfg.motion_weighting and cfg.motion_mode == "dense")
    num_tubes = hp * wp
    if masked_tubes.shape != (pred.shape[0], num_tubes):
        raise ValueError(f"masked_tubes must be [B, S] = {(pred.shape[0], num_tubes)} for a {hp}x{wp} patch grid, "
                         f"got {tuple(masked_tubes.shape)}")
    if x.shape[0] != pred.shape[0]:
        raise ValueError(f"clip batch {x.shape[0]} differs from pred batch {pred.shape[0]}")
    target = target.detach()

    plain = l1_prediction_loss(pred, target, target_valid)
    if not cfg.motion_weighting:
        l_pred = plain
    elif cfg.motion_mode == "topk":
        g = motion_score(x, tubelet)
        selected = topk_motion_tubes(g, masked_tubes, cfg.k)
        w = topk_motion_weights(g, masked_tubes, cfg.k, cfg.gamma)
        l_pred = motion_prediction_loss(pred, target, target_idx, target_valid, w, cfg.motion_scope, selected)
    else:
        m = dense_motion_map(x, tubelet)
        l_pred = dense_motion_prediction_loss(pred, target, target_idx, target_valid, m, cfg.dense_strength)

    zero = plain.new_zeros(())
    total = l_pred
    l_st = zero
    if cfg.affinity:
        if cfg.affinity_mode == "kl":
            l_st = affinity_distillation_loss(pred, target, target_idx, target_valid, num_tubes, cfg.tau)
        else:
            l_st = gram_affinity_loss(pred, target, target_idx, target_valid, num_tubes, cfg.gram_beta)
        total = total + cfg.lambda_st * l_st
    l_var = zero
    if cfg.variance:
        l_var = variance_loss(pred, target_valid, cfg.sigma0)
        total = total + cfg.lambda_var * l_var

    with torch.no_grad():
        pred_std = channel_std(pred.detach(), target_valid).mean()
        target_std = channel_std(target, target_valid).mean()
    return {"loss": total, "l_pred": l_pred, "l_st": l_st, "l_var": l_var,
            "l1": plain.detach(), "pred_std": pred_std, "target_std": target_std}
