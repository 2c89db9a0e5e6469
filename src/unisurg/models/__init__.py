"""Video ViT encoder, V-JEPA predictor, MAE decoder, EMA target, image trunks, checkpoints and interop.

    from unisurg.models import build_encoder, build_predictor
    enc = build_encoder("large")                      # [B, C, T, H, W] -> [B, N, 1024]
    pred = build_predictor(enc)                       # width 384, depth 12
"""

from unisurg.models.checkpoint import (
    load_encoder,
    load_predictor,
    save_checkpoint,
    save_encoder,
)
from unisurg.models.ema import MomentumSchedule, ema_update_, make_target, momentum_at
from unisurg.models.interop_vjepa2 import export_vjepa2
from unisurg.models.predictor import PredictorConfig, VideoPredictor
from unisurg.models.presets import (
    PRESETS,
    build_encoder,
    build_predictor,
    encoder_config,
)
from unisurg.models.strict_load import CheckpointError
from unisurg.models.vit import EncoderConfig, VideoViT, gather_tokens, token_grid

__all__ = [
    "PRESETS",
    "CheckpointError",
    "EncoderConfig",
    "MomentumSchedule",
    "PredictorConfig",
    "VideoPredictor",
    "VideoViT",
    "build_encoder",
    "build_predictor",
    "ema_update_",
    "encoder_config",
    "export_vjepa2",
    "gather_tokens",
    "load_encoder",
    "load_predictor",
    "make_target",
    "momentum_at",
    "save_checkpoint",
    "save_encoder",
    "token_grid",
]
