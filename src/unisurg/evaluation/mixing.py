"""Label smoothing, mixup and cutmix for probe training (the SurgRec / VideoMAE fine-tuning recipe).

SurgRec's ``run_class_finetuning_videomae.py`` trains with timm's ``Mixup`` (mixup_alpha 0.8,
cutmix_alpha 1.0, prob 1.0, switch_prob 0.5, mode "batch", label_smoothing 0.1); described here from
its behaviour (Zhang et al. 2018, mixup; Yun et al. 2019, CutMix):

* soft targets: ``(1 - s + s/K)`` on the true class and ``s/K`` elsewhere (label smoothing ``s``);
* per batch, with probability ``prob``: CutMix with probability ``switch_prob`` (when both alphas are
  on), else mixup; ``lam ~ Beta(alpha, alpha)``;
* mixup: ``x = lam * x + (1 - lam) * x[::-1]`` (the batch mixed with its reverse);
* CutMix: a box of area ``(1 - lam) H W`` (centre uniform, clipped at the border) taken from
  ``x[::-1]`` in every frame; ``lam`` is then corrected to the kept area;
* targets: ``lam * t + (1 - lam) * t[::-1]``.

Mixing happens on the normalised model input (so it is exact with random erasing, whose noise lives
there); the result is handed to the frozen encoder in the pass-through form of
:func:`unisurg.data.pixels.to_model_input` (``float16 [B, T, H, W, 4]``, channel 3 set).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from unisurg.data.pixels import to_model_input


def smooth_one_hot(target: torch.Tensor, n_classes: int, smoothing: float) -> torch.Tensor:
    """``[B, K]`` float targets: ``1 - s + s/K`` on the class, ``s/K`` elsewhere (timm's convention)."""
    off = smoothing / n_classes
    out = torch.full((target.shape[0], n_classes), off, dtype=torch.float32, device=target.device)
    return out.scatter_(1, target.long().view(-1, 1), 1.0 - smoothing + off)


def cutmix_box(H: int, W: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of a box with sides ``sqrt(1 - lam)`` of the image's, centre uniform, clipped."""
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(H * cut), int(W * cut)
    cy, cx = int(rng.integers(0, H)), int(rng.integers(0, W))
    return max(cy - ch // 2, 0), min(cy + ch // 2, H), max(cx - cw // 2, 0), min(cx + cw // 2, W)


class BatchMixer:
    """Mixup / CutMix of a training batch of clips and its soft targets (module docstring)."""

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, prob: float = 1.0, switch_prob: float = 0.5,
                 seed: int = 0):
        self.mixup_alpha, self.cutmix_alpha, self.prob, self.switch_prob = mixup_alpha, cutmix_alpha, prob, switch_prob
        self.rng = np.random.default_rng(seed)

    def draw(self, H: int, W: int) -> tuple[float, tuple[int, int, int, int] | None]:
        """``(lam, box)`` of one batch; ``box`` None for mixup (or no mixing, ``lam = 1``)."""
        if self.rng.random() >= self.prob or (self.mixup_alpha <= 0 and self.cutmix_alpha <= 0):
            return 1.0, None
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or self.rng.random() < self.switch_prob)
        if not use_cutmix:
            return float(self.rng.beta(self.mixup_alpha, self.mixup_alpha)), None
        lam = float(self.rng.beta(self.cutmix_alpha, self.cutmix_alpha))
        box = cutmix_box(H, W, lam, self.rng)
        y0, y1, x0, x1 = box
        return 1.0 - (y1 - y0) * (x1 - x0) / float(H * W), box

    def __call__(self, clips: torch.Tensor, soft: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
        """``clips`` as the encoder takes them (uint8 ``[B, T, H, W, 3]`` or float16 ``[..., 4]``), ``soft [B, K]``
        -> mixed pass-through clips ``float16 [B, T, H, W, 4]`` and mixed targets."""
        x = to_model_input(clips, mean, std)  # [B, 3, T, H, W], normalised
        lam, box = self.draw(x.shape[-2], x.shape[-1])
        rev = x.flip(0)
        if box is None:
            x = x * lam + rev * (1.0 - lam)
        else:
            y0, y1, x0, x1 = box
            x = x.clone()
            x[..., y0:y1, x0:x1] = rev[..., y0:y1, x0:x1]
        soft = soft * lam + soft.flip(0) * (1.0 - lam)
        flag = torch.ones_like(x[:, :1])
        out = torch.cat([x, flag], dim=1).permute(0, 2, 3, 4, 1).to(torch.float16)
        return out, soft
