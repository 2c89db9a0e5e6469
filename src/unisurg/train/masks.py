"""Tube and multiblock masks for masked latent prediction, in one padded batch representation.

Conventions (shared with ``unisurg.objectives``):

- clip ``x [B, C, T, H, W]``; grid ``(T', Hp, Wp) = (T / tubelet, H / patch, W / patch)``;
  ``S = Hp * Wp`` tubes (spatial locations); ``N = T' * S`` tokens;
  token ``n = t' * S + s`` (order t, h, w); the tube of token ``n`` is ``n % S``.
- a *tube mask* masks every tubelet of a tube (all ``T'`` tokens of that spatial location).
- :class:`MaskBatch` holds per-sample index lists sorted ascending and right-padded (pad value 0,
  ``valid=False``), because the mask ratio is drawn per sample and counts differ.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.utils.data


@dataclass
class MaskBatch:
    """Context (visible) and target (masked) tokens of a batch.

    Fields:
        context_idx: LongTensor [B, Nc], ascending per sample, padded with 0.
        context_valid: BoolTensor [B, Nc], False at padding.
        target_idx: LongTensor [B, Nt], ascending per sample, padded with 0.
        target_valid: BoolTensor [B, Nt], False at padding.
        masked_tubes: BoolTensor [B, S], True for tubes whose every token is a target.
        context_padded / target_padded: plain bools, False when no sample is padded (then attention
            needs no mask; known at collate time so no device sync is needed to find out).
    """

    context_idx: torch.Tensor
    context_valid: torch.Tensor
    target_idx: torch.Tensor
    target_valid: torch.Tensor
    masked_tubes: torch.Tensor
    context_padded: bool = True
    target_padded: bool = True

    @property
    def batch_size(self) -> int:
        return self.context_idx.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "MaskBatch":
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return dataclasses.replace(
            self,
            context_idx=move(self.context_idx),
            context_valid=move(self.context_valid),
            target_idx=move(self.target_idx),
            target_valid=move(self.target_valid),
            masked_tubes=move(self.masked_tubes),
        )

    def pin_memory(self) -> "MaskBatch":
        """Called by ``DataLoader(pin_memory=True)``."""
        return dataclasses.replace(
            self,
            context_idx=self.context_idx.pin_memory(),
            context_valid=self.context_valid.pin_memory(),
            target_idx=self.target_idx.pin_memory(),
            target_valid=self.target_valid.pin_memory(),
            masked_tubes=self.masked_tubes.pin_memory(),
        )

    def encoder_kwargs(self) -> dict:
        """``encoder(x, **mb.encoder_kwargs())``: valid mask only when some sample is padded."""
        return dict(context_idx=self.context_idx, context_valid=self.context_valid if self.context_padded else None)

    def predictor_kwargs(self) -> dict:
        """``predictor(z, grid=grid, **mb.predictor_kwargs())``."""
        return dict(
            context_idx=self.context_idx,
            target_idx=self.target_idx,
            context_valid=self.context_valid if self.context_padded else None,
            target_valid=self.target_valid if self.target_padded else None,
        )


def pack_indices(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Per-row ascending indices of the True entries of ``mask`` [B, N], right-padded with 0.

    Returns ``(idx [B, K], valid [B, K], padded)`` with K the largest row count.
    """
    counts = mask.sum(dim=1)
    k = int(counts.max()) if mask.shape[0] else 0
    # a stable sort of (not mask) puts the True positions first, each group in index order
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices[:, :k]
    valid = torch.arange(k, device=mask.device)[None, :] < counts[:, None]
    idx = torch.where(valid, order, torch.zeros_like(order))
    return idx, valid, bool((counts != k).any())


