"""Balanced sampling from a cluster hierarchy (Vo et al. 2024, arXiv 2405.15613, Sec. 4
"Hierarchical sampling"; docs/curation.md, "Balanced sampling (SurgRec)").

Two ways to use a hierarchy whose top-level clusters stand for "concepts":

* :func:`balanced_sample` picks a fixed-size subset, top-down by water-filling: the top-level
  clusters share the target as evenly as their sizes allow, each cluster's share is split the
  same way among its children, and so on down to level 1, where the points are picked at
  random or closest to the centroid. Without replacement: a subset, each point at most once.
* :func:`balanced_weights` gives per-item sampling weights (for a weighted sampler over the
  whole corpus) such that every non-empty top-level cluster gets the same total mass, and,
  recursively, every non-empty child of a cluster the same share of its parent's mass.

Both take either a :class:`~unisurg.curate.hierarchy.HierarchicalClustering` or the bare list
of assignments ``[points -> level 1, level 1 -> level 2, ...]``. All loops are over levels or
bisection steps, never over clusters or points.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

LeafStrategy = Literal["random", "closest"]


def _assignments_of(hierarchy: Any) -> list[np.ndarray]:
    levels = getattr(hierarchy, "levels", None)
    raw = [lv.assignment for lv in levels] if levels is not None else list(hierarchy)
    if not raw:
        raise ValueError("the hierarchy has no levels; pass a HierarchicalClustering or [point->level1, level1->level2, ...]")
    out = []
    for t, a in enumerate(raw, start=1):
        a = np.asarray(a)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"level {t} assignment must be a 1-D integer array, got shape {a.shape} dtype {a.dtype}")
        if len(a) and a.min() < 0:
            raise ValueError(f"level {t} assignment holds negative cluster ids")
        if t > 1 and len(a) < int(out[-1].max()) + 1:
            raise ValueError(f"level {t} assignment covers {len(a)} level-{t - 1} clusters but level {t - 1} uses cluster id {int(out[-1].max())}")
        out.append(a.astype(np.int64))
    return out


def _level_sizes(assignments: list[np.ndarray]) -> list[np.ndarray]:
    """Number of points under each cluster of each level (level 1 first)."""
    sizes = []
    below = np.ones(len(assignments[0]), dtype=np.int64)
    for t, a in enumerate(assignments):
        n_clusters = len(assignments[t + 1]) if t + 1 < len(assignments) else int(a.max()) + 1
        below = np.bincount(a, weights=below, minlength=n_clusters).astype(np.int64)
        sizes.append(below)
    return sizes


def water_fill_cap(sizes: np.ndarray, target: int) -> int:
    """The largest integer cap c with ``sum_k min(c, n_k) <= target`` (all of ``max n`` if the target covers everything)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    lo, hi = 0, int(sizes.max(initial=0))
    if int(sizes.sum()) <= target:
        return hi
    while hi - lo > 1:  # invariant: f(lo) <= target < f(hi)
        mid = (lo + hi) // 2
        if int(np.minimum(sizes, mid).sum()) <= target:
            lo = mid
        else:
            hi = mid
    return lo


