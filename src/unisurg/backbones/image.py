"""Image backbones applied frame by frame, in pure PyTorch (no timm, no torchvision).

* :class:`ImageViT` loads timm-format ViT state dicts (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
  ``blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``, ``norm``): EndoViT
  (MAE ViT-B/16 on Endo700k), SurgeNet-ViT, MAE / DeiT-style ViTs. Tokens: the patch tokens after the final
  norm (class and register tokens dropped).
* :class:`ResNetTrunk` loads torchvision-format ResNet-50 state dicts (``conv1``, ``bn1``, ``layerS.B.{conv1..3,
  bn1..3, downsample.0/1}``): torchvision ResNet-50s (SelfSupSurg through its VISSL loader). Tokens: the last-stage feature map, stride 32.
* :class:`FrameByFrame` runs either on every frame of a clip: ``[B, C, T, H, W] -> [B, T * Np, D]`` with
  tokens in (t, h, w) order (all tokens of frame 0 in raster order, then frame 1, ...).

Checkpoints are read with ``torch.load(weights_only=True)``; training files that wrap the weights
(``{"model": ...}``, ``{"state_dict": ...}``, DINO ``{"teacher": ...}``) and prefix them (``module.``,
``backbone.``) are unwrapped by locating an anchor key; ``?key=`` / ``?prefix=`` choose explicitly.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import torch
from torch import nn

from unisurg.backbones.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    BackboneSpecError,
    SpecOptions,
    fingerprint_path,
    vit_size_name,
)
from unisurg.models.checkpoint import torch_load_weights
from unisurg.models.image_vit import TIMM_VIT_SIZES, VIT_ANCHOR, build_image_vit
from unisurg.models.integrity import read_safetensors
from unisurg.models.resnet import RESNET_ANCHOR, ResNetConfig, build_resnet
from unisurg.models.strict_load import CheckpointError

log = logging.getLogger(__name__)

# Where training scripts keep the weights, in order of preference (DINO: the teacher is the evaluated model).
CONTAINER_KEYS = ("model", "state_dict", "teacher", "model_state_dict", "module", "net", "network", "target_encoder")
DEFAULT_CHUNK = 64  # frames per forward of an image model


# ---------------------------------------------------------------- reading weight files


def read_weights(path: str | Path):
    """``torch.load(weights_only=True)`` (mmap when possible) or safetensors; argparse Namespaces (MAE/EndoViT
    training args) are allowed, nothing else that needs unpickling code."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch_load_weights(path)


def _has_anchor(d: dict, anchor: str) -> bool:
    return any(isinstance(k, str) and (k == anchor or k.endswith("." + anchor)) for k in d)


