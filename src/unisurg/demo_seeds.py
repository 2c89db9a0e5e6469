"""``unisurg demo --seeds N`` and ``unisurg ablate --seeds N``: the demo repeated over seeds.

Seed ``s`` (``--seed`` .. ``--seed + N - 1``) is one complete demo in ``OUT/seed-<s>/``: its own
synthetic benchmark (synth seed s), pretraining corpus (s + 1000), pretraining seed and probe seed,
so the seeds vary everything the README reports the margin to depend on. Each folder is an ordinary
demo folder, so a rerun reuses whatever of it is finished (synthetic data, ingest, pretraining of
the same command) and an interrupted multi-seed run resumes.

The report (``OUT/report-seeds/`` or ``OUT/report-ablate-seeds/``) gives

* per model, mean +- sd over seeds of the test metrics, and each seed's value;
* per comparison, each seed's paired result (that seed's table, Holm-corrected within it; see
  :mod:`unisurg.evaluation.paired`) and how many seeds establish it;
* two across-seed tests per comparison, each Holm-corrected over the comparisons: over **seeds**
  (unit = a seed's mean difference; this is the one that generalises over pretraining runs, and
  needs >= 6 seeds before p < 0.05 is attainable), and **pooled** over all (seed, test video)
  pairs (conditional on these trained encoders);
* ``seeds_f1.png``: each seed's F1 per model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from unisurg import demo
from unisurg.atomic_files import write_json_atomic, write_text_atomic
from unisurg.evaluation.paired import RULE, compare_family, markdown_table
from unisurg.evaluation.paired import sentence as paired_sentence

METRICS = ("f1", "accuracy", "jaccard")
ALPHA = 0.05
KINDS = {"demo": (demo.run_demo, "report"), "ablate": (demo.run_ablate, "report-ablate")}


def seed_folder(out: Path, seed: int) -> Path:
    return Path(out) / f"seed-{seed}"


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; NaN for a single seed)."""
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else float("nan")


def model_summary(per_seed: dict[int, dict]) -> list[dict]:
    """Per model (table order of the first seed): each seed's test metrics, and mean +- sd over seeds."""
    first = next(iter(per_seed.values()))
    out = []
    for row in first["rows"]:
        name = row["model"]
        entry = {"model": name}
        for m in METRICS:
            vals = [next(r for r in n["rows"] if r["model"] == name)[m]["value"] for n in per_seed.values()]
            mu, sd = mean_sd(vals)
            entry[m] = {"mean": mu, "sd": sd, "per_seed": dict(zip(map(str, per_seed), vals))}
        out.append(entry)
    return out


def comparison_summary(per_seed: dict[int, dict], metric: str = "f1") -> list[dict]:
    """Per comparison of the table: each seed's paired result, verdict counts, and the two across-seed tests."""
    seeds = list(per_seed)
    first = per_seed[seeds[0]]["paired"]
    pairs = [(r["a"], r["b"]) for r in first["families"][metric]]
    # over seeds: one unit per seed, the model's mean over that seed's test videos
    seed_rows = {lab: [{"seed": s, metric: next(r for r in per_seed[s]["rows"] if r["model"] == lab)[metric]["value"]}
                       for s in seeds] for pair in pairs for lab in pair}
    over_seeds = compare_family(pairs, seed_rows, metric, alpha=ALPHA)
    # pooled: every (seed, test video) pair, conditional on the trained encoders
    pooled_rows = {lab: [{"video": f"seed-{s}/{u['video']}", metric: u[metric]}
                         for s in seeds for u in per_seed[s]["paired"]["per_unit"][lab]]
                   for pair in pairs for lab in pair}
    pooled = compare_family(pairs, pooled_rows, metric, alpha=ALPHA)
    out = []
    for (a, b), rs, rp in zip(pairs, over_seeds, pooled):
        runs = []
        for s in seeds:
            r = next(x for x in per_seed[s]["paired"]["families"][metric] if (x["a"], x["b"]) == (a, b))
            runs.append({"seed": s, **{k: r[k] for k in ("difference", "ci_low", "ci_high", "n_units", "sign_p",
                                                         "permutation_p", "p_holm", "family_size", "verdict")}})
        mu, sd = mean_sd([r["difference"] for r in runs])
        counts = {v: sum(r["verdict"] == v for r in runs) for v in ("ahead", "behind", "not established")}
        out.append({"a": a, "b": b, "metric": metric, "per_seed": runs, "mean_difference": mu, "sd_difference": sd,
                    "verdicts": counts, "over_seeds": rs.to_json(), "pooled": rp.to_json()})
    return out


