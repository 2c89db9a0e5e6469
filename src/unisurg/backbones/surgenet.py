"""SurgeNet / SurgeNetXL (Jaspers et al. 2025; TimJaspers0801/SurgeNet) from their released ``.pth`` files.

The releases are DINO-pretrained CNN/hybrid backbones, **not ResNet-50s**: SurgeNetXL and SurgeNet-{Small, CHOLEC,
RAMIE, RARP, Public} are CAFormer-S18 (MetaFormer; ReLU instead of StarReLU), and SurgeNet also ships a
ConvNeXtV2-T and a PVTv2-B2. Two file layouts are read:

* ``*_checkpoint_epoch0050_teacher.pth``: the teacher backbone's flat state dict (what the repository's
  ``load_pretrained_weights`` loads; ``head.*`` classifier entries, if any, are ignored);
* ``*_checkpoint0050.pth``: the full DINO training checkpoint; the ``teacher`` entry (``#student`` for the other
  network) with its ``backbone.`` / ``module.backbone.`` prefix removed; the DINO projection head is left out.

Every other key must map onto the architecture, else the load fails naming the key.

Spec: ``surgenet:FILE[?arch=caformer_s18|convnextv2_tiny|pvtv2_b2][&heads=1,2,5,8][&chunk=64][#student]``.
The family is recognised from the keys; ``arch`` additionally checks the widths and depths of the named model.
PVT v2 head counts are not in the weights (default B2's 1,2,5,8).

Input convention: RGB, ImageNet mean/std (DINO's default transforms), 224 x 224. Tokens: the last stage's
feature map at stride 32 (7 x 7 = 49 tokens at 224 px), raster order, ``[B, T * 49, C]`` frame by frame with
C = 512 (CAFormer-S18), 768 (ConvNeXtV2-T), 512 (PVTv2-B2). CAFormer / ConvNeXt V2 tokens are taken before the
final LayerNorm, which the release applies only after average pooling; PVT v2 tokens after its last-stage norm.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

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
    BackboneSpecError,
    SpecOptions,
    fingerprint_path,
)
from unisurg.models.caformer import CAFormer, CAFormerConfig, caformer_config
from unisurg.models.convnextv2 import ConvNeXtV2, ConvNeXtV2Config, convnextv2_config
from unisurg.models.pvt_v2 import PVTv2, PVTv2Config, pvt_v2_config
from unisurg.models.strict_load import CheckpointError, load_strict

log = logging.getLogger(__name__)

# family -> (anchor key, display name); the anchor identifies the family in a state dict.
FAMILIES = {
    "caformer": ("downsample_layers.0.conv.weight", "CAFormer"),
    "convnextv2": ("downsample_layers.0.0.weight", "ConvNeXtV2"),
    "pvtv2": ("patch_embed1.proj.weight", "PVTv2"),
}
# Named sizes of the released models: family and the (depths, dims) the weights must have.
ARCHS = {
    "caformer_s18": ("caformer", CAFormerConfig().depths, CAFormerConfig().dims),
    "convnextv2_tiny": ("convnextv2", ConvNeXtV2Config().depths, ConvNeXtV2Config().dims),
    "pvtv2_b2": ("pvtv2", PVTv2Config().depths, PVTv2Config().dims),
}
IMG_SIZE = 224
STRIDE = 32


def detect_family(obj, *, source: str) -> str:
    """'caformer' | 'convnextv2' | 'pvtv2' from the anchor keys found in a checkpoint object."""
    found = []
    for family, (anchor, _) in FAMILIES.items():
        try:
            select_state_dict(obj, anchor, source=source)
        except CheckpointError:
            continue
        found.append(family)
    if len(found) != 1:
        anchors = ", ".join(f"{a!r} ({n})" for a, n in FAMILIES.values())
        raise CheckpointError(f"{source}: expected exactly one of the keys {anchors} (possibly under a "
                              f"'backbone.'/'module.' prefix or a DINO 'teacher' entry), found {found or 'none'}")
    return found[0]


def _parse_heads(raw: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in raw.split(",") if p)
    except ValueError:
        raise ValueError("expected comma-separated integers, e.g. 1,2,5,8") from None


def build_surgenet(sd, family: str, *, source: str, heads: tuple[int, ...] | None = None) -> nn.Module:
    """Strictly load a backbone state dict of ``family`` (classifier ``head.*`` entries ignored)."""
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    if family == "caformer":
        model = CAFormer(caformer_config(sd, source=source))
    elif family == "convnextv2":
        model = ConvNeXtV2(convnextv2_config(sd, source=source))
    else:
        model = PVTv2(pvt_v2_config(sd, source=source, heads=heads))
    load_strict(model, sd, source=source)
    return model.eval()


def _check_arch(arch: str, family: str, model: nn.Module, spec: str) -> None:
    want_family, depths, dims = ARCHS[arch]
    c = model.config
    got = (tuple(c.depths), tuple(c.dims))
    if want_family != family or got != (depths, dims):
        raise BackboneSpecError(
            f"backbone spec {spec!r}: arch={arch} means a {FAMILIES[want_family][1]} with depths {depths} and widths "
            f"{dims}; the file holds a {FAMILIES[family][1]} with depths {got[0]} and widths {got[1]}")


def load_surgenet(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``surgenet:FILE[?arch=&heads=&chunk=][#teacher|#student]`` (see the module docstring)."""
    path = Path(arg)
    if not path.is_file():
        raise FileNotFoundError(f"backbone spec {spec!r}: weights file not found: {path}")
    arch = opts.take("arch", choices=tuple(ARCHS))
    heads = opts.take("heads", cast=_parse_heads)
    chunk = opts.take("chunk", DEFAULT_CHUNK, cast=int)
    which = opts.take("which", choices=("teacher", "student"))
    obj = read_weights(path)
    family = detect_family(obj, source=str(path))
    if heads is not None and family != "pvtv2":
        raise BackboneSpecError(f"backbone spec {spec!r}: ?heads= applies to PVT v2 only (this file is a "
                                f"{FAMILIES[family][1]}, whose heads follow from the weights)")
    sd, notes = select_state_dict(obj, FAMILIES[family][0], source=str(path), key=which)
    model = build_surgenet(sd, family, source=str(path), heads=heads)
    if arch is not None:
        _check_arch(arch, family, model, spec)
    for note in notes:
        log.info("%s: %s", path, note)
    label = arch or FAMILIES[family][1]
    return image_backbone(
        model, name=f"SurgeNet {label} ({path.stem})", spec=spec, embed_dim=model.embed_dim, img_size=IMG_SIZE,
        patch_size=STRIDE, fingerprint=fingerprint_path(path, extra=which or ""), chunk=chunk, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, in_chans=model.config.in_chans,
    )
