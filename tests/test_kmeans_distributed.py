"""k-means and hierarchical k-means across 2 gloo processes (rows sharded by rank) against the one-process run.

The reference is the one-process code path (itself checked against a naive float64 Lloyd loop and
scikit-learn in test_curate_kmeans.py); the distributed run must give the same centroids, labels and
distances up to float summation order, for every option that touches the rows: k-means++ on a
subsample, random init, resampling rounds (labels gathered) and coarse-then-split (splits whose
members are spread over both ranks).
"""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import torchrun
from test_curate_cli import planted  # noqa: F401  (fixture: 500 planted clip embeddings in a store)

from unisurg.curate.command import main as curate_main
from unisurg.curate.hierarchy import (
    HierarchicalClustering,
    LevelSpec,
    hierarchical_kmeans,
)
from unisurg.curate.kmeans import kmeans
from unisurg.curate.row_shards import LocalRows, RankShards, local_positions, rank_slice
from unisurg.rank_exit import hold_process_group, leave_rank

torch.set_num_threads(1)

LEVELS = [
    LevelSpec(24, n_iter=8, resample_steps=1, resample_size=2, coarse_clusters=4),
    LevelSpec(6, n_iter=10, resample_steps=1, resample_size=1),
    LevelSpec(2, n_iter=10),
]


def _data(n=700, dim=6, seed=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 8.0, (12, dim))
    sizes = rng.multinomial(n, np.full(12, 1 / 12))
    return np.concatenate([c + rng.normal(0, 1.0, (m, dim)) for c, m in zip(centres, sizes)]).astype(np.float32)


def _worker(rank: int, world: int, port: int, x: np.ndarray, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    hold_process_group()
    try:
        place = RankShards()
        mine = x[rank_slice(len(x), rank, world)]
        results = {}
        for name, kw in {"pp_sub": dict(init="kmeans++", init_sample_size=300), "random": dict(init="random"),
                         "cosine": dict(metric="cosine", init_sample_size=500)}.items():
            r = kmeans(mine, 9, n_iter=6, seed=11, placement=place, **kw)
            results[name] = (r.centroids.numpy(), place.gather_rows(r.labels).numpy(), place.gather_rows(r.distances).numpy(), r.inertia,
                             r.counts.numpy())
        h = hierarchical_kmeans(mine, LEVELS, seed=5, placement=place)
        if rank == 0:
            np.save(os.path.join(out, "kmeans.npy"), np.array(results, dtype=object), allow_pickle=True)
            h.save(os.path.join(out, "hier.npz"))
    finally:
        dist.destroy_process_group()
    leave_rank(0)  # as a torchrun rank ends (unisurg.rank_exit): no teardown race with gloo's threads


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_positions_and_rank_slices():
    assert [rank_slice(10, r, 3) for r in range(3)] == [slice(0, 3), slice(3, 6), slice(6, 10)]
    assert local_positions(np.array([0, 2, 3, 5, 9]), 3, 3).tolist() == [0, 2]
    one = LocalRows()
    assert one.offset(7) == (0, 7) and one.all_true(True) and not one.all_true(False)


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(tmp_path):
    x = _data()
    mp.spawn(_worker, args=(2, _free_port(), x, str(tmp_path)), nprocs=2, join=True)
    got = np.load(tmp_path / "kmeans.npy", allow_pickle=True).item()
    for name, kw in {"pp_sub": dict(init="kmeans++", init_sample_size=300), "random": dict(init="random"),
                     "cosine": dict(metric="cosine", init_sample_size=500)}.items():
        ref = kmeans(x, 9, n_iter=6, seed=11, **kw)
        c, labels, dists, inertia, counts = got[name]
        np.testing.assert_allclose(c, ref.centroids.numpy(), rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(labels, ref.labels.numpy(), err_msg=name)
        np.testing.assert_allclose(dists, ref.distances.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_array_equal(counts, ref.counts.numpy(), err_msg=name)
        assert inertia == pytest.approx(ref.inertia, rel=1e-5)

    one = hierarchical_kmeans(x, LEVELS, seed=5)
    two = HierarchicalClustering.load(tmp_path / "hier.npz")
    assert two.n_levels == 3 and two.n_points == len(x)
    for t, (a, b) in enumerate(zip(one.levels, two.levels), start=1):
        np.testing.assert_array_equal(b.assignment, a.assignment, err_msg=f"level {t}")
        np.testing.assert_array_equal(b.sizes, a.sizes, err_msg=f"level {t}")
        np.testing.assert_allclose(b.centroids, a.centroids, rtol=1e-5, atol=1e-5, err_msg=f"level {t}")
        np.testing.assert_allclose(b.distances, a.distances, rtol=1e-4, atol=1e-4, err_msg=f"level {t}")
        assert b.inertia == pytest.approx(a.inertia, rel=1e-5)


@pytest.mark.slow
def test_curate_cluster_under_torchrun_writes_the_one_process_selection(planted, tmp_path):
    """``torchrun --nproc_per_node=2 -m unisurg.cli curate cluster``: each rank maps its half of the
    embedding shards; rank 0 writes the same selection and hierarchy as one process."""
    store, idx, _ = planted
    args = ["curate", "cluster", str(store), "--embeddings", str(idx.folder), "--levels", "20,5", "--target", "100",
            "--coarse", "4,0", "--resample-steps", "1,0", "--seed", "3", "--iters", "8"]
    assert curate_main(args + ["--out", str(tmp_path / "one.json")]) == 0
    done = torchrun("-m", "unisurg.cli", *args, "--out", str(tmp_path / "two.json"), timeout=300)
    assert done.stdout.count("subset selection of 100") == 1  # rank 0 reports, rank 1 stays quiet
    one, two = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    for doc in (one, two):
        doc.pop("seconds", None), doc.pop("created")
        doc.get("params", {}).pop("seconds", None)
        doc["clustering"].pop("hierarchy_file")
        doc["clustering"]["inertia"] = [round(v, 2) for v in doc["clustering"]["inertia"]]
    assert one == two
    h1, h2 = HierarchicalClustering.load(tmp_path / "one.hierarchy.npz"), HierarchicalClustering.load(tmp_path / "two.hierarchy.npz")
    for a, b in zip(h1.levels, h2.levels):
        np.testing.assert_array_equal(a.assignment, b.assignment)
        np.testing.assert_allclose(a.centroids, b.centroids, rtol=1e-5, atol=1e-4)