def overall_verdict(c: dict, n_seeds: int) -> str:
    """One sentence: what the seeds together say about A vs B."""
    a, b, v = c["a"], c["b"], c["verdicts"]
    per_seed = (f"{a} ahead of {b} on {v['ahead']} of {n_seeds} seeds, behind on {v['behind']}, "
                f"not established on {v['not established']}")
    s = c["over_seeds"]
    if s["verdict"] == "ahead":
        over = f"established over seeds ({a} ahead)"
    elif s["verdict"] == "behind":
        over = f"established over seeds ({a} behind)"
    elif v["ahead"] == n_seeds or v["behind"] == n_seeds:
        over = "consistent on every seed"
    else:
        over = "not established over seeds"
    return f"{per_seed}; {over}."


def seeds_figure(models: list[dict], png: Path, metric: str = "f1") -> None:
    """Each seed's ``metric`` per model (a line per seed) with the mean +- sd over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m["model"] for m in models]
    seeds = list(models[0][metric]["per_seed"])
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 4.2))
    x = np.arange(len(names))
    for s in seeds:
        ax.plot(x, [100 * m[metric]["per_seed"][s] for m in models], "o-", alpha=0.7, label=f"seed {s}")
    mu = np.array([100 * m[metric]["mean"] for m in models])
    sd = np.array([100 * m[metric]["sd"] if math.isfinite(m[metric]["sd"]) else 0.0 for m in models])
    ax.errorbar(x + 0.08, mu, yerr=sd, fmt="s", color="black", capsize=4, label="mean ± sd")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel(f"test {metric} (%)")
    ax.set_title(f"test {metric} per seed")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def _pm(d: dict) -> str:
    sd = "n/a" if not math.isfinite(d["sd"]) else f"{100 * d['sd']:.1f}"
    return f"{100 * d['mean']:.1f} ± {sd}"


def table_md(models: list[dict]) -> str:
    seeds = list(models[0]["f1"]["per_seed"])
    lines = ["| Model | F1 | Acc | Jaccard | " + " | ".join(f"F1 seed {s}" for s in seeds) + " |",
             "|---|---|---|---|" + "---|" * len(seeds)]
    for m in models:
        lines.append(f"| {m['model']} | {_pm(m['f1'])} | {_pm(m['accuracy'])} | {_pm(m['jaccard'])} | "
                     + " | ".join(f"{100 * m['f1']['per_seed'][s]:.1f}" for s in seeds) + " |")
    return "\n".join(lines)


def per_seed_md(comparisons: list[dict]) -> str:
    seeds = [r["seed"] for r in comparisons[0]["per_seed"]]
    lines = ["| A vs B | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± sd |",
             "|---|" + "---|" * (len(seeds) + 1)]
    mark = {"ahead": "ahead", "behind": "behind", "not established": "n.e."}
    for c in comparisons:
        cells = [f"{100 * r['difference']:+.1f} [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] "
                 f"p={r['p_holm']:.2g} {mark[r['verdict']]}" for r in c["per_seed"]]
        sd = "n/a" if not math.isfinite(c["sd_difference"]) else f"{100 * c['sd_difference']:.1f}"
        lines.append(f"| {c['a']} vs {c['b']} | " + " | ".join(cells) + f" | {100 * c['mean_difference']:+.1f} ± {sd} |")
    return "\n".join(lines)


def write_seeds_report(out: Path, kind: str, per_seed: dict[int, dict], *, quick: bool) -> Path:
    rep = Path(out) / f"{KINDS[kind][1]}-seeds"
    rep.mkdir(parents=True, exist_ok=True)
    models = model_summary(per_seed)
    comps = comparison_summary(per_seed, "f1")
    seeds = list(per_seed)
    seeds_figure(models, rep / "seeds_f1.png")
    numbers = {"title": f"unisurg {kind} over {len(seeds)} seeds", "seeds": seeds, "quick": quick,
               "rule": RULE.format(alpha=ALPHA), "models": models, "comparisons": comps,
               "per_seed_reports": {str(s): str(seed_folder(out, s) / KINDS[kind][1]) for s in seeds},
               "timings_s": {str(s): sum(n["timings_s"].values()) for s, n in per_seed.items()}}
    write_json_atomic(rep / "numbers.json", numbers)
    write_text_atomic(rep / "table.md", table_md(models) + "\n")
    n = len(seeds)
    md = [f"# {numbers['title']}", "",
          f"Seeds {', '.join(map(str, seeds))}: each seed is a whole demo (its own synthetic benchmark, pretraining "
          "corpus, pretraining and probe seeds) in `seed-<s>/`; its report is `seed-<s>/" + KINDS[kind][1] + "/report.md`.",
          "", "## Test metrics over seeds (mean ± sd over seeds, percent)", "", table_md(models), "",
          "![each seed's F1 per model](seeds_f1.png)", "",
          "## Paired comparisons, F1", "", numbers["rule"], "",
          "Per seed (difference A - B in points, 95% paired bootstrap CI over that seed's test videos, "
          "Holm-corrected p within that seed's table, verdict; n.e. = not established):", "", per_seed_md(comps), ""]
    md += [f"- {c['a']} vs {c['b']}: {overall_verdict(c, n)}" for c in comps]
    md += ["", f"Over seeds (unit = one seed's mean F1 over its test videos; generalises over pretraining runs; "
           f"with {n} seeds the smallest attainable p is {2 / 2 ** n:.2g}):", "",
           markdown_table([c["over_seeds"] for c in comps]), ""]
    md += [f"- {paired_sentence(c['over_seeds'], unit_name='seed')}" for c in comps]
    md += ["", "Pooled over every (seed, test video) pair (conditional on these trained encoders, not a statement "
           "about new pretraining runs):", "", markdown_table([c["pooled"] for c in comps]), ""]
    md += [f"- {paired_sentence(c['pooled'], unit_name='(seed, test video) pair')}" for c in comps]
    md += ["", "All numbers: `numbers.json`."]
    path = rep / "report.md"
    write_text_atomic(path, "\n".join(md) + "\n")
    return path


def run_seeds(kind: str, out: Path, run_command: Callable[[list[str]], int], *, quick: bool = False, seed: int = 0,
              seeds: int = 2) -> int:
    """Run ``unisurg <kind>`` for seeds ``seed .. seed + seeds - 1`` in per-seed folders, then the seeds report."""
    if kind not in KINDS:
        raise ValueError(f"run_seeds: kind {kind!r} is not one of {sorted(KINDS)}")
    if seeds < 1:
        raise ValueError(f"--seeds {seeds}: need at least one seed")
    run, report_name = KINDS[kind]
    per_seed = {}
    for s in range(seed, seed + seeds):
        print(f"[demo] seed {s} ({s - seed + 1} of {seeds}) in {seed_folder(out, s)}", flush=True)
        rc = run(seed_folder(out, s), run_command, quick=quick, seed=s)
        if rc != 0:
            return rc
        per_seed[s] = json.loads((seed_folder(out, s) / report_name / "numbers.json").read_text())
    path = write_seeds_report(out, kind, per_seed, quick=quick)
    print(f"[demo] over {seeds} seeds:\n{table_md(model_summary(per_seed))}", flush=True)
    print(f"[demo] seeds report: {path}", flush=True)
    return 0
