"""Hugging Face ``transformers`` backbones from local ``save_pretrained`` folders (never downloaded).

* ``videomae:FOLDER`` - ``VideoMAEModel``: input ``[B, T, C, H, W]`` in HF, adapted from our ``[B, C, T, H, W]``;
  tokens = ``last_hidden_state`` (the encoder's final LayerNorm when the config has ``use_mean_pooling=False``;
  with ``use_mean_pooling=True`` HF has no final norm there and the tokens are the last block's output).
  VideoMAE's fixed sin-cos table is built for the config's ``num_frames`` x ``image_size``: other clip sizes
  are refused.
* ``dinov3:FOLDER`` - DINOv3 (``AutoModel``), frame by frame; patch tokens of ``last_hidden_state`` (after the
  final norm) without the CLS and register tokens.
* ``hf-image:FOLDER`` - any HF image backbone, frame by frame: a token sequence minus its leading CLS /
  register / pooled tokens, or a feature map ``[N, C, h, w]`` flattened in raster order. The number of leading
  tokens and the stride are measured once by a forward pass on a blank image at load time.
* ``hf-vjepa2:FOLDER?impl=transformers`` - ``transformers.VJEPA2Model`` itself (encoder only); HF derives
  RoPE rows from ``crop_size``, so inputs must be ``crop_size`` square.

Mean/std and crop size come from ``preprocessor_config.json`` when present (else ImageNet, 224).
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path

import torch
from torch import nn

from unisurg.backbones.image import DEFAULT_CHUNK, image_backbone
from unisurg.backbones.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VIDEO_IMG_SIZE,
    VIDEO_NUM_FRAMES,
    Backbone,
    BackboneSpecError,
    SpecOptions,
    fingerprint_path,
    vit_size_name,
)
from unisurg.models.strict_load import CheckpointError, check_finite

log = logging.getLogger(__name__)

VIDEO_TYPES = ("videomae", "vjepa2")
STRIDE_CANDIDATES = (16, 14, 32, 8, 4, 64)  # tried when a config names no patch size
MAX_PREFIX_TOKENS = 16  # CLS + registers (+ distillation / pooled token) of known image models


def _transformers():
    try:
        import transformers
    except Exception as e:  # noqa: BLE001 - any import failure: say how to get it
        raise ImportError(
            f"this backbone needs Hugging Face transformers, which cannot be imported ({e}); install the 'hf' extra: "
            "pip install 'unisurg[hf]'"
        ) from e
    return transformers


def _folder(arg: str, spec: str) -> Path:
    path = Path(arg)
    if not path.exists():
        raise FileNotFoundError(f"backbone spec {spec!r}: folder not found: {path}")
    if not (path.is_dir() and (path / "config.json").is_file()):
        raise BackboneSpecError(f"backbone spec {spec!r}: {path} is not a Hugging Face folder (no config.json)")
    return path


def read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BackboneSpecError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e


def _model_type(folder: Path) -> str:
    return str(read_json(folder / "config.json").get("model_type", ""))


def _expect_type(folder: Path, model_type: str, spec: str) -> None:
    found = _model_type(folder)
    if found != model_type:
        raise BackboneSpecError(f"backbone spec {spec!r}: {folder} has model_type={found!r}, not {model_type!r}")


def preprocessing(folder: Path, default_size: int) -> tuple[tuple, tuple, int]:
    """(mean, std, crop size) from ``preprocessor_config.json`` (ImageNet and ``default_size`` otherwise)."""
    pp = read_json(folder / "preprocessor_config.json")
    mean = tuple(float(v) for v in pp.get("image_mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in pp.get("image_std", IMAGENET_STD))
    size = default_size
    for key in ("crop_size", "size"):
        v = pp.get(key)
        if key == "crop_size" and pp.get("do_center_crop") is False:
            continue
        if isinstance(v, int):
            size = v
            break
        if isinstance(v, dict):
            if "height" in v:
                size = int(v["height"])
                break
            if "shortest_edge" in v:
                size = int(v["shortest_edge"])
                break
    if len(mean) != 3 or len(std) != 3:
        raise BackboneSpecError(f"{folder / 'preprocessor_config.json'}: image_mean/image_std must have 3 values")
    return mean, std, size


def _load_model(cls_or_auto, folder: Path):
    """``from_pretrained`` from the folder only (``local_files_only``; no remote code); a damaged weight file is a
    :class:`CheckpointError` naming the folder, and weights holding NaN / inf are refused."""
    try:
        model = cls_or_auto.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, SafetensorError, ...: re-raised naming the folder
        files = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise CheckpointError(f"{folder}: the Hugging Face model cannot be loaded ({type(e).__name__}: {e}); a file of "
                              f"{files} is missing, empty, truncated or damaged") from None
    check_finite(dict(model.state_dict()), source=str(folder))
    return model.float().eval()


# ---------------------------------------------------------------- video models


class HFVideoMAETokens(nn.Module):
    """``VideoMAEModel`` with our input layout: ``[B, C, T, H, W] -> last_hidden_state [B, N, D]`` ((t, h, w) order)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        c = model.config
        self.num_frames, self.image_size = int(c.num_frames), int(c.image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.model.config.num_channels:
            raise ValueError(f"expected a clip [B, C, T, H, W], got shape {tuple(x.shape)}")
        t, h, w = x.shape[2:]
        if (t, h, w) != (self.num_frames, self.image_size, self.image_size):
            raise ValueError(
                f"VideoMAE's fixed position table is for {self.num_frames} frames of "
                f"{self.image_size}x{self.image_size} pixels; got T={t}, {h}x{w} (set the clip length and crop to the backbone's num_frames / img_size)"
            )
        dtype = self.model.embeddings.patch_embeddings.projection.weight.dtype
        return self.model(pixel_values=x.transpose(1, 2).to(dtype)).last_hidden_state


def load_videomae(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    tf = _transformers()
    folder = _folder(arg, spec)
    _expect_type(folder, "videomae", spec)
    model = _load_model(tf.VideoMAEModel, folder)
    c = model.config
    mean, std, _ = preprocessing(folder, int(c.image_size))
    patch = c.patch_size if isinstance(c.patch_size, int) else c.patch_size[0]
    return Backbone(
        name=f"VideoMAE {vit_size_name(c.hidden_size)}", spec=spec, model=HFVideoMAETokens(model).eval(),
        embed_dim=int(c.hidden_size), num_frames=int(c.num_frames), img_size=int(c.image_size), patch_size=int(patch),
        tubelet_size=int(c.tubelet_size), mean=mean, std=std, kind="video", fingerprint=fingerprint_path(folder),
    )


class HFVJEPA2Tokens(nn.Module):
    """``transformers.VJEPA2Model`` encoder with our input layout: ``[B, C, T, H, W] -> [B, N, D]``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.crop_size = int(model.config.crop_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a clip [B, 3, T, H, W], got shape {tuple(x.shape)}")
        if x.shape[-2:] != (self.crop_size, self.crop_size):
            raise ValueError(
                f"transformers' VJEPA2 places RoPE rows by its crop_size={self.crop_size}; got {x.shape[-2]}x"
                f"{x.shape[-1]} (use impl=ours for other sizes)"
            )
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values_videos=x.transpose(1, 2).to(dtype), skip_predictor=True)
        return out.last_hidden_state


def load_hf_vjepa2_transformers(folder: Path, opts: SpecOptions, *, spec: str) -> Backbone:
    tf = _transformers()
    folder = _folder(str(folder), spec)
    _expect_type(folder, "vjepa2", spec)
    model = _load_model(tf.VJEPA2Model, folder)
    c = model.config
    return Backbone(
        name=f"V-JEPA 2 {vit_size_name(c.hidden_size)} (transformers)", spec=spec, model=HFVJEPA2Tokens(model).eval(),
        embed_dim=int(c.hidden_size), num_frames=int(getattr(c, "frames_per_clip", VIDEO_NUM_FRAMES)),
        img_size=int(getattr(c, "crop_size", VIDEO_IMG_SIZE)), patch_size=int(c.patch_size),
        tubelet_size=int(c.tubelet_size), mean=IMAGENET_MEAN, std=IMAGENET_STD, kind="video",
        fingerprint=fingerprint_path(folder),
    )


# ---------------------------------------------------------------- image models


class HFImageTokens(nn.Module):
    """An HF image model as ``[N, C, H, W] -> [N, Np, D]``: sequence outputs lose their first ``prefix`` tokens,
    feature maps ``[N, D, h, w]`` are flattened in raster order."""

    def __init__(self, model: nn.Module, prefix: int, interpolate: bool):
        super().__init__()
        self.model = model
        self.prefix = int(prefix)
        self.kwargs = {"interpolate_pos_encoding": True} if interpolate else {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        dtype = next(self.model.parameters()).dtype
        out = self.model(pixel_values=images.to(dtype), **self.kwargs).last_hidden_state
        if out.dim() == 4:
            return out.flatten(2).transpose(1, 2)
        return out[:, self.prefix:]


def _patch_size(config) -> int | None:
    p = getattr(config, "patch_size", None)
    if isinstance(p, (list, tuple)):
        p = p[0]
    return int(p) if p else None


@torch.no_grad()
def measure_tokens(model: nn.Module, interpolate: bool, img_size: int, in_chans: int, patch: int | None,
                   source: str) -> tuple[int, int, int]:
    """(leading non-patch tokens, stride, width) from one forward pass on a blank ``img_size`` image."""
    kwargs = {"interpolate_pos_encoding": True} if interpolate else {}
    dtype = next(model.parameters()).dtype
    out = model(pixel_values=torch.zeros(1, in_chans, img_size, img_size, dtype=dtype), **kwargs).last_hidden_state
    if out.dim() == 4:
        if img_size % out.shape[-1]:
            raise BackboneSpecError(f"{source}: feature map {tuple(out.shape[-2:])} does not divide {img_size} px")
        return 0, img_size // out.shape[-1], int(out.shape[1])
    if out.dim() != 3:
        raise BackboneSpecError(f"{source}: last_hidden_state of shape {tuple(out.shape)} is neither tokens nor a map")
    n = out.shape[1]
    for stride in ((patch,) if patch else STRIDE_CANDIDATES):
        extra = n - (img_size // stride) ** 2
        if img_size % stride == 0 and 0 <= extra <= MAX_PREFIX_TOKENS:
            return extra, stride, int(out.shape[-1])
    raise BackboneSpecError(
        f"{source}: {n} output tokens for a {img_size} px image do not match a patch grid"
        + (f" of patch {patch}" if patch else f" for strides {STRIDE_CANDIDATES}")
    )


def _image_model(folder: Path, spec: str, tf):
    """AutoModel of the folder; multimodal models (CLIP, SigLIP) give their ``vision_model``."""
    model_type = _model_type(folder)
    if model_type in VIDEO_TYPES:
        kind = "videomae" if model_type == "videomae" else "hf-vjepa2"
        raise BackboneSpecError(f"backbone spec {spec!r}: {folder} is a video model ({model_type}); use '{kind}:'")
    try:
        model = _load_model(tf.AutoModel, folder)
    except ValueError as e:
        raise BackboneSpecError(
            f"backbone spec {spec!r}: transformers cannot build model_type={model_type!r}: {e}"
        ) from e
    if hasattr(model, "vision_model") and hasattr(model.config, "vision_config"):
        model = model.vision_model
    return model


def _hf_image_backbone(folder: Path, opts: SpecOptions, *, spec: str, family: str | None) -> Backbone:
    tf = _transformers()
    chunk = opts.take("chunk", DEFAULT_CHUNK, cast=int)
    model = _image_model(folder, spec, tf)
    config = model.config
    mean, std, size = preprocessing(folder, int(getattr(config, "image_size", 224) or 224))
    interpolate = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
    in_chans = int(getattr(config, "num_channels", 3))
    patch = _patch_size(config)
    prefix, stride, width = measure_tokens(model, interpolate, size, in_chans, patch, str(folder))
    if family == "dinov3" and hasattr(config, "num_register_tokens"):
        expected = 1 + int(config.num_register_tokens)
        if prefix != expected:
            raise BackboneSpecError(f"{folder}: {prefix} leading tokens, expected CLS + {expected - 1} registers")
    if family == "dinov3":
        name = f"DINOv3 {vit_size_name(width)}/{stride}" if patch else f"DINOv3 ConvNeXt ({folder.name})"
    else:
        name = f"{config.model_type} ({folder.name})"
    log.info("%s: %d leading token(s) dropped, stride %d, width %d", folder, prefix, stride, width)
    return image_backbone(
        HFImageTokens(model, prefix, interpolate).eval(), name=name, spec=spec, embed_dim=width, img_size=size,
        patch_size=stride, fingerprint=fingerprint_path(folder), chunk=chunk, mean=mean, std=std, in_chans=in_chans,
    )


def load_dinov3(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    folder = _folder(arg, spec)
    if not _model_type(folder).startswith("dinov3"):
        raise BackboneSpecError(
            f"backbone spec {spec!r}: {folder} has model_type={_model_type(folder)!r}, not a DINOv3 model; "
            "use 'hf-image:' for other image models"
        )
    return _hf_image_backbone(folder, opts, spec=spec, family="dinov3")


def load_hf_image(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    return _hf_image_backbone(_folder(arg, spec), opts, spec=spec, family=None)
