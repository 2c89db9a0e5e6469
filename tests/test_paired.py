"""Paired statistics (unisurg.evaluation.paired) against scipy and naive float64 references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from unisurg.evaluation.paired import (
    PairingError,
    compare_family,
    holm,
    markdown_table,
    paired_bootstrap_ci,
    paired_differences,
    sentence,
    sign_flip_test,
    sign_test,
)
from unisurg.evaluation.paired_report import bench_paired


def _scipy_sign_flip(d: np.ndarray, n_resamples=np.inf, rng=None) -> float:
    x, y = d, np.zeros_like(d)  # swapping x_i and y_i flips the sign of d_i
    res = stats.permutation_test((x, y), lambda a, b, axis: np.mean(a - b, axis=axis), permutation_type="samples",
                                 alternative="two-sided", n_resamples=n_resamples, vectorized=True, rng=rng)
    return float(res.pvalue)


@pytest.mark.parametrize("case", range(12))
def test_sign_test_is_scipy_binomtest(case):
    rng = np.random.default_rng(case)
    n = int(rng.integers(1, 30))
    d = rng.normal(rng.normal(0, 0.5), 1, n).round(1)  # rounding makes ties
    got = sign_test(d)
    k, m = int((d > 0).sum()), int((d != 0).sum())
    assert (got["wins"], got["losses"], got["ties"]) == (k, m - k, n - m)
    want = stats.binomtest(k, m, 0.5).pvalue if m else 1.0
    assert got["p"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 11])
def test_exact_sign_flip_matches_scipy_and_naive_enumeration(n):
    rng = np.random.default_rng(n)
    d = rng.normal(0.3, 1.0, n)
    got = sign_flip_test(d)
    assert got["exact"] and got["n_resamples"] == 2 ** n
    naive = np.mean([abs(np.mean(np.array(s) * d)) >= abs(d.mean()) - 1e-12
                     for s in itertools.product([1.0, -1.0], repeat=n)])
    assert got["p"] == pytest.approx(naive, abs=1e-15)
    if n >= 2:  # scipy needs two observations
        assert got["p"] == pytest.approx(_scipy_sign_flip(d), rel=1e-12)


def test_sign_flip_counts_ties_of_the_observed_mean():
    # all |d| equal: every flip with as many + as the data is as extreme; p = P[|#plus - #minus| >= 2]
    d = np.array([1.0, 1.0, 1.0, -1.0])
    assert sign_flip_test(d)["p"] == pytest.approx(10 / 16)
    assert sign_flip_test(np.zeros(3))["p"] == 1.0


def test_monte_carlo_sign_flip_approximates_the_exact_p_and_is_never_zero():
    rng = np.random.default_rng(3)
    d = rng.normal(0.25, 1.0, 14)
    exact = sign_flip_test(d)["p"]
    mc = sign_flip_test(d, n_resamples=20000, seed=1, exact_max_units=0)
    assert not mc["exact"]
    assert mc["p"] == pytest.approx(exact, abs=0.015)  # binomial sd of the estimate ~0.0035
    # scipy's Monte Carlo estimate of the same test (its own draws)
    assert _scipy_sign_flip(d, n_resamples=20000, rng=np.random.default_rng(5)) == pytest.approx(exact, abs=0.015)
    far = sign_flip_test(np.full(40, 1.0), n_resamples=999, seed=0)
    assert far["p"] == pytest.approx(1 / 1000)  # (0 + 1) / (999 + 1)


def test_exact_enumeration_in_chunks_for_more_than_16_units():
    rng = np.random.default_rng(7)
    d = rng.normal(0.4, 1.0, 18)  # 2^18 flips: four chunks of 2^16
    assert sign_flip_test(d)["p"] == pytest.approx(_scipy_sign_flip(d), rel=1e-9)


def test_paired_bootstrap_ci_is_the_naive_float64_bootstrap():
    rng = np.random.default_rng(0)
    d = rng.normal(0.05, 0.1, 12)
    lo, hi = paired_bootstrap_ci(d, n_resamples=500, seed=42)
    draws = np.random.default_rng(42).integers(0, 12, (500, 12))
    means = sorted(float(sum(d[j] for j in row) / 12) for row in draws)

    def pct(q):  # numpy's default "linear" percentile, by hand
        pos = q / 100 * (len(means) - 1)
        i = int(np.floor(pos))
        return means[i] + (pos - i) * (means[min(i + 1, len(means) - 1)] - means[i])

    assert (lo, hi) == pytest.approx((pct(2.5), pct(97.5)), abs=1e-15)
    # and scipy's percentile bootstrap, which draws the same matrix for the same generator
    res = stats.bootstrap((d,), np.mean, n_resamples=500, method="percentile", rng=np.random.default_rng(42))
    assert (lo, hi) == pytest.approx((res.confidence_interval.low, res.confidence_interval.high), rel=1e-12)


def _holm_rejects(p, alpha):
    """Holm's procedure as written: reject in ascending order while p_(i) <= alpha / (m - i)."""
    m, rejected = len(p), set()
    for i, j in enumerate(np.argsort(p, kind="stable")):
        if p[j] <= alpha / (m - i):
            rejected.add(int(j))
        else:
            break
    return rejected


