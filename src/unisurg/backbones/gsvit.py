"""GSViT (Schmidgall et al. 2024, "General surgery vision transformer"; SamuelSchmidgall/GSViT) from ``GSViT.pkl``.

GSViT is an EfficientViT-M5 pretrained as the encoder of a next-frame-prediction autoencoder. The released file is
``torch.save(EfficientViTAutoEncoder.state_dict())`` (``pretrain_model.py``): the encoder under ``evit.0`` ..
``evit.3`` (``nn.Sequential`` of EfficientViT's ``patch_embed``, ``blocks1``, ``blocks2``, ``blocks3``; the
classifier removed) and the image decoder under ``decoder.`` (ignored). A ``module.`` prefix (DataParallel) is
removed. A plain EfficientViT state dict (``patch_embed.``, ``blocksN.``, ``head.`` ignored; e.g. the ImageNet
``efficientvit_m5.pth`` with its ``model`` entry) is read too. Any other key fails the load, naming it.

Spec: ``gsvit:FILE[?resolution=224&window=7&chunk=64]``; ``resolution`` / ``window`` are the image size and
attention window the file was trained with (not stored in it; checked against its ``attention_bias_idxs``).

Input convention (``load_gsvit.py``, ``dataloader_surgical.py``): frames read with OpenCV, so **BGR** channel order,
scaled to [0, 1] with no mean/std, resized to 224 x 224. The backbone takes RGB like every other backbone
(``mean`` 0, ``std`` 1, i.e. plain [0, 1] pixels) and flips the channels to BGR itself. The positional biases fix
the input at 224 x 224. Tokens: the last stage's 4 x 4 map (224 px -> stride 16 -> 14 -> 7 -> 4 by ceil-halving)
in raster order, ``[B, T * 16, 384]`` frame by frame; ``patch_size`` is 56 so that ``grid(T, 224, 224)`` is
``(T, 4, 4)``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from unisurg.backbones.image import DEFAULT_CHUNK, image_backbone, read_weights
from unisurg.backbones.spec import Backbone, SpecOptions, fingerprint_path
from unisurg.models.efficientvit import EfficientViT, efficientvit_config
from unisurg.models.strict_load import CheckpointError, load_strict

log = logging.getLogger(__name__)

IMG_SIZE = 224
WINDOW = 7
EVIT_PARTS = {"0": "patch_embed", "1": "blocks1", "2": "blocks2", "3": "blocks3"}
IGNORED = re.compile(r"^(decoder\.|head\.|head_dist\.)")


class BGRInput(nn.Module):
    """Feed an RGB image batch to a model trained on BGR images (channel order reversed)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.flip(1))


def gsvit_state_dict(obj, *, source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """EfficientViT state dict (names as in :class:`EfficientViT`) from a GSViT / EfficientViT file object."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    notes = []
    if "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
        notes.append("weights taken from entry 'model'")
    if obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
        notes.append("prefix 'module.' removed")
    sd, ignored = {}, 0
    for key, value in obj.items():
        if IGNORED.match(key):
            ignored += 1
            continue
        m = re.match(r"evit\.(\d+)\.(.*)$", key)
        if m:
            if m.group(1) not in EVIT_PARTS:
                raise CheckpointError(f"{source}: key {key!r}: 'evit.' has parts 0-3 (patch_embed, blocks1-3)")
            key = f"{EVIT_PARTS[m.group(1)]}.{m.group(2)}"
        sd[key] = value
    if ignored:
        notes.append(f"{ignored} decoder/classifier entries ignored")
    if "patch_embed.0.c.weight" not in sd:
        raise CheckpointError(f"{source}: no 'evit.0.0.c.weight' (GSViT) nor 'patch_embed.0.c.weight' (EfficientViT) "
                              f"entry; keys start {sorted(map(str, obj))[:8]}; is this a GSViT file?")
    return sd, notes


def build_gsvit(sd: dict[str, torch.Tensor], *, source: str, img_size: int = IMG_SIZE,
                window: int = WINDOW) -> EfficientViT:
    """Strictly load an EfficientViT state dict; every key must map (``attention_bias_idxs`` included)."""
    model = EfficientViT(efficientvit_config(sd, source=source, img_size=img_size, window=window))
    load_strict(model, sd, source=source)
    return model.eval()


def load_gsvit(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``gsvit:FILE[?resolution=224&window=7&chunk=64]`` (see the module docstring)."""
    path = Path(arg)
    if not path.is_file():
        raise FileNotFoundError(f"backbone spec {spec!r}: weights file not found: {path}")
    resolution = opts.take("resolution", IMG_SIZE, cast=int)
    window = opts.take("window", WINDOW, cast=int)
    chunk = opts.take("chunk", DEFAULT_CHUNK, cast=int)
    sd, notes = gsvit_state_dict(read_weights(path), source=str(path))
    model = build_gsvit(sd, source=str(path), img_size=resolution, window=window)
    for note in notes:
        log.info("%s: %s", path, note)
    side = model.config.resolutions()[-1]
    if resolution % side:
        raise CheckpointError(f"{path}: resolution {resolution} gives a {side}x{side} map that is not a whole "
                              "division of the image; use an image size that divides")
    return image_backbone(
        BGRInput(model), name=f"GSViT EfficientViT ({path.stem})", spec=spec, embed_dim=model.embed_dim,
        img_size=resolution, patch_size=resolution // side, fingerprint=fingerprint_path(path), chunk=chunk,
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), in_chans=model.config.in_chans,
    )
