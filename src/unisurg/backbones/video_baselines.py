"""Loaders for the video baselines released in their authors' own checkpoint layouts (strict, no code executed).

==============================  ========================================================================================
``endofm:FILE``                 Endo-FM (med-air/Endo-FM) ``endo_fm.pth``: DINO training file, weights under
                                ``teacher`` (else ``student`` / ``model`` / the top level) with prefix ``backbone.``;
                                the DINO projection head (``head.*``) is left out. TimeSformer ViT-B/16,
                                divided space-time attention (:mod:`unisurg.models.timesformer`).
                                Input: 8 frames of 224 px, mean (0.45, 0.45, 0.45), std (0.225, 0.225, 0.225).
``videomaev2:DIR_OR_FILE``      VideoMAE V2 in OpenGVLab's native layout: a ``.pth`` of ``models/modeling_finetune.py``
                                or ``modeling_pretrain.py`` (weights under ``model`` / ``module`` / the top level,
                                prefixes ``module.``, ``encoder.``, ``backbone.``), or a Hugging Face folder
                                (``OpenGVLab/VideoMAEv2-*``: ``config.json`` + ``model.safetensors`` /
                                ``pytorch_model.bin``, prefix ``model.``). Input: SurgMotion's protocol, a 64-frame
                                clip of 224 px split into 4 x 16-frame forwards, ImageNet mean/std.
``internvideo2:FILE``           InternVideo2 vision encoder (OpenGVLab/InternVideo ``PretrainInternVideo2``; SurgMotion
                                uses ``InternVideo2-stage2_1b-224p-f4.pt``): weights under ``module`` / ``model`` /
                                ``state_dict`` / the top level, encoder under ``vision_encoder.`` (text tower and
                                projections left out; CLIP-distillation heads ``clip_*`` dropped). Input: SurgMotion's,
                                4 frames of 224 px per forward (longer clips in 4-frame segments), ImageNet mean/std;
                                ``?gelu=tanh`` (default, the fused training path) or ``exact``.
``surgrec-mae:FILE``            SurgRec-MAE ``surgrec_mae.pth`` (Siiichenggg/SurgRec-open-source): VideoMAE
                                pretraining file, weights under ``model``, encoder under ``encoder.``, decoder left
                                out. Same architecture; input: 16 frames of 224 px (the SurgRec fine-tuning clip),
                                ImageNet mean/std (longer clips are split into 16-frame forwards).
==============================  ========================================================================================

Every key inside the backbone prefix must map onto the architecture (missing, unexpected or misshaped keys
raise :class:`~unisurg.models.strict_load.CheckpointError` naming them); entries outside it (decoder, DINO
head, classifier ``head.*``) are left out and logged. The architecture is read off the tensor shapes; the
head count is the one thing shapes cannot tell: it comes from ``?num_heads=``, the folder's ``config.json``,
or the standard ViT sizes (width 384 -> 6, 768 -> 12, 1024/1280/1408 -> 16; InternVideo2-6B 3200 -> 25).

Token layouts (all ``[B, N, D]``, (t, h, w) order, final norm applied, no class token):
Endo-FM ``N = T * (H/16) * (W/16)`` (the official model's (h, w, t) order is permuted to (t, h, w));
VideoMAE V2 / SurgRec-MAE ``N = T/2 * (H/16) * (W/16)``, segments concatenated in time order;
InternVideo2 ``N = T * (H/14) * (W/14)`` (residual stream after the last block, no final norm in the model).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from unisurg.backbones.image import read_weights, select_state_dict
from unisurg.backbones.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    BackboneSpecError,
    SpecOptions,
    fingerprint_path,
    vit_size_name,
)
from unisurg.models.image_vit import HEADS_BY_VIT_WIDTH
from unisurg.models.internvideo2 import (
    GELU_KINDS,
    InternVideo2Config,
    InternVideo2Encoder,
)
from unisurg.models.strict_load import CheckpointError, load_strict
from unisurg.models.timesformer import TimeSformerConfig, TimeSformerEncoder
from unisurg.models.videomae_native import (
    SegmentedVideoEncoder,
    VideoMAEConfig,
    VideoMAEEncoder,
)

log = logging.getLogger(__name__)

PATCH_ANCHOR = "patch_embed.proj.weight"
# Entries inside the backbone prefix that are not part of the frozen encoder: classifier heads of fine-tuned
# files (VideoMAE ``head``, ``head_dropout`` has no weights) and Endo-FM's unused classifier.
CLASSIFIER_KEYS = re.compile(r"^head\.")
ENDOFM_MEAN, ENDOFM_STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)  # Endo-FM utils/defaults.py DATA.MEAN / STD
ENDOFM_IMG_SIZE, ENDOFM_NUM_FRAMES = 224, 8  # Endo-FM TimeSformer_divST_8x32_224.yaml (pretraining and fine-tuning)
VIDEOMAE_IMG_SIZE = 224
VIDEOMAE_SEGMENT_FRAMES = 16  # VideoMAE's native clip; SurgMotion splits 64 frames into 4 x 16
SURGMOTION_NUM_FRAMES = 64
SURGREC_NUM_FRAMES = 16  # SurgRec fine-tuning: 16 frames (sampling rate 4) at 224 px
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INTERNVIDEO2_HEADS = {1408: 16, 3200: 25}  # pretrain_internvideo2_1b / _6b_patch14_224
INTERNVIDEO2_IMG_SIZE = 224  # SurgMotion's InternVideo2-Stage2_1B-224p-f4: 4 frames of 224 px
# InternVideo2 entries off the x_vis path: CLIP-distillation heads and their position tables, the image table
INTERNVIDEO2_UNUSED = re.compile(r"^(clip_|final_clip_decoder\.|img_pos_embed$)")


# ---------------------------------------------------------------- shared helpers


def _heads(width: int, given: int | None, source: str) -> int:
    """Head count: the given one, else the standard ViT size for ``width``."""
    if given is not None:
        return given
    if width not in HEADS_BY_VIT_WIDTH:
        raise CheckpointError(
            f"{source}: width {width} is not a standard ViT size ({sorted(HEADS_BY_VIT_WIDTH)}); "
            "give the head count with ?num_heads="
        )
    return HEADS_BY_VIT_WIDTH[width]


def _need(sd: dict[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"{source}: missing key {key!r} (found e.g. {sorted(sd)[:8]}); "
                              "is this the right kind of model?")
    return sd[key]


def _depth(sd: dict[str, torch.Tensor], source: str) -> int:
    ids = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if not ids:
        raise CheckpointError(f"{source}: no 'blocks.N.' entries; is this the right kind of model?")
    missing = sorted(set(range(max(ids) + 1)) - ids)
    if missing:
        raise CheckpointError(f"{source}: blocks {missing} are missing (found blocks 0..{max(ids)} with gaps)")
    return max(ids) + 1


def _drop_classifier(sd: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    kept = {k: v for k, v in sd.items() if not CLASSIFIER_KEYS.match(k)}
    if len(kept) != len(sd):
        notes.append(f"classifier entries left out: {sorted(set(sd) - set(kept))}")
    return kept


def _file(arg: str, spec: str) -> Path:
    path = Path(arg)
    if not path.exists():
        raise FileNotFoundError(f"backbone spec {spec!r}: weights not found: {path}")
    return path


# ---------------------------------------------------------------- Endo-FM (TimeSformer)


def timesformer_config(sd: dict[str, torch.Tensor], *, source: str, num_heads: int | None = None) -> TimeSformerConfig:
    """Architecture of an Endo-FM / TimeSformer state dict (prefix removed), read off the tensor shapes."""
    w = _need(sd, PATCH_ANCHOR, source)
    if w.dim() != 4:
        raise CheckpointError(f"{source}: {PATCH_ANCHOR} has shape {tuple(w.shape)}; a TimeSformer has a 2D patch "
                              "embedding [D, C, p, p]")
    pos = _need(sd, "pos_embed", source)
    grid = round((pos.shape[1] - 1) ** 0.5)
    if grid * grid != pos.shape[1] - 1:
        raise CheckpointError(f"{source}: pos_embed has {pos.shape[1]} entries, not 1 + a square grid")
    if "blocks.0.temporal_attn.qkv.weight" not in sd:
        raise CheckpointError(f"{source}: no 'blocks.0.temporal_attn.qkv.weight': not a divided space-time "
                              "TimeSformer (Endo-FM); space-only / joint variants are not supported")
    width = w.shape[0]
    return TimeSformerConfig(
        embed_dim=width, depth=_depth(sd, source), num_heads=_heads(width, num_heads, source),
        mlp_hidden=_need(sd, "blocks.0.mlp.fc1.weight", source).shape[0], patch_size=w.shape[-1],
        in_chans=w.shape[1], pos_grid=grid, time_frames=_need(sd, "time_embed", source).shape[1],
    )


def build_endofm(obj, *, source: str, num_heads: int | None = None, key: str | None = None,
                 prefix: str | None = None) -> tuple[TimeSformerEncoder, list[str]]:
    """A :class:`TimeSformerEncoder` from an Endo-FM checkpoint object (strict)."""
    if key is None and isinstance(obj, dict) and isinstance(obj.get("teacher"), dict):
        key = "teacher"  # DINO: the teacher is the evaluated model (Endo-FM eval_finetune.py)
    sd, notes = select_state_dict(obj, PATCH_ANCHOR, source=source, key=key, prefix=prefix)
    sd = _drop_classifier(sd, notes)
    model = TimeSformerEncoder(timesformer_config(sd, source=source, num_heads=num_heads))
    load_strict(model, sd, source=source)
    return model.eval(), notes


def load_endofm(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``endofm:FILE[?num_heads=&key=&prefix=]``: Endo-FM's released ``.pth``."""
    path = _file(arg, spec)
    model, notes = build_endofm(read_weights(path), source=str(path), num_heads=opts.take("num_heads", cast=int),
                                key=opts.take("key"), prefix=opts.take("prefix"))
    for note in notes:
        log.info("%s: %s", path, note)
    c = model.config
    return Backbone(
        name=f"Endo-FM TimeSformer {vit_size_name(c.embed_dim)}/{c.patch_size}", spec=spec, model=model,
        embed_dim=c.embed_dim, num_frames=ENDOFM_NUM_FRAMES, img_size=ENDOFM_IMG_SIZE, patch_size=c.patch_size,
        tubelet_size=1, mean=ENDOFM_MEAN, std=ENDOFM_STD, kind="video", fingerprint=fingerprint_path(path),
    )


