"""``unisurg demo`` and ``unisurg ablate``: the whole pipeline on synthetic data, CPU only, no download.

Every step runs through the same entry point as the command line (``unisurg.cli.main``), and the
report lists those exact commands, so each number can be reproduced by hand:

1. ``unisurg synth``: a labelled benchmark (train/val/test by video) and, with another seed, an
   unlabelled pretraining corpus (the benchmark's videos are never pretrained on);
2. ``unisurg ingest`` the corpus into a frame store at 1 fps;
3. ``unisurg curate leakage``: check the corpus against the benchmark's test split;
4. ``unisurg pretrain`` the same small encoder twice: the UniSurg objective and plain V-JEPA;
5. ``unisurg bench``: attentive probes on the frozen UniSurg, V-JEPA and untrained (random init,
   same architecture and seed) encoders, synthetic phase recognition, selected on validation;
6. the report: ``report.md``, the table with bootstrap CIs, the paired comparisons of the models on the
   same test videos (``unisurg.evaluation.paired``; they decide what the report claims), loss curves,
   phase ribbons, ``numbers.json``.

Steps whose output exists are reused (the commands are idempotent), so an interrupted demo resumes.
``ablate`` runs the same pipeline with each UniSurg component switched off in turn. ``--seeds N``
repeats either over N seeds (``unisurg.demo_seeds``).
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from unisurg.evaluation.paired import markdown_table as paired_table
from unisurg.evaluation.paired import sentence as paired_sentence
from unisurg.evaluation.paired_report import families, per_unit_rows
from unisurg.train.logs import read_jsonl

PAIRED_METRICS = ("f1", "accuracy", "jaccard")  # one Holm family each; F1 is the one the report's sentences state


@dataclass(frozen=True)
class DemoScale:
    bench_videos: int
    corpus_videos: int
    seconds: float
    width: int
    height: int
    short_side: int  # stored frames of the corpus; also the benchmark clips' short side
    frames: int  # T at 1 fps
    crop: int
    arch: dict  # the shared architecture: {preset, encoder: {...}, predictor: {...}} (the model.* config)
    steps: int
    batch: int
    lr: float
    ema: float
    probe: dict  # bench overrides: probe and probe training
    bootstrap_n: int
    threads: int = 2
    workers: int = 2


_ARCH = {"preset": "tiny",
         "encoder": {"embed_dim": 128, "depth": 4, "num_heads": 4, "patch_size": 16, "pos_embed": "rope"},
         "predictor": {"predictor_dim": 64, "depth": 2, "num_heads": 2}}

# The probe of the demo: one cross-attention block over the time-step tokens (each time step's
# patch tokens averaged; temporal order kept). Chosen on the validation videos of development
# runs: with ~700 labelled clips, a probe over all 128 patch tokens memorises pixel-level
# appearance (random-init features are close to projections of the pixels; their training loss
# fell to 0.3 while validation stayed low) and hides what the encoders learnt; the benchmark's
# default remains the paper's all-token, 4-block probe.
_DEMO_PROBE = {"probe.depth": 1, "probe.heads": 4, "features.mode": "time", "train.epochs": 40,
               "train.batch_size": 16, "train.lrs": "[1e-2,3e-3,1e-3]", "train.wds": "[0.01,0.1]"}

FULL = DemoScale(bench_videos=60, corpus_videos=32, seconds=45, width=160, height=120, short_side=64, frames=16,
                 crop=64, arch=_ARCH, steps=1500, batch=16, lr=1e-3, ema=0.99, probe=_DEMO_PROBE,
                 bootstrap_n=1000)
QUICK = DemoScale(bench_videos=5, corpus_videos=3, seconds=16, width=96, height=64, short_side=32, frames=8,
                  crop=32, arch={"preset": "tiny",
                                 "encoder": {**_ARCH["encoder"], "embed_dim": 32, "depth": 2, "num_heads": 2,
                                             "patch_size": 8},
                                 "predictor": {**_ARCH["predictor"], "predictor_dim": 32}},
                  steps=8, batch=4, lr=1e-3, ema=0.99,
                  probe={**_DEMO_PROBE, "probe.heads": 2, "train.epochs": 2, "train.batch_size": 8,
                         "train.lrs": "[1e-3]", "train.wds": "[0.01]"},
                  bootstrap_n=100, threads=1, workers=1)

# name -> loss overrides. "unisurg" is the paper's objective (all terms on, docs/objectives.md) except
# sigma0: the variance hinge pulls each channel's std of the predicted latents up to sigma0, but
# the layer-normed targets of this small encoder have a per-channel std of only ~0.5-0.7 (see
# "std of target latents" in the report), so the paper's sigma0 = 1 makes predictions more
# spread than their targets and fights the L1 term (in development runs L_pred rose again after
# ~350 steps). sigma0 = 0.5 matches the targets' scale (validation F1 0.27 -> 0.36 in those runs).
_UNISURG = ["loss.sigma0=0.5"]
VARIANTS = {
    "unisurg": _UNISURG,
    "vjepa": ["loss.objective=vjepa"],
}
ABLATIONS = {
    "unisurg": _UNISURG,
    "no-motion-weighting": [*_UNISURG, "loss.motion_weighting=false"],
    "no-affinity": [*_UNISURG, "loss.affinity=false"],
    "no-variance": [*_UNISURG, "loss.variance=false"],
    "motion-scope-topk": [*_UNISURG, "loss.motion_scope=topk"],
    "paper-sigma0": [],
    "vjepa": ["loss.objective=vjepa"],
}
LABELS = {"unisurg": "UniSurg", "vjepa": "V-JEPA (plain)", "random": "Random init",
          "no-motion-weighting": "UniSurg - motion weighting", "no-affinity": "UniSurg - affinity distillation",
          "no-variance": "UniSurg - variance reg.", "motion-scope-topk": "UniSurg, motion_scope=topk",
          "paper-sigma0": "UniSurg, sigma0=1 (paper)"}


class DemoStepError(RuntimeError):
    """A step of the demo failed; its own error was printed above."""


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


class Pipeline:
    """The demo's steps as CLI invocations, recorded for the report."""

    def __init__(self, out: Path, scale: DemoScale, seed: int, run_command: Callable[[list[str]], int]):
        self.out, self.scale, self.seed = Path(out), scale, seed
        self.run_command = run_command  # unisurg.cli.main: each step runs exactly as its command line
        self.commands: list[tuple[str, str]] = []  # (what, command line)
        self.timings: dict[str, float] = {}
        self.bench_dir = self.out / "benchmark"
        self.corpus_dir = self.out / "corpus"
        self.store = self.out / "store"
        self.runs = self.out / "runs"

    def cli(self, what: str, argv: list[str], *, ok_codes=(0,)) -> int:
        line = "unisurg " + " ".join(shlex.quote(str(a)) for a in argv)
        self.commands.append((what, line))
        _say(f"$ {line}")
        t0 = time.perf_counter()
        code = self.run_command([str(a) for a in argv])
        self.timings[what] = self.timings.get(what, 0.0) + time.perf_counter() - t0
        if code not in ok_codes:
            raise DemoStepError(f"step '{what}' failed (exit {code}): {line}")
        return code

    # -- the steps -------------------------------------------------------------------------------
    def data(self) -> None:
        s = self.scale
        size = ["--width", s.width, "--height", s.height, "--seconds", s.seconds, "--workers", s.workers]
        self.cli("synthetic benchmark (labelled)", ["synth", "--out", self.bench_dir, "--videos", s.bench_videos,
                                                     "--seed", self.seed, *size])
        self.cli("synthetic pretraining corpus (unlabelled, other seed)",
                 ["synth", "--out", self.corpus_dir, "--videos", s.corpus_videos, "--seed", self.seed + 1000, *size])
        self.cli("ingest the corpus at 1 fps", ["ingest", self.corpus_dir / "videos", "--out", self.store,
                                                 "--short-side", s.short_side, "--dataset", "synthetic-corpus",
                                                 "--specialty", "Laparoscopic cholecystectomy",
                                                 "--workers", s.workers])
        self.cli("leakage check: corpus vs the benchmark's test videos",
                 ["curate", "leakage", self.store, "--benchmark", f"synthetic:{self.bench_dir}", "--quiet"])

    def arch_overrides(self) -> list[str]:
        a = self.scale.arch
        return [f"model.preset={a['preset']}"] + [f"model.{part}.{k}={v}" for part in ("encoder", "predictor")
                                                  for k, v in a[part].items()]

    def pretrain(self, name: str, loss_overrides: list[str]) -> Path:
        s = self.scale
        run = self.runs / name
        argv = ["pretrain", "--config", "tiny", "--out", run, f"data.stores=[{self.store}]",
                f"data.frames={s.frames}", f"data.crop={s.crop}", "data.flip=true", "data.workers=0",
                *self.arch_overrides(), f"schedule.global_batch_size={s.batch}", "schedule.epochs=1000",
                "schedule.iterations_per_epoch=10", f"schedule.max_steps={s.steps}", f"optim.lr={s.lr}",
                f"optim.warmup_steps={max(1, min(20, s.steps // 4))}", f"ema.momentum={s.ema}",
                f"run.seed={self.seed}", f"run.threads={s.threads}", f"run.log_every={max(1, s.steps // 40)}",
                f"run.checkpoint_every={max(1, s.steps // 2)}", "run.progress=true", "run.tensorboard=false",
                *loss_overrides]
        stamp = run / "demo_command.json"  # reuse a finished run only if it ran exactly this command
        wanted = json.dumps([str(a) for a in argv])
        if (run / "final" / "unisurg.json").exists() and stamp.exists() and stamp.read_text() == wanted:
            _say(f"pretrain {name}: reusing {run / 'final'}")
            self.commands.append((f"pretrain {name} (reused)", "(output already present)"))
            return run / "final"
        if run.exists():
            shutil.rmtree(run)  # interrupted, or made with other settings; the demo's runs are short
        self.cli(f"pretrain {name}", argv)
        stamp.write_text(wanted)
        return run / "final"

    def random_spec(self) -> str:
        a = self.scale.arch
        opts = "&".join(f"{k}={v}" for k, v in a["encoder"].items())
        return f"random:{a['preset']}@{self.seed}?{opts}&name={LABELS['random']}"

    def bench(self, backbones: list[str], out: Path) -> dict:
        s = self.scale
        argv = ["bench", "--dataset", "synthetic", "--root", self.bench_dir, "--out", out, "--config", "tiny",
                f"clip.frames={s.frames}", f"clip.res={s.crop}", f"clip.short_side={s.short_side}",
                f"cache_dir={self.out / 'cache'}", f"report.bootstrap_n={s.bootstrap_n}",
                f"train.seed={self.seed}", *[f"{k}={v}" for k, v in s.probe.items()]]
        for b in backbones:
            argv[1:1] = ["--backbone", b]
        self.cli("benchmark: attentive probes on frozen encoders", argv)
        return json.loads((out / "results.json").read_text())


