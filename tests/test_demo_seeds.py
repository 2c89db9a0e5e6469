"""The multi-seed summary of ``unisurg demo --seeds N`` (unisurg.demo_seeds) on made-up per-seed numbers,
checked against numpy / scipy computed here; the pipeline itself at --quick scale with --seeds 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from unisurg.cli import main
from unisurg.demo import ABLATIONS, LABELS
from unisurg.demo_seeds import comparison_summary, model_summary, write_seeds_report
from unisurg.evaluation.paired import compare_family

MODELS = ("UniSurg", "V-JEPA (plain)", "Random init")
PAIRS = [("UniSurg", "Random init"), ("UniSurg", "V-JEPA (plain)"), ("V-JEPA (plain)", "Random init")]


def _numbers(seed: int, shift: dict[str, float]) -> dict:
    """A seed's numbers.json as the demo writes it (rows, paired families, per-video rows)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.4, 6)
    per_unit = {m: [{"video": f"v{i}", "f1": float(base[i] + shift[m] + rng.normal(0, 0.02)),
                     "accuracy": float(base[i] + 0.1), "jaccard": float(base[i] / 2)} for i in range(6)]
                for m in MODELS}
    rows = [{"model": m, **{k: {"value": float(np.mean([u[k] for u in per_unit[m]]))}
                            for k in ("f1", "accuracy", "jaccard")}} for m in MODELS]
    fam = [r.to_json() for r in compare_family(PAIRS, per_unit, "f1", n_resamples=200)]
    return {"rows": rows, "paired": {"families": {"f1": fam}, "per_unit": per_unit}, "timings_s": {"x": 1.0}}


@pytest.fixture()
def per_seed():
    return {s: _numbers(s, {"UniSurg": 0.10, "V-JEPA (plain)": 0.09 + 0.02 * (s % 2), "Random init": 0.0})
            for s in range(4)}


def test_mean_and_sd_over_seeds(per_seed):
    models = model_summary(per_seed)
    assert [m["model"] for m in models] == list(MODELS)
    for m in models:
        vals = [next(r for r in per_seed[s]["rows"] if r["model"] == m["model"])["f1"]["value"] for s in per_seed]
        assert m["f1"]["mean"] == pytest.approx(np.mean(vals)) and m["f1"]["sd"] == pytest.approx(np.std(vals, ddof=1))
        assert list(m["f1"]["per_seed"].values()) == vals


def test_comparisons_over_seeds_and_pooled(per_seed):
    comps = comparison_summary(per_seed)
    c = next(x for x in comps if (x["a"], x["b"]) == ("UniSurg", "Random init"))
    diffs = [next(r for r in per_seed[s]["paired"]["families"]["f1"] if r["b"] == "Random init" and r["a"] == "UniSurg")
             ["difference"] for s in per_seed]
    assert [r["difference"] for r in c["per_seed"]] == diffs
    assert c["mean_difference"] == pytest.approx(np.mean(diffs)) and c["sd_difference"] == pytest.approx(np.std(diffs, ddof=1))
    # over seeds: one unit per seed; 4 seeds all positive -> exact sign-flip p = 2/16, x3 by Holm at most
    s = c["over_seeds"]
    assert s["n_units"] == 4 and s["wins"] == 4 and s["permutation_p"] == pytest.approx(2 / 16)
    assert s["sign_p"] == pytest.approx(stats.binomtest(4, 4, 0.5).pvalue)
    assert s["verdict"] == "not established"  # 4 seeds cannot reach p < 0.05
    # pooled: every (seed, video) pair, 24 units, Monte Carlo above 20 units
    p = c["pooled"]
    assert p["n_units"] == 24 and not p["permutation_exact"] and p["verdict"] == "ahead"
    assert sum(c["verdicts"].values()) == 4


def test_seeds_report_files(per_seed, tmp_path):
    path = write_seeds_report(tmp_path, "demo", per_seed, quick=True)
    text = path.read_text()
    assert "mean ± sd over seeds" in text and "Holm" in text and "smallest attainable p is 0.12" in text
    assert (tmp_path / "report-seeds" / "seeds_f1.png").stat().st_size > 1000
    numbers = json.loads((tmp_path / "report-seeds" / "numbers.json").read_text())
    assert numbers["seeds"] == [0, 1, 2, 3] and len(numbers["comparisons"]) == 3


@pytest.mark.slow
def test_quick_demo_over_two_seeds(tmp_path):
    assert main(["demo", "--quick", "--seeds", "2", "--out", str(tmp_path)]) == 0
    for s in (0, 1):
        n = json.loads((tmp_path / f"seed-{s}" / "report" / "numbers.json").read_text())
        assert n["seed"] == s and n["paired"]["families"]["f1"][0]["family_size"] == 3
    numbers = json.loads((tmp_path / "report-seeds" / "numbers.json").read_text())
    assert numbers["seeds"] == [0, 1] and [m["model"] for m in numbers["models"]] == list(MODELS)
    assert [(c["a"], c["b"]) for c in numbers["comparisons"]] == PAIRS
    assert (tmp_path / "report-seeds" / "seeds_f1.png").is_file()
    # rerun: every seed's pretraining is reused
    weights = tmp_path / "seed-1" / "runs" / "unisurg" / "final" / "weights.safetensors"
    before = weights.stat().st_mtime_ns
    assert main(["demo", "--quick", "--seeds", "2", "--out", str(tmp_path)]) == 0
    assert weights.stat().st_mtime_ns == before


@pytest.mark.slow
def test_quick_ablate_over_two_seeds(tmp_path):

    assert main(["ablate", "--quick", "--seeds", "2", "--out", str(tmp_path)]) == 0
    numbers = json.loads((tmp_path / "report-ablate-seeds" / "numbers.json").read_text())
    assert [m["model"] for m in numbers["models"]] == [LABELS[k] for k in ABLATIONS] + ["Random init"]
    assert len(numbers["comparisons"]) == len(ABLATIONS)  # UniSurg vs each other variant, and vs random init
    assert all(c["over_seeds"]["family_size"] == len(ABLATIONS) for c in numbers["comparisons"])
