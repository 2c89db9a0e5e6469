"""Backbone registry: every model of the papers' tables, frozen, from a local weight file (UniSurg paper section 4.1).

    bb = load_backbone("unisurg:runs/tiny/last", device="cuda", dtype=torch.bfloat16)
    tokens = bb.model(clip)          # clip [B, C, T, H, W] normalised with bb.mean/bb.std -> [B, N, bb.embed_dim]
    t, hp, wp = bb.grid(64, 256, 256)

A spec is ``PREFIX:ARGUMENT[#COMPONENT][?key=value&key=value]`` (see :func:`backbone_kinds`):

========================  =====================================================================================
``unisurg:PATH``          our checkpoint (directory or ``.safetensors``/``.json`` pair), target encoder by default;
                          ``unisurg:PATH#encoder`` picks the online encoder
``vjepa2:PATH``           official V-JEPA 2 ``.pt`` (also the UniSurg / SurgMotion / SurgRec-JEPA releases);
                          options ``num_heads``, ``pos_embed`` (auto|rope|sincos), ``#encoder``
``hf-vjepa2:FOLDER``      Hugging Face VJEPA2 ``save_pretrained`` folder, through our encoder
                          (``?impl=transformers`` runs ``transformers.VJEPA2Model`` instead)
``random:PRESET[@SEED]``  randomly initialised encoder of a preset (``random:tiny@0?pos_embed=sincos``)
``videomae:FOLDER``       HF ``VideoMAEModel``; tokens = last hidden state
``dinov3:FOLDER``         HF DINOv3 ViT, frame by frame; patch tokens (CLS / registers dropped)
``hf-image:FOLDER``       any HF image backbone with patch tokens or a feature map, frame by frame
``timm-vit:PATH``         timm-format ViT state dict (EndoViT, SurgeNet-ViT, MAE, ...), frame by frame
``resnet50:PATH``         torchvision-format ResNet-50 state dict, last-stage feature map
``surgenet:PATH``         SurgeNet / SurgeNetXL release (CAFormer-S18, ConvNeXtV2-T, PVTv2-B2), frame by frame;
                          ``?arch=caformer_s18|convnextv2_tiny|pvtv2_b2``, ``#student`` (DINO checkpoint)
``gsvit:PATH``            GSViT ``GSViT.pkl`` (EfficientViT-M5, BGR input), frame by frame
``selfsupsurg:PATH``      SelfSupSurg VISSL checkpoint (ResNet-50 under ``classy_state_dict``), frame by frame
``gastronet:PATH``        GastroNet / DINO ViT checkpoint (``teacher``/``student``), frame by frame
``endomamba:FILE``        EndoMamba release (pretraining ``encoder.`` or fine-tuned layout),
                          :mod:`unisurg.backbones.endomamba`
``surgvlp:FILE``          SurgVLP release (ResNet-50 + BERT), ``?tokenizer=DIR`` for zero-shot,
                          :mod:`unisurg.backbones.surgvlp`
``endofm:FILE``           Endo-FM's released ``.pth`` (TimeSformer, divided space-time), 8 frames of 224 px
``videomaev2:PATH``       VideoMAE V2 .pth or HF folder, native layout (q_bias/v_bias); 64 frames as 4 x 16
``surgrec-mae:FILE``      the released ``surgrec_mae.pth`` (VideoMAE pretraining layout, key ``model``)
``internvideo2:FILE``     InternVideo2 vision encoder (stage-2 file, ``vision_encoder.``), 4 frames of 224 px
========================  =====================================================================================

A bare path (no prefix) is recognised by its content. Options every kind accepts: ``name`` (display
name), ``img_size``, ``num_frames``, ``mean`` / ``std`` (three comma-separated numbers) or ``norm``
(``imagenet`` | ``endovit`` | ``clip``). Nothing is ever downloaded.

Image models see the clip frame by frame: tokens ``[B, T * Np, D]`` in (t, h, w) order, i.e. all patch
tokens of frame 0 in raster order, then frame 1, ...; ``tubelet_size`` is 1 and ``num_frames`` is 1
(their native clip length: one frame), though any T is accepted.

Video models of the V-JEPA family default to ``img_size=256`` and ``num_frames=64`` (the benchmark
protocol of the UniSurg release) unless the checkpoint records its own (our format: ``extra.img_size``
and ``extra.num_frames``; HF: ``crop_size`` / ``frames_per_clip``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from pathlib import Path
from typing import Callable

import torch

from unisurg.backbones.endomamba import load_endomamba
from unisurg.backbones.gastronet import load_gastronet
from unisurg.backbones.gsvit import load_gsvit
from unisurg.backbones.hf import load_dinov3, load_hf_image, load_videomae
from unisurg.backbones.image import (
    load_resnet50,
    load_timm_vit,
    read_weights,
    select_state_dict,
    sniff_image_state_dict,
)
from unisurg.backbones.ours import (
    load_hf_vjepa2,
    load_random,
    load_unisurg,
    load_vjepa2,
)
from unisurg.backbones.selfsupsurg import load_selfsupsurg
from unisurg.backbones.spec import (
    NAMED_NORMS,
    Backbone,
    BackboneSpecError,
    SpecOptions,
    parse_spec,
    triple,
)
from unisurg.backbones.surgenet import load_surgenet
from unisurg.backbones.surgvlp import load_surgvlp
from unisurg.backbones.video_baselines import (
    load_endofm,
    load_internvideo2,
    load_surgrec_mae,
    load_videomaev2,
    sniff_video_baseline,
)
from unisurg.models import interop_hf, interop_vjepa2
from unisurg.models.checkpoint import CONFIG_NAME, detect_format
from unisurg.models.strict_load import CheckpointError

# ---------------------------------------------------------------- registry


_REGISTRY: dict[str, tuple[Callable[..., Backbone], str]] = {}


def register_backbone(prefix: str, loader: Callable[..., Backbone], help: str) -> None:  # noqa: A002 - API name
    """Add a spec kind. ``loader(argument, options, *, spec, device, dtype) -> Backbone``.

    ``argument`` is the text after ``prefix:`` (options removed), ``options`` a :class:`SpecOptions` whose
    entries the loader must :meth:`~SpecOptions.take` (leftovers are an error). The loader may build on the
    CPU in float32: :func:`load_backbone` moves, casts and freezes the model afterwards.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_-]+", prefix or ""):
        raise ValueError(f"register_backbone: prefix {prefix!r} must match [a-z][a-z0-9_-]+ (at least 2 characters)")
    if not callable(loader):
        raise TypeError(f"register_backbone: loader for {prefix!r} is not callable")
    old = _REGISTRY.get(prefix)
    if old is not None and _identity(old[0]) != _identity(loader):
        raise ValueError(f"register_backbone: prefix {prefix!r} is already registered ({old[1]})")
    _REGISTRY[prefix] = (loader, help)


