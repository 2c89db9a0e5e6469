"""Start a run from existing weights (``init.checkpoint``): ours (e.g. stage 1 -> stage 2) or official V-JEPA 2.

Everything loaded must fit the configured architecture exactly: an architecture setting that
differs is reported under its config key (``model.encoder.embed_dim`` ...), a tensor that cannot carry
over under its parameter name; nothing is silently re-initialised. Positions are computed on
the fly (RoPE, or sin-cos for the actual grid), so the clip length T may change between stages.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from torch import nn

from unisurg.models.checkpoint import CONFIG_NAME, load_encoder, load_predictor
from unisurg.models.mae_decoder import MAEDecoder
from unisurg.models.predictor import VideoPredictor
from unisurg.models.strict_load import CheckpointError, check_state_dict, load_strict
from unisurg.models.vit import VideoViT
from unisurg.train.checkpointing import DECODER_NAME, latest_checkpoint, read_decoder
from unisurg.train.pretrain_config import InitConfig

# Fields that decide whether weights fit; reported under the config key that sets them.
ENCODER_KEYS = {f: f"model.encoder.{f}" for f in ("embed_dim", "depth", "num_heads", "mlp_hidden_dim", "patch_size",
                                                   "tubelet_size", "in_chans", "qkv_bias", "pos_embed")}
PREDICTOR_KEYS = {f: f"model.predictor.{f}" for f in ("embed_dim", "predictor_dim", "depth", "num_heads",
                                                       "mlp_hidden_dim", "num_mask_tokens", "pos_embed")}
DECODER_KEYS = {f: f"model.decoder.{f}" for f in ("embed_dim", "decoder_dim", "depth", "num_heads", "patch_dim",
                                                   "pos_embed")}


def resolve_init_path(path: str | Path) -> Path:
    """A checkpoint path; a run folder resolves to its ``final`` export, else its latest checkpoint."""
    p = Path(path)
    if p.is_dir() and not (p / CONFIG_NAME).exists() and not (p / "config.json").exists():
        if (p / "final" / CONFIG_NAME).exists():
            return p / "final"
        latest = latest_checkpoint(p / "checkpoints")
        if latest is not None:
            return latest
    if not p.exists():
        raise FileNotFoundError(f"init.checkpoint: {p} does not exist")
    return p


def _differences(src_cfg, dst_cfg, keys: dict[str, str]) -> list[str]:
    out = []
    for field, key in keys.items():
        a, b = getattr(src_cfg, field), getattr(dst_cfg, field)
        if a != b:
            out.append(f"{key}: checkpoint has {field}={a!r}, the config builds {b!r}")
    if src_cfg.pos_embed == dst_cfg.pos_embed == "rope" and src_cfg.rope_variant != dst_cfg.rope_variant:
        out.append(f"model.encoder.rope_variant: checkpoint {src_cfg.rope_variant!r}, config {dst_cfg.rope_variant!r}")
    if (src_cfg.pos_embed == dst_cfg.pos_embed == "sincos"
            and src_cfg.sincos_uniform_power != dst_cfg.sincos_uniform_power):
        out.append(f"model.encoder.sincos_uniform_power: checkpoint {src_cfg.sincos_uniform_power}, "
                   f"config {dst_cfg.sincos_uniform_power}")
    return out


def check_fits(dst: nn.Module, src: nn.Module, keys: dict[str, str], source: str) -> None:
    """Raise :class:`CheckpointError` listing every architecture setting (by config key) and every tensor
    (by parameter name) of ``src`` that does not fit ``dst``."""
    problems = _differences(src.config, dst.config, keys)
    try:
        check_state_dict(dst, src.state_dict(), source=source)
    except CheckpointError as e:
        problems.append(str(e))
    if problems:
        raise CheckpointError(f"init.checkpoint {source} does not fit the configured model:\n  - "
                              + "\n  - ".join(problems)
                              + "\n  change the model section to the checkpoint's architecture, or drop init.checkpoint")


def load_into(dst: nn.Module, src: nn.Module, keys: dict[str, str], source: str) -> None:
    """Copy ``src``'s weights into ``dst`` after :func:`check_fits`."""
    check_fits(dst, src, keys, source)
    load_strict(dst, src.state_dict(), source=source)


def _quiet_load(fn, *args, notes: list[str], **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    notes.extend(str(w.message) for w in caught)
    return out


def initialise(cfg: InitConfig, encoder: VideoViT, *, predictor: VideoPredictor | None = None,
               decoder: MAEDecoder | None = None) -> tuple[dict | None, list[str]]:
    """Load ``cfg.checkpoint`` into the modules in place; returns (target encoder state or None, notes)."""
    path = resolve_init_path(cfg.checkpoint)
    notes = [f"initialised from {path}"]
    c = encoder.config
    kw = dict(num_heads=c.num_heads, pos_embed=c.pos_embed, rope_variant=c.rope_variant)
    src = _quiet_load(load_encoder, path, which=cfg.encoder_from, notes=notes, **kw)
    load_into(encoder, src, ENCODER_KEYS, f"{path} [{src.load_info['component']}]")
    target_sd = None
    if cfg.load_target:
        tgt = _quiet_load(load_encoder, path, which="target_encoder", notes=notes, **kw)
        check_fits(encoder, tgt, ENCODER_KEYS, f"{path} [{tgt.load_info['component']}]")
        target_sd = tgt.state_dict()
    if predictor is not None and cfg.load_predictor:
        pc = predictor.config
        try:
            src_p = load_predictor(path, num_heads=pc.num_heads, pos_embed=pc.pos_embed, rope_variant=pc.rope_variant)
        except CheckpointError as e:
            raise CheckpointError(f"{e}\n  set init.load_predictor=false to start the predictor from scratch") from None
        load_into(predictor, src_p, PREDICTOR_KEYS, f"{path} [predictor]")
    if decoder is not None and cfg.load_decoder:
        if not (Path(path) / DECODER_NAME).exists():
            raise CheckpointError(f"init.checkpoint {path} has no MAE decoder ({DECODER_NAME}); set "
                                  "init.load_decoder=false to start the decoder from scratch")
        dec_cfg, sd = read_decoder(Path(path))
        src_d = MAEDecoder(dec_cfg)
        load_strict(src_d, sd, source=str(Path(path) / DECODER_NAME))
        load_into(decoder, src_d, DECODER_KEYS, f"{path} [decoder]")
    return target_sd, notes
