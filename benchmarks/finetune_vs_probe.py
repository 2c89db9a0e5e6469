"""Fine-tuning vs the frozen probe of the same pretrained UniSurg encoder, on the synthetic benchmark.

    python benchmarks/finetune_vs_probe.py --out /tmp/ft-vs-probe [--scale small|demo] [--seed 0]

Runs the demo's own steps (``unisurg.demo.Pipeline``: synthetic benchmark + corpus, ingest, leakage check,
UniSurg pretraining, the demo's attentive probe on the frozen encoder), then ``unisurg finetune`` of that
encoder into the same results folder (one table: "(probe)" and "(fine-tuned)" rows), and prints JSON:
both runs' test metrics with bootstrap CIs and the paired bootstrap over test videos of the per-video F1
difference (fine-tuned - probe; videos resampled together for both models). ``--scale demo`` is the demo's
scale (its outputs in ``--out`` are reused when the demo ran there); ``small`` fits a shared CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np

from unisurg.cli import main as cli_main
from unisurg.demo import _UNISURG, FULL, LABELS, QUICK, Pipeline
from unisurg.evaluation.metrics.bootstrap import bootstrap_ci

SMALL = dataclasses.replace(QUICK, bench_videos=24, corpus_videos=8, seconds=30, steps=300, batch=8,
                            probe={**FULL.probe, "probe.heads": 4}, bootstrap_n=1000)
SCALES = {"small": SMALL, "demo": FULL}
# the fine-tuning recipe at this size, on top of the tiny preset (warm-up + cosine, layer decay 0.75, drop path 0.1,
# label smoothing 0.1, random-resized crop, linear head on the mean-pooled tokens): class-balanced cross-entropy
# (as the probe benchmark), no mixup / cutmix, lr 3e-3 (chosen on validation among 3e-3 and 1e-2), 20 epochs.
# The preset's own mixup 0.8 / cutmix 1.0 with lr 1e-3 and no class weighting collapsed to the majority phase here.
FT_OVERRIDES = ["train.mixup=0", "train.cutmix=0", "train.class_weighting=true", "train.epochs=20",
                "train.batch_size=16", "optim.lr=3e-3", "optim.warmup_steps=20", "test.spatial=1"]


def paired_difference(a: dict, b: dict, metric: str, n: int, seed: int) -> dict:
    """Per test video ``a - b`` of ``metric`` (rows ``per_unit`` of two runs), its mean and percentile CI."""
    ua = {r["video"]: r[metric] for r in a["honest"]["per_unit"]}
    ub = {r["video"]: r[metric] for r in b["honest"]["per_unit"]}
    videos = sorted(set(ua) & set(ub))
    if videos != sorted(ua) or videos != sorted(ub):
        raise ValueError("the two runs were tested on different videos")
    diff = np.array([ua[v] - ub[v] for v in videos], dtype=np.float64)
    est, lo, hi = bootstrap_ci(diff, n_resamples=n, seed=seed)
    return {"metric": metric, "videos": len(videos), "mean_difference": float(est), "ci_low": float(lo),
            "ci_high": float(hi), "excludes_zero": bool(lo > 0 or hi < 0),
            "fine_tuned_better_on": int((diff > 0).sum()), "per_video": dict(zip(videos, diff.round(4).tolist()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--scale", choices=sorted(SCALES), default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*", help="extra finetune overrides")
    args = ap.parse_args()
    s = SCALES[args.scale]
    t0 = time.perf_counter()
    p = Pipeline(args.out, s, args.seed, cli_main)
    p.data()
    final = p.pretrain("unisurg", _UNISURG)
    t_pre = time.perf_counter()
    spec = f"unisurg:{final}?name={LABELS['unisurg']}"
    bench_out = args.out / "bench"
    p.bench([spec], bench_out)
    t_probe = time.perf_counter()
    for stale in ("checkpoints", "best"):  # a fresh fine-tuning run each time (the probe's results stay)
        shutil.rmtree(bench_out / stale, ignore_errors=True)
    common = [f"clip.frames={s.frames}", f"clip.res={s.crop}", f"clip.short_side={s.short_side}",
              f"cache_dir={args.out / 'cache'}", f"report.bootstrap_n={s.bootstrap_n}", f"train.seed={args.seed}",
              f"run.threads={s.threads}", "run.log_every=10"]
    code = cli_main(["finetune", "--backbone", spec, "--dataset", "synthetic", "--root", str(p.bench_dir),
                     "--config", "tiny", "--out", str(bench_out), *common, *FT_OVERRIDES,
                     *args.overrides])
    if code:
        raise SystemExit(code)
    t_ft = time.perf_counter()
    results = json.loads((bench_out / "results.json").read_text())
    runs = {r.get("protocol", "probe"): r for r in results["runs"].values()}
    ft, probe = runs["fine-tuned"], runs["probe"]
    keys = ("accuracy", "f1", "jaccard")
    print(json.dumps({
        "scale": args.scale, "seed": args.seed,
        "probe": {k: probe["honest"]["metrics"][k] for k in keys},
        "fine_tuned": {k: ft["honest"]["metrics"][k] for k in keys},
        "paired_f1": paired_difference(ft, probe, "f1", s.bootstrap_n, 42),
        "paired_accuracy": paired_difference(ft, probe, "accuracy", s.bootstrap_n, 42),
        "fine_tune_best_epoch": ft["folds"][0]["best"]["epoch"], "finetune_overrides": FT_OVERRIDES + args.overrides,
        "seconds": {"data_and_pretrain": round(t_pre - t0, 1), "probe": round(t_probe - t_pre, 1),
                    "finetune": round(t_ft - t_probe, 1)},
        "table": str(bench_out / "table.md"),
    }, indent=1))


if __name__ == "__main__":
    main()
