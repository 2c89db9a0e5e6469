"""Loaders of our encoder family: our checkpoints, official V-JEPA 2 files, HF VJEPA2 folders, random init."""

from __future__ import annotations

import difflib
import json
import logging
import typing
import warnings
from pathlib import Path

import torch

from unisurg.backbones.hf import load_hf_vjepa2_transformers
from unisurg.backbones.spec import (
    COMMON_OPTIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VIDEO_IMG_SIZE,
    VIDEO_NUM_FRAMES,
    Backbone,
    BackboneSpecError,
    SpecOptions,
    fingerprint_path,
    fingerprint_state_dict,
    parse_option_value,
    vit_size_name,
)
from unisurg.models.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    detect_format,
    load_encoder,
    read_config,
)
from unisurg.models.presets import PRESETS, build_encoder
from unisurg.models.vit import EncoderConfig

# ---------------------------------------------------------------- our encoder family

log = logging.getLogger(__name__)




def _require(path: Path, spec: str) -> Path:
    if not path.exists() and not (path.suffix == ".json" and path.with_suffix(".safetensors").exists()):
        raise FileNotFoundError(f"backbone spec {spec!r}: weights not found: {path}")
    return path


def _video_backbone(encoder, *, name: str, spec: str, fingerprint: str, img_size: int, num_frames: int) -> Backbone:
    c = encoder.config
    return Backbone(
        name=name, spec=spec, model=encoder, embed_dim=c.embed_dim, num_frames=num_frames, img_size=img_size,
        patch_size=c.patch_size, tubelet_size=c.tubelet_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, kind="video",
        fingerprint=fingerprint,
    )


def _ours_files(path: Path) -> list[Path]:
    """Weights + JSON of our format: ``DIR/weights.safetensors`` + ``DIR/unisurg.json``, or a ``NAME.*`` pair."""

    if path.suffix in (".safetensors", ".json"):
        pair = [path.with_suffix(".safetensors"), path.with_suffix(".json")]
    else:
        pair = [path / WEIGHTS_NAME, path / CONFIG_NAME]
    return [p for p in pair if p.exists()]