def mask_batch_from_token_mask(token_mask: torch.Tensor, grid: tuple[int, int, int]) -> MaskBatch:
    """Build a :class:`MaskBatch` from a boolean target mask [B, N] (True = masked/target)."""
    nt, nh, nw = grid
    b, n = token_mask.shape
    if n != nt * nh * nw:
        raise ValueError(f"token mask has {n} tokens per sample but grid {grid} has {nt * nh * nw}")
    if bool(token_mask.all(dim=1).any()) or bool((~token_mask).all(dim=1).any()):
        raise ValueError("every sample needs at least one context and one target token")
    tgt_idx, tgt_valid, tgt_pad = pack_indices(token_mask)
    ctx_idx, ctx_valid, ctx_pad = pack_indices(~token_mask)
    masked_tubes = token_mask.view(b, nt, nh * nw).all(dim=1)
    return MaskBatch(ctx_idx, ctx_valid, tgt_idx, tgt_valid, masked_tubes, ctx_pad, tgt_pad)


def _check_range(name: str, lo_hi: Sequence[float], lo_bound: float, hi_bound: float) -> tuple[float, float]:
    lo, hi = (float(v) for v in lo_hi)
    if not (lo_bound <= lo <= hi <= hi_bound):
        raise ValueError(f"{name}={tuple(lo_hi)} must satisfy {lo_bound} <= low <= high <= {hi_bound}")
    return lo, hi


class TubeMaskGenerator:
    """Random tube masks with a per-sample ratio ``rho ~ U(ratio)`` (UniSurg paper, Sec. "Tube masking").

    Each sample masks ``k = round(rho * S)`` tubes chosen uniformly without replacement; ``k`` is
    clipped to ``[ceil(low * S), floor(high * S)]`` so the realised ratio ``k / S`` stays in range.
    """

    def __init__(self, grid: tuple[int, int, int], ratio: tuple[float, float] = (0.75, 0.95)):
        self.grid = tuple(int(g) for g in grid)
        if len(self.grid) != 3 or min(self.grid) < 1:
            raise ValueError(f"grid must be (T', Hp, Wp) of positive ints, got {grid}")
        self.ratio = _check_range("ratio", ratio, 0.0, 1.0)
        s = self.grid[1] * self.grid[2]
        self.k_min = max(1, math.ceil(self.ratio[0] * s - 1e-9))
        self.k_max = min(s - 1, math.floor(self.ratio[1] * s + 1e-9))
        if self.k_min > self.k_max:
            raise ValueError(
                f"a {self.grid[1]}x{self.grid[2]} patch grid ({s} tubes) cannot realise a mask ratio in "
                f"{self.ratio} while keeping at least one visible tube; use a larger crop or a wider ratio range"
            )

    def __call__(self, batch_size: int, generator: torch.Generator) -> MaskBatch:
        nt, nh, nw = self.grid
        s = nh * nw
        lo, hi = self.ratio
        rho = lo + (hi - lo) * torch.rand(batch_size, generator=generator, dtype=torch.float64)
        k = torch.round(rho * s).long().clamp_(self.k_min, self.k_max)
        ranks = torch.rand(batch_size, s, generator=generator).argsort(dim=1).argsort(dim=1)
        masked_tubes = ranks < k[:, None]
        token_mask = masked_tubes.repeat(1, nt)  # token n = t' * S + s belongs to tube s
        return mask_batch_from_token_mask(token_mask, self.grid)

    def __repr__(self) -> str:
        return f"TubeMaskGenerator(grid={self.grid}, ratio={self.ratio})"