def _identity(loader) -> tuple:
    """Same loader across module reloads: its import path (module + qualified name)."""
    return getattr(loader, "__module__", None), getattr(loader, "__qualname__", id(loader))


def backbone_kinds() -> dict[str, str]:
    """prefix -> one-line help, for ``--help`` texts and error messages."""
    return {k: h for k, (_, h) in sorted(_REGISTRY.items())}


def _unknown_prefix(prefix: str, spec: str) -> BackboneSpecError:
    kinds = sorted(_REGISTRY)
    close = difflib.get_close_matches(prefix, kinds, n=1, cutoff=0.3)
    hint = f" Did you mean '{close[0]}:'?" if close else ""
    return BackboneSpecError(
        f"unknown backbone kind '{prefix}' in spec {spec!r}.{hint} Valid kinds: "
        + "; ".join(f"{k} ({h})" for k, h in backbone_kinds().items())
    )


def load_backbone(spec: str, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                  trainable: bool = False) -> Backbone:
    """Build the frozen backbone named by ``spec`` (see the module docstring) on ``device`` in ``dtype``.

    ``trainable=True`` (fine-tuning) leaves every parameter requiring gradients and the module in train mode.
    """
    parsed = parse_spec(spec)
    spec = spec.strip()
    prefix = parsed.prefix
    if prefix is None:
        prefix = detect_kind(Path(parsed.argument), spec)
    elif prefix not in _REGISTRY:
        raise _unknown_prefix(prefix, spec)
    loader = _REGISTRY[prefix][0]
    opts = SpecOptions(parsed.options, spec)
    common = {
        "name": opts.take("name"),
        "img_size": opts.take("img_size", cast=int),
        "num_frames": opts.take("num_frames", cast=int),
        "mean": opts.take("mean", cast=triple),
        "std": opts.take("std", cast=triple),
        "norm": opts.take("norm", choices=tuple(NAMED_NORMS)),
    }
    bb = loader(parsed.argument, opts, spec=spec, device=device, dtype=dtype)
    opts.check_all_used(prefix)
    if not isinstance(bb, Backbone):
        raise TypeError(f"backbone loader for '{prefix}' returned {type(bb).__name__}, expected Backbone")
    changes: dict = {"spec": spec}
    if common["norm"] is not None:
        changes["mean"], changes["std"] = NAMED_NORMS[common["norm"]]
    for key in ("name", "img_size", "num_frames", "mean", "std"):
        if common[key] is not None:
            changes[key] = common[key]
    bb = dataclasses.replace(bb, **changes)
    model = bb.model.to(device=device, dtype=dtype) if dtype is not None else bb.model.to(device=device)
    model.requires_grad_(trainable).train(trainable)
    bb.model = model
    return bb


