"""Chunked k-means in torch: k-means++ seeding and Lloyd iterations with bounded memory.

The embeddings never have to fit in memory: anything row-indexable works (a torch tensor, a
numpy array or ``np.memmap``, a ``.npy`` path, or a list of such shards). Each pass streams the
rows in chunks, so the largest temporary is ``chunk_rows x K`` distances, never ``N x K``.

Distances are matrix products, ``||x||^2 - 2 x.c + ||c||^2`` in float32 (argmin per chunk);
centroid sums accumulate with ``index_add_`` in float32 within a chunk and in float64 across
chunks, so their accuracy does not degrade with N. On CPU a run is bitwise deterministic for a seed; on CUDA ``index_add_`` adds in a
non-deterministic order, so centroids may differ in the last float64 bits.

Metric ``"l2"`` is squared Euclidean. Metric ``"cosine"`` is spherical k-means: rows and
centroids are L2-normalised and the distance is ``1 - cos`` (half the squared Euclidean distance
of the normalised vectors), the centroid update is the normalised mean.

Across processes (torchrun): pass ``placement=RankShards()`` and each rank's contiguous slice of the
rows (:mod:`unisurg.curate.row_shards`); the centroids are then those of one process on all rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import torch

from unisurg.curate.row_shards import LocalRows, RowPlacement, local_positions

Metric = Literal["l2", "cosine"]
METRICS = ("l2", "cosine")

# Cap on chunk_rows * K float32 distances held at once (128 MiB).
MAX_CHUNK_ELEMENTS = 1 << 25
# Subsets up to this many rows are gathered once and kept for all Lloyd iterations.
RESIDENT_ROWS = 1 << 16
EPS = 1e-12


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not supported; use one of {METRICS}")


def rng_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys (seed, level, cluster, step...), independent per key tuple."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2, np.uint64)[0] >> 1)


# ---------------------------------------------------------------------------------------------
# Row access


class EmbeddingRows:
    """Row-range and row-index access to an ``N x D`` embedding matrix that may live on disk.

    Accepts a 2-D torch tensor, a 2-D numpy array or memmap, a path to a ``.npy`` file (memory
    mapped), an object with a 2-D ``shape`` that slices like an array (h5py, zarr), or a
    sequence of those, read as consecutive shards of one matrix.
    """

    def __init__(self, data: Any):
        if isinstance(data, EmbeddingRows):
            self.shards, self.offsets, self.dim = data.shards, data.offsets, data.dim
            return
        if isinstance(data, (list, tuple)):
            if not data:
                raise ValueError("embeddings: an empty list of shards was given; pass at least one N x D array")
            shards = [self._open(s, f"shard {i}") for i, s in enumerate(data)]
        else:
            shards = [self._open(data, "embeddings")]
        dims = {int(s.shape[1]) for s in shards}
        if len(dims) != 1:
            found = ", ".join(f"shard {i}: {tuple(s.shape)}" for i, s in enumerate(shards))
            raise ValueError(f"embedding shards disagree on the dimension ({found}); every shard must be N_i x D with the same D")
        self.shards = shards
        self.offsets = np.cumsum([0] + [int(s.shape[0]) for s in shards]).astype(np.int64)
        self.dim = dims.pop()

    @staticmethod
    def _open(obj: Any, what: str) -> Any:
        if isinstance(obj, (str, Path)):
            path = Path(obj)
            if path.suffix != ".npy":
                raise ValueError(f"{what}: {path} is not a .npy file; save embeddings with np.save or pass an array")
            if not path.is_file():
                raise FileNotFoundError(f"{what}: embedding file {path} does not exist")
            obj = np.load(path, mmap_mode="r")
        shape = getattr(obj, "shape", None)
        if shape is None or len(shape) != 2:
            raise ValueError(f"{what}: expected a 2-D N x D array of embeddings, got shape {shape}")
        dtype = getattr(obj, "dtype", None)
        if isinstance(obj, torch.Tensor):
            if not obj.dtype.is_floating_point:
                raise ValueError(f"{what}: embeddings must be floating point, got {obj.dtype}")
        elif dtype is not None and not np.issubdtype(np.dtype(dtype), np.floating):
            raise ValueError(f"{what}: embeddings must be floating point, got {dtype}")
        return obj

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def slice(self, rows: slice) -> "EmbeddingRows":
        """Rows ``rows.start:rows.stop`` as a new :class:`EmbeddingRows`, without reading them
        (memmaps and tensors slice lazily): a rank's shard of the matrix."""
        start, stop, _ = rows.indices(len(self))
        parts = []
        for s, shard in enumerate(self.shards):
            lo, hi = int(self.offsets[s]), int(self.offsets[s + 1])
            a, b = max(start, lo) - lo, min(stop, hi) - lo
            if b > a:
                parts.append(shard[a:b])
        return EmbeddingRows(parts if parts else [self.shards[0][0:0]])

    @staticmethod
    def _as_tensor(block: Any, device: torch.device) -> torch.Tensor:
        if isinstance(block, torch.Tensor):
            return block.to(device=device, dtype=torch.float32)
        # A copy: memmaps are read-only and torch wants a writable, contiguous float32 buffer.
        return torch.from_numpy(np.array(block, dtype=np.float32, copy=True)).to(device)

    def read(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """Rows ``start:stop`` as float32 on ``device``; may span shard boundaries."""
        parts = []
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        for s in range(first, len(self.shards)):
            lo, hi = int(self.offsets[s]), int(self.offsets[s + 1])
            if lo >= stop:
                break
            a, b = max(start, lo) - lo, min(stop, hi) - lo
            if b > a:
                parts.append(self._as_tensor(self.shards[s][a:b], device))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def take(self, index: np.ndarray, device: torch.device) -> torch.Tensor:
        """Rows at ``index`` (int64, any order) as float32 on ``device``."""
        index = np.asarray(index, dtype=np.int64)
        if len(index) == 0:  # a rank may hold none of a subset's rows
            return torch.empty(0, self.dim, dtype=torch.float32, device=device)
        order = np.argsort(index, kind="stable")
        sorted_idx = index[order]
        shard_of = np.searchsorted(self.offsets, sorted_idx, side="right") - 1
        parts = []
        for s in np.unique(shard_of):
            local = sorted_idx[shard_of == s] - self.offsets[s]
            shard = self.shards[s]
            if isinstance(shard, torch.Tensor):
                parts.append(shard[torch.from_numpy(local).to(shard.device)].to(device=device, dtype=torch.float32))
            else:
                parts.append(self._as_tensor(shard[local], device))
        out = parts[0] if len(parts) == 1 else torch.cat(parts)
        if not np.array_equal(order, np.arange(len(order))):
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            out = out[torch.from_numpy(inverse).to(out.device)]
        return out


class RowView:
    """A subset of rows (``index``, or all rows) streamed in chunks, kept resident when small."""

    def __init__(self, rows: EmbeddingRows, index: np.ndarray | None, device: torch.device, metric: str):
        self.rows, self.index, self.device, self.metric = rows, index, device, metric
        self.n = len(rows) if index is None else len(index)
        self._resident: torch.Tensor | None = None
        if self.n <= RESIDENT_ROWS:
            self._resident = self._load(0, self.n)

    def _load(self, start: int, stop: int) -> torch.Tensor:
        if stop <= start:
            return torch.empty(0, self.rows.dim, dtype=torch.float32, device=self.device)
        if self.index is None:
            x = self.rows.read(start, stop, self.device)
        else:
            x = self.rows.take(self.index[start:stop], self.device)
        if self.metric == "cosine":
            x = normalize_rows(x)
        return x

    def chunks(self, chunk_rows: int) -> Iterator[tuple[int, torch.Tensor]]:
        for start in range(0, self.n, chunk_rows):
            stop = min(start + chunk_rows, self.n)
            if self._resident is not None:
                yield start, self._resident[start:stop]
            else:
                yield start, self._load(start, stop)

    def gather(self, local: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Rows at positions ``local`` of this view."""
        local_np = local.cpu().numpy() if isinstance(local, torch.Tensor) else np.asarray(local)
        if self._resident is not None:
            return self._resident[torch.from_numpy(local_np.astype(np.int64)).to(self.device)]
        glob = local_np if self.index is None else self.index[local_np]
        x = self.rows.take(glob, self.device)
        return normalize_rows(x) if self.metric == "cosine" else x


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """Unit L2 norm per row (zero rows stay zero) -- the cosine metric's projection."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(EPS)


def chunk_rows_for(chunk_size: int, k: int) -> int:
    """Rows per chunk so that ``rows x k`` distances stay under ``MAX_CHUNK_ELEMENTS``."""
    return max(1, min(int(chunk_size), MAX_CHUNK_ELEMENTS // max(int(k), 1)))


# ---------------------------------------------------------------------------------------------
# Distances and assignment


def nearest_score(x: torch.Tensor, centroids: torch.Tensor, c_sqnorm: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid per row and its score, a distance up to a per-row constant.

    l2: score ``||c||^2 - 2 x.c`` (the expanded square ``||x||^2 - 2 x.c + ||c||^2`` without
    ``||x||^2``, which does not change the argmin; one GEMM). cosine: ``-x.c`` (x, c normalised).
    """
    if metric == "l2":
        best, label = torch.addmm(c_sqnorm.unsqueeze(0), x, centroids.T, alpha=-2.0).min(dim=1)
    else:
        best, label = torch.mm(x, centroids.T).neg_().min(dim=1)
    return label, best


def score_to_distance(score: torch.Tensor, x: torch.Tensor, metric: str) -> torch.Tensor:
    """Squared L2 (``score + ||x||^2``) or ``1 - cos`` (``1 + score``), clamped at 0 against cancellation."""
    if metric == "l2":
        return (score + (x * x).sum(dim=1)).clamp_min_(0.0)
    return (1.0 + score).clamp_min_(0.0)


def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of and distance to the nearest centroid for each row of ``x``."""
    label, score = nearest_score(x, centroids, (centroids * centroids).sum(dim=1), metric)
    return label, score_to_distance(score, x, metric)


def _lloyd_pass(view: RowView, centroids: torch.Tensor, metric: str, chunk_rows: int, accumulate: bool):
    """One streaming pass over the rows.

    ``accumulate``: labels plus per-cluster sums and counts (Lloyd's E-step and the M-step's
    statistics; distances are not needed, so ``dists`` is None). Otherwise: labels and distances.
    Also counts rows whose best score is non-finite (NaN/inf embeddings).
    """
    k, dim = centroids.shape
    device = centroids.device
    labels = torch.empty(view.n, dtype=torch.int64, device=device)
    dists = None if accumulate else torch.empty(view.n, dtype=torch.float32, device=device)
    sums = torch.zeros(k, dim, dtype=torch.float64, device=device) if accumulate else None
    counts = torch.zeros(k, dtype=torch.int64, device=device) if accumulate else None
    partial = torch.zeros(k, dim, dtype=torch.float32, device=device) if accumulate else None
    ones = torch.ones(min(chunk_rows, view.n), dtype=torch.int64, device=device) if accumulate else None
    nonfinite = torch.zeros((), dtype=torch.int64, device=device)
    c_sqnorm = (centroids * centroids).sum(dim=1)
    for start, x in view.chunks(chunk_rows):
        label, score = nearest_score(x, centroids, c_sqnorm, metric)
        labels[start : start + len(x)] = label
        nonfinite += (~torch.isfinite(score)).sum()
        if accumulate:
            # float32 within a chunk (cheap), float64 across chunks (accuracy independent of N)
            partial.zero_().index_add_(0, label, x)
            sums += partial
            counts.index_add_(0, label, ones[: len(label)])  # bincount would sync on CUDA
        else:
            dists[start : start + len(x)] = score_to_distance(score, x, metric)
    return labels, dists, sums, counts, nonfinite


def _check_finite(nonfinite: torch.Tensor, what: str) -> None:
    bad = int(nonfinite)
    if bad:
        raise ValueError(f"{what}: {bad} rows have non-finite (NaN/inf) embeddings or distances; clean or drop them before clustering")


def update_centroids(sums: torch.Tensor, counts: torch.Tensor, previous: torch.Tensor, metric: str) -> torch.Tensor:
    """Lloyd's M-step: the mean of each cluster's rows; an empty cluster keeps its previous centroid.

    For the cosine metric the mean is renormalised (spherical k-means).
    """
    mean = (sums / counts.clamp_min(1).unsqueeze(1).to(sums.dtype)).to(previous.dtype)
    new = torch.where((counts > 0).unsqueeze(1), mean, previous)
    return normalize_rows(new) if metric == "cosine" else new


# ---------------------------------------------------------------------------------------------
# Initialisation


def kmeans_plus_plus(
    x: torch.Tensor,
    k: int,
    *,
    metric: Metric = "l2",
    generator: torch.Generator,
    n_local_trials: int | None = None,
    chunk_rows: int = 1 << 15,
) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007) on the rows of ``x``.

    The first centre is uniform; each next one is the best, by resulting potential, of
    ``n_local_trials`` candidates drawn with probability proportional to the current distance
    to the nearest chosen centre (D^2 sampling; for cosine, ``1 - cos``, which is proportional to
    the squared distance of normalised vectors). ``n_local_trials=None`` means ``2 + floor(ln k)``
    (as scikit-learn); 1 is plain k-means++. Random draws come from ``generator`` (a CPU
    generator), so the seeding is the same on CPU and CUDA up to float rounding; no host sync.
    """
    n = x.shape[0]
    if k > n:
        raise ValueError(f"k-means++: cannot choose {k} centres from {n} rows")
    trials = 2 + int(math.log(k)) if n_local_trials is None else int(n_local_trials)
    if trials < 1:
        raise ValueError(f"n_local_trials must be >= 1, got {n_local_trials}")
    device = x.device
    if metric == "cosine":
        x = normalize_rows(x)
    x_sq = (x * x).sum(dim=1)

    def dist_to(c: torch.Tensor) -> torch.Tensor:  # [n, m] distances from rows to centres c
        out = torch.empty(n, c.shape[0], dtype=torch.float32, device=device)
        c_sq = (c * c).sum(dim=1)
        for s in range(0, n, chunk_rows):
            xs = x[s : s + chunk_rows]
            if metric == "l2":
                out[s : s + len(xs)] = (torch.addmm(c_sq.unsqueeze(0), xs, c.T, alpha=-2.0) + x_sq[s : s + len(xs), None]).clamp_min_(0.0)
            else:
                out[s : s + len(xs)] = (1.0 - xs @ c.T).clamp_min_(0.0)
        return out

    centres = torch.empty(k, x.shape[1], dtype=x.dtype, device=device)
    first = torch.randint(n, (1,), generator=generator).to(device)
    centres[0] = x[first[0]]
    closest = dist_to(x[first]).squeeze(1)
    for i in range(1, k):
        u = torch.rand(trials, generator=generator, dtype=torch.float64).to(device)
        cdf = torch.cumsum(closest.to(torch.float64), dim=0)
        cand = torch.searchsorted(cdf, u * cdf[-1], right=True).clamp_(max=n - 1)
        d = torch.minimum(dist_to(x[cand]), closest.unsqueeze(1))
        best = d.to(torch.float64).sum(dim=0).argmin()
        centres[i] = x[cand[best]]
        closest = d[:, best]
    return centres


def default_init_sample_size(n: int, k: int) -> int:
    """Rows used for k-means++: ``min(n, max(64 k, 16384), 131072)`` (bounds the seeding memory)."""
    return int(min(n, max(64 * k, 16384), 1 << 17))


# ---------------------------------------------------------------------------------------------
# k-means


@dataclass
class KMeansResult:
    """Outcome of :func:`kmeans`. Tensors live on the device the run used.

    ``labels[i]``/``distances[i]`` refer to the i-th clustered row (of ``index`` if one was
    given); ``inertia`` is the sum of ``distances`` (squared L2, or ``1 - cos``).
    """

    centroids: torch.Tensor
    labels: torch.Tensor
    distances: torch.Tensor
    counts: torch.Tensor
    inertia: float
    n_iter: int


def kmeans(
    data: Any,
    k: int,
    *,
    n_iter: int = 20,
    metric: Metric = "l2",
    init: Literal["kmeans++", "random"] | torch.Tensor | np.ndarray = "kmeans++",
    seed: int = 0,
    index: np.ndarray | None = None,
    chunk_size: int = 1 << 15,
    device: str | torch.device | None = None,
    init_sample_size: int | None = None,
    n_local_trials: int | None = None,
    stop_when_stable: bool = True,
    placement: RowPlacement | None = None,
) -> KMeansResult:
    """k-means (Lloyd) with k-means++ seeding, streaming the rows in chunks.

    ``data``: anything :class:`EmbeddingRows` accepts. ``index``: cluster only these rows.
    ``n_iter``: centroid updates (a fixed count, as the reference algorithm); with
    ``stop_when_stable`` the loop ends early once no label changes (then further updates would
    not move any centroid). After the last update every row is reassigned, so labels and
    distances always refer to the returned centroids. ``init``: ``"kmeans++"`` (on a random
    subsample of ``init_sample_size`` rows, default :func:`default_init_sample_size`),
    ``"random"`` (distinct random rows) or a ``k x D`` array of initial centroids.
    ``device``: where to compute (default: the tensor's device, else CPU).
    ``placement``: :class:`~unisurg.curate.row_shards.RankShards` when ``data`` (and ``index``)
    are this rank's shard of rows sharded over torch.distributed; every rank then computes the same
    centroids as one process would on all rows (the k-means++ sample is gathered to every rank and
    seeded by the shared ``seed``; Lloyd sums and counts are all-reduced), while ``labels`` and
    ``distances`` are this rank's rows only. Default: all rows in this process.
    """
    _check_metric(metric)
    place = placement if placement is not None else LocalRows()
    rows = EmbeddingRows(data)
    if device is None:
        first = rows.shards[0]
        device = first.device if isinstance(first, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    if index is not None:
        index = np.asarray(index, dtype=np.int64)
        if index.ndim != 1:
            raise ValueError(f"index must be 1-D row numbers, got shape {index.shape}")
        if len(index) and (index.min() < 0 or index.max() >= len(rows)):
            raise ValueError(f"index holds rows outside 0..{len(rows) - 1}")
    n_local = len(rows) if index is None else len(index)
    start, n = place.offset(n_local)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > n:
        raise ValueError(f"k={k} clusters requested for only {n} rows; use k <= number of rows")
    if n_iter < 0:
        raise ValueError(f"n_iter must be >= 0, got {n_iter}")
    view = RowView(rows, index, device, metric)
    generator = torch.Generator().manual_seed(int(seed))
    centroids = _initial_centroids(view, k, init, metric, generator, init_sample_size, n_local_trials, rows.dim, place, start, n)
    chunk_rows = chunk_rows_for(chunk_size, k)

    labels = None
    done = 0
    for it in range(n_iter):
        new_labels, _, sums, counts, nonfinite = _lloyd_pass(view, centroids, metric, chunk_rows, accumulate=True)
        place.sum_(sums)
        place.sum_(counts)
        if it == 0:
            _check_finite(place.sum_(nonfinite), "kmeans")
        if stop_when_stable and labels is not None and place.all_true(torch.equal(new_labels, labels)):
            break  # the update from identical labels would reproduce the current centroids
        labels = new_labels
        centroids = update_centroids(sums, counts, centroids, metric)
        done += 1
    # Final assignment to the returned centroids (this pass also yields the distances).
    labels, dists, _, _, nonfinite = _lloyd_pass(view, centroids, metric, chunk_rows, accumulate=False)
    if n_iter == 0:
        _check_finite(place.sum_(nonfinite), "kmeans")
    counts = place.sum_(torch.bincount(labels, minlength=k))
    inertia = float(place.sum_(dists.to(torch.float64).sum()))
    return KMeansResult(centroids=centroids, labels=labels, distances=dists, counts=counts, inertia=inertia, n_iter=done)


def _initial_centroids(view: RowView, k, init, metric, generator, init_sample_size, n_local_trials, dim,
                       place: RowPlacement, start: int, n: int) -> torch.Tensor:
    """Initial centroids from rows drawn out of all ``n`` rows (every rank draws the same global
    positions with the shared ``generator``, gathers its own and receives the others')."""
    if isinstance(init, (torch.Tensor, np.ndarray)):
        c = torch.as_tensor(np.asarray(init) if isinstance(init, np.ndarray) else init).to(view.device, torch.float32)
        if tuple(c.shape) != (k, dim):
            raise ValueError(f"init centroids have shape {tuple(c.shape)}, expected ({k}, {dim})")
        return normalize_rows(c) if metric == "cosine" else c.clone()
    if init == "random":
        pick = torch.sort(torch.randperm(n, generator=generator)[:k]).values.numpy()
        return place.gather_rows(view.gather(local_positions(pick, start, view.n))).clone()
    if init != "kmeans++":
        raise ValueError(f"init={init!r} is not supported; use 'kmeans++', 'random' or a k x D array")
    size = default_init_sample_size(n, k) if init_sample_size is None else int(min(n, init_sample_size))
    if size < k:
        raise ValueError(f"init_sample_size={init_sample_size} is smaller than k={k}")
    if size == n:
        local = torch.cat([x for _, x in view.chunks(1 << 16)]) if view._resident is None else view._resident
    else:
        pick = torch.sort(torch.randperm(n, generator=generator)[:size]).values.numpy()
        local = view.gather(local_positions(pick, start, view.n))
    sample = place.gather_rows(local)
    return kmeans_plus_plus(sample, k, metric=metric, generator=generator, n_local_trials=n_local_trials)


def assign(
    data: Any,
    centroids: torch.Tensor | np.ndarray,
    *,
    metric: Metric = "l2",
    index: np.ndarray | None = None,
    chunk_size: int = 1 << 15,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid and distance for every row (or every row in ``index``), streamed in chunks."""
    _check_metric(metric)
    rows = EmbeddingRows(data)
    c = torch.as_tensor(np.asarray(centroids) if isinstance(centroids, np.ndarray) else centroids)
    if c.ndim != 2 or c.shape[1] != rows.dim:
        raise ValueError(f"centroids have shape {tuple(c.shape)}; expected K x {rows.dim}")
    device = torch.device(device) if device is not None else (c.device if isinstance(c, torch.Tensor) else torch.device("cpu"))
    c = c.to(device, torch.float32)
    if metric == "cosine":
        c = normalize_rows(c)
    view = RowView(rows, None if index is None else np.asarray(index, dtype=np.int64), device, metric)
    labels, dists, _, _, nonfinite = _lloyd_pass(view, c, metric, chunk_rows_for(chunk_size, len(c)), accumulate=False)
    _check_finite(nonfinite, "assign")
    return labels, dists


def rows_per_cluster(labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers grouped by cluster: ``(order, starts)`` with cluster j's rows in ``order[starts[j]:starts[j+1]]``."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=k))]).astype(np.int64)
    return order, starts


__all__: Sequence[str] = [
    "EmbeddingRows",
    "KMeansResult",
    "Metric",
    "assign",
    "kmeans",
    "kmeans_plus_plus",
    "nearest_centroid",
    "normalize_rows",
    "rng_seed",
    "rows_per_cluster",
    "update_centroids",
]
