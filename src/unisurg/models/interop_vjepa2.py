"""Official V-JEPA / V-JEPA 2 checkpoints (facebookresearch/vjepa2 ``app/vjepa/train.py``) <-> our modules.

Official files are ``torch.save`` dicts with ``encoder``, ``target_encoder`` and ``predictor`` state
dicts (plus optimiser state), whose keys carry ``module.`` (DDP) and ``backbone.`` (multi-sequence
wrapper) prefixes. Our parameter names equal the official ones after those prefixes (fused ``qkv``),
so the mapping is: strip prefixes, drop the fixed ``pos_embed`` table (recomputed at run time), and
infer the architecture from the tensor shapes. The released UniSurg/SurgMotion and SurgRec-JEPA
weights use the same layout (key ``encoder``).

What shapes cannot tell is filled in and reported in ``notes``: the number of heads (from the
V-JEPA widths: 192->3, 384->6, 768->12, 1024->16, 1280->16, 1408->22, or ``num_heads=``) and
whether positions are RoPE or sin-cos (no / all-zero ``pos_embed`` -> RoPE; a ``pos_embed`` equal to
a 3D sin-cos table -> sin-cos; override with ``pos_embed=``). Both facebookresearch/vjepa2 and the
SurgMotion release build RoPE encoders with ``pos_embed = None`` (checked in their
``src/models/vision_transformer.py`` since the first commit), so their RoPE files carry no table.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import torch

from unisurg.models.pos_embed import sincos_3d
from unisurg.models.predictor import PredictorConfig, VideoPredictor
from unisurg.models.presets import HEADS_BY_WIDTH, PRESETS
from unisurg.models.strict_load import CheckpointError, load_strict
from unisurg.models.vit import EncoderConfig, VideoViT

WRAPPER_PREFIXES = ("module.", "backbone.", "_orig_mod.")
COMPONENTS = ("encoder", "target_encoder", "predictor")
PREDICTOR_HEADS_BY_WIDTH = {384: 12}  # V-JEPA / V-JEPA 2 predictors


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove leading wrapper prefixes (``module.``, ``backbone.``, ``_orig_mod.``, in any order/repetition)."""
    out = {}
    for key, value in state_dict.items():
        k = key
        changed = True
        while changed:
            changed = False
            for p in WRAPPER_PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        if k in out:
            raise CheckpointError(f"two keys map to {k!r} after removing wrapper prefixes (one is {key!r})")
        out[k] = value
    return out


def is_official_state_dict(state_dict: dict) -> bool:
    """True for an official encoder or predictor state dict (``blocks.N.attn.qkv`` style names)."""
    keys = strip_prefixes({k: None for k in state_dict if isinstance(k, str)}) if state_dict else {}
    return any(k.startswith(("blocks.", "predictor_blocks.", "patch_embed.")) for k in keys)


def official_components(obj, source: str) -> dict[str, dict[str, torch.Tensor]]:
    """The state dicts in an official checkpoint object: ``{"encoder": ..., "target_encoder": ..., ...}``.

    A bare encoder state dict is returned as ``{"encoder": sd}``.
    """
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict, got {type(obj).__name__}")
    found = {c: obj[c] for c in COMPONENTS if isinstance(obj.get(c), dict)}
    if found:
        return found
    if is_official_state_dict(obj):
        sd = strip_prefixes(obj)
        kind = "predictor" if any(k.startswith("predictor_blocks.") for k in sd) else "encoder"
        return {kind: obj}
    raise CheckpointError(
        f"{source}: not a V-JEPA checkpoint: no 'encoder' / 'target_encoder' / 'predictor' entry and no "
        f"'blocks.N...' parameters (top-level keys: {sorted(map(str, obj))[:12]})"
    )


def _block_count(keys, prefix: str) -> int:
    ids = {int(m.group(1)) for k in keys if (m := re.match(rf"{re.escape(prefix)}(\d+)\.", k))}
    if ids and ids != set(range(max(ids) + 1)):
        raise CheckpointError(f"non-contiguous block indices under '{prefix}': {sorted(ids)}")
    return len(ids)


