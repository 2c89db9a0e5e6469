"""Monocular depth metrics (C3VD): RMSE, AbsRel, SqRel, delta < 1.1, in millimetres.

Conventions (Eigen et al. 2014 error measures, Monodepth2 evaluation protocol):

* per image, over the **valid pixels** ``gt > 0`` (and ``gt <= max_depth`` when given);
* optional **median scaling** per image: ``pred *= median(gt) / median(pred)`` over valid pixels
  (for scale-ambiguous predictions); then ``pred`` is clipped to ``[min_depth, max_depth]`` so that
  ratios are finite;
* ``RMSE = sqrt(mean((pred - gt)^2))`` [mm], ``AbsRel = mean(|pred - gt| / gt)`` [unitless],
  ``SqRel = mean((pred - gt)^2 / gt)`` [mm], ``delta = mean(max(pred/gt, gt/pred) < 1.1)``;
* the reported value is the mean over images of the per-image values (images without a valid
  pixel are NaN rows, skipped and counted).

C3VD depth: 16-bit TIFF, 0..65535 <-> 0..100 mm (:func:`c3vd_depth_to_mm`); 0 = no depth.
"""

from __future__ import annotations

import numpy as np

from unisurg.evaluation.metrics.inputs import (
    as_scores,
    check_nonempty,
    check_same_shape,
)
from unisurg.evaluation.metrics.nanstats import nanmean

C3VD_MAX_MM = 100.0
C3VD_MAX_RAW = 65535
DEPTH_METRICS = ("rmse", "abs_rel", "sq_rel", "delta")


def c3vd_depth_to_mm(raw) -> np.ndarray:
    """C3VD 16-bit depth values -> millimetres (float64): ``raw / 65535 * 100``."""
    a = np.asarray(raw)
    if not np.issubdtype(a.dtype, np.integer) or (a.size and (a.min() < 0 or a.max() > C3VD_MAX_RAW)):
        raise ValueError("c3vd_depth_to_mm: expected the 16-bit integer values of a C3VD depth TIFF (0..65535).")
    return a.astype(np.float64) * (C3VD_MAX_MM / C3VD_MAX_RAW)


def depth_errors(pred: np.ndarray, gt: np.ndarray, delta_threshold: float = 1.1) -> dict[str, float]:
    """Error measures of matched 1-D arrays of valid predicted and ground-truth depths (both > 0)."""
    err = pred - gt
    ratio = np.maximum(pred / gt, gt / pred)
    return {"rmse": float(np.sqrt(np.mean(err * err))), "abs_rel": float(np.mean(np.abs(err) / gt)),
            "sq_rel": float(np.mean(err * err / gt)), "delta": float(np.mean(ratio < delta_threshold))}


def depth_metrics(preds, gts, median_scaling: bool = False, min_depth: float = 1e-3,
                  max_depth: float | None = None, delta_threshold: float = 1.1) -> dict:
    """Depth metrics over images (``[H, W]`` maps in mm, as a list or a ``[N, H, W]`` array).

    Returns ``{"rmse", "abs_rel", "sq_rel", "delta", "per_image": {metric: [N], "scale": [N],
    "n_valid": [N]}, "n_images", "n_images_scored"}``.
    """
    p_list = list(preds) if not (isinstance(preds, np.ndarray) and preds.ndim == 2) else [preds]
    g_list = list(gts) if not (isinstance(gts, np.ndarray) and gts.ndim == 2) else [gts]
    check_nonempty(p_list, "preds")
    if len(p_list) != len(g_list):
        raise ValueError(f"preds has {len(p_list)} images but gts {len(g_list)}.")
    if min_depth <= 0 or (max_depth is not None and max_depth <= min_depth):
        raise ValueError(f"need 0 < min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}.")
    per = {k: np.full(len(p_list), np.nan) for k in (*DEPTH_METRICS, "scale")}
    per["n_valid"] = np.zeros(len(p_list), np.int64)
    for i, (p, g) in enumerate(zip(p_list, g_list)):
        p = as_scores(p, f"preds[{i}]", 2)
        g = as_scores(g, f"gts[{i}]", 2)
        check_same_shape(p, g, "preds", "gts", f"image {i}")
        valid = g > 0 if max_depth is None else (g > 0) & (g <= max_depth)
        per["n_valid"][i] = int(valid.sum())
        if not valid.any():
            continue
        pv, gv = p[valid], g[valid]
        scale = 1.0
        if median_scaling:
            med = np.median(pv)
            if med <= 0:
                raise ValueError(f"preds[{i}]: median prediction {med:.3g} <= 0 on valid pixels; cannot median-scale.")
            scale = float(np.median(gv) / med)
            pv = pv * scale
        pv = np.clip(pv, min_depth, max_depth if max_depth is not None else np.inf)
        per["scale"][i] = scale
        for k, v in depth_errors(pv, gv, delta_threshold).items():
            per[k][i] = v
    out = {k: float(nanmean(per[k])) for k in DEPTH_METRICS}
    out.update(per_image=per, n_images=len(p_list), n_images_scored=int(np.sum(per["n_valid"] > 0)))
    return out
