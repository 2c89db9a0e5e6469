"""``endomamba:FILE``: the EndoMamba release (nekocatso/EndoMamba) loaded strictly into :mod:`unisurg.models.endomamba`.

Layouts read (``torch.load(weights_only=True)``):

* the pretraining checkpoint (``checkpoint-499.pth`` of ``endomamba_small_b48_seqlen16_withteacher_MIX12``):
  ``{"model": {"encoder.patch_embed.proj.weight", "encoder.pos_embed" [1, 196, D], "encoder.layers.N.mixer.*",
  "encoder.layers.N.norm.weight", "encoder.norm_f.weight", ...decoder entries}}``; the MAE decoder and every other
  entry outside ``encoder.`` is left out;
* fine-tuned files: the same keys without ``encoder.``, plus ``cls_token`` (``pos_embed`` then has ``1 + Np``
  rows) and a classifier ``head.*`` (ignored).

The architecture is read from the tensor shapes (width, depth, which layers are bidirectional, state size, conv
width, dt rank, patch and tubelet size, position grid); every remaining key must fit the model or the load fails
naming it.

Input convention (the authors' ``video_sm/datasets``): RGB, ImageNet mean/std, 224 x 224, 16 frames per clip
(pretraining ``--num_frames 16``), tubelet 1. Tokens ``[B, T * 14 * 14, D]`` in (t, h, w) order, the per-frame class
tokens of fine-tuned files dropped.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from unisurg.backbones.image import read_weights, select_state_dict
from unisurg.backbones.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    SpecOptions,
    fingerprint_path,
)
from unisurg.models.endomamba import EndoMambaConfig, EndoMambaEncoder
from unisurg.models.strict_load import CheckpointError, load_strict

log = logging.getLogger(__name__)

ANCHOR = "layers.0.mixer.in_proj.weight"
PRETRAIN_FRAMES = 16  # --num_frames of the authors' pretraining
IGNORED = re.compile(r"^(head\.|head_drop\.)")  # classifier of fine-tuned files


def _need(sd: dict, key: str, source: str, dim: int) -> torch.Tensor:
    t = sd.get(key)
    if t is None:
        raise CheckpointError(f"{source}: missing key {key!r} (not an EndoMamba / VideoMamba state dict?)")
    if t.dim() != dim:
        raise CheckpointError(f"{source}: {key!r} has shape {tuple(t.shape)}, expected {dim} dimensions")
    return t


def endomamba_config(sd: dict[str, torch.Tensor], *, source: str) -> EndoMambaConfig:
    """Architecture of an EndoMamba encoder state dict (no prefix) from its tensor shapes."""
    w = _need(sd, "patch_embed.proj.weight", source, 5)
    dim, in_chans, tubelet, ph, pw = w.shape
    if ph != pw:
        raise CheckpointError(f"{source}: non-square patches {ph}x{pw} are not supported")
    ids = {int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.", k))}
    if not ids or ids != set(range(max(ids) + 1)):
        raise CheckpointError(f"{source}: layer indices must be 0..N-1, found {sorted(ids)[:10]}")
    depth = max(ids) + 1
    bidir = [f"layers.{i}.mixer.A_b_log" in sd for i in range(depth)]
    n_spatial = sum(bidir)
    if bidir != [True] * n_spatial + [False] * (depth - n_spatial):
        raise CheckpointError(f"{source}: bidirectional layers (with 'A_b_log') must come first, found them at "
                              f"{[i for i, b in enumerate(bidir) if b]}")
    a_log = _need(sd, "layers.0.mixer.A_log", source, 2)
    d_inner, d_state = a_log.shape
    if d_inner % dim:
        raise CheckpointError(f"{source}: inner width {d_inner} is not a multiple of the width {dim}")
    dt_rank = _need(sd, "layers.0.mixer.dt_proj.weight", source, 2).shape[1]
    d_conv = _need(sd, "layers.0.mixer.conv1d.weight", source, 3).shape[-1]
    cls = "cls_token" in sd
    n_pos = _need(sd, "pos_embed", source, 3).shape[1] - int(cls)
    g = int(round(n_pos ** 0.5))
    if g * g != n_pos:
        raise CheckpointError(f"{source}: 'pos_embed' has {n_pos} patch positions, not a square grid")
    return EndoMambaConfig(embed_dim=dim, depth=depth, num_spatial_layers=n_spatial, patch_size=ph,
                           tubelet_size=tubelet, in_chans=in_chans, pos_grid=(g, g), cls_token=cls, d_state=d_state,
                           d_conv=d_conv, expand=d_inner // dim, dt_rank=dt_rank)


def build_endomamba(sd: dict[str, torch.Tensor], *, source: str) -> tuple[EndoMambaEncoder, list[str]]:
    """Strictly load an EndoMamba encoder state dict (classifier ``head.*`` ignored); returns (model, notes)."""
    cfg = endomamba_config(sd, source=source)
    ignored = sorted(k for k in sd if IGNORED.match(k))
    notes = [f"classifier entries ignored: {', '.join(ignored)}"] if ignored else []
    sd = {k: v for k, v in sd.items() if k not in set(ignored)}
    with torch.device("meta"):
        model = EndoMambaEncoder(cfg)
    load_strict(model, sd, source=source, assign=True)
    return model.eval(), notes


def load_endomamba(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``endomamba:FILE[?key=&prefix=]``: the released EndoMamba checkpoint (pretraining or fine-tuned layout)."""
    path = Path(arg)
    if not path.is_file():
        raise FileNotFoundError(f"backbone spec {spec!r}: weights file not found: {path}")
    sd, notes = select_state_dict(read_weights(path), ANCHOR, source=str(path), key=opts.take("key"),
                                  prefix=opts.take("prefix"))
    model, more = build_endomamba(sd, source=str(path))
    for note in notes + more:
        log.info("%s: %s", path, note)
    c = model.config
    size = {192: "Ti", 384: "S", 576: "M"}.get(c.embed_dim, f"D{c.embed_dim}")
    return Backbone(
        name=f"EndoMamba-{size} ({path.stem})", spec=spec, model=model, embed_dim=c.embed_dim,
        num_frames=PRETRAIN_FRAMES, img_size=c.pos_grid[0] * c.patch_size, patch_size=c.patch_size,
        tubelet_size=c.tubelet_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, kind="video",
        fingerprint=fingerprint_path(path),
    )