# -- report ---------------------------------------------------------------------------------------

def _fmt(m: dict) -> str:
    return f"{100 * m['value']:.1f} [{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}]"


def result_rows(results: dict, order: list[str]) -> list[dict]:
    """Per backbone label (in ``order``), the honest test metrics with CIs."""
    runs = {r["backbone"]["label"] if "label" in r["backbone"] else r["backbone"]["name"]: r
            for r in results["runs"].values()}
    rows = []
    for label in order:
        r = runs[label]
        rows.append({"model": label, **{k: r["honest"]["metrics"][k] for k in ("accuracy", "f1", "jaccard")},
                     "paper_style": {k: r["paper_style"]["metrics"][k] for k in ("accuracy", "f1", "jaccard")},
                     "probe": {"lr": r["probes"][r["honest"]["probe_index"]]["lr"],
                               "wd": r["probes"][r["honest"]["probe_index"]]["wd"]}})
    return rows


def table_md(rows: list[dict], key: str | None = None) -> str:
    lines = ["| Model | Acc | F1 | Jaccard |", "|---|---|---|---|"]
    for r in rows:
        m = r if key is None else r[key]
        lines.append(f"| {r['model']} | {_fmt(m['accuracy'])} | {_fmt(m['f1'])} | {_fmt(m['jaccard'])} |")
    return "\n".join(lines)


