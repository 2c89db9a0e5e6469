"""Clip/video classification metrics (action recognition: SurgicalActions160, AVOS, PolypDiag).

Accuracy and macro precision/recall/F1 with scikit-learn's conventions: by default the macro
average runs over the labels seen in ``y_true`` or ``y_pred``; a class with no prediction has
precision 0 and one with no ground truth recall 0 (``zero_division=0``); per-class
``F1 = 2TP / (2TP + FP + FN)``. Multi-label mAP: mean AP over the classes with a positive label.
All values are fractions in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unisurg.evaluation.metrics.average_precision import average_precision
from unisurg.evaluation.metrics.inputs import as_labels
from unisurg.evaluation.metrics.nanstats import nanmean


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    yt = as_labels(y_true, "y_true")
    yp = as_labels(y_pred, "y_pred")
    if yt.shape != yp.shape:
        raise ValueError(f"y_true has {yt.size} samples but y_pred {yp.size}; one prediction per sample.")
    if yt.size == 0:
        raise ValueError("y_true is empty; nothing to score.")
    return yt, yp


def accuracy(y_true, y_pred) -> float:
    """Fraction of samples whose predicted class equals the ground truth."""
    yt, yp = _pair(y_true, y_pred)
    return float(np.mean(yt == yp))


def per_class_scores(y_true, y_pred, labels: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Per-class ``precision``, ``recall``, ``f1``, ``support`` over ``labels`` (default: seen labels)."""
    yt, yp = _pair(y_true, y_pred)
    lab = np.unique(np.r_[yt, yp]) if labels is None else np.asarray(labels, dtype=np.int64)
    if lab.ndim != 1 or lab.size == 0:
        raise ValueError("labels: pass a non-empty 1-D list of class ids.")
    is_true = yt[None] == lab[:, None]
    tp = (is_true & (yt == yp)[None]).sum(axis=1).astype(np.float64)
    n_true = is_true.sum(axis=1).astype(np.float64)
    n_pred = (yp[None] == lab[:, None]).sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_pred > 0, tp / n_pred, 0.0)
        recall = np.where(n_true > 0, tp / n_true, 0.0)
        f1 = np.where(n_true + n_pred > 0, 2 * tp / (n_true + n_pred), 0.0)
    return {"labels": lab, "precision": precision, "recall": recall, "f1": f1, "support": n_true.astype(np.int64)}


def macro_f1(y_true, y_pred, labels: Sequence[int] | None = None) -> float:
    """Unweighted mean of per-class F1 over ``labels`` (default: labels seen in ``y_true`` or ``y_pred``)."""
    return float(per_class_scores(y_true, y_pred, labels)["f1"].mean())


def classification_metrics(y_true, y_pred, labels: Sequence[int] | None = None) -> dict:
    """``{"accuracy", "macro_precision", "macro_recall", "macro_f1", "per_class": {...}}``."""
    pc = per_class_scores(y_true, y_pred, labels)
    return {"accuracy": accuracy(y_true, y_pred), "macro_precision": float(pc["precision"].mean()),
            "macro_recall": float(pc["recall"].mean()), "macro_f1": float(pc["f1"].mean()), "per_class": pc}


def multilabel_map(targets, scores) -> dict:
    """Multi-label ``{"AP": [C] (NaN for a class with no positive), "mAP": mean over the others}``."""
    ap = average_precision(targets, scores)
    ap = np.atleast_1d(ap)
    return {"AP": ap, "mAP": float(nanmean(ap))}