# ---------------------------------------------------------------- VideoMAE V2 / SurgRec-MAE (native layout)


def videomae_config(sd: dict[str, torch.Tensor], *, source: str, num_heads: int | None = None) -> VideoMAEConfig:
    """Architecture of a native-layout VideoMAE state dict (prefix removed), read off the tensor shapes."""
    w = _need(sd, PATCH_ANCHOR, source)
    if w.dim() != 5:
        raise CheckpointError(f"{source}: {PATCH_ANCHOR} has shape {tuple(w.shape)}; VideoMAE has a 3D tubelet "
                              "embedding [D, C, tubelet, p, p]")
    if "blocks.0.attn.scale" in sd:
        raise CheckpointError(f"{source}: 'blocks.0.attn.scale' means cosine attention (cos_attn=True), which is not "
                              "supported")
    if "blocks.0.attn.qkv.bias" in sd:
        raise CheckpointError(f"{source}: 'blocks.0.attn.qkv.bias' is a fused qkv bias (timm / HF layout), not "
                              "OpenGVLab's q_bias/v_bias; use the 'videomae:' kind for a Hugging Face VideoMAE folder")
    norms = [n for n in ("fc_norm", "norm") if f"{n}.weight" in sd]
    if len(norms) > 1:
        raise CheckpointError(f"{source}: both 'fc_norm.weight' and 'norm.weight' present; cannot tell the final norm")
    pos = sd.get("pos_embed")
    width = w.shape[0]
    return VideoMAEConfig(
        embed_dim=width, depth=_depth(sd, source), num_heads=_heads(width, num_heads, source),
        mlp_hidden=_need(sd, "blocks.0.mlp.fc1.weight", source).shape[0], patch_size=w.shape[-1],
        tubelet_size=w.shape[2], in_chans=w.shape[1], qkv_bias="blocks.0.attn.q_bias" in sd,
        layer_scale="blocks.0.gamma_1" in sd, learned_pos_tokens=0 if pos is None else pos.shape[1],
        final_norm=norms[0] if norms else "none",
    )


