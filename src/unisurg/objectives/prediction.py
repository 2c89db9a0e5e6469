"""The plain latent prediction loss of V-JEPA: the L1 between predicted and EMA target latents.

The motion-weighted versions of the same L1 (L_motion) live beside the motion score in
:mod:`unisurg.objectives.motion`.

Every loss takes ``pred, target [B, Nt, D]`` at the padded target tokens; the target is
stop-gradient (sg in the paper) and is detached here again so that a caller cannot leak
gradient into the EMA branch.
"""

from __future__ import annotations

import torch

from unisurg.objectives.tokens import (
    weighted_token_mean,
)


def token_l1_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|z_hat - sg(z^E)|_1 per token as a MEAN over channels (V-JEPA convention), ``[B, Nt]`` fp32."""
    return (pred.float() - target.detach().float()).abs().mean(dim=-1)


def l1_prediction_loss(pred: torch.Tensor, target: torch.Tensor, target_valid: torch.Tensor) -> torch.Tensor:
    """Plain V-JEPA loss: mean over the batch's valid masked tokens of the channel-mean L1."""
    return weighted_token_mean(token_l1_error(pred, target), None, target_valid)