# ---------------------------------------------------------------- bare paths


def detect_kind(path: Path, spec: str) -> str:
    """The spec kind of a bare path, from what lies there."""

    if not path.exists() and not (path.suffix == ".json" and path.with_suffix(".safetensors").exists()):
        raise FileNotFoundError(
            f"backbone spec {spec!r}: no such file or directory: {path} (and it has no 'kind:' prefix; "
            f"valid kinds: {', '.join(sorted(_REGISTRY))})"
        )
    if path.is_dir():
        if (path / CONFIG_NAME).exists():
            return "unisurg"
        if (path / "config.json").exists():
            try:
                model_type = json.loads((path / "config.json").read_text()).get("model_type", "")
            except (OSError, json.JSONDecodeError) as e:
                raise BackboneSpecError(f"{path / 'config.json'}: cannot read it ({e})") from e
            if model_type == "vjepa2":
                return "hf-vjepa2"
            if model_type == "videomae":
                return "videomae"
            if model_type.startswith("dinov3"):
                return "dinov3"
            return "hf-image"
        raise BackboneSpecError(
            f"backbone spec {spec!r}: directory {path} holds neither our checkpoint ({CONFIG_NAME}) nor a Hugging Face "
            "model (config.json); give a 'kind:' prefix"
        )

    fmt = detect_format(path)
    if fmt == "unisurg":
        return "unisurg"

    obj = read_weights(path)
    if isinstance(obj, dict):
        # first: a SurgVLP file also passes the HF and ResNet checks below (its BERT / ResNet keys)
        for anchor, kind in (("backbone_img.global_embedder.weight", "surgvlp"),
                             ("layers.0.mixer.in_proj.weight", "endomamba")):
            try:
                select_state_dict(obj, anchor, source=str(path))
                return kind
            except CheckpointError:
                pass
        if (kind := sniff_video_baseline(obj)) is not None:  # Endo-FM, InternVideo2, VideoMAE V2 native layouts
            return kind
        comps = {c: obj[c] for c in interop_vjepa2.COMPONENTS if isinstance(obj.get(c), dict)}
        if comps or interop_hf.is_hf_state_dict(obj):
            return "vjepa2"
        if interop_vjepa2.is_official_state_dict(obj):
            w = interop_vjepa2.strip_prefixes(obj).get("patch_embed.proj.weight")
            if w is not None and w.dim() == 5:
                return "vjepa2"
        kind = sniff_image_state_dict(obj)
        if kind is not None:
            return kind
    raise BackboneSpecError(
        f"backbone spec {spec!r}: cannot tell what model {path} holds (not our format, not a V-JEPA checkpoint, no "
        "timm ViT 'patch_embed.proj.weight' nor torchvision ResNet 'layer1.0.conv1.weight'); give a 'kind:' prefix: "
        + ", ".join(sorted(_REGISTRY))
    )


