"""Training losses of ``P`` stacked probes: each returns ``[P]`` per-probe losses (sum them to train).

Summing the per-probe losses gives every probe exactly the gradient of its own loss (the probes
share no parameter), so one backward trains all of them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _full(x: torch.Tensor) -> torch.Tensor:
    """Losses in at least float32 (bf16 logits from autocast are upcast; float64 stays float64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def class_balanced_weights(labels, n_classes: int) -> np.ndarray:
    """Class weights ``w_c = N / (K * n_c)`` from the training labels (docs/benchmark.md, the authors' release).

    ``N`` = number of labelled training samples (labels ``< 0`` are ignored), ``K`` = ``n_classes``,
    ``n_c`` = samples of class ``c``. A class absent from training gets weight 0 (it can never be a
    target, so the value never multiplies a loss term). Classes equally frequent -> all weights 1.
    """
    y = np.asarray(labels, dtype=np.int64).ravel()
    y = y[y >= 0]
    if y.size == 0:
        raise ValueError("class_balanced_weights: no labelled training sample")
    if y.max() >= n_classes:
        raise ValueError(f"class_balanced_weights: label {int(y.max())} >= n_classes={n_classes}")
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, y.size / (n_classes * counts), 0.0)
    return w


def multi_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-probe (weighted) cross-entropy, ``[P]``; ``logits [P, B, K]``, ``target [B]`` int64.

    With ``weight`` this is ``nn.CrossEntropyLoss(weight)``'s mean: ``sum_i w_{y_i} l_i / sum_i w_{y_i}``.
    """
    P, B, K = logits.shape
    x = _full(logits)
    if weight is not None:
        weight = weight.to(x.dtype)
    flat = F.cross_entropy(x.reshape(P * B, K), target.repeat(P), weight=weight, reduction="none")
    per = flat.view(P, B).sum(dim=1)
    if weight is None:
        return per / B
    return per / weight[target].sum().clamp_min(1e-12)


def multi_soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-probe cross-entropy with soft targets, ``[P]``: ``mean_i -sum_k t_ik log softmax(x_i)_k`` (timm's
    ``SoftTargetCrossEntropy``); ``logits [P, B, K]``, ``target [B, K]`` (rows summing to 1). No class weights."""
    x = _full(logits)
    return -(target.to(x.dtype).unsqueeze(0) * F.log_softmax(x, dim=-1)).sum(-1).mean(-1)


def multi_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-probe multi-label binary cross-entropy (mean over samples and classes), ``[P]``."""
    x = _full(logits)
    t = target.to(x.dtype).unsqueeze(0).expand_as(x)
    loss = F.binary_cross_entropy_with_logits(x, t, pos_weight=pos_weight, reduction="none")
    return loss.flatten(1).mean(dim=1)


def multi_regression(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Per-probe L1 or MSE, ``[P]``; ``pred [P, B, 1]`` or ``[P, B]``, ``target [B]``."""
    p = _full(pred).reshape(pred.shape[0], -1)
    t = target.to(p.dtype).reshape(1, -1).expand_as(p)
    if kind == "l1":
        return (p - t).abs().mean(dim=1)
    if kind == "mse":
        return ((p - t) ** 2).mean(dim=1)
    raise ValueError(f"regression loss {kind!r}: use 'l1' or 'mse'")


def multi_segmentation(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-probe binary segmentation loss ``BCE + soft Dice`` (the usual polyp-segmentation pair), ``[P]``.

    ``logits [P, B, 1, H, W]``, ``mask [B, H, W]`` in {0, 1}. Soft Dice per image:
    ``1 - (2 sum(p g) + 1) / (sum p + sum g + 1)``, averaged over the batch.
    """
    P = logits.shape[0]
    x = _full(logits)[:, :, 0]
    g = mask.to(x.dtype).unsqueeze(0).expand_as(x)
    bce = F.binary_cross_entropy_with_logits(x, g, reduction="none").flatten(1).mean(dim=1)
    prob = torch.sigmoid(x).flatten(2)
    gg = g.flatten(2)
    dice = 1.0 - (2.0 * (prob * gg).sum(-1) + 1.0) / (prob.sum(-1) + gg.sum(-1) + 1.0)
    return bce + dice.view(P, -1).mean(dim=1)


def depth_from_logits(logits: torch.Tensor, max_depth: float) -> torch.Tensor:
    """Depth in the target unit: ``max_depth * sigmoid(logit)`` (C3VD: 0..100 mm)."""
    return max_depth * torch.sigmoid(_full(logits))


def multi_depth_l1(logits: torch.Tensor, depth: torch.Tensor, max_depth: float) -> torch.Tensor:
    """Per-probe L1 between predicted and true depth over valid pixels (``depth > 0``), in units of
    ``max_depth`` (so that the lr grid does not depend on the unit), ``[P]``."""
    pred = depth_from_logits(logits[:, :, 0], max_depth)
    d = depth.to(pred.dtype).unsqueeze(0).expand_as(pred)
    valid = (d > 0).float()
    err = (pred - d).abs() * valid / max_depth
    return err.flatten(1).sum(dim=1) / valid.flatten(1).sum(dim=1).clamp_min(1.0)
