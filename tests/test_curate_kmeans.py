"""k-means, hierarchical k-means and balanced sampling, checked against independent references:
a naive float64 Lloyd loop, scikit-learn's KMeans, brute-force water-filling and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unisurg.curate.balanced import balanced_sample, balanced_weights, water_fill, water_fill_cap, water_fill_groups
from unisurg.curate.hierarchy import LevelSpec, HierarchicalClustering, allocate_proportional, hierarchical_kmeans
from unisurg.curate.kmeans import EmbeddingRows, assign, kmeans, kmeans_plus_plus

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# references written independently of the package


def naive_lloyd(x: np.ndarray, init: np.ndarray, n_iter: int, cosine: bool = False):
    """Textbook Lloyd in float64 with explicit loops; an empty cluster keeps its centroid."""
    x = x.astype(np.float64)
    if cosine:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = init.astype(np.float64).copy()
    if cosine:
        c = c / np.linalg.norm(c, axis=1, keepdims=True)

    def labels_of(c):
        lab = np.zeros(len(x), dtype=np.int64)
        for i in range(len(x)):
            best, best_d = 0, np.inf
            for j in range(len(c)):
                d = (1.0 - float(np.dot(x[i], c[j]))) if cosine else float(np.sum((x[i] - c[j]) ** 2))
                if d < best_d:
                    best, best_d = j, d
            lab[i] = best
        return lab

    for _ in range(n_iter):
        lab = labels_of(c)
        for j in range(len(c)):
            members = x[lab == j]
            if len(members):
                c[j] = members.mean(axis=0)
                if cosine:
                    c[j] /= np.linalg.norm(c[j])
    return c, labels_of(c)


def blobs(sizes, dim=8, spread=1.0, sep=30.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, sep, (len(sizes), dim))
    x = np.concatenate([c + rng.normal(0, spread, (n, dim)) for c, n in zip(centres, sizes)]).astype(np.float32)
    y = np.repeat(np.arange(len(sizes)), sizes)
    return x, y


def brute_cap(sizes, target):
    best = 0
    for c in range(int(max(sizes)) + 1):
        if sum(min(c, n) for n in sizes) <= target:
            best = c
    return best


# ---------------------------------------------------------------------------------------------
# k-means


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_lloyd_matches_naive_float64_reference(metric):
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(m, 1.0, (60, 5)) for m in (-4, 0, 5)]).astype(np.float32)
    init = x[[0, 1, 2, 70, 150, 151, 179]]
    ref_c, ref_l = naive_lloyd(x, init, n_iter=8, cosine=metric == "cosine")
    res = kmeans(x, 7, init=init, n_iter=8, metric=metric, chunk_size=17, stop_when_stable=False)
    np.testing.assert_array_equal(res.labels.numpy(), ref_l)
    np.testing.assert_allclose(res.centroids.numpy(), ref_c, atol=2e-5)
    xs = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
    ref_dist = ((xs - ref_c[ref_l]) ** 2).sum(1) / (2 if metric == "cosine" else 1)
    np.testing.assert_allclose(res.distances.numpy(), ref_dist, rtol=1e-4, atol=1e-4)


def test_memmap_and_shards_give_identical_results(tmp_path):
    x, _ = blobs([300, 200, 100], dim=6, seed=1)
    path = tmp_path / "emb.npy"
    np.save(path, x)
    np.save(tmp_path / "a.npy", x[:250])
    a = kmeans(x, 9, seed=5, chunk_size=64)
    b = kmeans(np.load(path, mmap_mode="r"), 9, seed=5, chunk_size=64)
    c = kmeans([str(tmp_path / "a.npy"), x[250:400], torch.from_numpy(x[400:])], 9, seed=5, chunk_size=64)
    for other in (b, c):
        np.testing.assert_array_equal(a.labels.numpy(), other.labels.numpy())
        np.testing.assert_array_equal(a.centroids.numpy(), other.centroids.numpy())
    rows = EmbeddingRows([x[:250], x[250:]])
    np.testing.assert_array_equal(rows.take(np.array([420, 3, 249, 250]), torch.device("cpu")).numpy(), x[[420, 3, 249, 250]])


def test_kmeans_inertia_close_to_sklearn():
    from sklearn.cluster import KMeans

    x, _ = blobs([400, 300, 200, 100, 50, 30], dim=10, spread=3.0, sep=8.0, seed=2)
    ours = kmeans(x, 12, n_iter=50, seed=0)
    ref = KMeans(12, n_init=1, max_iter=50, random_state=0).fit(x)
    assert ours.inertia <= 1.05 * ref.inertia_
    # assignment to given centroids is exactly "nearest centroid"
    labels, dists = assign(x, ref.cluster_centers_, chunk_size=100)
    np.testing.assert_array_equal(labels.numpy(), ref.predict(x))


def test_kmeans_plus_plus_seeds_every_separated_blob():
    x, y = blobs([1000, 300, 30, 10, 5], dim=4, sep=50.0, seed=4)
    for seed in range(3):
        c = kmeans_plus_plus(torch.from_numpy(x), 5, generator=torch.Generator().manual_seed(seed))
        # every centre is a data row, one per blob
        d = ((x[:, None, :] - c.numpy()[None]) ** 2).sum(-1)
        rows = d.argmin(0)
        assert np.allclose(d[rows, np.arange(5)], 0)
        assert sorted(y[rows]) == [0, 1, 2, 3, 4]


def test_kmeans_deterministic_and_seed_dependent():
    x, _ = blobs([500, 500], dim=6, spread=5.0, sep=3.0, seed=6)
    a, b, c = (kmeans(x, 10, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.centroids.numpy(), b.centroids.numpy())
    assert not np.array_equal(a.labels.numpy(), c.labels.numpy())


def test_kmeans_bad_input_errors():
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="k=30 clusters requested for only 20 rows"):
        kmeans(x, 30)
    bad = x.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        kmeans(bad, 3)
    with pytest.raises(ValueError, match="disagree on the dimension"):
        kmeans([x, x[:, :2]], 3)
    with pytest.raises(ValueError, match="metric"):
        kmeans(x, 3, metric="l1")
    with pytest.raises(ValueError, match="2-D"):
        kmeans(x[0], 3)


# ---------------------------------------------------------------------------------------------
# hierarchy


PLANTED = [5000, 1000, 200, 50, 20]


@pytest.fixture(scope="module")
def planted():
    x, y = blobs(PLANTED, dim=16, spread=1.0, sep=25.0, seed=7)
    h = hierarchical_kmeans(x, [LevelSpec(60, n_iter=15, coarse_clusters=8), LevelSpec(5, resample_steps=2, resample_size=3)], seed=0)
    return x, y, h


def test_hierarchy_structure_and_top_level_recovers_planted_clusters(planted):
    x, y, h = planted
    assert [len(lv.centroids) for lv in h.levels] == [60, 5]
    assert h.levels[0].sizes.sum() == len(x) and h.levels[1].sizes.sum() == len(x)
    np.testing.assert_array_equal(h.levels[1].sizes, np.bincount(h.point_labels(2), minlength=5))
    top = h.point_labels(2)
    # each top-level cluster is exactly one planted cluster
    pairs = {(int(a), int(b)) for a, b in zip(top, y)}
    assert len(pairs) == 5 and len({a for a, _ in pairs}) == 5
    # level 2 really is k-means on level-1 centroids: each centroid is assigned to its nearest top centroid
    d = ((h.levels[0].centroids[:, None] - h.levels[1].centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(h.levels[1].assignment, d.argmin(1))


def test_hierarchy_deterministic_and_roundtrip(planted, tmp_path):
    x, _, h = planted
    h2 = hierarchical_kmeans(x, [LevelSpec(60, n_iter=15, coarse_clusters=8), LevelSpec(5, resample_steps=2, resample_size=3)], seed=0)
    for a, b in zip(h.levels, h2.levels):
        np.testing.assert_array_equal(a.assignment, b.assignment)
        np.testing.assert_array_equal(a.centroids, b.centroids)
    h.save(tmp_path / "h.npz")
    h3 = HierarchicalClustering.load(tmp_path / "h.npz")
    np.testing.assert_array_equal(h3.point_labels(2), h.point_labels(2))
    assert h3.specs == h.specs


def test_coarse_then_split_quality_close_to_full_kmeans():
    from sklearn.cluster import KMeans

    x, _ = blobs([600] * 20, dim=12, spread=2.0, sep=6.0, seed=8)
    h = hierarchical_kmeans(x, [LevelSpec(40, n_iter=30, coarse_clusters=6)], seed=0)
    lv = h.levels[0]
    assert len(np.unique(lv.assignment)) == 40
    # inertia of the returned assignment, recomputed from scratch
    inertia = float(((x - lv.centroids[lv.assignment]) ** 2).sum())
    assert inertia == pytest.approx(lv.inertia, rel=1e-4)
    ref = KMeans(40, n_init=1, max_iter=100, random_state=0).fit(x)
    assert inertia <= 1.15 * ref.inertia_


def test_resampling_spreads_centroids_out_of_dense_region():
    rng = np.random.default_rng(9)
    dense = rng.normal(0, 0.5, (9000, 2))
    sparse = rng.uniform(-20, 20, (1000, 2))
    x = np.concatenate([dense, sparse]).astype(np.float32)
    in_dense = lambda c: int((np.linalg.norm(c, axis=1) < 2.0).sum())  # noqa: E731
    plain = hierarchical_kmeans(x, [LevelSpec(40, n_iter=30)], seed=0).levels[0].centroids
    resampled = hierarchical_kmeans(x, [LevelSpec(40, n_iter=30, resample_steps=5, resample_size=5)], seed=0).levels[0].centroids
    assert in_dense(resampled) < in_dense(plain)


def test_allocate_proportional_hand_cases():
    np.testing.assert_array_equal(allocate_proportional(np.array([50, 30, 20, 0]), 10), [5, 3, 2, 0])
    np.testing.assert_array_equal(allocate_proportional(np.array([1000, 1, 1]), 5), [3, 1, 1])
    np.testing.assert_array_equal(allocate_proportional(np.array([2, 2, 10]), 12), [2, 2, 8])
    # by inertia: two equal-size coarse clusters, the first with 3x the error gets 3x the splits
    np.testing.assert_array_equal(allocate_proportional(np.array([10, 10]), 4, weights=np.array([3.0, 1.0])), [3, 1])
    with pytest.raises(ValueError, match="cannot cover"):
        allocate_proportional(np.array([5, 5, 5]), 2)


def test_hierarchy_rejects_increasing_k():
    x = np.zeros((50, 2), np.float32)
    with pytest.raises(ValueError, match="level 2: n_clusters=20 exceeds the 10 level 1 clusters"):
        hierarchical_kmeans(x, [10, 20])


# ---------------------------------------------------------------------------------------------
# water-filling and balanced sampling


def test_water_fill_hand_computed():
    rng = np.random.default_rng(0)
    assert water_fill_cap(np.array([10, 3, 7, 1]), 12) == 4
    np.testing.assert_array_equal(water_fill(np.array([10, 3, 7, 1]), 12, rng), [4, 3, 4, 1])
    # target 13: cap 4 (sum 12), one extra item to cluster 0 or 2 (the only ones above the cap)
    seen = set()
    for seed in range(20):
        q = water_fill(np.array([10, 3, 7, 1]), 13, np.random.default_rng(seed))
        assert tuple(q) in {(5, 3, 4, 1), (4, 3, 5, 1)}
        seen.add(tuple(q))
    assert len(seen) == 2
    np.testing.assert_array_equal(water_fill(np.array([10, 3, 7, 1]), 21, rng), [10, 3, 7, 1])


def test_water_fill_groups_matches_brute_force():
    rng = np.random.default_rng(1)
    sizes = rng.integers(0, 40, 60)
    group = rng.integers(0, 7, 60)
    totals = np.bincount(group, weights=sizes, minlength=7).astype(int)
    quotas = (totals * rng.random(7)).astype(int)
    got = water_fill_groups(sizes, group, quotas, np.random.default_rng(2))
    for g in range(7):
        s = sizes[group == g]
        c = brute_cap(s, quotas[g]) if len(s) else 0
        q = got[group == g]
        assert q.sum() == quotas[g]
        base = np.minimum(s, c)
        extra = q - base
        assert set(extra.tolist()) <= {0, 1} and np.all(extra[s <= c] == 0)


def test_balanced_sample_flat_over_planted_clusters(planted):
    x, y, h = planted
    target = 100
    idx = balanced_sample(h, target, seed=0)
    assert len(idx) == target and len(np.unique(idx)) == target
    hist = np.bincount(y[idx], minlength=5)
    # tolerance: every planted cluster within +-2 of target/5 (exactly 20 when the top level recovers them)
    assert np.all(np.abs(hist - target // 5) <= 2), hist
    uniform = np.bincount(y[np.random.default_rng(0).choice(len(y), target, replace=False)], minlength=5)
    assert uniform.max() > 0.5 * target  # a uniform sample is dominated by the 5000-point cluster
    # closest-to-centroid leaves: still balanced, and deterministic
    idx_c = balanced_sample(h, target, seed=0, leaf_strategy="closest")
    assert np.all(np.abs(np.bincount(y[idx_c], minlength=5) - 20) <= 2)
    np.testing.assert_array_equal(idx, balanced_sample(h, target, seed=0))
    assert not np.array_equal(idx, balanced_sample(h, target, seed=1))


def test_balanced_sample_recursion_on_hand_hierarchy():
    # points -> 4 leaf clusters (sizes 1, 9, 5, 5) -> 2 top clusters {0, 1} and {2, 3}
    a1 = np.repeat(np.arange(4), [1, 9, 5, 5])
    a2 = np.array([0, 0, 1, 1])
    idx = balanced_sample([a1, a2], 8, seed=3)
    per_leaf = np.bincount(a1[idx], minlength=4)
    # top: 10 and 10 points, target 8 -> 4 each; top 0 -> leaves (1, 9): cap 3 -> 1 + 3; top 1 -> (5, 5): 2 + 2
    np.testing.assert_array_equal(per_leaf, [1, 3, 2, 2])
    d = np.arange(20, 0, -1).astype(float)  # closest = largest index inside each leaf
    idx_c = balanced_sample([a1, a2], 8, seed=3, leaf_strategy="closest", distances=d)
    np.testing.assert_array_equal(idx_c, [0, 7, 8, 9, 13, 14, 18, 19])
    with pytest.raises(ValueError, match="without replacement"):
        balanced_sample([a1, a2], 21)


def test_balanced_weights_equal_mass_recursively():
    a1 = np.repeat(np.arange(5), [1, 9, 5, 5, 30])
    a2 = np.array([0, 0, 1, 1, 1])
    w = balanced_weights([a1, a2])
    assert w.sum() == pytest.approx(1.0)
    top = a2[a1]
    for t in range(2):
        assert w[top == t].sum() == pytest.approx(0.5)
    for leaf, parent in enumerate(a2):
        n_children = int((a2 == parent).sum())
        assert w[a1 == leaf].sum() == pytest.approx(0.5 / n_children)
        assert np.allclose(w[a1 == leaf], w[a1 == leaf][0])
    w_top = balanced_weights([a1, a2], mode="top")
    assert w_top[top == 0].sum() == pytest.approx(0.5) and np.allclose(w_top[top == 1], 0.5 / 40)


def test_balanced_weights_flatten_planted_histogram(planted):
    _, y, h = planted
    w = balanced_weights(h)
    draws = np.random.default_rng(0).choice(len(y), 20000, p=w)
    share = np.bincount(y[draws], minlength=5) / 20000
    assert np.all(np.abs(share - 0.2) < 0.02), share