def build_videomae(obj, *, source: str, num_heads: int | None = None, key: str | None = None,
                   prefix: str | None = None) -> tuple[VideoMAEEncoder, list[str]]:
    """A :class:`VideoMAEEncoder` from a native-layout checkpoint object (strict inside the encoder prefix)."""
    sd, notes = select_state_dict(obj, PATCH_ANCHOR, source=source, key=key, prefix=prefix)
    sd = _drop_classifier(sd, notes)
    model = VideoMAEEncoder(videomae_config(sd, source=source, num_heads=num_heads))
    load_strict(model, sd, source=source)
    return model.eval(), notes


def read_videomae_source(path: Path) -> tuple[object, str, int | None, list[Path]]:
    """The checkpoint object, a display source, the head count of a HF ``config.json`` if any, and the files read.

    A directory is a Hugging Face folder of OpenGVLab's remote-code VideoMAEv2 (``config.json`` with
    ``model_config``; weights in ``model.safetensors`` or ``pytorch_model.bin``, keys under ``model.``).
    """
    if not path.is_dir():
        return read_weights(path), str(path), None, [path]
    weights = next((path / n for n in HF_WEIGHT_FILES if (path / n).exists()), None)
    if weights is None:
        raise CheckpointError(f"{path}: a VideoMAE V2 folder needs one of {list(HF_WEIGHT_FILES)}")
    heads = None
    files = [weights]
    config_path = path / "config.json"
    if config_path.exists():
        files.append(config_path)
        try:
            cfg = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{config_path}: cannot read it ({e})") from e
        model_cfg = cfg.get("model_config", cfg)
        heads = model_cfg.get("num_heads") if isinstance(model_cfg, dict) else None
    return read_weights(weights), str(weights), heads, files


