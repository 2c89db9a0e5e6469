"""Paired comparisons of two models scored on the same test units (videos, images, clips).

Every model of one table is scored on the same test videos, so "is A better than B" is a question
about the per-video differences ``d_v = m_A(v) - m_B(v)``, not about whether two unpaired CIs
overlap (which is both weak and easy to misread). For one comparison:

* :func:`paired_bootstrap_ci` - percentile bootstrap CI of the mean difference, resampling whole
  videos (both models' scores of a video travel together; Efron & Tibshirani 1993, Ch. 13);
* :func:`sign_test` - exact two-sided sign test on the number of videos where A wins (ties dropped;
  Conover 1999, Sec. 3.4): a binomial(n, 1/2) test, what ``scipy.stats.binomtest`` computes;
* :func:`sign_flip_test` - paired permutation test of the mean difference (under H0 the sign of
  each video's difference is exchangeable; Good 2005, Ch. 3): exact enumeration of all 2^n sign
  assignments when n <= ``EXACT_MAX_UNITS``, Monte Carlo otherwise with the (count + 1) / (R + 1)
  estimate (Phipson & Smyth 2010), the same p-values as ``scipy.stats.permutation_test``
  (``permutation_type="samples"``, two-sided) gives;
* :func:`holm` - Holm's step-down correction (Holm 1979) across the comparisons of one table
  (one metric), so "established" holds for the family, not comparison by comparison.

The decision rule (:data:`RULE`): A is *ahead* of B when the Holm-corrected permutation p-value
is below alpha **and** the paired 95% bootstrap CI of the mean difference excludes 0; *behind*
likewise with the sign reversed; otherwise *not established*. With n videos the smallest
attainable two-sided p is 2 / 2^n, so with 5 or fewer videos nothing can be established at 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from unisurg.evaluation.metrics.bootstrap import resample_indices

EXACT_MAX_UNITS = 20  # 2^20 sign assignments are enumerated in chunks; above that, Monte Carlo
UNIT_KEYS = ("video", "image", "clip", "trial", "seed")
RULE = ("A difference is established when the paired sign-flip permutation test, Holm-corrected across the "
        "comparisons of the table, gives p < {alpha:g} and the paired 95% bootstrap CI of the mean difference "
        "over the test units excludes 0.")
_TOL = 1e-12  # relative tolerance for "as extreme as observed" (float rounding of equal means)


class PairingError(ValueError):
    """Two models' per-unit rows cannot be paired (different test units, a missing metric)."""


def unit_id(row: dict) -> str:
    """The test unit a per-unit row is about (its ``video`` / ``image`` / ``clip`` / ``trial`` key; ``seed`` for
    comparisons over repeated runs)."""
    for k in UNIT_KEYS:
        if k in row:
            return str(row[k])
    raise PairingError(f"per-unit row has none of the unit keys {UNIT_KEYS}: {sorted(row)}")


def paired_differences(rows_a: Sequence[dict], rows_b: Sequence[dict], metric: str) -> tuple[list[str], np.ndarray]:
    """``(units, d)``: per shared test unit, ``metric`` of A minus ``metric`` of B (float64).

    Units where either value is missing or NaN are dropped (the table's mean drops them too). The two
    models must have been scored on the same units; anything else is an error, not a silent subset.
    """
    def values(rows, who):
        out = {}
        for r in rows:
            u = unit_id(r)
            if metric not in r:
                raise PairingError(f"model {who}: per-unit row of {u!r} has no metric {metric!r} "
                                   f"(it has {sorted(k for k in r if k not in UNIT_KEYS)})")
            v = r[metric]
            out[u] = float("nan") if v is None else float(v)
        return out

    va, vb = values(rows_a, "A"), values(rows_b, "B")
    if set(va) != set(vb):
        only_a, only_b = sorted(set(va) - set(vb)), sorted(set(vb) - set(va))
        raise PairingError(f"the two models were not scored on the same test units (only A: {only_a[:5]}, "
                           f"only B: {only_b[:5]}); a paired comparison needs one shared test split")
    units = [u for u in va if math.isfinite(va[u]) and math.isfinite(vb[u])]
    return units, np.array([va[u] - vb[u] for u in units], dtype=np.float64)