class MultiblockMaskGenerator:
    """V-JEPA multiblock masks: the union of ``num_blocks`` random 3D blocks is the target.

    As in V-JEPA 2, one block size per call (per batch) is drawn from ``spatial_scale`` (fraction of
    the Hp x Wp patches), ``aspect_ratio`` (h / w) and ``temporal_scale`` (fraction of T'); block
    positions are drawn per sample. With the default ``temporal_scale=(1, 1)`` blocks span the whole
    clip, so masked tokens form whole tubes. ``masked_tubes`` marks tubes masked at every time step.
    Unlike V-JEPA 2, counts are not truncated to the batch minimum (padding keeps every token).
    """

    def __init__(
        self,
        grid: tuple[int, int, int],
        num_blocks: int = 8,
        spatial_scale: tuple[float, float] = (0.15, 0.15),
        aspect_ratio: tuple[float, float] = (0.75, 1.5),
        temporal_scale: tuple[float, float] = (1.0, 1.0),
        max_tries: int = 50,
    ):
        self.grid = tuple(int(g) for g in grid)
        if len(self.grid) != 3 or min(self.grid) < 1:
            raise ValueError(f"grid must be (T', Hp, Wp) of positive ints, got {grid}")
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = int(num_blocks)
        self.spatial_scale = _check_range("spatial_scale", spatial_scale, 0.0, 1.0)
        self.aspect_ratio = _check_range("aspect_ratio", aspect_ratio, 1e-6, float("inf"))
        self.temporal_scale = _check_range("temporal_scale", temporal_scale, 0.0, 1.0)
        self.max_tries = max_tries

    def block_size(self, generator: torch.Generator) -> tuple[int, int, int]:
        """(t, h, w) of this batch's blocks, in tokens."""
        nt, nh, nw = self.grid
        u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        ts = self.temporal_scale[0] + u[0] * (self.temporal_scale[1] - self.temporal_scale[0])
        ss = self.spatial_scale[0] + u[1] * (self.spatial_scale[1] - self.spatial_scale[0])
        ar = self.aspect_ratio[0] + u[2] * (self.aspect_ratio[1] - self.aspect_ratio[0])
        t = max(1, int(nt * ts))
        area = int(nh * nw * ss)
        h = min(nh, max(1, round(math.sqrt(area * ar))))
        w = min(nw, max(1, round(math.sqrt(area / ar))))
        return t, h, w

    def _sample(self, n: int, size: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
        """Union of ``num_blocks`` blocks for ``n`` samples: [n, T', Hp, Wp] bool."""
        (nt, nh, nw), (t, h, w) = self.grid, size

        def axis(extent: int, length: int) -> torch.Tensor:  # [n, blocks, extent] membership
            start = torch.randint(0, extent - length + 1, (n, self.num_blocks, 1), generator=generator)
            pos = torch.arange(extent)
            return (pos >= start) & (pos < start + length)

        in_t, in_h, in_w = axis(nt, t), axis(nh, h), axis(nw, w)
        blocks = in_t[..., :, None, None] & in_h[..., None, :, None] & in_w[..., None, None, :]
        return blocks.any(dim=1)

    def __call__(self, batch_size: int, generator: torch.Generator) -> MaskBatch:
        size = self.block_size(generator)
        mask = self._sample(batch_size, size, generator)
        for _ in range(self.max_tries):
            full = mask.flatten(1).all(dim=1)
            if not bool(full.any()):
                break
            mask[full] = self._sample(int(full.sum()), size, generator)
        else:
            if bool(mask.flatten(1).all(dim=1).any()):
                raise RuntimeError(
                    f"multiblock blocks of size {size} cover the whole grid {self.grid} in {self.max_tries} tries; "
                    "lower num_blocks or spatial_scale"
                )
        return mask_batch_from_token_mask(mask.flatten(1), self.grid)

    def __repr__(self) -> str:
        return (
            f"MultiblockMaskGenerator(grid={self.grid}, num_blocks={self.num_blocks}, "
            f"spatial_scale={self.spatial_scale}, aspect_ratio={self.aspect_ratio}, "
            f"temporal_scale={self.temporal_scale})"
        )


def vjepa2_multiblock(grid: tuple[int, int, int]) -> list[MultiblockMaskGenerator]:
    """V-JEPA 2's two mask families: 8 blocks at spatial scale 0.15 and 2 blocks at 0.7 (aspect 0.75-1.5,
    full temporal extent). V-JEPA 2 runs the encoder once per family on the same clip."""
    return [
        MultiblockMaskGenerator(grid, num_blocks=8, spatial_scale=(0.15, 0.15)),
        MultiblockMaskGenerator(grid, num_blocks=2, spatial_scale=(0.7, 0.7)),
    ]