def _videomae_backbone(arg: str, opts: SpecOptions, *, spec: str, label: str, num_frames: int,
                       allow_dir: bool) -> Backbone:
    path = _file(arg, spec)
    if path.is_dir() and not allow_dir:
        raise BackboneSpecError(f"backbone spec {spec!r}: {path} is a directory; this kind reads one .pth file")
    segment = opts.take("segment_frames", VIDEOMAE_SEGMENT_FRAMES, cast=int)
    num_heads = opts.take("num_heads", cast=int)
    key, prefix = opts.take("key"), opts.take("prefix")
    obj, source, cfg_heads, files = read_videomae_source(path)
    encoder, notes = build_videomae(obj, source=source, num_heads=num_heads or cfg_heads, key=key, prefix=prefix)
    for note in notes:
        log.info("%s: %s", source, note)
    c = encoder.config
    return Backbone(
        name=f"{label} {vit_size_name(c.embed_dim)}/{c.patch_size}", spec=spec,
        model=SegmentedVideoEncoder(encoder, segment).eval(), embed_dim=c.embed_dim, num_frames=num_frames,
        img_size=VIDEOMAE_IMG_SIZE, patch_size=c.patch_size, tubelet_size=c.tubelet_size, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, kind="video", fingerprint=fingerprint_path(*files, extra=f"segment={segment}"),
    )


