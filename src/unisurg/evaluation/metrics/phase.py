"""Surgical phase (workflow) recognition metrics: per video, then over videos.

Field convention (TeCNO, Trans-SVNet, the Cholec80/M2CAI MATLAB script; docs/benchmark.md): every
metric is computed **per video**, and a video's macro average runs **only over the phases present
in that video's ground truth**. A phase that is predicted but absent from the ground truth is not
a term of the macro average (its own precision is undefined there); its wrongly predicted frames
still count, as false negatives of the ground-truth phases they overwrite: they lower those
phases' recall, F1 and Jaccard, and the video's accuracy.

Strict (frame-exact) per phase ``c`` present in GT: ``precision = TP / #pred_c`` (0 when ``c`` is
never predicted, scikit-learn's ``zero_division=0``), ``recall = TP / #gt_c``,
``F1 = 2TP / (#gt_c + #pred_c)``, ``Jaccard = TP / (#gt_c + #pred_c - TP)``. Macro F1 is the mean
of per-phase F1 (scikit-learn's ``average="macro"``), not the F1 of macro P and macro R.

Two label sets for the macro average (``labels=``), both reported by the benchmark:

* ``"gt"`` (the default above): the phases present in the video's ground truth;
* ``"gt_or_pred"``: the phases present in the ground truth **or** the predictions, scikit-learn's
  default label set (``unique_labels(y_true, y_pred)``) with ``zero_division=0``, which SurgMotion's
  ``evaluate_per_video`` uses (docs/benchmark.md): a predicted phase absent from the ground truth is a
  term of the macro average and scores 0 (precision, recall, F1 and Jaccard all 0). It is never
  higher than ``"gt"`` on the same predictions.

Relaxed (``relaxed="cholec80" | "m2cai16"``): see :mod:`unisurg.evaluation.metrics.relaxed` (ground-truth
phases only, as the challenges' MATLAB script).

Aggregation over videos: ``mean`` and ``std`` (ddof=1; NaN for one video) of the per-video
values. ``phase_mean`` / ``phase_std`` reproduce ``Main.m``: per-phase mean over the videos
where the phase occurs, then mean (and ddof=1 std) over phases (NaN-skipping throughout).

Every value is a fraction in [0, 1] (the MATLAB script prints percentages), ``edit`` included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unisurg.evaluation.metrics.edit import edit_score
from unisurg.evaluation.metrics.inputs import as_labels, check_nonempty
from unisurg.evaluation.metrics.nanstats import nanmean, nanstd
from unisurg.evaluation.metrics.relaxed import RELAXED_RULES, relaxed_phase_scores

PHASE_METRICS = ("accuracy", "precision", "recall", "f1", "jaccard", "edit")
PER_PHASE_METRICS = ("precision", "recall", "f1", "jaccard")
LABEL_SETS = ("gt", "gt_or_pred")  # macro-average conventions (module docstring)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``[K, K]`` counts, rows = ground truth, columns = prediction."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def strict_phase_scores(y_true, y_pred, n_classes: int, labels: str = "gt") -> dict[str, np.ndarray | float]:
    """Per-phase frame-exact ``precision/recall/f1/jaccard`` (``[K]``) and ``accuracy``.

    ``labels="gt"``: NaN for phases absent from the ground truth; ``"gt_or_pred"``: NaN only for
    phases absent from both, and 0 where scikit-learn's ``zero_division=0`` gives 0 (recall of a
    phase predicted but not in the ground truth)."""
    if labels not in LABEL_SETS:
        raise ValueError(f"labels={labels!r}: use 'gt' (ground-truth phases) or 'gt_or_pred' (scikit-learn's default)")
    y_true = as_labels(y_true, "y_true", n_classes)
    y_pred = as_labels(y_pred, "y_pred", n_classes)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} frames but y_pred {y_pred.size}; one prediction per frame.")
    cm = confusion_matrix(y_true, y_pred, n_classes).astype(np.float64)
    tp = np.diag(cm)
    n_gt = cm.sum(axis=1)
    n_pred = cm.sum(axis=0)
    present = n_gt > 0 if labels == "gt" else (n_gt > 0) | (n_pred > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_pred > 0, tp / n_pred, 0.0)
        recall = np.where(n_gt > 0, tp / n_gt, 0.0)
        f1 = 2 * tp / (n_gt + n_pred)
        jaccard = tp / (n_gt + n_pred - tp)
    out = {}
    for name, a in (("precision", precision), ("recall", recall), ("f1", f1), ("jaccard", jaccard)):
        out[name] = np.where(present, a, np.nan)
    out["accuracy"] = float(tp.sum() / y_true.size) if y_true.size else float("nan")
    return out


def phase_metrics(videos: Sequence[tuple], n_classes: int, relaxed: str | None = None, window: int = 10,
                  early_window: str = "matlab", background: Sequence[int] = (), labels: str = "gt") -> dict:
    """Phase-recognition metrics of a list of ``(y_true, y_pred)`` integer label vectors (one per video).

    ``relaxed``: None (frame-exact), ``"cholec80"`` (7 phases) or ``"m2cai16"`` (8 phases), the
    challenges' relaxed boundary over ``window`` frames (10 s at 1 fps); phase ids must follow
    :data:`~unisurg.evaluation.metrics.relaxed.CHOLEC80_PHASES` / ``M2CAI16_PHASES`` order.
    ``background``: labels dropped from the segments of the edit score only.
    ``labels``: the macro average's label set, ``"gt"`` or ``"gt_or_pred"`` (module docstring;
    frame-exact metrics only).

    Returns a dict:

    * ``per_video``: list of ``{"video", "n_frames", "n_phases_present", "accuracy", "precision",
      "recall", "f1", "jaccard", "edit"}`` (macro values over the phases present in that video);
    * ``per_phase``: ``{"precision"|"recall"|"f1"|"jaccard": ndarray [V, K]}``, NaN where the phase is
      absent from the video's ground truth;
    * ``mean``, ``std``: ``{metric: float}`` over videos (std ddof=1);
    * ``phase_mean``, ``phase_std``: ``{metric: float}`` aggregated as ``Main.m`` (over phases);
    * ``relaxed``, ``window``, ``n_videos``, ``n_classes``.
    """
    check_nonempty(videos, "videos")
    if labels not in LABEL_SETS:
        raise ValueError(f"labels={labels!r}: use 'gt' (ground-truth phases) or 'gt_or_pred' (scikit-learn's default)")
    if relaxed is not None and labels != "gt":
        raise ValueError("the relaxed boundary metrics are defined over ground-truth phases only (labels='gt')")
    if relaxed is not None:
        if relaxed not in RELAXED_RULES:
            raise ValueError(f"relaxed={relaxed!r}: use None, 'cholec80' or 'm2cai16'.")
        expected = RELAXED_RULES[relaxed][0]
        if n_classes != expected:
            raise ValueError(f"relaxed={relaxed!r} is defined for {expected} phases, got n_classes={n_classes}.")
    rows, per_phase = [], {k: [] for k in PER_PHASE_METRICS}
    for i, pair in enumerate(videos):
        if len(pair) != 2:
            raise ValueError(f"videos[{i}]: expected a (y_true, y_pred) pair, got {len(pair)} items.")
        yt = as_labels(pair[0], f"videos[{i}].y_true", n_classes)
        yp = as_labels(pair[1], f"videos[{i}].y_pred", n_classes)
        if yt.shape != yp.shape:
            raise ValueError(f"videos[{i}]: y_true has {yt.size} frames but y_pred {yp.size}; "
                             "predict exactly one label per ground-truth second.")
        if yt.size == 0:
            raise ValueError(f"videos[{i}]: empty video (0 frames).")
        if relaxed is None:
            sc = strict_phase_scores(yt, yp, n_classes, labels)
        else:
            sc = relaxed_phase_scores(yt, yp, relaxed, window, early_window)
        row = {"video": i, "n_frames": int(yt.size), "n_phases_present": int(np.unique(yt).size),
               "accuracy": sc["accuracy"]}
        for k in PER_PHASE_METRICS:
            per_phase[k].append(sc[k])
            row[k] = float(nanmean(sc[k]))
        row["edit"] = edit_score(yt, yp, background)
        rows.append(row)
    per_phase = {k: np.stack(v) for k, v in per_phase.items()}
    mean = {m: float(nanmean(np.array([r[m] for r in rows]))) for m in PHASE_METRICS}
    std = {m: nanstd(np.array([r[m] for r in rows])) for m in PHASE_METRICS}
    phase_mean, phase_std = {"accuracy": mean["accuracy"]}, {"accuracy": std["accuracy"]}
    for k in PER_PHASE_METRICS:
        per_class = nanmean(per_phase[k], axis=0)
        phase_mean[k] = float(nanmean(per_class))
        phase_std[k] = nanstd(per_class)
    return {"per_video": rows, "per_phase": per_phase, "mean": mean, "std": std,
            "phase_mean": phase_mean, "phase_std": phase_std, "relaxed": relaxed, "window": window,
            "n_videos": len(rows), "n_classes": n_classes, "labels": labels}
