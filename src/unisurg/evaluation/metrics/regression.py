"""Skill-assessment regression metrics (JIGSAWS GRS): MAE and Spearman's rank correlation.

JIGSAWS convention used here: the target is the Global Rating Score (GRS, sum of the 6 OSATS
items, range 6-30, in GRS points); folds are LOSO (5 folds, by trial number) or LOUO (8 folds,
by surgeon B-I). Each test trial is predicted once by the model of the fold that held it out;
the headline numbers are MAE and Spearman over **all pooled test predictions** (``pooled``).
Per-fold values and their mean are returned too: with LOUO each fold holds ~5 trials of one
surgeon, whose within-fold Spearman is noisy and often undefined. Averaging correlations across
tasks (Suturing, Needle Passing, Knot Tying), as in the action-quality literature, uses Fisher's
z: :func:`fisher_z_mean`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unisurg.evaluation.metrics.inputs import as_scores, check_nonempty
from unisurg.evaluation.metrics.nanstats import nanmean


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    yt = as_scores(y_true, "y_true", 1)
    yp = as_scores(y_pred, "y_pred", 1)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true has {yt.size} values but y_pred {yp.size}; one prediction per trial.")
    if yt.size == 0:
        raise ValueError("y_true is empty; nothing to score.")
    return yt, yp


def mae(y_true, y_pred) -> float:
    """Mean absolute error, in the units of the target (GRS points for JIGSAWS)."""
    yt, yp = _pair(y_true, y_pred)
    return float(np.mean(np.abs(yt - yp)))


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n with ties given the mean of the ranks they span (``scipy.stats.rankdata`` 'average')."""
    a = np.asarray(x, dtype=np.float64)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # rank of the last member of each tie group
    return (upper - (counts - 1) / 2.0)[inverse.ravel()]


def spearman(y_true, y_pred) -> float:
    """Spearman's rho: Pearson correlation of the average ranks; NaN when either side is constant."""
    yt, yp = _pair(y_true, y_pred)
    rt = average_ranks(yt) - (yt.size + 1) / 2.0
    rp = average_ranks(yp) - (yp.size + 1) / 2.0
    denom = np.sqrt((rt * rt).sum() * (rp * rp).sum())
    if denom == 0:
        return float("nan")
    return float(np.clip((rt * rp).sum() / denom, -1.0, 1.0))


def fisher_z_mean(rhos: Sequence[float]) -> float:
    """Average of correlations through Fisher's z: ``tanh(mean(artanh(rho)))`` (NaN entries skipped).

    |rho| = 1 is clipped to 1 - 1e-12 so that a perfect fold does not make the mean infinite.
    """
    r = np.asarray(rhos, dtype=np.float64)
    r = np.clip(r, -1 + 1e-12, 1 - 1e-12)
    return float(np.tanh(nanmean(np.arctanh(r))))


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    """``{"mae", "spearman", "n"}`` of one set of predictions."""
    yt, _ = _pair(y_true, y_pred)
    return {"mae": mae(y_true, y_pred), "spearman": spearman(y_true, y_pred), "n": int(yt.size)}


def skill_metrics(folds: Sequence[tuple]) -> dict:
    """Cross-validated skill metrics from a list of per-fold ``(y_true, y_pred)`` test predictions.

    Returns ``{"pooled": {"mae", "spearman", "n"}, "per_fold": [{"fold", "mae", "spearman", "n"}],
    "fold_mean": {"mae", "spearman"}}`` (fold-mean Spearman skips undefined folds).
    """
    check_nonempty(folds, "folds")
    rows = []
    for i, pair in enumerate(folds):
        if len(pair) != 2:
            raise ValueError(f"folds[{i}]: expected a (y_true, y_pred) pair, got {len(pair)} items.")
        try:
            rows.append({"fold": i, **regression_metrics(*pair)})
        except ValueError as e:
            raise ValueError(f"folds[{i}]: {e}") from None
    yt = np.concatenate([np.asarray(p[0], dtype=np.float64) for p in folds])
    yp = np.concatenate([np.asarray(p[1], dtype=np.float64) for p in folds])
    return {"pooled": regression_metrics(yt, yp), "per_fold": rows,
            "fold_mean": {"mae": float(np.mean([r["mae"] for r in rows])),
                          "spearman": float(nanmean([r["spearman"] for r in rows]))}}