def load_videomaev2(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``videomaev2:DIR_OR_FILE[?num_heads=&segment_frames=16&key=&prefix=]`` (SurgMotion: 64 frames as 4 x 16)."""
    return _videomae_backbone(arg, opts, spec=spec, label="VideoMAE V2", num_frames=SURGMOTION_NUM_FRAMES,
                              allow_dir=True)


def load_surgrec_mae(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``surgrec-mae:FILE[?num_heads=&segment_frames=16&key=&prefix=]``: the released ``surgrec_mae.pth``."""
    return _videomae_backbone(arg, opts, spec=spec, label="SurgRec-MAE", num_frames=SURGREC_NUM_FRAMES,
                              allow_dir=False)


# ---------------------------------------------------------------- InternVideo2


def _internvideo2_prefix(obj, source: str, key: str | None, prefix: str | None) -> tuple[str | None, str | None]:
    """Container key and prefix of the vision encoder: stage-2 files hold several towers; prefer ``vision_encoder.``."""
    if prefix is not None or not isinstance(obj, dict):
        return key, prefix
    container = obj.get(key) if key is not None else None
    if container is None:
        for name in ("module", "model", "state_dict"):
            if isinstance(obj.get(name), dict):
                key, container = name, obj[name]
                break
        else:
            container = obj
    found = sorted({k[: -len(PATCH_ANCHOR)] for k in container if isinstance(k, str) and k.endswith(PATCH_ANCHOR)})
    vision = [p for p in found if p.endswith("vision_encoder.")]
    return key, (vision[0] if len(vision) == 1 else None)


def internvideo2_config(sd: dict[str, torch.Tensor], *, source: str, num_heads: int | None = None,
                        pos_frames: int | None = None, gelu: str = "tanh") -> InternVideo2Config:
    """Architecture of an InternVideo2 vision-encoder state dict (prefix removed), read off the tensor shapes.

    ``pos_embed`` holds ``1 + T * L`` entries; ``T`` (``pos_frames``) defaults to what a 224 px grid implies."""
    w = _need(sd, PATCH_ANCHOR, source)
    if w.dim() != 5:
        raise CheckpointError(f"{source}: {PATCH_ANCHOR} has shape {tuple(w.shape)}; InternVideo2 has a 3D patch "
                              "embedding [D, C, tubelet, p, p]")
    n = _need(sd, "pos_embed", source).shape[1] - 1
    patch, tubelet = w.shape[-1], w.shape[2]
    if pos_frames is None:
        per_frame = (INTERNVIDEO2_IMG_SIZE // patch) ** 2
        if n % per_frame:
            raise CheckpointError(f"{source}: pos_embed has {n} patch entries, not a multiple of the {per_frame} "
                                  f"of a {INTERNVIDEO2_IMG_SIZE} px frame; give the frames it was made for with "
                                  "?pos_frames=")
        pos_frames = n // per_frame * tubelet
    slots = pos_frames // tubelet
    side = round((n / max(slots, 1)) ** 0.5)
    if slots < 1 or side * side * slots != n:
        raise CheckpointError(f"{source}: pos_embed has {n} patch entries, not {slots} frames of a square grid "
                              f"(pos_frames={pos_frames})")
    width = w.shape[0]
    return InternVideo2Config(
        embed_dim=width, depth=_depth(sd, source),
        num_heads=_heads(width, num_heads or INTERNVIDEO2_HEADS.get(width), source),
        mlp_hidden=_need(sd, "blocks.0.mlp.fc1.weight", source).shape[0], patch_size=patch, tubelet_size=tubelet,
        in_chans=w.shape[1], qkv_bias="blocks.0.attn.qkv.bias" in sd, qk_norm="blocks.0.attn.q_norm.weight" in sd,
        layer_scale="blocks.0.ls1.gamma" in sd, pos_frames=pos_frames, pos_grid=side, gelu=gelu,
    )


def build_internvideo2(obj, *, source: str, num_heads: int | None = None, pos_frames: int | None = None,
                       gelu: str = "tanh", key: str | None = None,
                       prefix: str | None = None) -> tuple[InternVideo2Encoder, list[str]]:
    """An :class:`InternVideo2Encoder` from an InternVideo2 checkpoint object (strict on the x_vis path)."""
    key, prefix = _internvideo2_prefix(obj, source, key, prefix)
    sd, notes = select_state_dict(obj, PATCH_ANCHOR, source=source, key=key, prefix=prefix)
    unused = sorted(k for k in sd if INTERNVIDEO2_UNUSED.match(k))
    if unused:
        notes.append(f"{len(unused)} CLIP-distillation entries off the token path left out ({unused[0]}, ...)")
        sd = {k: v for k, v in sd.items() if k not in set(unused)}
    model = InternVideo2Encoder(internvideo2_config(sd, source=source, num_heads=num_heads, pos_frames=pos_frames,
                                                    gelu=gelu))
    load_strict(model, sd, source=source)
    return model.eval(), notes


def load_internvideo2(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``internvideo2:FILE[?num_heads=&pos_frames=&gelu=tanh|exact&key=&prefix=]``."""
    path = _file(arg, spec)
    if path.is_dir():
        raise BackboneSpecError(f"backbone spec {spec!r}: {path} is a directory; give the checkpoint file")
    gelu = opts.take("gelu", "tanh", choices=tuple(GELU_KINDS))
    encoder, notes = build_internvideo2(
        read_weights(path), source=str(path), num_heads=opts.take("num_heads", cast=int),
        pos_frames=opts.take("pos_frames", cast=int), gelu=gelu, key=opts.take("key"), prefix=opts.take("prefix"))
    for note in notes:
        log.info("%s: %s", path, note)
    c = encoder.config
    return Backbone(
        name=f"InternVideo2 {vit_size_name(c.embed_dim)}/{c.patch_size}", spec=spec,
        model=SegmentedVideoEncoder(encoder, c.pos_frames).eval(), embed_dim=c.embed_dim, num_frames=c.pos_frames,
        img_size=c.pos_grid * c.patch_size, patch_size=c.patch_size, tubelet_size=c.tubelet_size,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, kind="video", fingerprint=fingerprint_path(path, extra=f"gelu={gelu}"),
    )


# ---------------------------------------------------------------- bare paths

# Parameter names only these layouts have (searched at the top level and one dict level down, any prefix).
_SIGNATURES = (
    ("endofm", ("blocks.0.temporal_attn.qkv.weight", "time_embed")),
    ("internvideo2", ("blocks.0.attn.q_norm.weight", "blocks.0.ls1.gamma", "cls_token")),
    ("videomaev2", ("blocks.0.attn.q_bias", "blocks.0.attn.v_bias")),
)


def sniff_video_baseline(obj) -> str | None:
    """'endofm', 'internvideo2', 'videomaev2' or None for a checkpoint object, from parameter names alone."""
    if not isinstance(obj, dict):
        return None
    candidates = [obj] + [v for v in obj.values() if isinstance(v, dict)]
    for sd in candidates:
        keys = [k for k in sd if isinstance(k, str)]
        for kind, names in _SIGNATURES:
            if all(any(k == n or k.endswith("." + n) for k in keys) for n in names):
                return kind
    return None
