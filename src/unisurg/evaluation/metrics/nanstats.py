"""NaN-skipping mean and sample std without numpy's all-NaN warnings (NaN marks an excluded class/video)."""

from __future__ import annotations

import numpy as np


def nanmean(a, axis=None):
    """Mean of the non-NaN values along ``axis``; NaN where there are none (silently)."""
    a = np.asarray(a, dtype=np.float64)
    valid = ~np.isnan(a)
    count = valid.sum(axis=axis)
    total = np.where(valid, a, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def nanstd(a) -> float:
    """Sample standard deviation (ddof=1, as MATLAB ``std``) of the non-NaN values; NaN with fewer than two."""
    a = np.asarray(a, dtype=np.float64).ravel()
    a = a[~np.isnan(a)]
    return float(np.std(a, ddof=1)) if a.size > 1 else float("nan")
