"""The k-means's view of where its rows live: all in this process, or sharded by rank over torch.distributed.

Distributed k-means (the layout of Vo et al. 2024's public release, which runs on torch.distributed):
every rank holds a contiguous slice of the rows, rank 0 the first. The global row order is the
concatenation of the ranks' slices, so a subset (``index``) is also ordered rank by rank, exactly
as the same rows would be ordered in one process. The k-means needs four collectives:

* ``offset(n_local)``: where this rank's rows start in the global order, and the global count;
* ``sum_(t)``: an in-place all-reduce sum (Lloyd's per-cluster sums and counts, inertia);
* ``all_true(flag)``: did every rank see no label change;
* ``gather_rows(t)``: the ranks' row blocks concatenated in rank order on every rank (the
  k-means++ sample, the labels a resampling round needs).

:class:`LocalRows` is the one-process case (identity operations); :class:`RankShards` uses the
default process group (gloo on CPU, NCCL on CUDA: tensors then live on this rank's GPU).
"""

from __future__ import annotations

import datetime
import os

import numpy as np
import torch
import torch.distributed as dist

from unisurg.device import resolve_device
from unisurg.rank_exit import hold_process_group


class LocalRows:
    """Every row is in this process: the collectives are identities."""

    rank, world = 0, 1

    def offset(self, n_local: int) -> tuple[int, int]:
        return 0, int(n_local)

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def all_true(self, flag: bool) -> bool:
        return bool(flag)

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        return t


class RankShards:
    """Rows sharded by rank over the default ``torch.distributed`` process group."""

    def __init__(self, group=None):
        if not dist.is_initialized():
            raise RuntimeError("RankShards needs torch.distributed initialised (launch with torchrun; see docs/distributed.md)")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        # NCCL reduces CUDA tensors only; gloo takes CPU tensors.
        self.device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else torch.device("cpu")

    def _counts(self, n_local: int) -> list[int]:
        t = torch.zeros(self.world, dtype=torch.int64, device=self.device)
        t[self.rank] = int(n_local)
        dist.all_reduce(t, group=self.group)
        return [int(v) for v in t.cpu()]

    def offset(self, n_local: int) -> tuple[int, int]:
        counts = self._counts(n_local)
        return sum(counts[: self.rank]), sum(counts)

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        if t.device == self.device:
            dist.all_reduce(t, group=self.group)
            return t
        moved = t.to(self.device)
        dist.all_reduce(moved, group=self.group)
        return t.copy_(moved)

    def all_true(self, flag: bool) -> bool:
        t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.group)
        return bool(t.item())

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Blocks of different lengths: padded to the longest for ``all_gather``, trimmed after."""
        counts = self._counts(t.shape[0])
        longest = max(counts)
        padded = torch.zeros((longest,) + tuple(t.shape[1:]), dtype=t.dtype, device=self.device)
        padded[: t.shape[0]] = t.to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.group)
        return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(t.device)


RowPlacement = LocalRows | RankShards


def rank_slice(n: int, rank: int, world: int) -> slice:
    """Rows ``[rank * n // world, (rank + 1) * n // world)``: contiguous, in rank order, sizes differing by at most one."""
    return slice(rank * n // world, (rank + 1) * n // world)


def placement_from_env() -> RowPlacement:
    """:class:`RankShards` when ``torch.distributed`` is initialised (or ``torchrun`` set ``WORLD_SIZE`` > 1), else :class:`LocalRows`."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        return RankShards()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not initialised; call init_process_group first")
    return LocalRows()


def join_torchrun(device: str | None, setting: str = "--device") -> tuple[RowPlacement, torch.device]:
    """Placement and device of this process: under ``torchrun`` (``WORLD_SIZE`` > 1) join the
    process group (NCCL when ``device`` is CUDA, else gloo) and take GPU ``LOCAL_RANK``; otherwise
    one process on ``device`` (default CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device or "cpu", local_rank=int(os.environ.get("LOCAL_RANK", "0")), setting=setting)
    if world <= 1:
        return LocalRows(), dev
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=60))
    hold_process_group()  # see unisurg.rank_exit
    return RankShards(), dev


def local_positions(global_pos: np.ndarray, start: int, n_local: int) -> np.ndarray:
    """The entries of sorted global positions that fall in this rank's ``[start, start + n_local)``, made local."""
    global_pos = np.asarray(global_pos, dtype=np.int64)
    lo, hi = np.searchsorted(global_pos, [start, start + n_local])
    return global_pos[lo:hi] - start


__all__ = ["LocalRows", "RankShards", "RowPlacement", "join_torchrun", "local_positions", "placement_from_env", "rank_slice"]
