"""Samplers over clip datasets: UniSurg's specialty/dataset-balanced sampler and a uniform one.

Both are deterministic for (seed, epoch), give each DDP rank a disjoint share of the epoch's
draw, and can resume mid-epoch (``state_dict`` / ``load_state_dict`` carry the position).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler


def balanced_weights(datasets: Sequence[str], specialties: Sequence[str]) -> np.ndarray:
    """UniSurg balanced sampling (paper section 4.1, "Pretraining Details"; docs/data.md): w(x) ∝ 1 / (N_d · |D_s|).

    N_d = number of samples of x's dataset d, |D_s| = number of datasets in x's specialty s.
    Every specialty gets the same total mass, shared equally by its datasets. A dataset is
    identified by its name; if one name appears under two specialties, each (dataset, specialty)
    pair counts as its own dataset. Returns float64 weights summing to 1.
    """
    if len(datasets) != len(specialties):
        raise ValueError("datasets and specialties must have the same length")
    if len(datasets) == 0:
        raise ValueError("no samples to weight")
    pairs = list(zip(specialties, datasets))
    n_d = Counter(pairs)
    d_per_s = Counter(s for s, _ in n_d)
    w = np.array([1.0 / (n_d[p] * d_per_s[p[0]]) for p in pairs], dtype=np.float64)
    return w / w.sum()


def _dist_info(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    if num_replicas is None:
        num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if rank is None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank {rank} outside [0, {num_replicas})")
    return num_replicas, rank


class _EpochSampler(Sampler[int]):
    """Shared machinery: a global per-epoch draw, split by position among ranks."""

    def __init__(self, num_samples: int, *, seed: int, num_replicas: int | None, rank: int | None):
        self.world, self.rank = _dist_info(num_replicas, rank)
        self.seed = int(seed)
        self.epoch = 0
        self.start = 0  # position within this rank's share, for mid-epoch resume
        self.per_rank = -(-num_samples // self.world)  # ceil: every rank the same length (DDP)
        self.total = self.per_rank * self.world

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch])

    def _draw(self) -> np.ndarray:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.start = 0

    def __len__(self) -> int:
        return self.per_rank - self.start

    def __iter__(self) -> Iterator[int]:
        share = self._draw()[self.rank::self.world]
        return iter(share[self.start:].tolist())

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed, "world": self.world}

    def load_state_dict(self, state: dict) -> None:
        if state.get("world", self.world) != self.world:
            raise ValueError(f"sampler state was saved with {state['world']} ranks, now {self.world}; "
                             "mid-epoch resume needs the same world size")
        self.seed, self.epoch, self.start = state["seed"], state["epoch"], state["start"]

    def advance(self, n: int) -> None:
        """Mark ``n`` more samples of this rank's share as consumed (call once per sample trained on)."""
        self.start += n


class BalancedSampler(_EpochSampler):
    """Draws ``num_samples`` indices per epoch with replacement, P(i) = balanced_weights(...)[i]
    (or the ``weights`` given).

    Sampling is by inverse CDF on float64 cumulative weights: exact for any corpus size
    (``torch.multinomial`` is limited to 2^24 categories).
    """

    def __init__(self, datasets: Sequence[str], specialties: Sequence[str], *, num_samples: int | None = None,
                 seed: int = 0, num_replicas: int | None = None, rank: int | None = None,
                 weights: np.ndarray | None = None):
        if weights is None:
            self.weights = balanced_weights(datasets, specialties)
        else:  # precomputed per-sample weights, e.g. SurgRec's cluster-balanced ones (unisurg curate cluster)
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (len(datasets),) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
                raise ValueError(f"weights must be {len(datasets)} finite non-negative numbers with a positive sum")
            self.weights = w / w.sum()
        self.cdf = np.cumsum(self.weights)
        self.cdf[-1] = 1.0
        super().__init__(num_samples or len(self.weights), seed=seed, num_replicas=num_replicas, rank=rank)

    def _draw(self) -> np.ndarray:
        u = self._rng().random(self.total)
        return np.searchsorted(self.cdf, u, side="right").clip(max=len(self.cdf) - 1)


class UniformSampler(_EpochSampler):
    """A shuffled permutation per epoch (without replacement), padded by wrap-around to divide evenly among ranks."""

    def __init__(self, n: int, *, seed: int = 0, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True):
        if n <= 0:
            raise ValueError("no samples to draw from")
        self.n = n
        self.shuffle = shuffle
        super().__init__(n, seed=seed, num_replicas=num_replicas, rank=rank)

    def _draw(self) -> np.ndarray:
        perm = self._rng().permutation(self.n) if self.shuffle else np.arange(self.n)
        if self.total > self.n:
            perm = np.concatenate([perm, perm[: self.total - self.n]])
        return perm
