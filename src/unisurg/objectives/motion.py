"""Motion saliency in pixel space (UniSurg paper section 3.4.1, "Motion gradient" and "Top-K
emphasis among masked tubes"), and the dense motion map of the authors' code (SPEC section 3).

All of it is computed from the raw (normalised) clip, is never differentiated, and is done in
fp32 whatever the clip's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unisurg.objectives.tokens import check_tubelet


def _patch_view(x: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
    """``[B, C, T, H, W] -> [B, C, T, Hp, ph, Wp, pw]`` (a view)."""
    b, c, t, h, w = x.shape
    return x.reshape(b, c, t, h // ph, ph, w // pw, pw)


def motion_score(x: torch.Tensor, tubelet: tuple[int, int, int] = (2, 16, 16)) -> torch.Tensor:
    """Motion gradient g_i of every tube (paper section 3.4.1, the "Motion gradient" equation).

        g_i = 1/(T-1) sum_t ||x_{t+1,i} - x_{t,i}||_1 + 1/T sum_t 1/|N(i)| sum_{j in N(i)} ||x_{t,i} - x_{t,j}||_1

    x_{t,i} is the (C*ph*pw)-vector of pixels of patch i in frame t. Interpretation (SPEC 3):
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
    """Dense per-token motion map m in [0, 1) (the authors' code, SPEC section 3; not in the paper).

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
