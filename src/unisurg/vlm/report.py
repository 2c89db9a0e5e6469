"""The VLM study's report: ``results.json``, ``report.md``, ``sensitivity.png`` and SurgRec-format output.

* ``results.json``: per parser (``surgrec``, ``strict``) and prompt, accuracy / valid accuracy /
  parse-failure rate / macro-F1 with bootstrap CIs, which parsing rule decided, and the prompt
  sensitivity (:func:`unisurg.vlm.statistics.sensitivity`); per sample and prompt, the raw answer
  and both parses are in ``predictions.jsonl``.
* ``report.md``: the tables (SurgRec's parser), with the probe rows of a ``unisurg bench``
  results.json on the same dataset when given.
* ``sensitivity.png``: accuracy per prompt with its CI (probe accuracies as lines), and the
  pairwise flip rates.
* ``surgrec/<prompt>/<dataset>/meta.json`` and ``predictions.json``: the files of SurgRec's
  ``vlm_eval`` scripts, with their keys (``dataset, total, correct, accuracy, valid_count,
  valid_accuracy, label_map, label_source, prompt_variant, timestamp``; predictions ``index,
  video_path, gt_label, pred_label, raw_output, ok, error``), so that their
  ``compare_prompt_sensitivity.py --model NAME::surgrec/baseline::surgrec/stability_v1`` reads them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from unisurg.atomic_files import write_atomic
from unisurg.vlm.parsing import PARSERS, parse_answer
from unisurg.vlm.prompts import Prompt, display_name
from unisurg.vlm.statistics import (
    UNPARSED,
    bootstrap_groups,
    metrics_with_ci,
    sensitivity,
)

REPORT_NAME = "report.md"
RESULTS_NAME = "results.json"
FIGURE_NAME = "sensitivity.png"


def _prompt(name: str, spec: dict, class_names: list[str]) -> Prompt:
    """The prompt as it was asked (run.json), for parsing its answers."""
    return Prompt(name, spec["template"], spec["order"], spec["text"], tuple(spec["options"]),
                  tuple(display_name(c) for c in class_names))


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))


def _write_json(path: Path, obj) -> None:
    _write_text(path, json.dumps(obj, indent=1, ensure_ascii=False))


def parse_all(run: dict, samples: list[dict], answers: dict) -> dict[str, dict[str, dict]]:
    """``{parser: {prompt: {"pred": int64 [n] (UNPARSED = -1), "rule": [n]}}}``."""
    out = {p: {} for p in PARSERS}
    for name, spec in run["prompts"].items():
        prompt = _prompt(name, spec, run["class_names"])
        for parser in PARSERS:
            parsed = [parse_answer(answers[(s["key"], name)]["answer"], prompt, parser) for s in samples]
            out[parser][name] = {"pred": np.array([UNPARSED if p.label is None else p.label for p in parsed], np.int64),
                                 "rule": [p.rule for p in parsed]}
    return out


def probe_rows(path: Path | str | None, dataset: str) -> list[dict]:
    """Honest (validation-selected) test accuracy and F1 of every probe run on ``dataset`` in a bench results.json."""
    if not path:
        return []
    res = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = []
    for run in res.get("runs", {}).values():
        if run.get("dataset") != dataset:
            continue
        m = run["honest"]["metrics"]
        f1 = m.get("macro_f1") or m.get("f1")
        rows.append({"name": run["backbone"]["label"], "task": run["task"], "accuracy": m.get("accuracy"), "f1": f1})
    if not rows:
        raise FileNotFoundError(f"{path}: no probe run on dataset {dataset!r}")
    return rows


def _pct(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "-"
    if "ci_low" in m and np.isfinite(m["ci_low"]):
        return f"{100 * m['value']:.1f} [{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}]"
    return f"{100 * m['value']:.1f}"


def markdown(run: dict, results: dict, probes: list[dict], parser: str = "surgrec") -> str:
    res = results["parsers"][parser]
    n = results["n_samples"]
    lines = [f"# VLM study: {run['family']} on {run['dataset']} ({run['split']} split)", "",
             f"Model `{run['model']}`; {n} samples in {results['n_groups']} groups (bootstrap units); "
             f"input `{run['input']}` ({run['frames']} frame(s)); greedy, {run['max_new_tokens']} new tokens, "
             f"{run['dtype']}. Answers parsed with SurgRec's rules; 95% CIs: bootstrap over groups "
             f"({results['bootstrap_n']} resamples, seed {results['bootstrap_seed']}).", "",
             "| Prompt | Acc | Valid acc | Parse fail | Macro-F1 | Strict-parser acc |", "|---|---|---|---|---|---|"]
    for name in run["prompts"]:
        m = res["prompts"][name]
        strict = results["parsers"]["strict"]["prompts"][name]["accuracy"]
        lines.append(f"| {name} | {_pct(m['accuracy'])} | {_pct(m['valid_accuracy'])} | "
                     f"{100 * m['parse_failure_rate']['value']:.1f} | {_pct(m['macro_f1'])} | {_pct(strict)} |")
    for p in probes:
        lines.append(f"| probe: {p['name']} ({p['task']} protocol) | {_pct(p['accuracy'])} | - | - | {_pct(p['f1'])} | - |")
    sens = res["sensitivity"]
    if len(run["prompts"]) > 1:
        sp = sens["spread"]
        fr = {k: sens[f"flip_rate_{k}"] for k in ("rewording", "reordering")}
        lines += ["", "## Prompt sensitivity", "",
                  f"Accuracy spread over {len(run['prompts'])} prompts: {100 * sp['max_minus_min']:.1f} points "
                  f"(std {100 * sp['std']:.1f}; best `{sp['best']}`, worst `{sp['worst']}`). "
                  f"Samples answered differently by at least one prompt: {100 * sens['flip_rate_all']:.1f}%. "
                  "Mean pairwise flip rate under rewording: "
                  + ("-" if fr["rewording"] is None else f"{100 * fr['rewording']:.1f}%")
                  + "; under option reordering: " + ("-" if fr["reordering"] is None else f"{100 * fr['reordering']:.1f}%") + ".",
                  "", "| A | B | change | Δacc (B-A) [95% CI] | McNemar b / c | p (exact) | p (Holm) | flip rate |",
                  "|---|---|---|---|---|---|---|---|"]
        for p in sens["pairs"]:
            mc = p["mcnemar"]
            lines.append(f"| {p['a']} | {p['b']} | {p['kind']} | {100 * p['delta_accuracy']:+.1f} "
                         f"[{100 * p['ci_low']:+.1f}, {100 * p['ci_high']:+.1f}] | {mc['b']} / {mc['c']} | "
                         f"{mc['p_value']:.3g} | {mc['p_holm']:.3g} | {100 * p['flip_rate']:.1f}% |")
        if "baseline" in run["prompts"] and "stability_v1" in run["prompts"]:
            d = [p for p in sens["pairs"] if {p["a"], p["b"]} == {"baseline", "stability_v1"}][0]
            sign = 1 if d["a"] == "baseline" else -1
            lines += ["", f"SurgRec's sensitivity number (accuracy of stability_v1 minus baseline): "
                          f"{sign * 100 * d['delta_accuracy']:+.1f} points; exact McNemar p = {d['mcnemar']['p_value']:.3g}."]
    lines += ["", f"Figure: `{FIGURE_NAME}`. Raw answers and both parses: `predictions.jsonl`. "
                  "SurgRec-format output: `surgrec/<prompt>/<dataset>/meta.json`."]
    if probes:
        lines += ["", "Probe rows: the honest (validation-selected) test numbers of `unisurg bench` on the same dataset "
                      "and split scheme; a phase probe scores every labelled second averaged per video, the VLM the "
                      "sampled seconds pooled, so compare them as indications, not paired results."]
    return "\n".join(lines) + "\n"


def figure(path: Path, run: dict, results: dict, probes: list[dict], parser: str = "surgrec") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = results["parsers"][parser]
    names = list(run["prompts"])
    acc = [res["prompts"][p]["accuracy"] for p in names]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    x = np.arange(len(names))
    v = np.array([a["value"] for a in acc]) * 100
    lo = v - np.array([a["ci_low"] for a in acc]) * 100
    hi = np.array([a["ci_high"] for a in acc]) * 100 - v
    ax.bar(x, v, yerr=np.nan_to_num(np.vstack([lo, hi])), capsize=3, color="#4c72b0")
    for i, p in enumerate(probes):
        if p.get("accuracy"):
            ax.axhline(100 * p["accuracy"]["value"], ls="--", color=f"C{i + 1}", label=f"probe: {p['name']}")
    ax.axhline(100 / len(run["class_names"]), ls=":", color="gray", label="chance (1/K)")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{run['family']} on {run['dataset']}")
    ax.legend(fontsize=7)
    flips = np.zeros((len(names), len(names)))
    for p in res["sensitivity"]["pairs"]:
        i, j = names.index(p["a"]), names.index(p["b"])
        flips[i, j] = flips[j, i] = 100 * p["flip_rate"]
    im = axes[1].imshow(flips, vmin=0, vmax=max(1.0, flips.max()), cmap="viridis")
    axes[1].set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    axes[1].set_yticks(x, names, fontsize=7)
    axes[1].set_title("flip rate between prompts (%)")
    fig.colorbar(im, ax=axes[1])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def surgrec_files(out: Path, run: dict, samples: list[dict], answers: dict, parsed: dict, name: str) -> None:
    """``surgrec/<prompt>/<name>/{meta,predictions}.json`` in the layout of SurgRec's vlm_eval scripts."""
    label_map = {str(k): c for k, c in enumerate(run["class_names"])}
    y = np.array([s["label"] for s in samples], np.int64)
    for prompt in run["prompts"]:
        pred = parsed["surgrec"][prompt]["pred"]
        preds = [{"index": i, "video_path": s["media"], "gt_label": int(s["label"]),
                  "pred_label": None if p == UNPARSED else int(p), "raw_output": answers[(s["key"], prompt)]["answer"],
                  "ok": bool(p == s["label"]), "error": "parse_failed" if p == UNPARSED else "", "sample": s["key"]}
                 for i, (s, p) in enumerate(zip(samples, pred.tolist()))]
        valid = pred != UNPARSED
        correct = int(np.sum(pred == y))
        meta = {"dataset": name, "total": len(samples), "correct": correct, "accuracy": correct / len(samples),
                "valid_count": int(valid.sum()),
                "valid_accuracy": float(np.mean(pred[valid] == y[valid])) if valid.any() else 0.0,
                "label_map": label_map, "label_source": f"unisurg adapter {run['dataset']}",
                "prompt_variant": prompt, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "model": run["model"], "input": run["input"]}
        folder = out / "surgrec" / prompt.replace("@", "_") / name
        _write_json(folder / "predictions.json", preds)
        _write_json(folder / "meta.json", meta)


