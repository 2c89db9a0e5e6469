"""Soft targets for fine-tuning: label smoothing, mixup and cutmix of video batches, and their losses.

As timm's ``Mixup`` (which VideoMAE's fine-tuning uses), for clips ``[B, C, T, H, W]``:

* the batch is mixed with its reverse (sample ``i`` with sample ``B - 1 - i``);
* mixup: ``x = lam x + (1 - lam) x.flip(0)``, ``lam ~ Beta(a_mix, a_mix)``;
* cutmix: one box of area ``(1 - lam) H W`` (same in every frame) pasted from the reversed batch,
  ``lam ~ Beta(a_cut, a_cut)``, then ``lam`` corrected to the box's clipped area;
* with both on, cutmix replaces mixup with probability ``switch_prob``; a batch is mixed at all with
  probability ``prob``;
* targets: one-hot smoothed (``1 - s + s / K`` on the class, ``s / K`` elsewhere), mixed with the
  same ``lam``; multi-label targets are mixed without smoothing.

The random draws come from a generator seeded by ``(seed, step)``: a resumed run mixes as the
uninterrupted one, whatever the number of processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from unisurg.evaluation.finetune_config import FinetuneConfig
from unisurg.evaluation.tasks import Task


@dataclass(frozen=True)
class MixDraw:
    """What one batch gets: ``lam`` (weight of the batch itself) and the cutmix box, if any."""

    lam: float
    box: tuple[int, int, int, int] | None = None  # (y0, y1, x0, x1)


def draw_mix(rng: np.random.Generator, H: int, W: int, *, mixup: float, cutmix: float, prob: float,
             switch_prob: float) -> MixDraw:
    """One batch's mixing (module docstring); ``lam = 1`` means no mixing."""
    if (mixup <= 0 and cutmix <= 0) or rng.random() >= prob:
        return MixDraw(1.0)
    use_cut = cutmix > 0 and (mixup <= 0 or rng.random() < switch_prob)
    if not use_cut:
        return MixDraw(float(rng.beta(mixup, mixup)))
    lam = float(rng.beta(cutmix, cutmix))
    cut = np.sqrt(1.0 - lam)
    ch, cw = int(H * cut), int(W * cut)
    cy, cx = int(rng.integers(0, H)), int(rng.integers(0, W))
    y0, y1 = int(np.clip(cy - ch // 2, 0, H)), int(np.clip(cy + ch // 2, 0, H))
    x0, x1 = int(np.clip(cx - cw // 2, 0, W)), int(np.clip(cx + cw // 2, 0, W))
    lam = 1.0 - (y1 - y0) * (x1 - x0) / float(H * W)  # the clipped box's true share
    return MixDraw(lam, (y0, y1, x0, x1))


def mix_inputs(x: torch.Tensor, draw: MixDraw) -> torch.Tensor:
    """Clips ``[B, C, T, H, W]`` mixed with their reverse (new tensor; ``x`` untouched)."""
    if draw.lam >= 1.0:
        return x
    if draw.box is None:
        return x.mul(draw.lam).add_(x.flip(0), alpha=1.0 - draw.lam)
    y0, y1, x0, x1 = draw.box
    out = x.clone()
    out[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
    return out


def smooth_one_hot(labels: torch.Tensor, n_classes: int, smoothing: float) -> torch.Tensor:
    """``[B] -> [B, K]``: ``1 - s + s / K`` on the label, ``s / K`` elsewhere (timm's ``mixup_target``)."""
    off = smoothing / n_classes
    return F.one_hot(labels.long(), n_classes).float() * (1.0 - smoothing) + off


def mix_targets(soft: torch.Tensor, draw: MixDraw) -> torch.Tensor:
    """Soft targets ``[B, K]`` mixed like the inputs."""
    if draw.lam >= 1.0:
        return soft
    return soft * draw.lam + soft.flip(0) * (1.0 - draw.lam)


def soft_cross_entropy(logits: torch.Tensor, soft: torch.Tensor, class_weights: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """Mean over the batch of ``-sum_c q_c log p_c`` (timm's ``SoftTargetCrossEntropy``). With class weights:
    ``sum_i sum_c w_c q_ic (-log p_ic) / sum_i sum_c w_c q_ic``, which is ``nn.CrossEntropyLoss(weight)`` for
    one-hot ``q``."""
    logp = F.log_softmax(logits.float(), dim=-1)
    if class_weights is None:
        return -(soft * logp).sum(dim=-1).mean()
    wq = soft * class_weights.to(logp.dtype)
    return -(wq * logp).sum() / wq.sum().clamp_min(1e-12)


def finetune_loss(task: Task, logits: torch.Tensor, targets: torch.Tensor, draw: MixDraw, cfg: FinetuneConfig,
                  class_weights: torch.Tensor | None) -> torch.Tensor:
    """The task's training loss on (possibly mixed) soft targets (module docstring).

    phase / clip: soft-target cross-entropy with label smoothing; triplet: BCE on mixed multi-hot targets;
    skill: the benchmark's regression loss on standardised scores (never mixed).
    """
    if task.name in ("phase", "clip"):
        soft = mix_targets(smooth_one_hot(targets.to(logits.device), task.out_dim, cfg.train.label_smoothing), draw)
        return soft_cross_entropy(logits, soft, class_weights)
    if task.name == "triplet":
        t = mix_targets(targets.to(logits.device).float(), draw)
        return F.binary_cross_entropy_with_logits(logits.float(), t)
    return task.loss(logits[None], targets)[0]


def mixes(task: Task, cfg: FinetuneConfig) -> bool:
    """Whether batches of this task are mixed: classification and multi-label with mixup or cutmix on."""
    return task.name in ("phase", "clip", "triplet") and (cfg.train.mixup > 0 or cfg.train.cutmix > 0)
