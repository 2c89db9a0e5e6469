"""GastroNet (Jong et al. 2025, GastroNet-5M; DINO ViT-S/16) and any checkpoint of facebookresearch/dino's ViTs.

Two layouts are read, both with DINO's ``vision_transformer.py`` parameter names (timm's: ``cls_token``,
``pos_embed``, ``patch_embed.proj``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``):

* the full training checkpoint of ``main_dino.py`` (``checkpoint.pth``): ``{"teacher": {"backbone.*", "head.*"},
  "student": {"module.backbone.*", "module.head.*"}, "optimizer", "epoch", "args" (argparse.Namespace),
  "dino_loss"}``. The teacher (the network DINO evaluates) is used; ``#student`` picks the other. The DINO
  projection head is left out;
* a bare backbone state dict (``dino_deitsmall16_pretrain.pth`` style), optionally under ``backbone.``/``module.``.

Every backbone key must map onto :class:`unisurg.backbones.image.ImageViT`, else the load fails naming it.
Heads follow from the width (384 -> 6) unless ``?num_heads=`` is given.

Spec: ``gastronet:FILE[?num_heads=&chunk=64][#teacher|#student]``.

Input convention: RGB, ImageNet mean/std (DINO's transforms), 224 x 224. Tokens: the patch tokens after the final
LayerNorm (DINO's ``get_intermediate_layers(x, 1)`` without the class token), raster order,
``[B, T * 196, 384]`` frame by frame. At other sizes the position table is resized bicubically (with antialiasing
when shrinking, as timm does), which differs slightly from DINO's ``interpolate_pos_encoding``; at the native
size the two are identical.
"""

from __future__ import annotations

import logging
from pathlib import Path

from unisurg.backbones.image import (
    DEFAULT_CHUNK,
    image_backbone,
    read_weights,
    select_state_dict,
)
from unisurg.backbones.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    SpecOptions,
    fingerprint_path,
    vit_size_name,
)
from unisurg.models.image_vit import VIT_ANCHOR, build_image_vit

log = logging.getLogger(__name__)


def load_gastronet(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``gastronet:FILE[?num_heads=&chunk=][#teacher|#student]`` (see the module docstring)."""
    path = Path(arg)
    if not path.is_file():
        raise FileNotFoundError(f"backbone spec {spec!r}: weights file not found: {path}")
    which = opts.take("which", choices=("teacher", "student"))
    num_heads = opts.take("num_heads", cast=int)
    chunk = opts.take("chunk", DEFAULT_CHUNK, cast=int)
    sd, notes = select_state_dict(read_weights(path), VIT_ANCHOR, source=str(path), key=which)
    model, more = build_image_vit(sd, source=str(path), num_heads=num_heads)
    for note in notes + more:
        log.info("%s: %s", path, note)
    c = model.config
    return image_backbone(
        model, name=f"GastroNet {vit_size_name(c.embed_dim)}/{c.patch_size} ({path.stem})", spec=spec,
        embed_dim=c.embed_dim, img_size=c.pos_grid[0] * c.patch_size, patch_size=c.patch_size,
        fingerprint=fingerprint_path(path, extra=which or ""), chunk=chunk, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        in_chans=c.in_chans,
    )
