"""Segmental metrics of action segmentation (MS-TCN, Farha & Gall, CVPR 2019, Sec. 5 "Evaluation").

Conventions of MS-TCN's ``eval.py`` (itself from Lea et al.'s TCN code), re-derived here:

* a *segment* is a maximal run of equal labels; runs of a ``background`` label are dropped;
* **edit score** = ``1 - Levenshtein(pred_segments, gt_segments) / max(len(pred), len(gt))``
  per video, then the plain mean over videos;
* **F1@k** matches each predicted segment to the best-IoU ground-truth segment of the same label;
  it is a true positive when IoU >= k and that ground-truth segment is not yet matched (a
  prediction whose best match is taken counts as a false positive, no second choice); TP, FP, FN
  are **summed over videos** and one F1 is formed from the totals.

Scale: every value here is a fraction in [0, 1]; MS-TCN prints it multiplied by 100.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from unisurg.evaluation.metrics.inputs import as_labels, check_nonempty


def segments(labels, background: Iterable[int] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal labels as ``(labels, starts, ends)`` with ``ends`` exclusive; background runs dropped."""
    y = as_labels(labels, "labels")
    if y.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    starts = np.flatnonzero(np.r_[True, y[1:] != y[:-1]])
    ends = np.r_[starts[1:], y.size]
    seg = y[starts]
    keep = ~np.isin(seg, np.fromiter(background, np.int64))
    return seg[keep], starts[keep], ends[keep]


def levenshtein(a: Sequence[int], b: Sequence[int]) -> int:
    """Edit distance (unit-cost insert, delete, substitute) between two label sequences.

    One dynamic-programming column per element of the shorter sequence; inside a column the
    chain ``D[i] = min(D[i-1] + 1, ...)`` is a running minimum of ``tmp[k] - k`` plus ``i``.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if a.size < b.size:
        a, b = b, a
    if b.size == 0:
        return int(a.size)
    idx = np.arange(a.size + 1)
    prev = idx.copy()  # distances from a[:i] to the empty prefix of b
    for j, bj in enumerate(b, start=1):
        tmp = np.empty_like(prev)
        tmp[0] = j
        tmp[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (a != bj))
        prev = np.minimum.accumulate(tmp - idx) + idx
    return int(prev[-1])


def edit_score(y_true, y_pred, background: Iterable[int] = ()) -> float:
    """Segmental edit score of one video in [0, 1] (MS-TCN: ``(1 - D / max(m, n)) * 100``).

    Both sequences fully background: 1.0 (nothing to segment, nothing wrong; MS-TCN divides by 0 there).
    """
    bg = tuple(background)
    p, _, _ = segments(y_pred, bg)
    g, _, _ = segments(y_true, bg)
    longest = max(p.size, g.size)
    if longest == 0:
        return 1.0
    return 1.0 - levenshtein(p, g) / longest


def segment_matches(y_true, y_pred, overlap: float, background: Iterable[int] = ()) -> tuple[int, int, int]:
    """``(tp, fp, fn)`` of one video for F1@overlap (greedy in prediction order, as MS-TCN)."""
    bg = tuple(background)
    pl, ps, pe = segments(y_pred, bg)
    gl, gs, ge = segments(y_true, bg)
    if gl.size == 0:
        return 0, int(pl.size), 0
    inter = np.minimum(pe[:, None], ge[None]) - np.maximum(ps[:, None], gs[None])
    union = np.maximum(pe[:, None], ge[None]) - np.minimum(ps[:, None], gs[None])
    iou = np.where(pl[:, None] == gl[None], inter / union, 0.0)
    hit = np.zeros(gl.size, dtype=bool)
    tp = fp = 0
    for j in range(pl.size):
        best = int(np.argmax(iou[j]))
        if iou[j, best] >= overlap and not hit[best]:
            tp += 1
            hit[best] = True
        else:
            fp += 1
    return tp, fp, int(gl.size - hit.sum())


def segmental_f1(videos: Sequence[tuple], overlaps: Sequence[float] = (0.1, 0.25, 0.5),
                 background: Iterable[int] = ()) -> dict[float, float]:
    """F1@k over a list of ``(y_true, y_pred)`` videos, TP/FP/FN pooled over videos (MS-TCN).

    Returns ``{overlap: f1}`` in [0, 1]; 0 when precision + recall is 0 (MS-TCN's nan_to_num).
    """
    check_nonempty(videos, "videos")
    bg = tuple(background)
    out = {}
    for k in overlaps:
        tot = np.zeros(3)
        for i, (yt, yp) in enumerate(videos):
            if np.shape(yt) != np.shape(yp):
                raise ValueError(f"video {i}: y_true has {np.shape(yt)} labels but y_pred {np.shape(yp)}.")
            tot += segment_matches(yt, yp, k, bg)
        tp, fp, fn = tot
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        out[float(k)] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return out
