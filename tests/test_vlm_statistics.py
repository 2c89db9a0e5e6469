"""The VLM study's statistics against independent references: scipy's exact binomial test (McNemar),
scikit-learn's F1, and naive float64 loops for the bootstrap, paired differences and flip rates."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from unisurg.vlm.statistics import (
    UNPARSED,
    any_flip_rate,
    bootstrap_groups,
    holm,
    macro_f1,
    mcnemar_exact,
    metrics_with_ci,
    prompt_metrics,
    sensitivity,
)


@pytest.mark.parametrize("seed", range(6))
def test_mcnemar_matches_scipy_binomtest(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    a, b = rng.random(n) < rng.uniform(0.2, 0.8), rng.random(n) < rng.uniform(0.2, 0.8)
    res = mcnemar_exact(a, b)
    nb, nc = int(np.sum(a & ~b)), int(np.sum(~a & b))
    assert (res["b"], res["c"]) == (nb, nc)
    ref = binomtest(nb, nb + nc, 0.5, alternative="two-sided").pvalue if nb + nc else 1.0
    assert res["p_value"] == pytest.approx(ref, rel=1e-12, abs=1e-15)


def test_mcnemar_extremes():
    assert mcnemar_exact([True] * 4, [True] * 4)["p_value"] == 1.0
    assert mcnemar_exact([True] * 10, [False] * 10)["p_value"] == pytest.approx(binomtest(10, 10, 0.5).pvalue)


@pytest.mark.parametrize("seed", range(4))
def test_prompt_metrics_against_sklearn_and_by_hand(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, 60)
    pred = np.where(rng.random(60) < 0.5, y, rng.integers(0, 6, 60))  # 5 = a label id that is no class
    pred[rng.random(60) < 0.2] = UNPARSED
    m = prompt_metrics(y, pred)
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    parsed = pred != UNPARSED
    assert m["valid_accuracy"] == pytest.approx(np.mean(pred[parsed] == y[parsed]))
    assert m["parse_failure_rate"] == pytest.approx(1 - parsed.mean())
    ref = f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0)
    assert m["macro_f1"] == pytest.approx(ref) and macro_f1(y, pred) == pytest.approx(ref)


def _naive_resamples(groups, n, seed):
    """The same group bootstrap written out with Python lists."""
    uniq = sorted(set(groups))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        picks = rng.integers(0, len(uniq), len(uniq))
        out.append([i for g in picks for i, x in enumerate(groups) if x == uniq[g]])
    return out


def test_group_bootstrap_and_ci_against_naive_loop():
    rng = np.random.default_rng(3)
    groups = [f"v{k}" for k in rng.integers(0, 7, 50)]
    y = rng.integers(0, 3, 50)
    pred = np.where(rng.random(50) < 0.6, y, (y + 1) % 3)
    res = bootstrap_groups(np.array(groups), 200, seed=11)
    naive = _naive_resamples(groups, 200, 11)
    assert [r.tolist() for r in res] == naive
    ci = metrics_with_ci(y, pred, res)["accuracy"]
    accs = np.array([np.mean(pred[ix] == y[ix]) for ix in naive], dtype=np.float64)
    assert ci["value"] == pytest.approx(np.mean(pred == y))
    assert (ci["ci_low"], ci["ci_high"]) == pytest.approx((np.quantile(accs, 0.025), np.quantile(accs, 0.975)))


def test_sensitivity_pairs_flips_and_spread_against_naive():
    rng = np.random.default_rng(5)
    n = 40
    y = rng.integers(0, 4, n)
    groups = np.array([f"v{i // 5}" for i in range(n)])
    preds = {name: np.where(rng.random(n) < q, y, rng.integers(-1, 4, n))
             for name, q in (("baseline", 0.5), ("stability_v1", 0.7), ("baseline@rev", 0.4))}
    templates = {"baseline": ("baseline", "as"), "stability_v1": ("stability_v1", "as"), "baseline@rev": ("baseline", "rev")}
    s = sensitivity(y, preds, groups, n_boot=300, seed=1, templates=templates)
    accs = {k: sum(int(p == t) for p, t in zip(v, y)) / n for k, v in preds.items()}
    assert s["spread"]["max_minus_min"] == pytest.approx(max(accs.values()) - min(accs.values()))
    assert s["spread"]["std"] == pytest.approx(np.std(list(accs.values())))
    naive = _naive_resamples(list(groups), 300, 1)
    for pair in s["pairs"]:
        a, b = preds[pair["a"]], preds[pair["b"]]
        assert pair["delta_accuracy"] == pytest.approx(accs[pair["b"]] - accs[pair["a"]])
        diffs = [np.mean(b[ix] == y[ix]) - np.mean(a[ix] == y[ix]) for ix in naive]
        assert (pair["ci_low"], pair["ci_high"]) == pytest.approx((np.quantile(diffs, 0.025), np.quantile(diffs, 0.975)))
        assert pair["flip_rate"] == pytest.approx(sum(int(u != v) for u, v in zip(a, b)) / n)
        nb = sum(1 for i in range(n) if a[i] == y[i] and b[i] != y[i])
        nc = sum(1 for i in range(n) if a[i] != y[i] and b[i] == y[i])
        assert pair["mcnemar"]["p_value"] == pytest.approx(binomtest(nb, nb + nc, 0.5).pvalue if nb + nc else 1.0)
    ps = sorted(p["mcnemar"]["p_value"] for p in s["pairs"])
    assert min(p["mcnemar"]["p_holm"] for p in s["pairs"]) == pytest.approx(min(1.0, 3 * ps[0]))
    kinds = {(p["a"], p["b"]): p["kind"] for p in s["pairs"]}
    assert kinds == {("baseline", "stability_v1"): "rewording", ("baseline", "baseline@rev"): "reordering",
                     ("stability_v1", "baseline@rev"): "both"}
    all_same = [len({preds[k][i] for k in preds}) == 1 for i in range(n)]
    assert s["flip_rate_all"] == pytest.approx(1 - np.mean(all_same))
    assert any_flip_rate(np.stack([y, y])) == 0.0


def test_holm_adjustment_by_hand():

    # sorted 0.01, 0.02, 0.03, 0.5 (m = 4): 0.04, 0.06, 0.06 (kept monotone: max(0.06, 0.06)), 0.5
    assert holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm([0.4, 0.3]) == pytest.approx([0.6, 0.6])  # 2 x 0.3 = 0.6, then max(0.6, 1 x 0.4)
    assert holm([0.9, 0.8, 0.7]) == pytest.approx([1.0, 1.0, 1.0])
    assert holm([]) == []
