"""The three protocols (unisurg, surgmotion, surgrec) and the effect of each SurgMotion item alone, measured on
one synthetic benchmark with one backbone; prints JSON.

    python benchmarks/protocols_synthetic.py [--videos 15] [--seconds 40] [--backbone SPEC] [--out DIR]

Every row runs ``run_benchmark`` on the same synthetic videos (16:9 frames, so the field of view matters)
with the same toy clip sizes (``SIZES``, applied after the protocol), then reads the test metrics of the probe the
run reports: chosen on validation where there is one, else chosen on test (labelled). The protocol rows train as
their protocol says; each "+ ITEM" row switches one item of the surgmotion protocol on in the unisurg protocol
with a toy training (``TOY_TRAIN``) that learns at this scale. Both
macro conventions (gt, gt_or_pred) come from every run. The backbone is whatever ``--backbone`` names (default:
a random-init tiny video ViT; no pretrained weights are downloaded), so absolute numbers are low: read the
differences, with their bootstrap CIs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from unisurg.evaluation.protocols import protocol_config
from unisurg.evaluation.runner import run_benchmark
from unisurg.synth.generate import generate_dataset

# sizes of every row (clip, bootstrap); the toy training of the one-item rows (cheap and able to learn here)
SIZES = ["clip.frames=8", "clip.res=32", "clip.short_side=36", "report.figures=false", "report.bootstrap_n=1000"]
TOY_TRAIN = ["probe.depth=2", "probe.heads=4", "train.lrs=[1e-2,3e-3,1e-3]", "train.wds=[0.01,0.1]", "train.epochs=8",
             "train.batch_size=8"]
# name -> (protocol, base preset, extra overrides). The three protocol rows train as their protocol says (on the
# paper preset: unisurg 20 probes, 1 epoch, batch 4; surgmotion the same grid wd-major; surgrec 1 head, 50 epochs,
# batch 64); the one-item rows start from the toy-trained unisurg ("unisurg, toy training") and switch on one item.
ROWS = {
    "unisurg": ("unisurg", "paper", []),
    "surgmotion": ("surgmotion", "paper", []),
    "surgrec": ("surgrec", "paper", []),
    "unisurg, toy training": ("unisurg", "tiny", TOY_TRAIN),
    "unisurg, toy training, seed 1": ("unisurg", "tiny", TOY_TRAIN + ["train.seed=1"]),  # the run-to-run spread
    "unisurg, toy training, seed 2": ("unisurg", "tiny", TOY_TRAIN + ["train.seed=2"]),
    "+ squash field of view": ("unisurg", "tiny", TOY_TRAIN + ["clip.field_of_view=squash"]),
    "+ start padded at the end (last)": ("unisurg", "tiny", TOY_TRAIN + ["clip.start=last"]),
    "+ first T-1 s unscored (skip)": ("unisurg", "tiny", TOY_TRAIN + ["clip.start=skip"]),
    "+ loader frame positions": ("unisurg", "tiny", TOY_TRAIN + ["clip.positions=surgmotion"]),
    "+ weight decay on all params": ("unisurg", "tiny", TOY_TRAIN + ["train.decay_all=true"]),
    "+ scheduler stepped before update": ("unisurg", "tiny", TOY_TRAIN + ["train.schedule_step=before"]),
    "+ augmentation, online encoder": ("unisurg", "tiny", TOY_TRAIN + ["clip.augment=paper", "features.online=true"]),
    "+ no validation (chosen on test by F1)": ("unisurg", "tiny", TOY_TRAIN + ["train.validation=none"]),
    "+ SurgMotion bootstrap": ("unisurg", "tiny", TOY_TRAIN + ["report.bootstrap=surgmotion"]),
}
KEYS = ("accuracy", "f1", "f1_gt_or_pred", "jaccard", "jaccard_gt_or_pred")


def summarise(run: dict) -> dict:
    honest = run["honest"]["metrics"]
    which = "honest" if honest else "paper_style"
    m = run[which]["metrics"]
    out = {"reported": run[which]["label"], "probe": run[which]["probe_index"]}
    for k in KEYS:
        v = m[k]
        out[k] = [round(100 * v["value"], 1), round(100 * v["ci_low"], 1), round(100 * v["ci_high"], 1)]
    ps = run["paper_style"]
    out["paper_style"] = {"chosen_by": ps["selection_metric"],
                          **{k: round(100 * ps["metrics"][k]["value"], 1) for k in ("accuracy", "f1_gt_or_pred")}}
    out["n_test_seconds"] = run["folds"][0]["n_samples"]["test"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backbone", default="random:tiny@0?embed_dim=64&depth=2&num_heads=4")
    ap.add_argument("--rows", nargs="*", default=None, help="subset of the row names")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="protocols-"))
    data = work / "synth"
    if not (data / "videos").is_dir():
        generate_dataset(data, n_videos=args.videos, seconds=args.seconds, height=72, width=128, fps=5,
                         seed=args.seed, progress=False)
    results = {}
    for name, (proto, base, extra) in ROWS.items():
        if args.rows and name not in args.rows:
            continue
        cfg = protocol_config(proto, base, [f"cache_dir={work / 'cache'}", *SIZES, *extra])
        t0 = time.perf_counter()
        res = run_benchmark([args.backbone], "synthetic", data, out=work / "out" / name.replace(" ", "_"), config=cfg,
                            log=lambda s: None)
        results[name] = summarise(next(iter(res["runs"].values()))) | {"seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps({"backbone": args.backbone, "videos": args.videos, "seconds_per_video": args.seconds,
                      "sizes": SIZES, "toy_train": TOY_TRAIN, "metrics": "test, percent, [value, ci_low, ci_high]", "rows": results}, indent=1))


if __name__ == "__main__":
    main()