def write_report(out: Path, run: dict, samples: list[dict], answers: dict, *, probe_results=None,
                 surgrec_name: str, bootstrap_n: int, bootstrap_seed: int) -> Path:
    """Everything of the module docstring; returns the path of report.md."""
    out = Path(out)
    y = np.array([s["label"] for s in samples], np.int64)
    groups = np.array([s["group"] for s in samples])
    parsed = parse_all(run, samples, answers)
    resamples = bootstrap_groups(groups, bootstrap_n, bootstrap_seed)
    templates = {n: (p["template"], p["order"]) for n, p in run["prompts"].items()}
    results = {"n_samples": len(samples), "n_groups": int(len(np.unique(groups))), "bootstrap_n": bootstrap_n,
               "bootstrap_seed": bootstrap_seed, "run": {k: v for k, v in run.items() if k != "prompts"},
               "prompts": run["prompts"], "parsers": {}}
    for parser in PARSERS:
        preds = {n: parsed[parser][n]["pred"] for n in run["prompts"]}
        per = {}
        for n in run["prompts"]:
            m = metrics_with_ci(y, preds[n], resamples)
            rules = parsed[parser][n]["rule"]
            m["rules"] = {str(r): rules.count(r) for r in sorted(set(rules), key=str)}
            per[n] = m
        results["parsers"][parser] = {"prompts": per, "sensitivity": sensitivity(
            y, preds, groups, n_boot=bootstrap_n, seed=bootstrap_seed, templates=templates)}
    probes = probe_rows(probe_results, run["dataset"])
    results["probes"] = probes
    _write_json(out / RESULTS_NAME, results)
    lines = []
    for i, s in enumerate(samples):
        for n in run["prompts"]:
            lines.append(json.dumps({"sample": s["key"], "group": s["group"], "label": s["label"], "prompt": n,
                                     "answer": answers[(s["key"], n)]["answer"],
                                     **{f"pred_{p}": (None if parsed[p][n]["pred"][i] == UNPARSED
                                                      else int(parsed[p][n]["pred"][i])) for p in PARSERS}},
                                    ensure_ascii=False))
    _write_text(out / "predictions.jsonl", "\n".join(lines) + "\n")
    surgrec_files(out, run, samples, answers, parsed, surgrec_name)
    figure(out / FIGURE_NAME, run, results, probes)
    _write_text(out / REPORT_NAME, markdown(run, results, probes))
    return out / REPORT_NAME
