"""SelfSupSurg (Ramesh et al. 2023, "Dissecting self-supervised learning methods for surgical computer vision";
CAMMA-public/SelfSupSurg) from its VISSL checkpoints (``model_final_checkpoint_{moco_v2,simclr,swav,dino}_surg.torch``).

The four released models are torchvision ResNet-50s trained with VISSL. A VISSL checkpoint nests the weights as
``classy_state_dict -> base_model -> model -> trunk`` (VISSL ``BaseSSLMultiInputOutputModel.get_classy_state``;
also read by VISSL's ``extra_scripts/convert_vissl_to_torchvision.py``), with every trunk key under
``_feature_blocks.`` (VISSL's ``ResNeXt`` trunk wraps torchvision's modules in an ``nn.ModuleDict``). The SSL
projection heads (``... -> model -> heads``), loss state and optimizer are ignored. Each trunk key must map onto
the project's torchvision-layout ResNet (:func:`unisurg.backbones.image.build_resnet`), else the load fails
naming the key. ``?which=ema_model`` reads VISSL's EMA copy (``ema_model -> model -> trunk``) when the file has one.

Spec: ``selfsupsurg:FILE[?chunk=64]``.

Input convention (the repository's VISSL configs): RGB, ImageNet mean/std, 224 px (evaluation frames resized to
224 x 399, pretraining crops 224 x 224; here square frames of ``img_size``). Tokens: the last-stage (``layer4``)
feature map at stride 32, raster order, ``[B, T * 49, 2048]`` at 224 px, frame by frame.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from unisurg.backbones.image import DEFAULT_CHUNK, image_backbone, read_weights
from unisurg.backbones.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    SpecOptions,
    fingerprint_path,
)
from unisurg.models.resnet import build_resnet
from unisurg.models.strict_load import CheckpointError

log = logging.getLogger(__name__)

TRUNK_PREFIX = "_feature_blocks."
IMG_SIZE = 224


def vissl_trunk(obj, *, source: str, which: str = "base_model") -> dict[str, torch.Tensor]:
    """The trunk state dict of a VISSL checkpoint, ``_feature_blocks.`` removed; errors name the missing level."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict, got {type(obj).__name__}")
    if which == "base_model":
        path = ("classy_state_dict", "base_model", "model", "trunk")
    else:
        path = ("classy_state_dict", "ema_model", "model", "trunk")
    node = obj
    for depth, level in enumerate(path):
        if not isinstance(node, dict) or level not in node:
            where = " -> ".join(path[:depth]) or "the top level"
            have = sorted(map(str, node))[:12] if isinstance(node, dict) else type(node).__name__
            hint = (" (a flat torchvision ResNet state dict loads with 'resnet50:FILE')"
                    if depth == 0 and isinstance(node, dict) and "conv1.weight" in node else "")
            raise CheckpointError(f"{source}: not a VISSL checkpoint: no key {level!r} under {where} "
                                  f"(found {have}){hint}")
        node = node[level]
    outside = sorted(k for k in node if not k.startswith(TRUNK_PREFIX))
    if outside:
        raise CheckpointError(f"{source}: trunk key {outside[0]!r} is not under {TRUNK_PREFIX!r} "
                              f"({len(outside)} such keys); not a VISSL ResNe(X)t trunk")
    return {k[len(TRUNK_PREFIX):]: v for k, v in node.items()}


def load_selfsupsurg(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``selfsupsurg:FILE[?chunk=64&which=base_model|ema_model]`` (see the module docstring)."""
    path = Path(arg)
    if not path.is_file():
        raise FileNotFoundError(f"backbone spec {spec!r}: weights file not found: {path}")
    chunk = opts.take("chunk", DEFAULT_CHUNK, cast=int)
    which = opts.take("which", "base_model", choices=("base_model", "ema_model"))
    sd = vissl_trunk(read_weights(path), source=str(path), which=which)
    model, notes = build_resnet(sd, source=str(path))
    for note in notes:
        log.info("%s: %s", path, note)
    c = model.config
    return image_backbone(
        model, name=f"SelfSupSurg ResNet-{3 * sum(c.depths) + 2} ({path.stem})", spec=spec,
        embed_dim=model.embed_dim, img_size=IMG_SIZE, patch_size=32, fingerprint=fingerprint_path(path, extra=which),
        chunk=chunk, mean=IMAGENET_MEAN, std=IMAGENET_STD, in_chans=c.in_chans,
    )
