"""Binary (polyp) segmentation metrics: Dice and MAE per image, then the mean over images.

Conventions (PraNet evaluation family):

* **Dice** = ``2|P & G| / (|P| + |G|)`` with ``P = prob > threshold`` (0.5); an image where both
  the prediction and the ground truth are empty scores **1** (a correct "no polyp"); exactly one
  empty scores 0. IoU ``|P & G| / |P | G|`` is returned too, with the same empty-empty rule.
* **MAE** = mean over pixels of ``|prob - gt|`` between the probability map in [0, 1] and the
  binary mask (PraNet saves maps min-max normalised per image first: ``minmax_normalize=True``).

Images may differ in size (pass lists); each image weighs the same in the mean.
"""

from __future__ import annotations

import numpy as np

from unisurg.evaluation.metrics.inputs import (
    as_binary,
    as_scores,
    check_nonempty,
    check_same_shape,
)


def _images(x, name: str) -> list:
    if isinstance(x, np.ndarray) and x.ndim == 2:
        return [x]
    if isinstance(x, np.ndarray) and x.ndim == 3:
        return list(x)
    if isinstance(x, (list, tuple)):
        return list(x)
    raise ValueError(f"{name}: pass one [H, W] map, a [N, H, W] array or a list of [H, W] maps.")


def _overlap(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """``(dice, iou)`` of two boolean masks; both empty -> ``(1, 1)``."""
    inter = float((pred & gt).sum())
    total = float(pred.sum()) + float(gt.sum())
    if total == 0:
        return 1.0, 1.0
    return 2.0 * inter / total, inter / (total - inter)


def dice(prob, gt, threshold: float = 0.5) -> float:
    """Dice of one image: ``prob > threshold`` against the binary ``gt``; 1.0 when both are empty."""
    p = as_scores(prob, "prob", 2) > threshold
    g = as_binary(gt, "gt", 2)
    check_same_shape(p, g, "prob", "gt")
    return _overlap(p, g)[0]


def segmentation_metrics(probs, gts, threshold: float = 0.5, minmax_normalize: bool = False) -> dict:
    """Mean Dice, IoU and MAE over images of probability maps ``probs`` and binary masks ``gts``.

    Returns ``{"dice", "iou", "mae", "per_image": {"dice": [N], "iou": [N], "mae": [N]}, "n_images"}``.
    """
    p_list, g_list = _images(probs, "probs"), _images(gts, "gts")
    check_nonempty(p_list, "probs")
    if len(p_list) != len(g_list):
        raise ValueError(f"probs has {len(p_list)} images but gts {len(g_list)}.")
    d, j, e = [], [], []
    for i, (p, g) in enumerate(zip(p_list, g_list)):
        p = as_scores(p, f"probs[{i}]", 2)
        g = as_binary(g, f"gts[{i}]", 2)
        check_same_shape(p, g, "probs", "gts", f"image {i}")
        if minmax_normalize:
            p = (p - p.min()) / (p.max() - p.min() + 1e-8)
        if p.min() < 0 or p.max() > 1:
            raise ValueError(f"probs[{i}]: values outside [0, 1] (min {p.min():.3g}, max {p.max():.3g}); "
                             "pass probabilities (apply a sigmoid to logits) or set minmax_normalize=True.")
        di, io = _overlap(p > threshold, g)
        d.append(di)
        j.append(io)
        e.append(float(np.abs(p - g).mean()))
    per = {"dice": np.array(d), "iou": np.array(j), "mae": np.array(e)}
    return {"dice": float(per["dice"].mean()), "iou": float(per["iou"].mean()), "mae": float(per["mae"].mean()),
            "per_image": per, "n_images": len(d)}

