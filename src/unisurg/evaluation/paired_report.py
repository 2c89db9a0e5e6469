"""Paired comparisons of the backbones of one benchmark table (``paired.json``, ``paired.md``).

Every backbone benchmarked on a dataset (same split scheme) is scored on the same test units, and
``results.json`` keeps each run's per-unit metric rows (``honest.per_unit``). From them, for each
metric that is a mean over units (phase Acc/F1/Jaccard per video, Dice/MAE/RMSE per image, ...),
every pair of backbones is compared with :mod:`unisurg.evaluation.paired`; the comparisons of one
dataset and one metric form one Holm family. Clip accuracy (the mean of per-clip correctness) and
skill MAE (the mean of per-trial absolute errors) are read from the per-unit predictions. Metrics
that are not means over units (clip macro-F1, skill Spearman, the triplets' video-wise mAP) have no
per-unit difference and are left out, said so in the output.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

from unisurg.atomic_files import write_json_atomic, write_text_atomic
from unisurg.evaluation.paired import (
    RULE,
    PairingError,
    compare_family,
    markdown_table,
    sentence,
)
from unisurg.evaluation.report import backbone_label

ALPHA = 0.05


def per_unit_rows(results: dict, dataset: str) -> dict[str, dict]:
    """``{backbone label: run}`` of the runs on ``dataset`` (first-appearance order)."""
    return {backbone_label(r): r for r in results.get("runs", {}).values() if r["dataset"] == dataset}


def unit_rows(run: dict) -> list[dict]:
    """The run's honest per-unit rows, with the unit-mean metrics that follow from a row's prediction:
    clip ``accuracy`` = [label == pred], skill ``mae`` = |grs - pred|."""
    rows = []
    for r in run["honest"].get("per_unit") or []:
        r = dict(r)
        if "label" in r and "pred" in r and "accuracy" not in r:
            r["accuracy"] = float(r["label"] == r["pred"])
        if "grs" in r and "pred" in r and "mae" not in r:
            r["mae"] = abs(float(r["grs"]) - float(r["pred"]))
        rows.append(r)
    return rows


def unit_metrics(run: dict) -> list[str]:
    """The run's table metrics (unprefixed column keys) that every per-unit row carries."""
    rows = unit_rows(run)
    keys = [c["key"] for c in run.get("columns", [])]
    return [k for k in keys if rows and all(k in r for r in rows)]


def families(per_unit: dict[str, Sequence[dict]], pairs: Sequence[tuple[str, str]], metrics: Sequence[str], *,
             n_resamples: int = 1000, seed: int = 42, alpha: float = ALPHA,
             lower_is_better: Sequence[str] = ()) -> dict:
    """``{"rule", "alpha", "families": {metric: [result, ...]}}``: one Holm family per metric."""
    out = {"rule": RULE.format(alpha=alpha), "alpha": alpha, "families": {}}
    for m in metrics:
        out["families"][m] = [r.to_json() for r in compare_family(pairs, per_unit, m, alpha=alpha,
                                                                  n_resamples=n_resamples, seed=seed,
                                                                  higher_is_better=m not in lower_is_better)]
    return out


def bench_paired(results: dict) -> dict:
    """Per dataset with two or more backbones, all pairs (table order, A = the earlier row) per metric."""
    out = {}
    datasets = list(dict.fromkeys(r["dataset"] for r in results.get("runs", {}).values()))
    for ds in datasets:
        runs = per_unit_rows(results, ds)
        if len(runs) < 2:
            continue
        labels = list(runs)
        schemes = {runs[b]["split_scheme"] for b in labels}
        if len(schemes) > 1:
            out[ds] = {"skipped": f"the backbones were run on different split schemes {sorted(schemes)}"}
            continue
        first = runs[labels[0]]
        metrics = [m for m in unit_metrics(first) if all(m in unit_metrics(runs[b]) for b in labels)]
        left_out = [c["key"] for c in first.get("columns", []) if c["key"] not in metrics]
        cfg = first.get("config", {}).get("report", {})
        per_unit = {b: unit_rows(runs[b]) for b in labels}
        try:
            fam = families(per_unit, list(combinations(labels, 2)), metrics,
                           n_resamples=int(cfg.get("bootstrap_n", 1000)), seed=int(cfg.get("bootstrap_seed", 42)),
                           lower_is_better=[c["key"] for c in first.get("columns", [])
                                            if not c.get("higher_is_better", True)])
        except PairingError as e:
            out[ds] = {"skipped": str(e)}
            continue
        fam["percent"] = {c["key"]: bool(c["percent"]) for c in first.get("columns", [])}
        fam["not_per_unit"] = left_out
        out[ds] = fam
    return out


def markdown(paired: dict) -> str:
    parts = ["# Paired comparisons (test units; probe selected on validation)", ""]
    for ds, fam in paired.items():
        parts += [f"## {ds}", ""]
        if "skipped" in fam:
            parts += [f"No paired comparison: {fam['skipped']}.", ""]
            continue
        parts += [fam["rule"] + " Each metric's comparisons form one Holm family.", ""]
        for m, res in fam["families"].items():
            scale = 100.0 if fam["percent"].get(m, False) else 1.0
            unit = " points" if scale == 100.0 else ""
            parts += [f"### {m}" + (" (percent points)" if scale == 100.0 else ""), "", markdown_table(res, scale), ""]
            parts += [f"- {sentence(r, scale, unit)}" for r in res] + [""]
        if fam["not_per_unit"]:
            parts += [f"Not a mean over test units, so no paired test: {', '.join(fam['not_per_unit'])}.", ""]
    return "\n".join(parts)


def write_paired(results: dict, out: Path) -> dict:
    """Write ``paired.json`` and ``paired.md`` into ``out`` when some dataset has two or more backbones."""
    paired = bench_paired(results)
    if paired:
        write_json_atomic(Path(out) / "paired.json", paired)
        write_text_atomic(Path(out) / "paired.md", markdown(paired))
    return paired
