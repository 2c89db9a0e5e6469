"""Percentile-bootstrap confidence intervals over videos (Efron & Tibshirani 1993, Ch. 13).

Resampling unit = the video (frames within a video are not independent). Each of
``n_resamples`` resamples draws ``V`` video indices with replacement; the interval is the
``alpha/2`` and ``1 - alpha/2`` percentiles (linear interpolation) of the statistic over the
resamples; the point estimate is the statistic of the original sample.

The draws are ``np.random.default_rng(seed).integers(0, V, (n_resamples, V))``, the same matrix
``scipy.stats.bootstrap(..., method="percentile", rng=np.random.default_rng(seed))`` draws, so
the two agree exactly for the mean. The authors' release uses 1000 resamples with seed 42.

:func:`bootstrap_surgmotion` reproduces SurgMotion's ``evals/utils/bootstrap.py`` instead (SPEC
Sec. 9): draws from ``np.random.RandomState(seed).choice(V, V, replace=True)`` once per resample,
point = the **mean of the bootstrap means** (not the sample mean), ``se`` = ``np.std`` (ddof 0)
of the bootstrap means, interval = their 2.5 / 97.5 percentiles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def resample_indices(n_items: int, n_resamples: int = 1000, seed: int = 42) -> np.ndarray:
    """``[n_resamples, n_items]`` indices drawn with replacement."""
    if n_items < 1:
        raise ValueError("bootstrap: need at least one video.")
    if n_resamples < 1:
        raise ValueError(f"bootstrap: n_resamples={n_resamples} must be >= 1.")
    return np.random.default_rng(seed).integers(0, n_items, (n_resamples, n_items))


def bootstrap_ci(data, statistic: Callable[[list], float | np.ndarray] | None = None, n_resamples: int = 1000,
                 seed: int = 42, alpha: float = 0.05, nan_policy: str = "raise"):
    """``(estimate, lo, hi)``: percentile bootstrap over videos.

    * ``statistic=None``: ``data`` is per-video metric rows, ``[V]`` or ``[V, M]`` (M metrics at
      once); the statistic is the mean over videos, computed for all resamples in one gather.
      ``nan_policy="omit"`` drops videos with a NaN in any column first (e.g. a video where no
      class is defined); ``"raise"`` refuses NaN.
    * ``statistic=fn``: ``data`` is a sequence of per-video items (anything) and ``fn(list_of_items)``
      returns a float or array (e.g. ivtmetrics' video-wise mAP of the resampled videos).

    Returns floats for a scalar statistic, else arrays of the statistic's shape.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha}: must be in (0, 1), e.g. 0.05 for a 95% interval.")
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    if statistic is None:
        x = np.asarray(data, dtype=np.float64)
        if x.ndim not in (1, 2):
            raise ValueError(f"bootstrap_ci: per-video rows must be [V] or [V, M], got shape {x.shape}.")
        nan_rows = np.isnan(x).reshape(x.shape[0], -1).any(axis=1)
        if nan_rows.any():
            if nan_policy == "raise":
                raise ValueError(f"bootstrap_ci: NaN in the rows of videos {np.flatnonzero(nan_rows).tolist()}; "
                                 "pass nan_policy='omit' to drop them or fix the per-video values.")
            if nan_policy != "omit":
                raise ValueError(f"nan_policy={nan_policy!r}: use 'raise' or 'omit'.")
            x = x[~nan_rows]
        idx = resample_indices(x.shape[0], n_resamples, seed)
        stats = x[idx].mean(axis=1)  # [R] or [R, M]
        estimate = x.mean(axis=0)
    else:
        items: Sequence = list(data)
        idx = resample_indices(len(items), n_resamples, seed)
        stats = np.stack([np.asarray(statistic([items[j] for j in row]), dtype=np.float64) for row in idx])
        estimate = np.asarray(statistic(items), dtype=np.float64)
    lo, hi = np.percentile(stats, q, axis=0)
    if np.ndim(estimate) == 0:
        return float(estimate), float(lo), float(hi)
    return estimate, lo, hi


def surgmotion_resample_indices(n_items: int, n_resamples: int = 1000, seed: int = 42) -> np.ndarray:
    """``[n_resamples, n_items]``: SurgMotion's draws, one ``RandomState(seed).choice(V, V, replace=True)``
    call per resample from a single generator (``evals/utils/bootstrap.py``)."""
    if n_items < 1:
        raise ValueError("bootstrap: need at least one video.")
    if n_resamples < 1:
        raise ValueError(f"bootstrap: n_resamples={n_resamples} must be >= 1.")
    rng = np.random.RandomState(seed)
    return np.stack([rng.choice(n_items, size=n_items, replace=True) for _ in range(n_resamples)])


def bootstrap_surgmotion(data, statistic: Callable[[list], float | np.ndarray] | None = None,
                         n_resamples: int = 1000, seed: int = 42) -> dict:
    """SurgMotion's bootstrap over videos: ``{"mean", "se", "ci_low", "ci_high", "sample"}``.

    ``data``: per-video rows ``[V]`` / ``[V, M]`` (statistic = mean over videos; rows with a NaN are
    dropped first), or items with ``statistic(list_of_items)``. ``mean`` is the mean of the
    bootstrap statistics (what their tables print), ``se`` their ``np.std`` (ddof 0, the "Std"
    column), ``sample`` the statistic of the original set (for reference). Floats for a scalar
    statistic, else arrays.
    """
    if statistic is None:
        x = np.asarray(data, dtype=np.float64)
        if x.ndim not in (1, 2):
            raise ValueError(f"bootstrap_surgmotion: per-video rows must be [V] or [V, M], got shape {x.shape}.")
        x = x[~np.isnan(x).reshape(x.shape[0], -1).any(axis=1)]
        idx = surgmotion_resample_indices(x.shape[0], n_resamples, seed)
        stats = x[idx].mean(axis=1)
        sample = x.mean(axis=0)
    else:
        items = list(data)
        idx = surgmotion_resample_indices(len(items), n_resamples, seed)
        stats = np.stack([np.asarray(statistic([items[j] for j in row]), dtype=np.float64) for row in idx])
        sample = np.asarray(statistic(items), dtype=np.float64)
    out = {"mean": stats.mean(axis=0), "se": stats.std(axis=0), "ci_low": np.percentile(stats, 2.5, axis=0),
           "ci_high": np.percentile(stats, 97.5, axis=0), "sample": sample}
    if np.ndim(sample) == 0:
        return {k: float(v) for k, v in out.items()}
    return out
