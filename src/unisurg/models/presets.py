"""Named encoder sizes, one factory each (widths/depths/heads of V-JEPA 2's ViTs).

| preset | width | depth | heads | mlp hidden            |
|--------|-------|-------|-------|-----------------------|
| tiny   | 192   | 4     | 3     | 768  (tests only)     |
| small  | 384   | 12    | 6     | 1536                  |
| base   | 768   | 12    | 12    | 3072                  |
| large  | 1024  | 24    | 16    | 4096                  |
| huge   | 1280  | 32    | 16    | 5120                  |
| giant  | 1408  | 40    | 22    | 6144 (ratio 48/11)    |

``giant`` is V-JEPA 2's ``vit_giant_xformers`` (22 heads of 64 channels), the ViT-g of its
released weights; V-JEPA's older ``vit_giant`` used 16 heads of 88 (pass ``num_heads=16``).
All presets: tubelet 2 x 16 x 16, qkv bias, LayerNorm eps 1e-6, 3D RoPE unless ``pos_embed="sincos"``.
"""

from __future__ import annotations

from unisurg.models.predictor import PredictorConfig, VideoPredictor
from unisurg.models.vit import EncoderConfig, VideoViT

PRESETS: dict[str, dict] = {
    "tiny": dict(embed_dim=192, depth=4, num_heads=3, mlp_ratio=4.0),
    "small": dict(embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0),
    "base": dict(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0),
    "large": dict(embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0),
    "huge": dict(embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0),
    "giant": dict(embed_dim=1408, depth=40, num_heads=22, mlp_ratio=48 / 11),
}

# Heads of V-JEPA-family encoders by width: the only architecture number a state dict cannot show.
HEADS_BY_WIDTH = {spec["embed_dim"]: spec["num_heads"] for spec in PRESETS.values()}


def encoder_config(name: str, **overrides) -> EncoderConfig:
    """The :class:`EncoderConfig` of preset ``name`` with ``overrides`` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown encoder preset {name!r}; choose one of {list(PRESETS)}")
    return EncoderConfig(**{**PRESETS[name], "name": name, **overrides})


def build_encoder(name: str, **overrides) -> VideoViT:
    """Encoder of preset ``name`` (e.g. ``build_encoder("large", pos_embed="sincos")``)."""
    return VideoViT(encoder_config(name, **overrides))


def build_predictor(encoder: VideoViT | EncoderConfig, **overrides) -> VideoPredictor:
    """V-JEPA predictor for ``encoder`` (width 384, depth 12, 12 heads by default), same position scheme."""
    cfg = encoder.config if isinstance(encoder, VideoViT) else encoder
    base = dict(
        embed_dim=cfg.embed_dim,
        pos_embed=cfg.pos_embed,
        rope_variant=cfg.rope_variant,
        sincos_uniform_power=cfg.sincos_uniform_power,
        norm_eps=cfg.norm_eps,
    )
    return VideoPredictor(PredictorConfig(**{**base, **overrides}))


def vit_tiny(**overrides) -> VideoViT:
    return build_encoder("tiny", **overrides)


def vit_small(**overrides) -> VideoViT:
    return build_encoder("small", **overrides)


def vit_base(**overrides) -> VideoViT:
    return build_encoder("base", **overrides)


def vit_large(**overrides) -> VideoViT:
    return build_encoder("large", **overrides)


def vit_huge(**overrides) -> VideoViT:
    return build_encoder("huge", **overrides)


def vit_giant(**overrides) -> VideoViT:
    return build_encoder("giant", **overrides)
