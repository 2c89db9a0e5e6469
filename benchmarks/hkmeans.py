"""Benchmark: 2-level hierarchical k-means (unisurg) vs scikit-learn MiniBatchKMeans.

    python benchmarks/hkmeans.py                      # N=1,000,000 x 384, levels 10,000 -> 100
    python benchmarks/hkmeans.py --n 100000 --k1 1000 --k2 100 --out /tmp/hk.json

The embeddings are written once to a .npy file and memory-mapped by each contender. Each
contender runs in its own subprocess, so its peak memory (``ru_maxrss``, which includes the
mapped pages of the embedding file it touched) is its own. Both use ``--threads`` threads.

unisurg: level 1 is built coarse-then-split (``--coarse`` coarse clusters, default sqrt(K1),
each split by a small k-means), level 2 is k-means on the level-1 centroids. scikit-learn:
MiniBatchKMeans(K1) on the embeddings for ``--sk-epochs`` epochs (labels computed at the end of
fit), then MiniBatchKMeans(K2) on its centroids. Quality: the k-means inertia (sum of squared
distances of each point to the centroid it was assigned to) of both, recomputed here from the
saved labels and centroids, for both levels. ``--exact-inertia`` also reports the inertia of
unisurg's level-1 centroids under a global nearest-centroid assignment (one extra full pass).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def generate(args) -> dict:
    """Write N x D float32 embeddings in chunks: 'gaussian' = i.i.d. N(0, 1); 'mixture' = 1000
    Gaussian modes with Zipf-like weights (imbalanced, like a real corpus), noise sd 0.5."""
    rng = np.random.default_rng(args.seed)
    out = np.lib.format.open_memmap(args.path, mode="w+", dtype=np.float32, shape=(args.n, args.dim))
    if args.data == "mixture":
        centres = rng.standard_normal((1000, args.dim)).astype(np.float32)
        weights = 1.0 / np.arange(1, 1001)
        weights /= weights.sum()
    for s in range(0, args.n, 1 << 16):
        e = min(s + (1 << 16), args.n)
        block = rng.standard_normal((e - s, args.dim), dtype=np.float32)
        if args.data == "mixture":
            block = centres[rng.choice(1000, e - s, p=weights)] + 0.5 * block
        out[s:e] = block
    out.flush()
    return {"peak_rss_mb": peak_rss_mb()}


def run_ours(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from unisurg.curate.hierarchy import LevelSpec, hierarchical_kmeans

    x = np.load(args.path, mmap_mode="r")
    coarse = args.coarse or int(round(math.sqrt(args.k1)))
    t0 = time.perf_counter()
    h = hierarchical_kmeans(
        x,
        [LevelSpec(args.k1, n_iter=args.iters, coarse_clusters=coarse), LevelSpec(args.k2, n_iter=args.iters)],
        seed=args.seed,
        chunk_size=args.chunk,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    wall = time.perf_counter() - t0
    l1, l2 = h.levels
    np.savez(args.result, c1=l1.centroids, a1=l1.assignment.astype(np.int32), c2=l2.centroids, a2=l2.assignment.astype(np.int32))
    return {"wall_s": wall, "level_s": [l1.seconds, l2.seconds], "coarse_clusters": coarse, "iters": args.iters,
            "threads": args.threads, "peak_rss_mb": peak_rss_mb()}


def run_sklearn(args) -> dict:
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    x = np.load(args.path, mmap_mode="r")
    with threadpool_limits(args.threads):
        t0 = time.perf_counter()
        m1 = MiniBatchKMeans(args.k1, batch_size=args.sk_batch, max_iter=args.sk_epochs, n_init=1, random_state=args.seed).fit(x)
        t1 = time.perf_counter()
        m2 = MiniBatchKMeans(args.k2, batch_size=args.sk_batch, max_iter=100, n_init=1, random_state=args.seed).fit(m1.cluster_centers_)
        t2 = time.perf_counter()
    np.savez(args.result, c1=m1.cluster_centers_.astype(np.float32), a1=m1.labels_.astype(np.int32),
             c2=m2.cluster_centers_.astype(np.float32), a2=m2.labels_.astype(np.int32))
    return {"wall_s": t2 - t0, "level_s": [t1 - t0, t2 - t1], "level1_epochs_run": int(m1.n_iter_), "level1_steps": int(m1.n_steps_),
            "batch_size": args.sk_batch, "threads": args.threads, "peak_rss_mb": peak_rss_mb()}


def assignment_inertia(x, centroids: np.ndarray, labels: np.ndarray, chunk: int = 1 << 16) -> float:
    """Sum over rows of ||x_i - c_{labels_i}||^2, in float64, streamed."""
    total = 0.0
    for s in range(0, len(x), chunk):
        d = np.asarray(x[s : s + chunk], dtype=np.float64) - centroids[labels[s : s + chunk]]
        total += float((d * d).sum())
    return total


def quality(args, result_file: Path) -> dict:
    x = np.load(args.path, mmap_mode="r")
    r = np.load(result_file)
    out = {
        "level1_inertia": assignment_inertia(x, r["c1"].astype(np.float64), r["a1"]),
        "level2_inertia": assignment_inertia(r["c1"], r["c2"].astype(np.float64), r["a2"]),
        "level1_nonempty": int((np.bincount(r["a1"], minlength=len(r["c1"])) > 0).sum()),
        "level1_largest": int(np.bincount(r["a1"]).max()),
    }
    out["level1_inertia_per_point"] = out["level1_inertia"] / len(x)
    return out


def exact_inertia(args, result_file: Path) -> float:
    import torch

    torch.set_num_threads(args.threads)
    from unisurg.curate.kmeans import assign

    _, dist = assign(np.load(args.path, mmap_mode="r"), np.load(result_file)["c1"], chunk_size=args.chunk)
    return float(dist.double().sum())


def child(role: str, args, workdir: Path) -> dict:
    """Run one contender in a fresh interpreter and return its JSON report."""
    report = workdir / f"{role}.json"
    cmd = [sys.executable, __file__, "--worker", role, "--report", str(report)] + args.passthrough
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    subprocess.run(cmd, check=True, env=env)
    return json.loads(report.read_text())


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k1", type=int, default=10_000)
    p.add_argument("--k2", type=int, default=100)
    p.add_argument("--coarse", type=int, default=0, help="coarse clusters for level 1 (0 = sqrt(k1))")
    p.add_argument("--iters", type=int, default=20, help="Lloyd updates per k-means run (unisurg)")
    p.add_argument("--chunk", type=int, default=1 << 15)
    p.add_argument("--sk-epochs", type=int, default=3)
    p.add_argument("--sk-batch", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", choices=["gaussian", "mixture"], default="gaussian")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-sklearn", action="store_true")
    p.add_argument("--exact-inertia", action="store_true")
    p.add_argument("--workdir", type=Path, default=None, help="where the embeddings and results go (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None, help="write the JSON report here as well as to stdout")
    p.add_argument("--worker", choices=["gen", "ours", "sklearn"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--report", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    if args.worker:
        fn = {"gen": generate, "ours": run_ours, "sklearn": run_sklearn}[args.worker]
        args.report.write_text(json.dumps(fn(args)))
        return
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="hkmeans-bench-")
        args.workdir = Path(tmp.name)
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / f"emb_{args.data}_{args.n}x{args.dim}_s{args.seed}.npy"
    args.path = data
    common = ["--n", str(args.n), "--dim", str(args.dim), "--k1", str(args.k1), "--k2", str(args.k2), "--coarse", str(args.coarse),
              "--iters", str(args.iters), "--chunk", str(args.chunk), "--sk-epochs", str(args.sk_epochs), "--sk-batch", str(args.sk_batch),
              "--threads", str(args.threads), "--data", args.data, "--seed", str(args.seed), "--path", str(data)]
    report = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                         if k not in ("worker", "report", "path", "result", "passthrough", "workdir")}}
    if not data.exists():
        args.passthrough = common
        t0 = time.perf_counter()
        child("gen", args, workdir)
        print(f"generated {data} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    roles = ["ours"] + ([] if args.skip_sklearn else ["sklearn"])
    for role in roles:
        result = workdir / f"{role}_result.npz"
        args.passthrough = common + ["--result", str(result)]
        print(f"running {role} ...", file=sys.stderr, flush=True)
        rep = child(role, args, workdir)
        rep.update(quality(args, result))
        if role == "ours" and args.exact_inertia:
            rep["level1_inertia_global_nearest"] = exact_inertia(args, result)
        report[role] = rep
        print(json.dumps({role: rep}), file=sys.stderr, flush=True)
    if "sklearn" in report:
        o, s = report["ours"], report["sklearn"]
        report["ratio"] = {
            "speedup_wall": s["wall_s"] / o["wall_s"],
            "peak_rss_ours_over_sklearn": o["peak_rss_mb"] / s["peak_rss_mb"],
            "level1_inertia_ours_over_sklearn": o["level1_inertia"] / s["level1_inertia"],
            "level2_inertia_ours_over_sklearn": o["level2_inertia"] / s["level2_inertia"],
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