def margin(rows: list[dict], a: str, b: str, metric: str = "f1") -> dict:
    ra = next(r for r in rows if r["model"] == a)[metric]
    rb = next(r for r in rows if r["model"] == b)[metric]
    return {"a": a, "b": b, "metric": metric, "difference": ra["value"] - rb["value"],
            "ci_separated": ra["ci_low"] > rb["ci_high"]}


def paired_results(results: dict, pairs: list[tuple[str, str]], bootstrap_n: int) -> dict:
    """The paired comparisons of the demo's table (``numbers.json["paired"]``): per metric of
    :data:`PAIRED_METRICS` one Holm family of ``pairs`` (labels), and the per-video rows they came from."""
    runs = per_unit_rows(results, "synthetic")
    per_unit = {lab: run["honest"]["per_unit"] for lab, run in runs.items()}
    out = families(per_unit, pairs, PAIRED_METRICS, n_resamples=bootstrap_n,
                   seed=next(iter(runs.values()))["config"]["report"]["bootstrap_seed"])
    out["per_unit"] = {lab: [{k: r[k] for k in ("video", *PAIRED_METRICS)} for r in rows] for lab, rows in per_unit.items()}
    return out


def loss_curves(runs: dict[str, Path], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = [("loss", "total loss"), ("l_pred", "prediction (L1 / L_motion)"), ("l_st", "affinity L_st"),
             ("l_var", "variance L_var"), ("pred_std", "std of predicted latents"),
             ("target_std", "std of target latents")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (key, title) in zip(axes.ravel(), terms):
        for name, run in runs.items():
            recs = [r for r in read_jsonl(run / "log.jsonl") if key in r]
            if recs:
                ax.plot([r["step"] for r in recs], [r[key] for r in recs], label=LABELS.get(name, name))
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0, 0].legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def write_report(p: Pipeline, bench_out: Path, rows: list[dict], runs: dict[str, Path], *, title: str,
                 comparisons: list[dict], report_name: str, paired: dict) -> Path:
    rep = p.out / report_name
    rep.mkdir(parents=True, exist_ok=True)
    loss_curves(runs, rep / "loss_curves.png")
    ribbons = sorted(bench_out.glob("figures/*/ribbon_*.png"))
    for f in ribbons:
        shutil.copy2(f, rep / f.name)
    numbers = {"title": title, "scale": asdict(p.scale), "seed": p.seed, "rows": rows, "comparisons": comparisons,
               "paired": paired, "timings_s": p.timings, "commands": [c for _, c in p.commands]}
    (rep / "numbers.json").write_text(json.dumps(numbers, indent=1))
    (rep / "table.md").write_text(table_md(rows) + "\n")
    md = [f"# {title}", "",
          "Synthetic surgical videos (`unisurg synth`): 7 Cholec80 phases, some of which differ only in how the "
          "instruments move. A small video ViT is pretrained on an unlabelled corpus (other videos than the "
          "benchmark's), then frozen and probed by attentive probes on per-second phase recognition; the probe "
          "is chosen on the validation videos and reported on the test videos.", "",
          "## Results (test videos; probe selected on validation)", "",
          "Mean over test videos, with 95% bootstrap CIs over videos, in percent.", "", table_md(rows), ""]
    md += ["## Paired comparisons (the same test videos scored for every model)", "", paired["rule"] + " The "
           "comparisons of each metric form one Holm family; differences in percent points.", ""]
    md += [f"- {paired_sentence(r, unit_name='test video')}" for r in paired["families"]["f1"]]
    md += ["", paired_table([r for m in PAIRED_METRICS for r in paired["families"][m]]), ""]
    md += [ "Paper-style numbers (best probe chosen on the test split, as the authors' release does; "
           "optimistic, for comparison only):", "", table_md(rows, "paper_style"), "",
           "## Training curves", "", "![loss curves](loss_curves.png)", "",
           "## Phase ribbons (test videos: ground truth above each model's predictions)", ""]
    md += [f"![{f.stem}]({f.name})" for f in ribbons] + [""]
    md += ["## How to reproduce", "", "Each step, exactly as it ran:", ""]
    for what, line in p.commands:
        md += [f"- {what}:", "", "  ```", f"  {line}", "  ```"]
    md += ["", "## Time", ""] + [f"- {k}: {v:.1f} s" for k, v in p.timings.items()]
    md += ["", "All numbers: `numbers.json`; the benchmark's own results, tables (Markdown, CSV, LaTeX) and figures "
           "are in the benchmark output folder next to this report."]
    path = rep / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path


# -- entry points -----------------------------------------------------------------------------------

def _run(out: Path, variants: dict[str, list[str]], *, quick: bool, seed: int, run_command, title: str,
         bench_name: str, report_name: str, with_random: bool, comparisons: list[tuple[str, str]]) -> int:
    scale = QUICK if quick else FULL
    t0 = time.perf_counter()
    p = Pipeline(out, scale, seed, run_command)
    _say(f"{title}: working folder {out}")
    p.data()
    finals = {name: p.pretrain(name, ov) for name, ov in variants.items()}
    specs = [f"unisurg:{path}?name={LABELS.get(name, name)}" for name, path in finals.items()]
    if with_random:
        specs.append(p.random_spec())
    bench_out = out / bench_name
    results = p.bench(specs, bench_out)
    order = [LABELS.get(n, n) for n in variants] + ([LABELS["random"]] if with_random else [])
    rows = result_rows(results, order)
    comps = [margin(rows, LABELS[a], LABELS[b]) for a, b in comparisons]
    paired = paired_results(results, [(LABELS[a], LABELS[b]) for a, b in comparisons], scale.bootstrap_n)
    report = write_report(p, bench_out, rows, {n: p.runs / n for n in variants}, title=title, comparisons=comps,
                          report_name=report_name, paired=paired)
    _say(f"table (test, honest):\n{table_md(rows)}")
    for r in paired["families"]["f1"]:
        _say(paired_sentence(r, unit_name="test video"))
    _say(f"report: {report}  ({time.perf_counter() - t0:.0f} s in all)")
    return 0


def run_demo(out: Path, run_command: Callable[[list[str]], int], *, quick: bool = False, seed: int = 0) -> int:
    return _run(Path(out), VARIANTS, quick=quick, seed=seed, run_command=run_command, title="unisurg demo: UniSurg vs V-JEPA vs untrained",
                bench_name="bench", report_name="report", with_random=True,
                comparisons=[("unisurg", "random"), ("unisurg", "vjepa"), ("vjepa", "random")])


def run_ablate(out: Path, run_command: Callable[[list[str]], int], *, quick: bool = False, seed: int = 0) -> int:
    return _run(Path(out), ABLATIONS, quick=quick, seed=seed, run_command=run_command, title="unisurg ablate: each UniSurg component off",
                bench_name="bench-ablate", report_name="report-ablate", with_random=True,
                comparisons=[("unisurg", k) for k in ABLATIONS if k != "unisurg"] + [("unisurg", "random")])