@pytest.mark.parametrize("case", range(20))
def test_holm_adjusted_p_values_reject_what_the_step_down_procedure_rejects(case):
    rng = np.random.default_rng(case)
    p = rng.uniform(0, 0.1, int(rng.integers(1, 8))) ** rng.uniform(0.5, 2)
    adj = holm(p)
    assert all(a >= q for a, q in zip(adj, p)) and max(adj) <= 1
    for alpha in (0.001, 0.01, 0.02, 0.05, 0.1):
        assert {i for i, a in enumerate(adj) if a <= alpha} == _holm_rejects(p, alpha)


def test_holm_known_values():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        holm([0.2, 1.5])


def _rows(values, key="video"):
    return [{key: f"v{i}", "f1": v} for i, v in enumerate(values)]


def test_paired_differences_match_units_by_name_and_drop_nan():
    a = _rows([0.5, 0.6, None, 0.9])
    b = list(reversed(_rows([0.4, 0.7, 0.2, float("nan")])))
    units, d = paired_differences(a, b, "f1")
    assert units == ["v0", "v1"] and d == pytest.approx([0.1, -0.1])
    with pytest.raises(PairingError, match="same test units"):
        paired_differences(a, _rows([0.1, 0.2]), "f1")
    with pytest.raises(PairingError, match="no metric 'dice'"):
        paired_differences(a, b, "dice")


def test_family_verdicts_and_sentences():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.4, 12)
    per_unit = {"A": _rows(base + 0.15 + rng.normal(0, 0.01, 12)), "B": _rows(base + rng.normal(0, 0.05, 12)),
                "C": _rows(base + rng.normal(0, 0.05, 12))}
    res = compare_family([("A", "C"), ("B", "C"), ("C", "A")], per_unit, "f1", n_resamples=200)
    by = {(r.a, r.b): r for r in res}
    assert by["A", "C"].verdict == "ahead" and by["C", "A"].verdict == "behind"
    assert by["B", "C"].verdict == "not established"
    assert all(r.family_size == 3 for r in res)
    assert by["A", "C"].p_holm == pytest.approx(min(1, 3 * by["A", "C"].permutation_p))  # the smallest p: x m
    assert by["A", "C"].wins == 12 and by["A", "C"].sign_p == pytest.approx(2 / 2 ** 12)
    text = sentence(by["A", "C"])
    assert text.startswith("A is ahead of C on f1") and "Holm-corrected over 3 comparisons" in text
    assert "not established" in sentence(by["B", "C"])
    assert markdown_table(res).count("\n") == 4
    # an error metric (lower is better): the same differences read the other way round
    err = compare_family([("A", "C")], per_unit, "f1", n_resamples=200, higher_is_better=False)[0]
    assert err.verdict == "behind" and "A better on 0, worse on 12" in sentence(err)


def test_clip_accuracy_and_skill_mae_are_paired_from_the_per_unit_predictions():

    def run(label, dataset, task_rows, columns):
        return {"dataset": dataset, "split_scheme": "default", "backbone": {"name": label, "label": label},
                "honest": {"per_unit": task_rows}, "columns": columns,
                "config": {"report": {"bootstrap_n": 100, "bootstrap_seed": 0}}}

    clip_cols = [{"key": "accuracy", "percent": True}, {"key": "macro_f1", "percent": True}]
    skill_cols = [{"key": "mae", "percent": False, "higher_is_better": False},
                  {"key": "spearman", "percent": False, "higher_is_better": True}]
    a = [{"clip": f"c{i}", "label": i % 3, "pred": i % 3} for i in range(9)]  # all right
    b = [{"clip": f"c{i}", "label": i % 3, "pred": 0} for i in range(9)]  # right on 3
    sa = [{"trial": f"t{i}", "grs": 10.0 + i, "pred": 11.0 + i} for i in range(4)]
    sb = [{"trial": f"t{i}", "grs": 10.0 + i, "pred": 13.0 + i} for i in range(4)]
    results = {"runs": {"1": run("A", "clips", a, clip_cols), "2": run("B", "clips", b, clip_cols),
                        "3": run("A", "skill", sa, skill_cols), "4": run("B", "skill", sb, skill_cols)}}
    paired = bench_paired(results)
    (acc,) = paired["clips"]["families"]["accuracy"]
    assert acc["difference"] == pytest.approx(6 / 9) and (acc["wins"], acc["ties"]) == (6, 3)
    assert paired["clips"]["not_per_unit"] == ["macro_f1"]
    (mae,) = paired["skill"]["families"]["mae"]
    assert mae["difference"] == pytest.approx(-2.0) and mae["losses"] == 4 and not mae["higher_is_better"]
    assert mae["verdict"] == "not established"  # 4 trials: p >= 2/16 whatever the data
    assert paired["skill"]["not_per_unit"] == ["spearman"]