# ---------------------------------------------------------------- built-in kinds




register_backbone("unisurg", load_unisurg,
                  "our checkpoint dir or .safetensors pair; target encoder, '#encoder' for the online one")
register_backbone("vjepa2", load_vjepa2,
                  "official V-JEPA 2 / UniSurg / SurgMotion / SurgRec-JEPA .pt file; ?num_heads= ?pos_embed=")
register_backbone("hf-vjepa2", load_hf_vjepa2, "Hugging Face VJEPA2 folder; ?impl=transformers to run the library's")
register_backbone("random", load_random,
                  "random-init preset, PRESET[@SEED][?field=value...], e.g. random:tiny@0 (untrained baseline)")
register_backbone("videomae", load_videomae,
                  "Hugging Face VideoMAE folder (fixed clip size of its config)")
register_backbone("dinov3", load_dinov3,
                  "Hugging Face DINOv3 folder, frame by frame, patch tokens")
register_backbone("hf-image", load_hf_image,
                  "any Hugging Face image backbone folder, frame by frame")
register_backbone("timm-vit", load_timm_vit,
                  "timm-format ViT state dict (EndoViT, SurgeNet-ViT), frame by frame; ?arch=vit_base_patch16_224")
register_backbone("resnet50", load_resnet50,
                  "torchvision-format ResNet-50 state dict, frame by frame, last stage")
register_backbone("endofm", load_endofm, "Endo-FM .pth (TimeSformer ViT-B/16, divided space-time), 8 frames of 224 px")
register_backbone("videomaev2", load_videomaev2,
                  "VideoMAE V2 .pth or HF folder in OpenGVLab's layout; 64 frames as 4 x 16 (?segment_frames=)")
register_backbone("surgrec-mae", load_surgrec_mae,
                  "SurgRec-MAE surgrec_mae.pth (VideoMAE pretraining layout, key 'model'), 16 frames of 224 px")
register_backbone("internvideo2", load_internvideo2,
                  "InternVideo2 .pt (vision_encoder of a stage-2 file), 4 frames of 224 px; ?gelu=tanh|exact")
register_backbone("surgenet", load_surgenet,
                  "SurgeNet/SurgeNetXL .pth (CAFormer-S18, ConvNeXtV2-T, PVTv2-B2), frame by frame; ?arch= #student")
register_backbone("gsvit", load_gsvit, "GSViT.pkl (EfficientViT-M5; BGR, [0,1] pixels, 224 px), frame by frame")
register_backbone("selfsupsurg", load_selfsupsurg, "SelfSupSurg VISSL .torch checkpoint (ResNet-50 trunk), frame by frame")
register_backbone("gastronet", load_gastronet,
                  "GastroNet / DINO ViT checkpoint (teacher by default, #student), frame by frame")
register_backbone("endomamba", load_endomamba,
                  "EndoMamba release (.pth, pretraining 'encoder.' or fine-tuned layout), 16 frames, 224 px")
register_backbone("surgvlp", load_surgvlp,
                  "SurgVLP release .pth (ResNet-50 + BERT), frame by frame; ?tokenizer=DIR for zero-shot")
