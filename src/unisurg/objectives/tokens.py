"""Bookkeeping shared by the objectives: padded target tokens, their tubes, masked means.

Conventions (see docs/objectives.md): a clip ``[B, C, T, H, W]`` is cut into tubelets
``(tt, ph, pw)``; the token grid is ``T' x Hp x Wp`` in (t, h, w) order, ``S = Hp * Wp``
spatial locations (tubes), token ``n = t' * S + s`` belongs to tube ``n % S``.
Per-sample token counts differ (mask ratio drawn per sample), so target tokens come padded:
``target_idx [B, Nt]`` with ``target_valid [B, Nt]``; a padded entry may hold any index and
must contribute nothing anywhere.
"""

from __future__ import annotations

import torch


def check_token_batch(pred: torch.Tensor, target: torch.Tensor | None,
                      target_idx: torch.Tensor, target_valid: torch.Tensor) -> None:
    """Raise ValueError naming the argument whose shape or dtype breaks the conventions.

    Shape checks only (no values are read, so no device sync).
    """
    if pred.dim() != 3:
        raise ValueError(f"pred must be [B, Nt, D], got shape {tuple(pred.shape)}")
    if target is not None and target.shape != pred.shape:
        raise ValueError(f"target shape {tuple(target.shape)} must equal pred shape {tuple(pred.shape)}"
                         " (both gathered at target_idx)")
    if target_idx.shape != pred.shape[:2]:
        raise ValueError(f"target_idx must be [B, Nt] = {tuple(pred.shape[:2])}, got {tuple(target_idx.shape)}")
    if target_idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"target_idx must be an integer (long) tensor, got {target_idx.dtype}")
    if target_valid.shape != pred.shape[:2]:
        raise ValueError(f"target_valid must be [B, Nt] = {tuple(pred.shape[:2])}, got {tuple(target_valid.shape)}")
    if target_valid.dtype != torch.bool:
        raise ValueError(f"target_valid must be a bool tensor, got {target_valid.dtype}")


def check_tubelet(x: torch.Tensor, tubelet: tuple[int, int, int], need_time: bool = False) -> tuple[int, int, int]:
    """Validate a clip ``[B, C, T, H, W]`` against a tubelet; return the grid ``(T', Hp, Wp)``."""
    if x.dim() != 5:
        raise ValueError(f"clip x must be [B, C, T, H, W], got shape {tuple(x.shape)}")
    if len(tubelet) != 3 or any(int(v) < 1 for v in tubelet):
        raise ValueError(f"tubelet must be three positive ints (tt, ph, pw), got {tubelet!r}")
    tt, ph, pw = (int(v) for v in tubelet)
    _, _, t, h, w = x.shape
    if h % ph or w % pw:
        raise ValueError(f"clip size H x W = {h} x {w} is not divisible by the patch {ph} x {pw};"
                         " crop or resize the clip to a multiple of the patch size")
    if need_time and t % tt:
        raise ValueError(f"clip length T = {t} is not divisible by the tubelet depth {tt}")
    return t // tt, h // ph, w // pw


def safe_index(target_idx: torch.Tensor, target_valid: torch.Tensor) -> torch.Tensor:
    """Token indices with padded entries replaced by 0 so that they can be used in gather."""
    return torch.where(target_valid, target_idx.long(), torch.zeros_like(target_idx, dtype=torch.long))


def token_tubes(target_idx: torch.Tensor, target_valid: torch.Tensor, num_tubes: int) -> torch.Tensor:
    """Tube (spatial location) of each target token, ``n % S``; 0 at padded entries."""
    return safe_index(target_idx, target_valid) % num_tubes


def weighted_token_mean(values: torch.Tensor, weights: torch.Tensor | None,
                        counted: torch.Tensor) -> torch.Tensor:
    """``sum(w * v over counted tokens) / #counted`` over the whole batch, in fp32; 0 if none count.

    Pooling over the batch's tokens (not mean of per-sample means) is what V-JEPA's L1 does:
    every masked token counts once whatever its sample's mask ratio.
    """
    c = counted.to(torch.float32)
    v = values.float() * c
    if weights is not None:
        v = v * weights.float()
    return v.sum() / c.sum().clamp(min=1.0)
