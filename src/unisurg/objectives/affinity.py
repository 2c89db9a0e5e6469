"""Spatiotemporal affinity self-distillation L_st (paper section 3.4.2), and the cosine-Gram
smooth-L1 variant of the authors' code (docs/objectives.md).

Both work on TUBE latents over the masked tubes J_m of each sample. A sample's J_m is the set
of tubes with at least one valid target token (for tube masks: exactly its masked tubes).
Differing |J_m| per sample are handled in one batched pass over ``[B, S, S]`` with the absent
tubes masked out; the matrix products run in fp32 outside autocast (tau = 0.1 amplifies bf16
rounding of u_i . u_j tenfold).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unisurg.objectives.tokens import check_token_batch, token_tubes


def tube_latents(z: torch.Tensor, target_idx: torch.Tensor, target_valid: torch.Tensor,
                 num_tubes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A tube's latent = mean of its valid tokens' latents (docs/objectives.md, "Where a tube has several
    tubelet tokens"). Returns ``(z_tube [B, S, D] fp32, present [B, S] bool)``; absent tubes are 0.
    """
    b, _, d = z.shape
    tubes = token_tubes(target_idx, target_valid, num_tubes)
    v = target_valid.to(torch.float32)
    sums = z.new_zeros(b, num_tubes, d, dtype=torch.float32)
    sums = sums.scatter_add(1, tubes[..., None].expand(-1, -1, d), z.float() * v[..., None])
    counts = v.new_zeros(b, num_tubes).scatter_add(1, tubes, v)
    return sums / counts.clamp(min=1.0)[..., None], counts > 0


def unit_normalise(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """norm(u) = u / max(||u||_2, eps) (paper section 3.4.2)."""
    return z / z.norm(dim=-1, keepdim=True).clamp(min=eps)


def _cosine_gram(u: torch.Tensor) -> torch.Tensor:
    with torch.autocast(device_type=u.device.type, enabled=False):
        return torch.bmm(u.float(), u.float().transpose(1, 2))


def _per_sample_mean(per_sample: torch.Tensor, has_any: torch.Tensor) -> torch.Tensor:
    """Average over the samples that have at least one masked tube (0 if none has)."""
    h = has_any.to(per_sample.dtype)
    return (per_sample * h).sum() / h.sum().clamp(min=1.0)


def affinity_distillation_loss(pred: torch.Tensor, target: torch.Tensor, target_idx: torch.Tensor,
                               target_valid: torch.Tensor, num_tubes: int, tau: float = 0.1,
                               eps: float = 1e-6) -> torch.Tensor:
    """L_st (paper section 3.4.2, the affinity and KL equations), masked tubes only.

        a_hat_{i,j} = softmax_{j in J_m}(u_hat_i . u_hat_j / tau),  a^E likewise from sg(z^E)
        L_st = 1/|J_m| sum_{i in J_m} KL(a^E_{i,.} || a_hat_{i,.})

    computed per sample and averaged over the samples of the batch that have masked tubes.
    The diagonal j = i is part of the softmax, as in the paper's sum over k in J_m.
    """
    check_token_batch(pred, target, target_idx, target_valid)
    if tau <= 0:
        raise ValueError(f"tau (affinity temperature) must be > 0, got {tau}")
    z_hat, present = tube_latents(pred, target_idx, target_valid, num_tubes)
    z_tgt, _ = tube_latents(target.detach(), target_idx, target_valid, num_tubes)
    row, col = present[:, :, None], present[:, None, :]

    def log_affinity(z: torch.Tensor) -> torch.Tensor:
        logits = _cosine_gram(unit_normalise(z, eps)) / tau
        # Absent columns leave the softmax; absent rows get finite dummies (no NaN, even in backward).
        logits = logits.masked_fill(~col, float("-inf")).masked_fill(~row, 0.0)
        return torch.log_softmax(logits, dim=-1)

    log_a_hat, log_a_tgt = log_affinity(z_hat), log_affinity(z_tgt)
    kl = torch.where(row & col, log_a_tgt.exp() * (log_a_tgt - log_a_hat), torch.zeros_like(log_a_hat))
    n = present.sum(dim=1).to(torch.float32)
    per_sample = kl.sum(dim=(1, 2)) / n.clamp(min=1.0)
    return _per_sample_mean(per_sample, n > 0)


def gram_affinity_loss(pred: torch.Tensor, target: torch.Tensor, target_idx: torch.Tensor,
                       target_valid: torch.Tensor, num_tubes: int, beta: float = 1.0,
                       eps: float = 1e-6) -> torch.Tensor:
    """Affinity distillation as in the authors' code (docs/objectives.md): smooth-L1 between the
    cosine Gram matrices U_hat U_hat^T and U^E U^E^T of the masked tube latents, mean over the
    |J_m|^2 pairs of each sample, then over samples. ``beta`` is smooth-L1's quadratic zone.
    """
    check_token_batch(pred, target, target_idx, target_valid)
    z_hat, present = tube_latents(pred, target_idx, target_valid, num_tubes)
    z_tgt, _ = tube_latents(target.detach(), target_idx, target_valid, num_tubes)
    g_hat = _cosine_gram(unit_normalise(z_hat, eps))
    g_tgt = _cosine_gram(unit_normalise(z_tgt, eps))
    pair = (present[:, :, None] & present[:, None, :]).to(torch.float32)
    err = F.smooth_l1_loss(g_hat, g_tgt, reduction="none", beta=beta) * pair
    n = present.sum(dim=1).to(torch.float32)
    per_sample = err.sum(dim=(1, 2)) / (n * n).clamp(min=1.0)
    return _per_sample_mean(per_sample, n > 0)
