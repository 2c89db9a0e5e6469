"""Choosing one probe of the ``P`` trained, and the numbers reported for it.

* **Honest** (what we report): the probe with the best selection metric on the **validation**
  split; its test metrics are the result. The test split plays no part in the choice.
* **Paper-style (selected on test)**: the authors' release keeps the probe with the best metric on
  the **test** split (an optimistic, selection-biased number). Reported alongside, always labelled.

Ties go to the lowest probe index (the grid order), so the choice is deterministic.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from unisurg.evaluation.metrics import bootstrap_ci, bootstrap_surgmotion
from unisurg.evaluation.tasks import ScoreBlock

HONEST_LABEL = "honest (selected on validation)"
PAPER_LABEL = "paper-style (selected on test)"


def flat_metrics(blocks: list[ScoreBlock]) -> dict[str, float]:
    """``{prefix:metric or metric: value}`` of score blocks."""
    out = {}
    for b in blocks:
        for m, v in b.metrics.items():
            out[b.key(m)] = float(v)
    return out


def best_index(values: list[float], higher_is_better: bool) -> int:
    """Index of the best value (NaN never wins; ties -> lowest index); 0 when all are NaN."""
    best, best_v = 0, None
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if best_v is None or (v > best_v if higher_is_better else v < best_v):
            best, best_v = i, v
    return best


def select_probe(val_metrics: list[dict[str, float]], key: str, higher_is_better: bool) -> int:
    """The probe chosen on validation: best ``key`` among ``val_metrics[p]``."""
    if not val_metrics:
        raise ValueError("select_probe: no probe to choose from")
    if key not in val_metrics[0]:
        raise KeyError(f"selection metric {key!r} not among the metrics {sorted(val_metrics[0])}; "
                       f"set train.selection_metric to one of them")
    return best_index([m[key] for m in val_metrics], higher_is_better)


def confidence_intervals(blocks: list[ScoreBlock], n_resamples: int, seed: int,
                         method: str = "percentile") -> dict[str, dict]:
    """Bootstrap 95% CIs over the blocks' units (videos / clips / trials / images).

    ``method="percentile"``: ``{metric key: {"value", "ci_low", "ci_high", "n_units"}}``, value = the
    statistic of the test set. ``method="surgmotion"``: :func:`surgmotion_intervals` (value = mean of
    the bootstrap means, plus ``"se"`` and ``"sample_value"``).
    """

    if method == "surgmotion":
        return surgmotion_intervals(blocks, n_resamples, seed)
    if method != "percentile":
        raise ValueError(f"report.bootstrap={method!r}: use 'percentile' or 'surgmotion'")
    out = {}
    for b in blocks:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if b.matrix is not None:
                if b.matrix.shape[0] == 0:
                    continue
                finite_rows = ~np.isnan(b.matrix).any(axis=1)
                if not finite_rows.any():
                    continue
                est, lo, hi = bootstrap_ci(b.matrix, n_resamples=n_resamples, seed=seed, nan_policy="omit")
                n_units = int(finite_rows.sum())
            else:
                est, lo, hi = bootstrap_ci(b.units, statistic=b.statistic, n_resamples=n_resamples, seed=seed)
                n_units = len(b.units)
        est, lo, hi = np.atleast_1d(est), np.atleast_1d(lo), np.atleast_1d(hi)
        for j, m in enumerate(b.names):
            out[b.key(m)] = {"value": float(b.metrics.get(m, est[j])), "ci_low": float(lo[j]), "ci_high": float(hi[j]),
                             "n_units": n_units}
    return out


def surgmotion_intervals(blocks: list[ScoreBlock], n_resamples: int, seed: int) -> dict[str, dict]:
    """SurgMotion's bootstrap of every metric (:func:`~unisurg.evaluation.metrics.bootstrap.bootstrap_surgmotion`):
    ``{key: {"value" (mean of bootstrap means), "se", "ci_low", "ci_high", "sample_value", "n_units"}}``."""

    out = {}
    for b in blocks:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if b.matrix is not None:
                finite_rows = ~np.isnan(b.matrix).any(axis=1) if b.matrix.shape[0] else np.zeros(0, bool)
                if not finite_rows.any():
                    continue
                r = bootstrap_surgmotion(b.matrix, n_resamples=n_resamples, seed=seed)
                n_units = int(finite_rows.sum())
            else:
                r = bootstrap_surgmotion(b.units, statistic=b.statistic, n_resamples=n_resamples, seed=seed)
                n_units = len(b.units)
        r = {k: np.atleast_1d(v) for k, v in r.items()}
        for j, m in enumerate(b.names):
            out[b.key(m)] = {"value": float(r["mean"][j]), "se": float(r["se"][j]), "ci_low": float(r["ci_low"][j]),
                             "ci_high": float(r["ci_high"][j]), "sample_value": float(b.metrics.get(m, r["sample"][j])),
                             "n_units": n_units}
    return out
