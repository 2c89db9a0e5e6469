"""Average precision (area under the step precision-recall curve), vectorised over classes."""

from __future__ import annotations

import numpy as np

from unisurg.evaluation.metrics.inputs import as_binary, as_scores, check_same_shape

# Bound on N x C elements processed at once, to keep peak memory near 200 MB for 100k frames x 100 classes.
_BLOCK_ELEMENTS = 2_000_000


def average_precision(targets, scores) -> np.ndarray | float:
    """AP per class: ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds.

    The definition of scikit-learn's ``average_precision_score`` (no interpolation; samples with
    equal scores enter at the same threshold), the one ivtmetrics uses for CholecT50.

    targets: ``[N]`` or ``[N, C]`` in {0, 1}; scores: same shape, any finite reals.
    Returns a float (1-D input) or ``[C]``; **NaN for a class with no positive label** (AP is
    undefined there; callers exclude it, deciding by the labels and never by the AP value).

    Computed as the mean, over the positives, of the precision at the end of the tie-run holding
    each positive: each positive raises recall by 1/P at that threshold.
    """
    t = as_binary(targets, "targets", (1, 2))
    s = as_scores(scores, "scores", (1, 2))
    check_same_shape(t, s, "targets", "scores")
    one_d = t.ndim == 1
    if one_d:
        t, s = t[:, None], s[:, None]
    n, c = t.shape
    out = np.full(c, np.nan)
    if n == 0:
        return float(out[0]) if one_d else out
    # Class-major copies: sorting along the contiguous last axis is several times faster.
    t_cm = np.ascontiguousarray(t.T)
    s_cm = np.ascontiguousarray(s.T)
    block = max(1, _BLOCK_ELEMENTS // n)
    for lo in range(0, c, block):
        out[lo:lo + block] = _ap_block(t_cm[lo:lo + block], s_cm[lo:lo + block])
    return float(out[0]) if one_d else out


def _ap_block(t: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AP of each row of class-major ``[C, N]`` labels and scores."""
    n = t.shape[1]
    order = np.argsort(-s, axis=1, kind="stable")
    s_sorted = np.take_along_axis(s, order, axis=1)
    t_sorted = np.take_along_axis(t, order, axis=1)
    tp = np.cumsum(t_sorted, axis=1, dtype=np.float64)
    cols = np.arange(n)
    is_run_end = np.ones_like(s_sorted, dtype=bool)
    is_run_end[:, :-1] = s_sorted[:, 1:] != s_sorted[:, :-1]
    # Index of the end of the tie-run each position belongs to: running minimum from the right.
    end = np.where(is_run_end, cols, n)[:, ::-1]
    end = np.minimum.accumulate(end, axis=1)[:, ::-1]
    precision_at_end = np.take_along_axis(tp, end, axis=1) / (end + 1.0)
    n_pos = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(t_sorted, precision_at_end, 0.0).sum(axis=1) / n_pos
    return np.where(n_pos > 0, ap, np.nan)