def paired_bootstrap_ci(d: np.ndarray, n_resamples: int = 1000, seed: int = 42,
                        alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of per-unit differences ``d`` (units resampled with replacement).

    Uses the benchmark's resample matrix (:func:`~unisurg.evaluation.metrics.bootstrap.resample_indices`),
    so with the same seed the units drawn are those of the per-model CIs.
    """
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"paired_bootstrap_ci: need a non-empty vector of differences, got shape {d.shape}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha}: must be in (0, 1)")
    means = d[resample_indices(d.size, n_resamples, seed)].mean(axis=1)
    lo, hi = np.percentile(means, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def sign_test(d: np.ndarray) -> dict:
    """Exact two-sided sign test: ``{"wins", "losses", "ties", "p"}``.

    Ties (d = 0) carry no sign and are dropped; with k wins of n = wins + losses,
    p = min(1, 2 * P[X <= min(k, n - k)]) for X ~ Binomial(n, 1/2) (the distribution is symmetric,
    so this equals the two-sided binomial p-value of scipy.stats.binomtest). No untied unit: p = 1.
    """
    d = np.asarray(d, dtype=np.float64)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    n = wins + losses
    if n == 0:
        return {"wins": 0, "losses": 0, "ties": int(d.size), "p": 1.0}
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return {"wins": wins, "losses": losses, "ties": int(d.size - n), "p": min(1.0, 2.0 * tail)}


def _sign_matrix(n: int, start: int, stop: int) -> np.ndarray:
    """Rows ``start..stop-1`` of the 2^n sign assignments: bit j of the row number flips unit j."""
    codes = np.arange(start, stop, dtype=np.int64)[:, None]
    bits = (codes >> np.arange(n, dtype=np.int64)[None, :]) & 1
    return 1.0 - 2.0 * bits


def sign_flip_test(d: np.ndarray, n_resamples: int = 10000, seed: int = 0,
                   exact_max_units: int = EXACT_MAX_UNITS) -> dict:
    """Paired permutation (sign-flip) test of mean(d) = 0, two-sided: ``{"p", "exact", "n_resamples"}``.

    Under H0 each unit's difference is as likely to have either sign, so the reference distribution
    of the mean is that over sign flips. p = P[|mean(s * d)| >= |mean(d)|]: over all 2^n flips when
    n <= ``exact_max_units`` (exact), else over ``n_resamples`` random flips as (count + 1) / (R + 1),
    which never reports p = 0 and is a valid p-value itself.
    """
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"sign_flip_test: need a non-empty vector of differences, got shape {d.shape}")
    n = d.size
    observed = abs(d.mean())
    threshold = observed * (1 - _TOL) - 1e-15  # equal means up to rounding count as "as extreme"
    if n <= exact_max_units:
        total, count, chunk = 2 ** n, 0, 1 << 16
        for start in range(0, total, chunk):
            stats = np.abs(_sign_matrix(n, start, min(total, start + chunk)) @ d) / n
            count += int((stats >= threshold).sum())
        return {"p": count / total, "exact": True, "n_resamples": total}
    if n_resamples < 1:
        raise ValueError(f"sign_flip_test: n_resamples={n_resamples} must be >= 1")
    rng = np.random.default_rng(seed)
    count, done, chunk = 0, 0, 4096
    while done < n_resamples:
        m = min(chunk, n_resamples - done)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(m, n))
        count += int((np.abs(signs @ d) / n >= threshold).sum())
        done += m
    return {"p": (count + 1) / (n_resamples + 1), "exact": False, "n_resamples": n_resamples}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input order.

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    Rejecting every hypothesis whose adjusted p is below alpha controls the family-wise error at alpha.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("holm: a flat list of p-values")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"holm: p-values must lie in [0, 1], got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    adj_sorted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj_sorted
    return out.tolist()


@dataclass
class PairedResult:
    """One comparison A vs B on one metric (differences in the metric's own unit, A minus B)."""

    a: str
    b: str
    metric: str
    n_units: int
    mean_a: float
    mean_b: float
    difference: float
    ci_low: float
    ci_high: float
    wins: int
    losses: int
    ties: int
    sign_p: float
    permutation_p: float
    permutation_exact: bool
    p_holm: float = float("nan")
    family_size: int = 1
    higher_is_better: bool = True  # the metric's direction: for MAE / RMSE, A is ahead when the difference is < 0
    verdict: str = "not established"  # "ahead" (A better than B), "behind" (A worse) or "not established"

    def to_json(self) -> dict:
        return asdict(self)


def compare(a: str, b: str, rows_a: Sequence[dict], rows_b: Sequence[dict], metric: str, *,
            n_resamples: int = 1000, seed: int = 42, permutation_resamples: int = 10000) -> PairedResult:
    """A vs B on ``metric`` over their shared test units (uncorrected; :func:`compare_family` adds Holm)."""
    units, d = paired_differences(rows_a, rows_b, metric)
    if not units:
        raise PairingError(f"{a} vs {b}: no test unit has a finite {metric!r} for both models")
    va = {unit_id(r): r[metric] for r in rows_a}
    vb = {unit_id(r): r[metric] for r in rows_b}
    lo, hi = paired_bootstrap_ci(d, n_resamples, seed)
    s = sign_test(d)
    perm = sign_flip_test(d, permutation_resamples, seed)
    return PairedResult(a, b, metric, len(units), float(np.mean([va[u] for u in units])),
                        float(np.mean([vb[u] for u in units])), float(d.mean()), lo, hi, s["wins"], s["losses"],
                        s["ties"], s["p"], perm["p"], perm["exact"])


def decide(r: PairedResult, alpha: float = 0.05) -> str:
    """The verdict of :data:`RULE` for one (Holm-corrected) result."""
    if r.p_holm < alpha and (r.ci_low > 0 or r.ci_high < 0):
        return "ahead" if (r.difference > 0) == r.higher_is_better else "behind"
    return "not established"


def compare_family(pairs: Sequence[tuple[str, str]], per_unit: dict[str, Sequence[dict]], metric: str, *,
                   alpha: float = 0.05, n_resamples: int = 1000, seed: int = 42, permutation_resamples: int = 10000,
                   higher_is_better: bool = True) -> list[PairedResult]:
    """Every comparison ``(A, B)`` of ``pairs`` on ``metric``, Holm-corrected as one family, with verdicts
    (``higher_is_better=False`` for error metrics: then A is ahead when its values are lower)."""
    results = [compare(a, b, per_unit[a], per_unit[b], metric, n_resamples=n_resamples, seed=seed,
                       permutation_resamples=permutation_resamples) for a, b in pairs]
    for r, p in zip(results, holm([r.permutation_p for r in results])):
        r.p_holm, r.family_size, r.higher_is_better = p, len(results), higher_is_better
        r.verdict = decide(r, alpha)
    return results


def fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def sentence(r: PairedResult | dict, scale: float = 100.0, unit: str = " points", unit_name: str = "test unit") -> str:
    """One line that states the comparison and its statistics (differences x ``scale``, e.g. percent points;
    ``unit_name``: what was paired, e.g. "test video" or "seed")."""
    r = r if isinstance(r, dict) else r.to_json()
    diff = f"{scale * r['difference']:+.1f}{unit} [{scale * r['ci_low']:+.1f}, {scale * r['ci_high']:+.1f}]"
    n = r["n_units"]
    better, worse = (r["wins"], r["losses"]) if r.get("higher_is_better", True) else (r["losses"], r["wins"])
    stats = (f"paired over {n} {unit_name}{'s' if n != 1 else ''}: mean difference {diff} (95% paired bootstrap CI); "
             f"{r['a']} better on {better}, worse on {worse}, tied on {r['ties']} "
             f"(sign test p = {fmt_p(r['sign_p'])}); "
             f"sign-flip permutation p = {fmt_p(r['permutation_p'])} "
             f"({'exact' if r['permutation_exact'] else 'Monte Carlo'}), "
             f"Holm-corrected over {r['family_size']} comparison{'s' if r['family_size'] != 1 else ''} "
             f"p = {fmt_p(r['p_holm'])}")
    if 2.0 / 2.0 ** n >= 0.05:  # the most extreme of 2^n sign patterns is already p = 2 / 2^n
        stats += f"; with {n} {unit_name}{'s' if n != 1 else ''} no p below 0.05 is attainable"
    head = {"ahead": f"{r['a']} is ahead of {r['b']}", "behind": f"{r['a']} is behind {r['b']}",
            "not established": f"{r['a']} vs {r['b']}: a difference is not established"}[r["verdict"]]
    return f"{head} on {r['metric']} ({stats})."


def markdown_table(results: Sequence[PairedResult | dict], scale: float = 100.0) -> str:
    """The comparisons as a Markdown table (differences x ``scale``)."""
    lines = ["| A vs B | metric | n | mean diff. A - B [95% paired CI] | A higher/lower/tied | sign p | permutation p | "
             "Holm p | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        r = r if isinstance(r, dict) else r.to_json()
        lines.append(f"| {r['a']} vs {r['b']} | {r['metric']} | {r['n_units']} | {scale * r['difference']:+.1f} "
                     f"[{scale * r['ci_low']:+.1f}, {scale * r['ci_high']:+.1f}] | {r['wins']}/{r['losses']}/{r['ties']} | "
                     f"{fmt_p(r['sign_p'])} | {fmt_p(r['permutation_p'])}{'' if r['permutation_exact'] else ' (MC)'} | "
                     f"{fmt_p(r['p_holm'])} | {r['verdict']} |")
    return "\n".join(lines)
