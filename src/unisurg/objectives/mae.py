"""SurgRec-MAE pixel objective (docs/pretraining.md): VideoMAE-style reconstruction of the masked
tubelets with per-patch normalised pixel targets.

Patch vectors are laid out (tt, ph, pw, C) (channel fastest), tokens in (t, h, w) order, the
same token order as the encoder's patch embedding.
"""

from __future__ import annotations

import torch

from unisurg.objectives.tokens import (
    check_token_batch,
    check_tubelet,
    safe_index,
    weighted_token_mean,
)


def patchify(x: torch.Tensor, tubelet: tuple[int, int, int] = (2, 16, 16)) -> torch.Tensor:
    """``[B, C, T, H, W] -> [B, N, tt*ph*pw*C]``, token n = (t', h, w) row-major."""
    tg, hp, wp = check_tubelet(x, tubelet, need_time=True)
    tt, ph, pw = (int(v) for v in tubelet)
    b, c = x.shape[:2]
    v = x.reshape(b, c, tg, tt, hp, ph, wp, pw)
    return v.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, tg * hp * wp, tt * ph * pw * c)


def unpatchify(patches: torch.Tensor, tubelet: tuple[int, int, int], size: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, N, tt*ph*pw*C] -> [B, C, T, H, W]`` for ``size = (T, H, W)``."""
    tt, ph, pw = (int(v) for v in tubelet)
    t, h, w = size
    if t % tt or h % ph or w % pw:
        raise ValueError(f"size (T, H, W) = {size} is not divisible by the tubelet {tubelet}")
    tg, hp, wp = t // tt, h // ph, w // pw
    b, n, p = patches.shape
    if n != tg * hp * wp or p % (tt * ph * pw):
        raise ValueError(f"patches [B, N, P] = {tuple(patches.shape)} do not fit size {size} and tubelet "
                         f"{tubelet}: need N = {tg * hp * wp} and P a multiple of {tt * ph * pw}")
    c = p // (tt * ph * pw)
    v = patches.reshape(b, tg, hp, wp, tt, ph, pw, c)
    return v.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, c, t, h, w)


def mae_targets(x: torch.Tensor, tubelet: tuple[int, int, int] = (2, 16, 16), norm_pix: bool = True,
                eps: float = 1e-6) -> torch.Tensor:
    """Reconstruction targets ``[B, N, tt*ph*pw*C]`` fp32 (VideoMAE's normalised-pixel target).

    norm_pix: each patch is normalised per channel over its tt*ph*pw pixels,
    (v - mean) / (std + eps) with the unbiased std, as VideoMAE does. Per-channel statistics
    cancel any per-channel affine pixel normalisation (ImageNet mean/std), so normalised or raw
    clips give the same targets up to eps.
    """
    patches = patchify(x.detach().float(), tubelet)
    if not norm_pix:
        return patches
    b, n, p = patches.shape
    c = x.shape[1]
    v = patches.reshape(b, n, p // c, c)
    mean = v.mean(dim=2, keepdim=True)
    std = v.var(dim=2, unbiased=True, keepdim=True).sqrt()
    return ((v - mean) / (std + eps)).reshape(b, n, p)


def mae_loss(pred_pixels: torch.Tensor, targets: torch.Tensor, target_idx: torch.Tensor,
             target_valid: torch.Tensor) -> torch.Tensor:
    """MSE over the masked patches: mean over the batch's valid masked tokens of the mean over
    the patch vector of (pred - target)^2 (VideoMAE's loss on masked tubelets).

    pred_pixels [B, Nt, P] at target_idx; targets [B, N, P] for every token of the clip.
    """
    check_token_batch(pred_pixels, None, target_idx, target_valid)
    if targets.dim() != 3 or targets.shape[0] != pred_pixels.shape[0] or targets.shape[2] != pred_pixels.shape[2]:
        raise ValueError(f"targets must be [B, N, P] with B, P of pred_pixels {tuple(pred_pixels.shape)}, "
                         f"got {tuple(targets.shape)}")
    idx = safe_index(target_idx, target_valid)
    tgt = targets.detach().float().gather(1, idx[..., None].expand(-1, -1, targets.shape[2]))
    err = (pred_pixels.float() - tgt).pow(2).mean(dim=-1)
    return weighted_token_mean(err, None, target_valid)
