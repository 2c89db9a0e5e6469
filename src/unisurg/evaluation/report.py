"""Tables in the papers' layout from ``results.json``: rows = backbones, column groups = datasets
(and test subsets, e.g. the five polyp test sets), cells = value with its bootstrap 95% CI.

Two tables are always written, each labelled: the honest one (probe selected on validation) and
the paper-style one (probe selected on test, as the authors' release). Fractions print as
percentages (Acc, F1, Jaccard, AP), other metrics as they are (Dice, MAE, RMSE, Spearman).
The best value of each column (by the metric's direction) is bold.

Files: ``table.md``, ``table.csv`` (wide; one row per backbone and selection, CI bounds in their
own columns), ``table.tex`` (booktabs; needs ``\\usepackage{booktabs}``).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from unisurg.atomic_files import write_text_atomic
from unisurg.evaluation.head_selection import HONEST_LABEL, PAPER_LABEL

SELECTIONS = (("honest", HONEST_LABEL), ("paper_style", PAPER_LABEL))


@dataclass(frozen=True)
class Column:
    dataset: str
    subset: str
    metric: str
    label: str
    percent: bool
    higher: bool

    @property
    def key(self) -> str:
        return f"{self.subset}:{self.metric}" if self.subset else self.metric

    @property
    def group(self) -> str:
        return f"{self.dataset} {self.subset}".strip()


def _runs_by_dataset(results: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for run in results.get("runs", {}).values():
        out.setdefault(run["dataset"], []).append(run)
    return out


def table_columns(results: dict) -> list[Column]:
    """Columns of the table: per dataset (first-run order), per subset, the task's metric columns."""
    cols = []
    for dataset, runs in _runs_by_dataset(results).items():
        keys = set()
        for r in runs:
            keys.update(r["honest"]["metrics"])
        prefixes = sorted({k.split(":", 1)[0] for k in keys if ":" in k})
        dense_subsets = [p for p in prefixes if p != "relaxed"]
        subsets = dense_subsets if dense_subsets else [""] + prefixes
        for sub in subsets:
            for c in runs[0]["columns"]:
                col = Column(dataset, sub, c["key"], c["label"], c["percent"], c["higher_is_better"])
                if col.key in keys:
                    cols.append(col)
    return cols


def table_rows(results: dict) -> list[str]:
    """Backbone labels (display names, made unique) in first-appearance order."""
    names = []
    for run in results.get("runs", {}).values():
        if row_label(results, run) not in names:
            names.append(row_label(results, run))
    return names


def backbone_label(run: dict) -> str:
    return run["backbone"].get("label", run["backbone"]["name"])


def row_label(results: dict, run: dict) -> str:
    """The row of a run: its backbone label; probe runs say "(probe)" when the table also holds fine-tuned
    runs (``unisurg finetune`` labels its own rows "(fine-tuned)"), so both protocols read apart."""
    mixed = any(r.get("protocol") == "fine-tuned" for r in results.get("runs", {}).values())
    if mixed and run.get("protocol", "probe") == "probe":
        return f"{backbone_label(run)} (probe)"
    return backbone_label(run)


def cell(results: dict, backbone: str, col: Column, selection: str) -> dict | None:
    for run in results.get("runs", {}).values():
        if run["dataset"] == col.dataset and row_label(results, run) == backbone:
            return run[selection]["metrics"].get(col.key)
    return None


def fmt(v: float | None, percent: bool) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "NaN"
    return f"{100 * v:.2f}" if percent else f"{v:.4f}"


def _best(results, rows, col, selection) -> set[str]:
    vals = {}
    for b in rows:
        c = cell(results, b, col, selection)
        if c is not None and not math.isnan(c["value"]):
            vals[b] = c["value"]
    if not vals:
        return set()
    target = max(vals.values()) if col.higher else min(vals.values())
    return {b for b, v in vals.items() if v == target}


def provenance(results: dict, selection: str) -> str:
    """One line naming what produced a table: protocol(s), how the probe was chosen (and on which split),
    the bootstrap, and the metric conventions of the columns."""
    runs = list(results.get("runs", {}).values())
    protocols = sorted({r.get("config", {}).get("protocol", "unisurg") for r in runs})
    if selection == "paper_style":
        keys = sorted({r["paper_style"].get("selection_metric", r.get("selection_metric", "?")) for r in runs})
        chosen = f"chosen ON TEST by {', '.join(keys)}"
    else:
        keys = sorted({r.get("selection_metric", "?") for r in runs})
        chosen = f"chosen on validation by {', '.join(keys)}"
    boots = sorted({r.get("bootstrap", "percentile") for r in runs})
    boot = {"percentile": "value = test-set statistic, percentile 95% CI",
            "surgmotion": "value = mean of bootstrap means (SurgMotion), 95% percentile CI"}
    conv = {}
    for r in runs:
        conv.update(r.get("metric_conventions", {}))
    text = f"Protocol {', '.join(protocols)}; probe {chosen}; bootstrap {', '.join(boot.get(b, b) for b in boots)}."
    if conv:
        text += " Macro conventions: " + "; ".join(f"({k}) {v}" for k, v in conv.items()) + "."
    flagged = [f"{r['dataset']}: {r['dataset_flags']['val_is_test']}" for r in runs
               if r.get("dataset_flags", {}).get("val_is_test")]
    if flagged:
        text += " WARNING val == test: " + "; ".join(sorted(set(flagged))) + "."
    return text