def load_unisurg(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """Our checkpoint through :func:`unisurg.models.load_encoder` (target encoder unless ``#encoder``)."""

    path = _require(Path(arg), spec)
    explicit = "which" in opts
    which = opts.take("which", "target_encoder", choices=("target_encoder", "encoder"))
    fmt = detect_format(path)
    if fmt != "unisurg":
        other = {"hf": "hf-vjepa2", "torch": "vjepa2", "safetensors": "vjepa2"}[fmt]
        raise BackboneSpecError(f"backbone spec {spec!r}: {path} is not in our checkpoint format; use '{other}:{arg}'")
    config = read_config(path)
    components = config.get("components", {})
    if not explicit and which not in components and "encoder" in components:
        which = "encoder"  # a save_encoder() file: its only encoder is the one meant
    encoder = load_encoder(path, which=which)
    extra = config.get("extra") or {}
    label = encoder.config.name
    if label in ("custom", ""):
        label = vit_size_name(encoder.config.embed_dim)
    both = {"encoder", "target_encoder"} <= set(components)
    suffix = " (online)" if both and encoder.load_info["component"] == "encoder" else ""
    return _video_backbone(
        encoder, name=f"UniSurg-{label}{suffix}", spec=spec,
        fingerprint=fingerprint_path(*_ours_files(path), extra=encoder.load_info["component"]),
        img_size=int(extra.get("img_size", VIDEO_IMG_SIZE)), num_frames=int(extra.get("num_frames", VIDEO_NUM_FRAMES)),
    )


def load_vjepa2(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """Official V-JEPA 2 ``torch.save`` file (or a bare HF VJEPA2 state dict file) via ``load_encoder``."""

    path = _require(Path(arg), spec)
    fmt = detect_format(path)
    if fmt in ("unisurg", "hf"):
        other = "unisurg" if fmt == "unisurg" else "hf-vjepa2"
        raise BackboneSpecError(f"backbone spec {spec!r}: {path} is not an official V-JEPA 2 file; use '{other}:{arg}'")
    explicit = "which" in opts
    which = opts.take("which", "target_encoder", choices=("target_encoder", "encoder"))
    num_heads = opts.take("num_heads", cast=int)
    pos_embed = opts.take("pos_embed", "auto", choices=("auto", "rope", "sincos"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder = load_encoder(path, which=which, num_heads=num_heads, pos_embed=pos_embed)
    for w in caught:
        if not explicit and "instead" in str(w.message):  # a release file with only 'encoder' (e.g. SurgRec-JEPA)
            log.info("%s", w.message)
        else:
            warnings.warn(w.message, w.category, stacklevel=3)
    for note in encoder.load_info.get("notes", []):
        log.info("%s: %s", path, note)
    return _video_backbone(
        encoder, name=f"V-JEPA 2 {vit_size_name(encoder.config.embed_dim)}", spec=spec,
        fingerprint=fingerprint_path(path, extra=encoder.load_info["component"]),
        img_size=VIDEO_IMG_SIZE, num_frames=VIDEO_NUM_FRAMES,
    )


def load_hf_vjepa2(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """HF VJEPA2 ``save_pretrained`` folder; our encoder by default, ``?impl=transformers`` for the library's."""

    path = _require(Path(arg), spec)
    impl = opts.take("impl", "ours", choices=("ours", "transformers"))
    if impl == "transformers":
        return load_hf_vjepa2_transformers(path, opts, spec=spec)
    if not (path.is_dir() and (path / "config.json").exists()):
        raise BackboneSpecError(f"backbone spec {spec!r}: {path} is not a HF folder with config.json")
    cfg = json.loads((path / "config.json").read_text())
    encoder = load_encoder(path)
    return _video_backbone(
        encoder, name=f"V-JEPA 2 {vit_size_name(encoder.config.embed_dim)} (HF)", spec=spec,
        fingerprint=fingerprint_path(path), img_size=int(cfg.get("crop_size", VIDEO_IMG_SIZE)),
        num_frames=int(cfg.get("frames_per_clip", VIDEO_NUM_FRAMES)),
    )


def _config_overrides(raw: dict[str, str], spec: str) -> dict:
    """``?key=value`` strings -> typed :class:`EncoderConfig` overrides (unknown keys name the nearest field)."""

    hints = typing.get_type_hints(EncoderConfig)
    out = {}
    for key, value in raw.items():
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints) + list(COMMON_OPTIONS), 1, 0.5)
            raise BackboneSpecError(
                f"backbone spec {spec!r}: {key!r} is neither an option nor an encoder config field"
                + (f"; did you mean {close[0]!r}?" if close else f"; fields: {', '.join(hints)}")
            )
        tp = hints[key]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        base = args[0] if args else tp
        if value.lower() == "none" and type(None) in typing.get_args(tp):
            out[key] = None
            continue
        try:
            out[key] = parse_option_value(value, base if base in (int, float, bool) else str)
        except ValueError as e:
            raise BackboneSpecError(f"backbone spec {spec!r}: {key}={value!r}: {e}") from None
    return out


def load_random(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``PRESET[@SEED]``: a preset encoder initialised from ``torch.manual_seed(SEED)`` (default 0) on the CPU.

    The global RNG state is restored afterwards; remaining options override :class:`EncoderConfig` fields.
    """

    preset, _, seed_text = arg.partition("@")
    if preset not in PRESETS:
        close = difflib.get_close_matches(preset, list(PRESETS), 1, 0.3)
        raise BackboneSpecError(
            f"backbone spec {spec!r}: unknown preset {preset!r}"
            + (f"; did you mean {close[0]!r}?" if close else "") + f" Presets: {', '.join(PRESETS)}"
        )
    try:
        seed = int(seed_text) if seed_text else 0
    except ValueError:
        raise BackboneSpecError(f"backbone spec {spec!r}: seed {seed_text!r} after '@' is not an integer") from None
    overrides = _config_overrides(opts.take_all(), spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            encoder = build_encoder(preset, **overrides)
        except (TypeError, ValueError) as e:
            raise BackboneSpecError(f"backbone spec {spec!r}: {e}") from e
    encoder.eval()
    config_text = json.dumps(encoder.config.to_dict(), sort_keys=True)
    return _video_backbone(
        encoder, name=f"random-init {preset}", spec=spec,
        fingerprint=fingerprint_state_dict(encoder.state_dict(), extra=config_text),
        img_size=VIDEO_IMG_SIZE, num_frames=VIDEO_NUM_FRAMES,
    )