def _need(sd: dict, key: str, source: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"{source}: missing key {key!r} needed to infer the architecture")
    return sd[key]


def match_sincos(table: torch.Tensor) -> tuple[tuple[int, int, int], bool] | None:
    """If ``table`` [1, N, D] is a 3D sin-cos table for a square-patch grid, return (grid, uniform_power)."""
    t = table.reshape(-1, table.shape[-1]).to(torch.float64)
    n, d = t.shape
    for g in range(1, math.isqrt(n) + 1):
        if n % (g * g):
            continue
        grid = (n // (g * g), g, g)
        for uniform in (False, True):
            try:
                ref = sincos_3d(d, grid, uniform_power=uniform, dtype=torch.float64)
            except ValueError:
                continue
            if torch.allclose(t, ref, atol=1e-4, rtol=0):
                return grid, uniform
    return None


def infer_pos_embed(
    table: torch.Tensor | None, choice: str, source: str, notes: list[str], name: str = "pos_embed"
) -> tuple[str, bool]:
    """Decide RoPE vs sin-cos for an official state dict; returns (pos_embed, sincos_uniform_power)."""
    if choice not in ("auto", "rope", "sincos"):
        raise ValueError(f"pos_embed={choice!r}: expected 'auto', 'rope' or 'sincos'")
    if choice == "rope":
        if table is not None:
            notes.append(f"'{name}' tensor ignored: RoPE requested")
        return "rope", False
    if table is None:
        if choice == "sincos":
            notes.append(f"no '{name}' tensor; sin-cos requested, using the (1/2, 1/4, 1/4) split")
            return "sincos", False
        notes.append(f"no '{name}' tensor: RoPE")
        return "rope", False
    if choice == "auto" and not bool(table.ne(0).any()):
        notes.append(f"'{name}' is all zeros (an unused placeholder): RoPE")
        return "rope", False
    found = match_sincos(table)
    if found is None:
        raise CheckpointError(
            f"{source}: '{name}' {tuple(table.shape)} is not a 3D sin-cos table (learned position embeddings are "
            f"not supported); if the model was trained with RoPE, pass pos_embed='rope'"
        )
    grid, uniform = found
    notes.append(
        f"'{name}' equals a 3D sin-cos table for grid {grid} (uniform_power={uniform}): sin-cos, recomputed "
        f"for each input grid"
    )
    if choice == "auto":
        warnings.warn(
            f"{source}: inferred sin-cos positions from the '{name}' tensor; if this is a V-JEPA 2 RoPE model "
            f"that kept a stale table, load it with pos_embed='rope'",
            stacklevel=3,
        )
    return "sincos", uniform


def infer_encoder_config(
    sd: dict[str, torch.Tensor],
    *,
    num_heads: int | None = None,
    pos_embed: str = "auto",
    rope_variant: str = "vjepa2",
    source: str = "checkpoint",
) -> tuple[EncoderConfig, list[str]]:
    """Architecture of a prefix-stripped official encoder state dict, and notes on what was assumed."""
    notes: list[str] = []
    w = _need(sd, "patch_embed.proj.weight", source)
    if w.dim() != 5:
        raise CheckpointError(
            f"{source}: 'patch_embed.proj.weight' has shape {tuple(w.shape)}; only video (Conv3d tubelet) encoders "
            "are supported"
        )
    dim, in_chans, tubelet, ph, pw = w.shape
    if ph != pw:
        raise CheckpointError(f"{source}: non-square patches {ph}x{pw} are not supported")
    depth = _block_count(sd, "blocks.")
    if depth == 0:
        raise CheckpointError(f"{source}: no 'blocks.N.' parameters found")
    if "blocks.0.mlp.fc3.weight" in sd:
        raise CheckpointError(f"{source}: SwiGLU MLPs (use_silu, 'mlp.fc3') are not supported")
    hidden = _need(sd, "blocks.0.mlp.fc1.weight", source).shape[0]
    if num_heads is None:
        if dim not in HEADS_BY_WIDTH:
            raise CheckpointError(
                f"{source}: cannot infer the number of attention heads for width {dim} (not a V-JEPA preset "
                f"width {sorted(HEADS_BY_WIDTH)}); pass num_heads=..."
            )
        num_heads = HEADS_BY_WIDTH[dim]
        notes.append(f"num_heads={num_heads} assumed from width {dim} (V-JEPA 2 presets; pass num_heads= to override)")
    pe, uniform = infer_pos_embed(sd.get("pos_embed"), pos_embed, source, notes)
    cfg = EncoderConfig(
        embed_dim=dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=hidden / dim,
        mlp_hidden_dim=hidden,
        patch_size=ph,
        tubelet_size=tubelet,
        in_chans=in_chans,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        pos_embed=pe,
        rope_variant=rope_variant,
        sincos_uniform_power=uniform,
        name=_preset_name(dim, depth, num_heads),
    )
    notes.insert(0, f"inferred from tensor shapes: width {dim}, depth {depth}, mlp hidden {hidden}, "
                    f"tubelet {tubelet}x{ph}x{pw}, {in_chans} input channels, qkv bias {cfg.qkv_bias}")
    return cfg, notes


def _preset_name(dim: int, depth: int, heads: int) -> str:
    for name, spec in PRESETS.items():
        if (spec["embed_dim"], spec["depth"], spec["num_heads"]) == (dim, depth, heads):
            return name
    return "custom"


def infer_predictor_config(
    sd: dict[str, torch.Tensor],
    *,
    num_heads: int | None = None,
    pos_embed: str = "auto",
    rope_variant: str = "vjepa2",
    source: str = "checkpoint",
) -> tuple[PredictorConfig, list[str]]:
    """Architecture of a prefix-stripped official predictor state dict."""
    notes: list[str] = []
    w = _need(sd, "predictor_embed.weight", source)
    pdim, dim = w.shape
    depth = _block_count(sd, "predictor_blocks.")
    if "predictor_blocks.0.mlp.fc3.weight" in sd:
        raise CheckpointError(f"{source}: SwiGLU predictor MLPs ('mlp.fc3') are not supported")
    hidden = _need(sd, "predictor_blocks.0.mlp.fc1.weight", source).shape[0] if depth else int(4 * pdim)
    n_tokens = len([k for k in sd if re.fullmatch(r"mask_tokens\.\d+", k)])
    if n_tokens == 0:
        raise CheckpointError(f"{source}: predictor without 'mask_tokens.N' (use_mask_tokens=False) is not supported")
    if num_heads is None:
        if pdim not in PREDICTOR_HEADS_BY_WIDTH:
            raise CheckpointError(f"{source}: cannot infer predictor heads for width {pdim}; pass num_heads=...")
        num_heads = PREDICTOR_HEADS_BY_WIDTH[pdim]
        notes.append(f"predictor num_heads={num_heads} assumed from width {pdim}")
    pe, uniform = infer_pos_embed(sd.get("predictor_pos_embed"), pos_embed, source, notes, "predictor_pos_embed")
    cfg = PredictorConfig(
        embed_dim=dim,
        predictor_dim=pdim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=hidden / pdim,
        mlp_hidden_dim=hidden,
        qkv_bias="predictor_blocks.0.attn.qkv.bias" in sd if depth else True,
        pos_embed=pe,
        rope_variant=rope_variant,
        sincos_uniform_power=uniform,
        num_mask_tokens=n_tokens,
    )
    return cfg, notes


def encoder_from_official(
    sd: dict[str, torch.Tensor], *, source: str, num_heads=None, pos_embed="auto", rope_variant="vjepa2"
) -> tuple[VideoViT, list[str]]:
    """Build (on the meta device) and strictly load an encoder from an official state dict."""

    sd = strip_prefixes(sd)
    cfg, notes = infer_encoder_config(sd, num_heads=num_heads, pos_embed=pos_embed, rope_variant=rope_variant,
                                      source=source)
    sd = {k: v for k, v in sd.items() if k != "pos_embed"}
    with torch.device("meta"):
        model = VideoViT(cfg)
    load_strict(model, sd, source=source, assign=True)
    return model, notes


def predictor_from_official(
    sd: dict[str, torch.Tensor], *, source: str, num_heads=None, pos_embed="auto", rope_variant="vjepa2"
) -> tuple[VideoPredictor, list[str]]:
    """Build and strictly load a predictor from an official state dict."""

    sd = strip_prefixes(sd)
    cfg, notes = infer_predictor_config(sd, num_heads=num_heads, pos_embed=pos_embed, rope_variant=rope_variant,
                                        source=source)
    sd = {k: v for k, v in sd.items() if k != "predictor_pos_embed"}
    with torch.device("meta"):
        model = VideoPredictor(cfg)
    load_strict(model, sd, source=source, assign=True)
    return model, notes


def _grid_for_export(num_frames: int, img_size: int, tubelet: int, patch: int) -> tuple[int, int, int]:
    if num_frames % tubelet or img_size % patch:
        raise ValueError(
            f"export grid: num_frames={num_frames} must be divisible by tubelet {tubelet} and img_size={img_size} "
            f"by patch {patch}"
        )
    return num_frames // tubelet, img_size // patch, img_size // patch


def encoder_to_official(encoder: VideoViT, *, num_frames: int = 16, img_size: int = 224,
                        prefix: str = "module.backbone.") -> dict[str, torch.Tensor]:
    """Official-format encoder state dict; a sin-cos model gets the ``pos_embed`` table of (num_frames, img_size)."""
    c = encoder.config
    if c.rope_variant != "vjepa2" and c.pos_embed == "rope":
        raise ValueError("the official code implements only rope_variant='vjepa2'; this encoder uses 'standard'")
    sd = {prefix + k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    if c.pos_embed == "sincos":
        grid = _grid_for_export(num_frames, img_size, c.tubelet_size, c.patch_size)
        sd[prefix + "pos_embed"] = sincos_3d(c.embed_dim, grid, uniform_power=c.sincos_uniform_power)[None]
    return sd


def predictor_to_official(predictor: VideoPredictor, *, tubelet_size: int = 2, patch_size: int = 16,
                          num_frames: int = 16, img_size: int = 224,
                          prefix: str = "module.backbone.") -> dict[str, torch.Tensor]:
    c = predictor.config
    sd = {prefix + k: v.detach().cpu().contiguous() for k, v in predictor.state_dict().items()}
    if c.pos_embed == "sincos":
        grid = _grid_for_export(num_frames, img_size, tubelet_size, patch_size)
        sd[prefix + "predictor_pos_embed"] = sincos_3d(c.predictor_dim, grid, uniform_power=c.sincos_uniform_power)[None]
    return sd


def export_vjepa2(
    encoder: VideoViT,
    path: str | Path,
    *,
    target_encoder: VideoViT | None = None,
    predictor: VideoPredictor | None = None,
    num_frames: int = 16,
    img_size: int = 224,
    prefix: str = "module.backbone.",
) -> Path:
    """Write an official V-JEPA 2 style checkpoint (``torch.save`` dict) that its code and ours read back.

    ``target_encoder`` defaults to ``encoder`` (the same tensors, stored once), so loaders that read
    either key work. ``num_frames``/``img_size`` only set the size of the fixed ``pos_embed`` table
    written for sin-cos models (the official code builds its model for one input size).
    """
    path = Path(path)
    kw = dict(num_frames=num_frames, img_size=img_size, prefix=prefix)
    enc = encoder_to_official(encoder, **kw)
    out = {"encoder": enc, "target_encoder": encoder_to_official(target_encoder, **kw) if target_encoder is not None else enc}
    if predictor is not None:
        out["predictor"] = predictor_to_official(
            predictor, tubelet_size=encoder.tubelet_size, patch_size=encoder.patch_size, **kw
        )
    out["epoch"] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(out, tmp)
    tmp.replace(path)
    return path
