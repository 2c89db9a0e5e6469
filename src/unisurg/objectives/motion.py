"""Motion-guided latent prediction, UniSurg paper section 3.4.1, in one place: the motion score g_i
("Motion gradient"), the top-K weights w_i ("Top-K emphasis among masked tubes"), L_motion
("Motion-guide Prediction Loss"), and the dense motion map and loss of the authors' code.
Our readings of the equations: docs/objectives.md.

All of it is computed from the raw (normalised) clip, is never differentiated, and is done in
fp32 whatever the clip's dtype.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from unisurg.objectives.prediction import token_l1_error
from unisurg.objectives.tokens import (
    check_token_batch,
    check_tubelet,
    safe_index,
    token_tubes,
    weighted_token_mean,
)


def _patch_view(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """``[B, C, T, H, W] -> [B, C, T, Hp, ph, Wp, pw]`` (a view)."""
    b, c, t, h, w = x.shape
    return x.reshape(b, c, t, h // ph, ph, w // pw, pw)


def motion_score(x: torch.Tensor, tubelet: tuple[int, int, int] = (2, 16, 16)) -> torch.Tensor:
    """Motion gradient g_i of every tube (paper section 3.4.1, the "Motion gradient" equation).

        g_i = 1/(T-1) sum_t ||x_{t+1,i} - x_{t,i}||_1 + 1/T sum_t 1/|N(i)| sum_{j in N(i)} ||x_{t,i} - x_{t,j}||_1

    x_{t,i} is the (C*ph*pw)-vector of pixels of patch i in frame t. Interpretation (docs/objectives.md):
    each ||.||_1 is replaced by the per-pixel MEAN absolute difference (the sum divided by
    C*ph*pw), so g is O(1) on normalised pixels and gamma = 2 in the top-K softmax is
    scale-sensible. The temporal term runs over all T raw frames (not tubelets); the spatial term
    compares patch i with its 4-neighbours N(i) on the patch grid, pixel by aligned pixel; border
    patches have 2 or 3 neighbours (a 1x1 grid has none: spatial term 0).
    Only the patch size of ``tubelet`` is used.

    Returns g ``[B, S]`` fp32, S = Hp*Wp in row-major (h, w) order.
    """
    check_tubelet(x, tubelet)
    if x.shape[2] < 2:
        raise ValueError(f"motion_score needs at least 2 frames, got T = {x.shape[2]}")
    _, ph, pw = (int(v) for v in tubelet)
    with torch.no_grad():
        xf = _patch_view(x.detach().float(), ph, pw)  # [B, C, T, Hp, ph, Wp, pw]
        reduce = (1, 2, 4, 6)  # channels, frames, pixels inside the patch
        temporal = (xf[:, :, 1:] - xf[:, :, :-1]).abs().mean(dim=reduce)          # [B, Hp, Wp]
        across_w = (xf[..., 1:, :] - xf[..., :-1, :]).abs().mean(dim=reduce)      # [B, Hp, Wp-1]
        across_h = (xf[:, :, :, 1:] - xf[:, :, :, :-1]).abs().mean(dim=reduce)    # [B, Hp-1, Wp]
        # Each edge cost goes to both of its end patches; the mean over t commutes with the
        # neighbour mean because |N(i)| does not depend on t.
        edge_sum = (F.pad(across_w, (1, 0)) + F.pad(across_w, (0, 1))
                    + F.pad(across_h, (0, 0, 1, 0)) + F.pad(across_h, (0, 0, 0, 1)))
        hp, wp = temporal.shape[1:]
        ones_w = torch.ones(hp, max(wp - 1, 0), device=x.device)
        ones_h = torch.ones(max(hp - 1, 0), wp, device=x.device)
        degree = (F.pad(ones_w, (1, 0)) + F.pad(ones_w, (0, 1))
                  + F.pad(ones_h, (0, 0, 1, 0)) + F.pad(ones_h, (0, 0, 0, 1)))
        spatial = edge_sum / degree.clamp(min=1.0)
        return (temporal + spatial).flatten(1)


def topk_motion_tubes(g: torch.Tensor, masked_tubes: torch.Tensor, k: int = 3) -> torch.Tensor:
    """J_h = TopK({g_i : i in J_m}, K) as a mask ``[B, S]`` (paper section 3.4.1).

    With fewer than K masked tubes, J_h is all of them. Ties are broken by ``torch.topk``.
    """
    _check_tube_scores(g, masked_tubes)
    if k < 1:
        raise ValueError(f"k (number of top-motion tubes) must be >= 1, got {k}")
    kk = min(int(k), g.shape[1])
    scores = g.float().masked_fill(~masked_tubes, float("-inf"))
    top_val, top_idx = scores.topk(kk, dim=1)
    picked = torch.isfinite(top_val)  # -inf = an unmasked tube filled the slot
    out = torch.zeros_like(masked_tubes)
    return out.scatter(1, top_idx, picked)


def topk_motion_weights(g: torch.Tensor, masked_tubes: torch.Tensor, k: int = 3,
                        gamma: float = 2.0) -> torch.Tensor:
    """Soft weights w_i = exp(gamma g_i) / sum_{k in J_h} exp(gamma g_k) on J_h, 0 elsewhere.

    Paper section 3.4.1 ("We assign soft weights with gamma = 2"). A sample without masked
    tubes gets all-zero weights. Returns ``[B, S]`` fp32 (detached).
    """
    selected = topk_motion_tubes(g, masked_tubes, k)
    logits = (gamma * g.detach().float()).masked_fill(~selected, float("-inf"))
    # Rows with nothing selected would be softmax(all -inf) = NaN; give them finite logits.
    logits = torch.where(selected.any(dim=1, keepdim=True), logits, torch.zeros_like(logits))
    return torch.softmax(logits, dim=1) * selected


def _check_tube_scores(g: torch.Tensor, masked_tubes: torch.Tensor) -> None:
    if g.dim() != 2:
        raise ValueError(f"motion scores g must be [B, S], got shape {tuple(g.shape)}")
    if masked_tubes.shape != g.shape:
        raise ValueError(f"masked_tubes shape {tuple(masked_tubes.shape)} must equal g shape {tuple(g.shape)}")
    if masked_tubes.dtype != torch.bool:
        raise ValueError(f"masked_tubes must be a bool tensor, got {masked_tubes.dtype}")


def dense_motion_map(x: torch.Tensor, tubelet: tuple[int, int, int] = (2, 16, 16),
                     eps: float = 1e-6) -> torch.Tensor:
    """Dense per-token motion map m in [0, 1) (the authors' code, docs/objectives.md; not in the paper).

    Our reconstruction of "gradient-normalised frame differences pooled to the token grid and
    smoothed":
      1. r_t = mean_c |x_t - x_{t-1}| / (gbar + eps) per pixel, frame 0 reusing frame 1's
         difference; gbar is the clip's spatial gradient magnitude, mean_c,t,pixels |d_h x| +
         mean |d_w x| (forward differences). By brightness constancy |d_t x| ~ |grad x| * speed,
         so r reads as an apparent speed and is invariant to the clip's contrast and offset.
      2. average r over each tubelet (tt x ph x pw) -> token grid [T', Hp, Wp];
      3. smooth with a 3x3x3 box average on the token grid (borders: average of the cells that
         exist);
      4. squash m = s / (1 + s): bounded, monotone, and a static clip stays near 0 (no
         per-clip max normalisation, which would blow sensor noise up to weight 1).

    Returns ``[B, N]`` fp32 in token order (t, h, w), N = T' * Hp * Wp.
    """
    check_tubelet(x, tubelet, need_time=True)
    if x.shape[2] < 2:
        raise ValueError(f"dense_motion_map needs at least 2 frames, got T = {x.shape[2]}")
    tt, ph, pw = (int(v) for v in tubelet)
    with torch.no_grad():
        xf = x.detach().float()
        diff = (xf[:, :, 1:] - xf[:, :, :-1]).abs().mean(dim=1)         # [B, T-1, H, W]
        diff = torch.cat([diff[:, :1], diff], dim=1)                    # [B, T, H, W]
        grad = ((xf[..., 1:, :] - xf[..., :-1, :]).abs().mean(dim=(1, 2, 3, 4))
                + (xf[..., 1:] - xf[..., :-1]).abs().mean(dim=(1, 2, 3, 4)))  # [B]
        ratio = diff / (grad[:, None, None, None] + eps)
        cells = F.avg_pool3d(ratio[:, None], kernel_size=(tt, ph, pw), stride=(tt, ph, pw))
        # Box average over the cells that exist; explicit zero padding because avg_pool3d's own
        # padding refuses grids smaller than the kernel (T' = 1 or 2 is common).
        total = F.avg_pool3d(F.pad(cells, (1, 1, 1, 1, 1, 1)), kernel_size=3, stride=1)
        count = F.avg_pool3d(F.pad(torch.ones_like(cells), (1, 1, 1, 1, 1, 1)), kernel_size=3, stride=1)
        smooth = total / count
        m = smooth / (1.0 + smooth)
        return m.flatten(1)


def motion_prediction_loss(pred: torch.Tensor, target: torch.Tensor, target_idx: torch.Tensor,
                           target_valid: torch.Tensor, tube_weights: torch.Tensor,
                           scope: Literal["all", "topk"] = "all",
                           selected_tubes: torch.Tensor | None = None) -> torch.Tensor:
    """L_motion, the motion-guided L1 (paper section 3.4.1, "Motion-guide Prediction Loss").

        paper:  L_motion = sum_{i in J_h} (1 + w_i) * ||z_hat_i - sg(z^E_i)||_1

    A tube has T' tubelet tokens; each token is weighted by its tube's w (``tube_weights [B, S]``,
    from :func:`topk_motion_weights`) and the L1 is a mean over channels.

    ``scope="all"`` (default, docs/objectives.md): the sum runs over ALL masked tubes (the
    paper's text says "upweight"; read literally only K = 3 of ~150 masked tubes would train):
    mean over the batch's valid masked tokens of (1 + w) * L1. With w = 0 this is plain V-JEPA.

    ``scope="topk"`` (literal reading): only tokens of J_h count, normalised by the number of
    such tokens in the batch, i.e. (1/|J_h|) sum_{i in J_h} (1 + w_i) * (token-mean L1 of i)
    pooled over samples (every tube of a tube mask has the same T' tokens). J_h is
    ``selected_tubes`` (``[B, S]`` bool, from :func:`topk_motion_tubes`), by default
    ``tube_weights > 0``.
    """
    check_token_batch(pred, target, target_idx, target_valid)
    if tube_weights.dim() != 2 or tube_weights.shape[0] != pred.shape[0]:
        raise ValueError(f"tube_weights must be [B, S] with B = {pred.shape[0]}, got {tuple(tube_weights.shape)}")
    tubes = token_tubes(target_idx, target_valid, tube_weights.shape[1])
    w_tok = tube_weights.detach().float().gather(1, tubes)
    l1 = token_l1_error(pred, target)
    if scope == "all":
        return weighted_token_mean(l1, 1.0 + w_tok, target_valid)
    if scope == "topk":
        if selected_tubes is None:
            selected_tubes = tube_weights > 0
        if selected_tubes.shape != tube_weights.shape:
            raise ValueError(f"selected_tubes shape {tuple(selected_tubes.shape)} must equal "
                             f"tube_weights shape {tuple(tube_weights.shape)}")
        in_top = selected_tubes.gather(1, tubes) & target_valid
        return weighted_token_mean(l1, 1.0 + w_tok, in_top)
    raise ValueError(f"scope must be 'all' or 'topk', got {scope!r}")


def dense_motion_prediction_loss(pred: torch.Tensor, target: torch.Tensor, target_idx: torch.Tensor,
                                 target_valid: torch.Tensor, motion_map: torch.Tensor,
                                 strength: float = 2.0) -> torch.Tensor:
    """L1 with a dense per-token weight 1 + strength * m_n (the authors' code, docs/objectives.md).

    ``motion_map [B, N]`` in [0, 1] over all N clip tokens (:func:`dense_motion_map`), gathered
    at ``target_idx``; mean over the batch's valid masked tokens of (1 + strength*m) * L1.
    """
    check_token_batch(pred, target, target_idx, target_valid)
    if motion_map.dim() != 2 or motion_map.shape[0] != pred.shape[0]:
        raise ValueError(f"motion_map must be [B, N] with B = {pred.shape[0]}, got {tuple(motion_map.shape)}")
    m_tok = motion_map.detach().float().gather(1, safe_index(target_idx, target_valid))
    return weighted_token_mean(token_l1_error(pred, target), 1.0 + strength * m_tok, target_valid)
