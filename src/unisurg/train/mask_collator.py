"""Pretraining collate function: stack uint8 clips and draw every sample's masks.

Each sample's masks come from a generator seeded by ``(seed, epoch, position of the sample in the epoch's global
draw, mask family)``. The position is known from the rank, the world size, the per-rank batch
and the batch index (the sampler gives rank ``r`` the draw's entries ``r, r + W, r + 2W, ...``),
so a global batch gets the same masks whatever the number of ranks it is split over, and a
resumed run the same masks as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.utils.data

from unisurg.data.clips import stack_clips
from unisurg.models.vit import token_grid
from unisurg.train.masks import (
    MaskBatch,
    MultiblockMaskGenerator,
    TubeMaskGenerator,
    mask_batch_from_token_mask,
    vjepa2_multiblock,
)
from unisurg.train.pretrain_config import MaskConfig


def sample_seed(seed: int, epoch: int, position: int, family: int) -> int:
    """A well-mixed 63-bit seed for one sample's masks of one family."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{position}:{family}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def build_mask_generators(cfg: MaskConfig, grid: tuple[int, int, int]) -> list:
    """One generator per mask family (V-JEPA 2's ``vjepa2`` kind has two)."""
    if cfg.kind == "tube":
        return [TubeMaskGenerator(grid, tuple(cfg.ratio))]
    if cfg.kind == "multiblock":
        return [MultiblockMaskGenerator(grid, num_blocks=cfg.num_blocks, spatial_scale=tuple(cfg.spatial_scale),
                                        aspect_ratio=tuple(cfg.aspect_ratio),
                                        temporal_scale=tuple(cfg.temporal_scale))]
    return vjepa2_multiblock(grid)


def _token_mask(mb: MaskBatch, n_tokens: int) -> torch.Tensor:
    """Boolean target mask [N] of a one-sample :class:`MaskBatch`."""
    out = torch.zeros(n_tokens, dtype=torch.bool)
    out[mb.target_idx[0][mb.target_valid[0]]] = True
    return out


class SampleMaskCollator:
    """``collate_fn``: ``list of uint8 clips [C, T, H, W] -> (clips [B, C, T, H, W], [MaskBatch per family])``.

    Call :meth:`set_epoch` before iterating an epoch (``start_batch``: batches of this rank already
    trained on, when resuming mid-epoch). DataLoader workers take batches round robin, so the batch
    index is recovered from the worker id and a per-worker counter.
    """

    def __init__(self, generators: Sequence, grid: tuple[int, int, int], *, seed: int, tubelet_size: int,
                 patch_size: int, per_rank_batch: int, rank: int = 0, world: int = 1):
        if not generators:
            raise ValueError("SampleMaskCollator needs at least one mask generator")
        self.generators = list(generators)
        self.grid = tuple(grid)
        self.n_tokens = self.grid[0] * self.grid[1] * self.grid[2]
        self.seed, self.tubelet_size, self.patch_size = int(seed), tubelet_size, patch_size
        self.per_rank_batch, self.rank, self.world = per_rank_batch, rank, world
        self.epoch = 0
        self.start_batch = 0
        self._calls = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch, self._calls = int(epoch), int(start_batch), 0

    def _batch_index(self) -> int:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        idx = self.start_batch + self._calls * nw + wid
        self._calls += 1
        return idx

    def positions(self, batch_index: int, batch_len: int) -> list[int]:
        """Positions in the epoch's global draw of the samples of this rank's batch ``batch_index``."""
        first = batch_index * self.per_rank_batch
        return [self.rank + self.world * (first + j) for j in range(batch_len)]

    def __call__(self, batch: list) -> tuple[torch.Tensor, list[MaskBatch]]:
        if not batch:
            raise ValueError("empty batch")
        shapes = {tuple(c.shape) for c in batch}
        if len(shapes) != 1:
            raise ValueError(f"clips in one batch must share a shape [C, T, H, W]; got {sorted(shapes)}")
        grid = token_grid(next(iter(shapes)), self.tubelet_size, self.patch_size)
        if grid != self.grid:
            raise ValueError(f"clips of shape {next(iter(shapes))} give the token grid {grid}, "
                             f"but the masks were built for {self.grid}")
        x = stack_clips(batch)  # uint8 channels-last clips stay untransposed until the device
        pos = self.positions(self._batch_index(), len(batch))
        masks = []
        for fam, gen in enumerate(self.generators):
            rows = []
            for q in pos:
                rng = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, q, fam))
                rows.append(_token_mask(gen(1, rng), self.n_tokens))
            masks.append(mask_batch_from_token_mask(torch.stack(rows), self.grid))
        return x, masks