def select_state_dict(obj, anchor: str, *, source: str, key: str | None = None,
                      prefix: str | None = None) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The backbone state dict inside a checkpoint object, prefix removed, and notes on what was chosen.

    The container is ``obj[key]`` if given, else ``obj`` itself when it holds ``anchor`` (possibly under a prefix),
    else the first of :data:`CONTAINER_KEYS` (then any other entry) that does. The prefix is the one in front of
    ``anchor``; entries outside it (e.g. a DINO projection head) are left out and counted in the notes.
    """
    notes: list[str] = []
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    if key is not None:
        if not isinstance(obj.get(key), dict):
            raise CheckpointError(f"{source}: no dict entry {key!r} (top-level keys: {sorted(map(str, obj))[:20]})")
        obj = obj[key]
        notes.append(f"weights taken from entry {key!r}")
    elif not _has_anchor(obj, anchor):
        names = [k for k in CONTAINER_KEYS if isinstance(obj.get(k), dict)]
        names += [k for k, v in obj.items() if isinstance(v, dict) and k not in names]
        found = [k for k in names if _has_anchor(obj[k], anchor)]
        if not found:
            raise CheckpointError(
                f"{source}: no {anchor!r} entry at the top level or in any of {names or 'its'} sub-dicts "
                f"(top-level keys: {sorted(map(str, obj))[:20]}); is this the right kind of model?"
            )
        obj = obj[found[0]]
        notes.append(f"weights taken from entry {found[0]!r}")
    if prefix is None:
        prefixes = sorted({k[: -len(anchor)] for k in obj if isinstance(k, str) and
                           (k == anchor or k.endswith("." + anchor))})
        if len(prefixes) > 1:
            raise CheckpointError(
                f"{source}: {anchor!r} appears under several prefixes {prefixes}; choose one with ?prefix=..."
            )
        prefix = prefixes[0]
    elif prefix + anchor not in obj:
        raise CheckpointError(f"{source}: no key {prefix + anchor!r} (prefix {prefix!r} given)")
    sd = {k[len(prefix):]: v for k, v in obj.items() if isinstance(k, str) and k.startswith(prefix)}
    dropped = len(obj) - len(sd)
    if prefix:
        notes.append(f"key prefix {prefix!r} removed")
    if dropped:
        notes.append(f"{dropped} entries outside {prefix or 'the backbone'!r} left out")
    return sd, notes


def sniff_image_state_dict(obj) -> str | None:
    """'timm-vit', 'resnet50' or None for a checkpoint object, from its anchor keys."""
    for anchor, kind in ((VIT_ANCHOR, "timm-vit"), (RESNET_ANCHOR, "resnet50")):
        try:
            sd, _ = select_state_dict(obj, anchor, source="?")
        except CheckpointError:
            continue
        if kind == "timm-vit" and getattr(sd.get(VIT_ANCHOR), "dim", lambda: 0)() == 4:
            return kind
        if kind == "resnet50" and "conv1.weight" in sd:
            return kind
    return None


# ---------------------------------------------------------------- frame by frame


class FrameByFrame(nn.Module):
    """Apply an image model (``[N, C, H, W] -> [N, Np, D]``) to every frame of ``[B, C, T, H, W]``.

    Returns ``[B, T * Np, D]`` in (t, h, w) order. Frames go through in chunks of ``chunk`` to bound memory.
    """

    def __init__(self, image_model: nn.Module, chunk: int = DEFAULT_CHUNK, in_chans: int = 3):
        super().__init__()
        if chunk < 1:
            raise ValueError(f"FrameByFrame: chunk must be >= 1, got {chunk}")
        self.image_model = image_model
        self.chunk = int(chunk)
        self.in_chans = in_chans

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # a batch of images: one frame each
            x = x[:, :, None]
        if x.dim() != 5 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected a clip [B, C={self.in_chans}, T, H, W], got shape {tuple(x.shape)} "
                "(a [B, T, C, H, W] clip must be permuted to [B, C, T, H, W])"
            )
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        outs = [self.image_model(f) for f in frames.split(self.chunk)]
        tokens = outs[0] if len(outs) == 1 else torch.cat(outs)
        return tokens.reshape(b, t * tokens.shape[1], tokens.shape[2])


def image_backbone(frame_model: nn.Module, *, name: str, spec: str, embed_dim: int, img_size: int, patch_size: int,
                   fingerprint: str, chunk: int = DEFAULT_CHUNK, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   in_chans: int = 3) -> Backbone:
    """A :class:`Backbone` of kind 'image' around ``frame_model`` (``num_frames`` 1, ``tubelet_size`` 1)."""
    return Backbone(
        name=name, spec=spec, model=FrameByFrame(frame_model, chunk, in_chans).eval(), embed_dim=embed_dim,
        num_frames=1, img_size=img_size, patch_size=patch_size, tubelet_size=1, mean=tuple(mean), std=tuple(std),
        kind="image", fingerprint=fingerprint,
    )


def parse_timm_arch(arch: str) -> tuple[int, int, int, int | None]:
    """'vit_base_patch16_224' -> (width 768, heads 12, patch 16, img 224); img None when the name has none."""
    m = re.fullmatch(r"vit_([a-z]+)_patch(\d+)(?:_(\d+))?(?:[._].*)?", arch)
    if not m or m.group(1) not in TIMM_VIT_SIZES:
        raise BackboneSpecError(
            f"arch={arch!r}: expected a timm ViT name 'vit_<size>_patch<P>[_<img>]' with size one of "
            f"{list(TIMM_VIT_SIZES)}, e.g. vit_base_patch16_224"
        )
    width, heads = TIMM_VIT_SIZES[m.group(1)]
    return width, heads, int(m.group(2)), int(m.group(3)) if m.group(3) else None



# ---------------------------------------------------------------- loaders


def _weights_path(arg: str, spec: str) -> Path:
    path = Path(arg)
    if not path.is_file():
        raise FileNotFoundError(f"backbone spec {spec!r}: weights file not found: {path}")
    return path


def load_timm_vit(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``timm-vit:PATH[?arch=vit_base_patch16_224&num_heads=&eps=&key=&prefix=&chunk=]``."""
    path = _weights_path(arg, spec)
    arch = opts.take("arch")
    num_heads = opts.take("num_heads", cast=int)
    eps = opts.take("eps", 1e-6, cast=float)
    chunk = opts.take("chunk", DEFAULT_CHUNK, cast=int)
    sd, notes = select_state_dict(read_weights(path), VIT_ANCHOR, source=str(path), key=opts.take("key"),
                                  prefix=opts.take("prefix"))
    arch_img = None
    if arch is not None:
        width, heads, patch, arch_img = parse_timm_arch(arch)
        w = sd[VIT_ANCHOR]
        if (w.shape[0], w.shape[-1]) != (width, patch):
            raise BackboneSpecError(f"backbone spec {spec!r}: arch {arch} means width {width}, patch {patch}; the "
                                    f"weights have width {w.shape[0]}, patch {w.shape[-1]}")
        num_heads = num_heads or heads
    model, more = build_image_vit(sd, source=str(path), num_heads=num_heads, norm_eps=eps)
    for note in notes + more:
        log.info("%s: %s", path, note)
    c = model.config
    return image_backbone(
        model, name=f"{vit_size_name(c.embed_dim)}/{c.patch_size} ({path.stem})", spec=spec, embed_dim=c.embed_dim,
        img_size=arch_img or c.pos_grid[0] * c.patch_size, patch_size=c.patch_size, fingerprint=fingerprint_path(path),
        chunk=chunk, in_chans=c.in_chans,
    )


def load_resnet50(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``resnet50:PATH[?key=&prefix=&chunk=]``: tokens = last-stage feature map (stride 32), 224 px by default."""
    path = _weights_path(arg, spec)
    chunk = opts.take("chunk", DEFAULT_CHUNK, cast=int)
    sd, notes = select_state_dict(read_weights(path), RESNET_ANCHOR, source=str(path), key=opts.take("key"),
                                  prefix=opts.take("prefix"))
    model, more = build_resnet(sd, source=str(path))
    for note in notes + more:
        log.info("%s: %s", path, note)
    c = model.config
    label = f"ResNet-{3 * sum(c.depths) + 2}"
    if c.groups != 1 or c.widths != ResNetConfig().widths:
        label += f" (width {c.widths[0]}, groups {c.groups})"
    return image_backbone(
        model, name=f"{label} ({path.stem})", spec=spec, embed_dim=model.embed_dim, img_size=224, patch_size=32,
        fingerprint=fingerprint_path(path), chunk=chunk, in_chans=c.in_chans,
    )