def water_fill(sizes: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """How many items each cluster contributes to a sample of ``target`` items (docs/curation.md).

    With c = :func:`water_fill_cap`, cluster k gets ``min(c, n_k)``; the remainder
    ``target - sum_k min(c, n_k)`` (smaller than the number of clusters with ``n_k > c``) goes
    one each to clusters drawn uniformly at random among those above the cap.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    return water_fill_groups(sizes, np.zeros(len(sizes), dtype=np.int64), np.array([target]), rng)


def water_fill_groups(sizes: np.ndarray, group: np.ndarray, quotas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`water_fill` for many groups at once: children with ``sizes`` belong to ``group``,
    group g must contribute ``quotas[g]`` items. Vectorised bisection on each group's cap."""
    sizes = np.asarray(sizes, dtype=np.int64)
    group = np.asarray(group, dtype=np.int64)
    quotas = np.asarray(quotas, dtype=np.int64)
    n_groups = len(quotas)
    totals = np.bincount(group, weights=sizes, minlength=n_groups)
    if np.any(quotas < 0):
        raise ValueError("water-filling quotas must be >= 0")
    over = np.flatnonzero(quotas > totals)
    if len(over):
        g = int(over[0])
        raise ValueError(f"cluster {g} must give {int(quotas[g])} items but holds only {int(totals[g])}")
    largest = np.zeros(n_groups, dtype=np.int64)
    np.maximum.at(largest, group, sizes)
    lo = np.zeros(n_groups, dtype=np.int64)
    hi = largest.copy()
    take_all = totals <= quotas
    lo[take_all] = largest[take_all]
    while True:  # bisection, invariant f_g(lo) <= q_g < f_g(hi) for groups not taking all
        active = (hi - lo > 1) & ~take_all
        if not active.any():
            break
        mid = (lo + hi) // 2
        filled = np.bincount(group, weights=np.minimum(sizes, mid[group]), minlength=n_groups)
        fits = filled <= quotas
        lo = np.where(active & fits, mid, lo)
        hi = np.where(active & ~fits, mid, hi)
    cap = lo
    counts = np.minimum(sizes, cap[group])
    remainder = quotas - np.bincount(group, weights=counts, minlength=n_groups).astype(np.int64)
    above = sizes > cap[group]
    # Random rank among each group's clusters above the cap; the first `remainder` get one more.
    key = rng.random(len(sizes))
    order = np.lexsort((key, ~above, group))
    start = np.concatenate([[0], np.cumsum(np.bincount(group, minlength=n_groups))[:-1]])
    rank = np.empty(len(sizes), dtype=np.int64)
    rank[order] = np.arange(len(sizes)) - start[group[order]]
    counts = counts + (above & (rank < remainder[group]))
    return counts


def balanced_sample(
    hierarchy: Any,
    target_size: int,
    *,
    seed: int = 0,
    leaf_strategy: LeafStrategy = "random",
    distances: np.ndarray | None = None,
) -> np.ndarray:
    """Indices (sorted, distinct) of ``target_size`` points balanced over the top-level clusters.

    Top-down water-filling (:func:`water_fill`) at every level; at level 1 each cluster's quota
    is filled with random points (``"random"``) or the points closest to its centroid
    (``"closest"``, needs ``distances`` to the level-1 centroid, taken from a
    ``HierarchicalClustering`` when one is given; ties by index). Deterministic for a seed.
    """
    assignments = _assignments_of(hierarchy)
    sizes = _level_sizes(assignments)
    n_points = len(assignments[0])
    if not 0 <= target_size <= n_points:
        raise ValueError(f"target_size={target_size} must be between 0 and the {n_points} points (sampling is without replacement; "
                         "use balanced_weights with a weighted sampler to draw more)")
    rng = np.random.default_rng(seed)
    top = len(assignments) - 1
    quotas = water_fill(sizes[top], target_size, rng)
    for t in range(top, 0, -1):  # quotas of level t+1 clusters -> quotas of their level-t children
        quotas = water_fill_groups(sizes[t - 1], assignments[t], quotas, rng)
    if leaf_strategy == "random":
        key = rng.random(n_points)
    elif leaf_strategy == "closest":
        if distances is None:
            levels = getattr(hierarchy, "levels", None)
            if levels is None:
                raise ValueError("leaf_strategy='closest' needs the level-1 distances: pass distances= or a HierarchicalClustering")
            distances = levels[0].distances
        key = np.asarray(distances, dtype=np.float64)
        if key.shape != (n_points,):
            raise ValueError(f"distances has shape {key.shape}, expected ({n_points},)")
    else:
        raise ValueError(f"leaf_strategy={leaf_strategy!r}; use 'random' or 'closest'")
    leaf = assignments[0]
    order = np.lexsort((np.arange(n_points), key, leaf))
    start = np.concatenate([[0], np.cumsum(sizes[0])[:-1]])
    rank = np.arange(n_points) - start[leaf[order]]
    return np.sort(order[rank < quotas[leaf[order]]])


def balanced_weights(hierarchy: Any, *, mode: Literal["recursive", "top"] = "recursive") -> np.ndarray:
    """Per-point sampling weights (float64, summing to 1) that balance the top-level clusters.

    ``"recursive"``: each non-empty top-level cluster gets mass ``1/K_top``; a cluster's mass is
    split equally among its non-empty children, down to level 1, whose mass is split equally
    among its points: ``w(x) = 1/K_top * prod_t 1/children(ancestor_t(x)) * 1/n(c_1(x))``.
    ``"top"``: only the top level is balanced, ``w(x) = 1 / (K_top * n(c_top(x)))``.
    Empty clusters are not counted (their mass would be lost).
    """
    assignments = _assignments_of(hierarchy)
    sizes = _level_sizes(assignments)
    top = len(assignments) - 1
    if mode == "top":
        labels = assignments[0]
        for a in assignments[1:]:
            labels = a[labels]
        k_top = int((sizes[top] > 0).sum())
        return 1.0 / (k_top * sizes[top][labels].astype(np.float64))
    if mode != "recursive":
        raise ValueError(f"mode={mode!r}; use 'recursive' or 'top'")
    mass = (sizes[top] > 0) / float((sizes[top] > 0).sum())
    for t in range(top, 0, -1):
        parent = assignments[t]
        nonempty = sizes[t - 1] > 0
        n_children = np.bincount(parent, weights=nonempty, minlength=len(mass))
        mass = np.where(nonempty, mass[parent] / np.maximum(n_children[parent], 1), 0.0)
    leaf = assignments[0]
    return mass[leaf] / sizes[0][leaf]


__all__ = ["balanced_sample", "balanced_weights", "water_fill", "water_fill_cap", "water_fill_groups"]