def markdown(results: dict) -> str:
    cols, rows = table_columns(results), table_rows(results)
    parts = []
    for sel, label in SELECTIONS:
        parts.append(f"### Probe {label}\n")
        parts.append(provenance(results, sel) + "\n")
        parts.append("Values with bootstrap 95% CI over test units (videos/clips/trials/images); "
                     "percent for fractions; best of each column in bold.\n")
        head = ["Model"] + [f"{c.group} {c.label}" for c in cols]
        parts.append("| " + " | ".join(head) + " |")
        parts.append("|" + "---|" * len(head))
        best = {c: _best(results, rows, c, sel) for c in cols}
        for b in rows:
            cells = [b]
            for c in cols:
                v = cell(results, b, c, sel)
                if v is None:
                    cells.append("–")
                    continue
                text = f"{fmt(v['value'], c.percent)} [{fmt(v['ci_low'], c.percent)}, {fmt(v['ci_high'], c.percent)}]"
                cells.append(f"**{text}**" if b in best[c] else text)
            parts.append("| " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)


def csv_text(results: dict) -> str:
    cols, rows = table_columns(results), table_rows(results)
    buf = io.StringIO()
    w = csv.writer(buf)
    head = ["model", "selection"]
    for c in cols:
        name = f"{c.group} {c.label}"
        head += [name, f"{name} ci_low", f"{name} ci_high"]
    w.writerow(head + ["provenance"])
    for sel, label in SELECTIONS:
        for b in rows:
            line = [b, label]
            for c in cols:
                v = cell(results, b, c, sel)
                if v is None:
                    line += ["", "", ""]
                else:
                    line += [fmt(v["value"], c.percent), fmt(v["ci_low"], c.percent), fmt(v["ci_high"], c.percent)]
            w.writerow(line + [provenance(results, sel)])
    return buf.getvalue()


def _tex_escape(s: str) -> str:
    out = s
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("δ", r"$\delta$"), ("<", r"$<$")):
        out = out.replace(a, b)
    return out


def latex(results: dict) -> str:
    cols, rows = table_columns(results), table_rows(results)
    out = []
    for sel, label in SELECTIONS:
        out.append(r"\begin{table}[t]")
        out.append(r"\centering\small")
        out.append(r"\caption{" + _tex_escape(f"Attentive probing, probe {label}. Mean over test units with "
                                             "bootstrap 95% CI. " + provenance(results, sel)) + "}")
        out.append(r"\begin{tabular}{l" + "c" * len(cols) + "}")
        out.append(r"\toprule")
        groups: list[tuple[str, int]] = []
        for c in cols:
            if groups and groups[-1][0] == c.group:
                groups[-1] = (c.group, groups[-1][1] + 1)
            else:
                groups.append((c.group, 1))
        out.append("Model & " + " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{_tex_escape(g)}}}" for g, n in groups) + r" \\")
        start, rules = 2, []
        for _, n in groups:
            rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
            start += n
        out.append(" ".join(rules))
        arrows = [("$\\uparrow$" if c.higher else "$\\downarrow$") for c in cols]
        out.append(" & " + " & ".join(f"{_tex_escape(c.label)} {a}" for c, a in zip(cols, arrows)) + r" \\")
        out.append(r"\midrule")
        best = {c: _best(results, rows, c, sel) for c in cols}
        for b in rows:
            cells = [_tex_escape(b)]
            for c in cols:
                v = cell(results, b, c, sel)
                if v is None:
                    cells.append("--")
                    continue
                val = fmt(v["value"], c.percent)
                val = rf"\textbf{{{val}}}" if b in best[c] else val
                cells.append(rf"{val} {{\scriptsize[{fmt(v['ci_low'], c.percent)}, {fmt(v['ci_high'], c.percent)}]}}")
            out.append(" & ".join(cells) + r" \\")
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
        out.append(r"\end{table}")
        out.append("")
    return "\n".join(out)


def write_tables(results: dict, out: Path) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv`` and ``table.tex`` for every run in ``results``."""
    out = Path(out)
    paths = {"md": out / "table.md", "csv": out / "table.csv", "tex": out / "table.tex"}
    write_text_atomic(paths["md"], markdown(results))
    write_text_atomic(paths["csv"], csv_text(results))
    write_text_atomic(paths["tex"], latex(results))
    return paths
