"""Variance regularisation L_var (paper section 3.4.3, "Varianced Prediction Regularization").

Statistics are over the valid predicted masked tokens of the LOCAL batch: under DDP each rank
regularises its own batch (no all-gather), as VICReg-style variance terms usually are. With
per-rank batches of thousands of tokens the per-channel std is well estimated either way.
"""

from __future__ import annotations

import torch


def channel_std(z: torch.Tensor, valid: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Per-channel std over all valid tokens of the batch, sqrt(var_d + eps), ``[D]`` fp32.

    The variance is the UNBIASED one (divide by n - 1), as ``torch.var`` and VICReg use.
    Masked arithmetic instead of boolean indexing: no device sync.
    """
    v = valid.to(torch.float32)[..., None]
    zf = z.float()
    n = v.sum()
    mean = (zf * v).sum(dim=(0, 1)) / n.clamp(min=1.0)
    var = (((zf - mean) * v) ** 2).sum(dim=(0, 1)) / (n - 1.0).clamp(min=1.0)
    return torch.sqrt(var + eps)


def variance_loss(pred: torch.Tensor, target_valid: torch.Tensor, sigma0: float = 1.0,
                  eps: float = 1e-4) -> torch.Tensor:
    """L_var = 1/D sum_d max(0, sigma0 - sigma_d), sigma_d = sqrt(var_d + eps) (paper 3.4.3).

    var_d: unbiased variance of channel d over the valid predicted masked latents of the batch.
    """
    if pred.dim() != 3 or target_valid.shape != pred.shape[:2]:
        raise ValueError(f"pred must be [B, Nt, D] and target_valid [B, Nt]; got {tuple(pred.shape)} "
                         f"and {tuple(target_valid.shape)}")
    if target_valid.dtype != torch.bool:
        raise ValueError(f"target_valid must be a bool tensor, got {target_valid.dtype}")
    return torch.relu(sigma0 - channel_std(pred, target_valid, eps)).mean()
