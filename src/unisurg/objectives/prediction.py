"""Latent prediction losses: plain V-JEPA L1 and the motion-guided L1 (paper section 3.4.1,
"Motion-guide Prediction Loss"), plus the dense-motion-weighted L1 of the authors' code.

Every loss takes ``pred, target [B, Nt, D]`` at the padded target tokens; the target is
stop-gradient (sg in the paper) and is detached here again so that a caller cannot leak
gradient into the EMA branch.
"""

from __future__ import annotations

from typing import Literal

import torch

from unisurg.objectives.tokens import (
    check_token_batch,
    safe_index,
    token_tubes,
    weighted_token_mean,
)


def token_l1_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|z_hat - sg(z^E)|_1 per token as a MEAN over channels (V-JEPA convention), ``[B, Nt]`` fp32."""
    return (pred.float() - target.detach().float()).abs().mean(dim=-1)


def l1_prediction_loss(pred: torch.Tensor, target: torch.Tensor, target_valid: torch.Tensor) -> torch.Tensor:
    """Plain V-JEPA loss: mean over the batch's valid masked tokens of the channel-mean L1."""
    return weighted_token_mean(token_l1_error(pred, target), None, target_valid)


def motion_prediction_loss(pred: torch.Tensor, target: torch.Tensor, target_idx: torch.Tensor,
                           target_valid: torch.Tensor, tube_weights: torch.Tensor,
                           scope: Literal["all", "topk"] = "all",
                           selected_tubes: torch.Tensor | None = None) -> torch.Tensor:
    """L_motion, the motion-guided L1 (paper section 3.4.1, "Motion-guide Prediction Loss").

        paper:  L_motion = sum_{i in J_h} (1 + w_i) * ||z_hat_i - sg(z^E_i)||_1

    A tube has T' tubelet tokens; each token is weighted by its tube's w (``tube_weights [B, S]``,
    from :func:`topk_motion_weights`) and the L1 is a mean over channels.

    ``scope="all"`` (default, SPEC 3 interpretation): the sum runs over ALL masked tubes (the
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
    """L1 with a dense per-token weight 1 + strength * m_n (the authors' code, SPEC section 3).

    ``motion_map [B, N]`` in [0, 1] over all N clip tokens (:func:`dense_motion_map`), gathered
    at ``target_idx``; mean over the batch's valid masked tokens of (1 + strength*m) * L1.
    """
    check_token_batch(pred, target, target_idx, target_valid)
    if motion_map.dim() != 2 or motion_map.shape[0] != pred.shape[0]:
        raise ValueError(f"motion_map must be [B, N] with B = {pred.shape[0]}, got {tuple(motion_map.shape)}")
    m_tok = motion_map.detach().float().gather(1, safe_index(target_idx, target_valid))
    return weighted_token_mean(token_l1_error(pred, target), 1.0 + strength * m_tok, target_valid)
