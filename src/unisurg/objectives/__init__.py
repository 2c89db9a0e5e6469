"""Training objectives: the UniSurg loss (paper section 3.4) and the SurgRec-MAE pixel loss.

``unisurg_loss(x, pred, target, masks, cfg)`` is the entry point of the pretraining loop; the
single-equation functions below are public for ablations and tests.
"""

from unisurg.objectives.affinity import (
    affinity_distillation_loss,
    gram_affinity_loss,
    tube_latents,
    unit_normalise,
)
from unisurg.objectives.mae import mae_loss, mae_targets, patchify, unpatchify
from unisurg.objectives.motion import (
    dense_motion_map,
    dense_motion_prediction_loss,
    motion_prediction_loss,
    motion_score,
    topk_motion_tubes,
    topk_motion_weights,
)
from unisurg.objectives.prediction import l1_prediction_loss, token_l1_error
from unisurg.objectives.unisurg_loss import UniSurgLossConfig, unisurg_loss
from unisurg.objectives.variance import channel_std, variance_loss

__all__ = [
    "UniSurgLossConfig", "unisurg_loss",
    "motion_score", "topk_motion_tubes", "topk_motion_weights", "dense_motion_map",
    "token_l1_error", "l1_prediction_loss", "motion_prediction_loss", "dense_motion_prediction_loss",
    "tube_latents", "unit_normalise", "affinity_distillation_loss", "gram_affinity_loss",
    "channel_std", "variance_loss",
    "patchify", "unpatchify", "mae_targets", "mae_loss",
]
