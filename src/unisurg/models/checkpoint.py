"""Model checkpoints: our safetensors + JSON format, and one loader for every supported source.

Our format is either a directory ``<dir>/weights.safetensors`` + ``<dir>/unisurg.json``, or a pair
``<name>.safetensors`` + ``<name>.json``. Tensors carry the component as prefix (``encoder.``,
``target_encoder.``, ``predictor.``); the JSON (also embedded in the safetensors metadata, so the
weights file alone is self-describing) holds every architecture hyperparameter, the position
encoding and the unisurg version.

:func:`load_encoder` reads, by what it finds at ``path``:

- our format (above);
- an official V-JEPA / V-JEPA 2 ``torch.save`` file (``.pt``/``.pth``/...): ``encoder`` /
  ``target_encoder`` entries with ``module.``/``backbone.`` prefixes and fused ``qkv``; the
  architecture is inferred from tensor shapes (see :mod:`unisurg.models.interop_vjepa2`);
- a Hugging Face VJEPA2 ``save_pretrained`` folder, or a bare HF state dict file.

Loading is always strict (missing, unexpected or misshaped keys raise :class:`CheckpointError`
naming them) and uses ``torch.load(weights_only=True, mmap=True)``.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from unisurg._version import __version__
from unisurg.atomic_files import atomic_path, write_text_atomic
from unisurg.models import interop_hf, interop_vjepa2
from unisurg.models.integrity import (
    CHECKSUMS_NAME,
    read_safetensors,
    safetensors_metadata,
    torch_load_weights,
    verify_checksums,
)
from unisurg.models.predictor import PredictorConfig, VideoPredictor
from unisurg.models.strict_load import CheckpointError, load_strict
from unisurg.models.vit import EncoderConfig, VideoViT

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_NAME = "weights.safetensors"
CONFIG_NAME = "unisurg.json"
METADATA_KEY = "unisurg_config"
ENCODER_KINDS = ("target_encoder", "encoder")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")


def _paths(path: str | Path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix == ".safetensors":
        return p, p.with_suffix(".json")
    if p.suffix == ".json":
        return p.with_suffix(".safetensors"), p
    return p / WEIGHTS_NAME, p / CONFIG_NAME


def save_checkpoint(
    path: str | Path,
    *,
    encoder: VideoViT | None = None,
    target_encoder: VideoViT | None = None,
    predictor: VideoPredictor | None = None,
    extra: dict | None = None,
) -> Path:
    """Write the given components in our format; returns the weights file path.

    ``path`` is a directory, or a ``.safetensors`` / ``.json`` name of the file pair. Files are
    written atomically (temporary file + rename). ``extra`` is stored in the JSON (must be JSON-able).
    """

    components = {"encoder": encoder, "target_encoder": target_encoder, "predictor": predictor}
    components = {k: m for k, m in components.items() if m is not None}
    if not components:
        raise ValueError("save_checkpoint: give at least one of encoder, target_encoder, predictor")
    tensors: dict[str, torch.Tensor] = {}
    config: dict = {
        "unisurg_format": FORMAT_VERSION,
        "unisurg_version": __version__,
        "components": {},
        "extra": extra or {},
    }
    for name, module in components.items():
        module = getattr(module, "module", module)  # unwrap DDP
        module = getattr(module, "_orig_mod", module)  # unwrap torch.compile
        if not isinstance(module, (VideoViT, VideoPredictor)):
            raise TypeError(f"save_checkpoint: {name} is a {type(module).__name__}, expected VideoViT / VideoPredictor")
        config["components"][name] = {"class": type(module).__name__, "config": module.config.to_dict()}
        for k, v in module.state_dict().items():
            if hasattr(v, "full_tensor"):  # FSDP2 / DTensor shard: gather the whole tensor
                v = v.full_tensor()
            tensors[f"{name}.{k}"] = v.detach().to("cpu").contiguous()
    if Path(path).suffix in TORCH_SUFFIXES:
        raise ValueError(
            f"save_checkpoint: {path} names a torch file; our format is a directory or a .safetensors/.json pair "
            "(use export_vjepa2 for the official V-JEPA 2 .pt layout)"
        )
    weights_path, config_path = _paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        text = json.dumps(config, indent=2, sort_keys=True)
    except TypeError as e:
        raise TypeError(f"save_checkpoint: 'extra' must hold only JSON values (str, number, bool, list, dict): {e}") from e
    if weights_path.name == WEIGHTS_NAME:  # a checksum record of earlier files here would no longer match
        (weights_path.parent / CHECKSUMS_NAME).unlink(missing_ok=True)
    with atomic_path(weights_path) as tmp:
        save_file(_unshare(tensors), str(tmp), metadata={"format": "pt", METADATA_KEY: text})
    write_text_atomic(config_path, text + "\n")
    return weights_path


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (e.g. an EMA target equal to the encoder): copy repeats."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else None
        if ptr is not None and ptr in seen:
            v = v.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[k] = v
    return out


def save_encoder(encoder: VideoViT, path: str | Path, *, extra: dict | None = None) -> Path:
    """Save one encoder (as component ``encoder``) in our format."""
    return save_checkpoint(path, encoder=encoder, extra=extra)


def read_config(path: str | Path) -> dict:
    """The JSON config of a checkpoint in our format (sidecar file, else safetensors metadata)."""
    weights_path, config_path = _paths(path)
    if config_path.exists():
        try:
            cfg = json.loads(config_path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{config_path}: invalid JSON at line {e.lineno}: {e.msg}") from e
    else:
        cfg = _metadata_config(weights_path)
        if cfg is None:
            raise CheckpointError(f"{config_path}: not found, and {weights_path} carries no unisurg config")
    if cfg.get("unisurg_format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{config_path}: unisurg_format={cfg.get('unisurg_format')!r}; this version reads format {FORMAT_VERSION}"
        )
    return cfg


def _metadata_config(weights_path: Path) -> dict | None:
    if not weights_path.exists():
        return None
    text = safetensors_metadata(weights_path).get(METADATA_KEY)
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{weights_path}: the unisurg config in its metadata is not valid JSON ({e})") from None


def detect_format(path: str | Path) -> str:
    """'unisurg', 'vjepa2' (torch.save dict) or 'hf' for what lies at ``path``."""
    p = Path(path)
    if not p.exists() and not (p.suffix == ".json" and p.with_suffix(".safetensors").exists()):
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if p.is_dir():
        if (p / CONFIG_NAME).exists():
            return "unisurg"
        if (p / "config.json").exists():
            return "hf"
        raise CheckpointError(
            f"{p}: directory holds neither our checkpoint ({CONFIG_NAME}) nor a HF model (config.json); "
            f"contents: {sorted(x.name for x in p.iterdir())[:12]}"
        )
    if p.suffix == ".json":
        return "unisurg"
    if p.suffix == ".safetensors":
        if p.with_suffix(".json").exists() or _metadata_config(p) is not None:
            return "unisurg"
        return "safetensors"
    return "torch"


def _finish(model: nn.Module, *, device, dtype, info: dict) -> nn.Module:
    if dtype is not None:
        model = model.to(dtype=dtype)
    model = model.to(device)
    model.load_info = info
    for note in info.get("notes", []):
        log.info("%s: %s", info["source"], note)
    return model.eval()


def _pick(available: list[str], which: str, source: str) -> str:
    if which not in ENCODER_KINDS:
        raise ValueError(f"which={which!r}: expected one of {ENCODER_KINDS}")
    if which in available:
        return which
    other = [k for k in ENCODER_KINDS if k in available]
    if not other:
        raise CheckpointError(f"{source}: no encoder in this checkpoint (found components {available})")
    warnings.warn(f"{source}: no '{which}' weights, loading '{other[0]}' instead", stacklevel=3)
    return other[0]


def _load_ours(path: Path, component: str | None, *, kind: str):
    cfg = read_config(path)
    weights_path, _ = _paths(path)
    comps = cfg.get("components", {})
    if kind == "encoder":
        component = _pick(list(comps), component, str(weights_path))
    elif component not in comps:
        raise CheckpointError(f"{weights_path}: no '{component}' component (found {sorted(comps)})")
    entry = comps[component]
    cls, cfg_cls = (VideoViT, EncoderConfig) if entry["class"] == "VideoViT" else (VideoPredictor, PredictorConfig)
    model_cfg = cfg_cls.from_dict(entry["config"], where=f"{weights_path} [{component}]")
    if weights_path.parent.joinpath(CHECKSUMS_NAME).exists() and weights_path.name == WEIGHTS_NAME:
        verify_checksums(weights_path.parent)  # a run checkpoint or export: refuse damaged files
    sd, _ = read_safetensors(weights_path, prefix=component + ".")  # read only this component's tensors
    with torch.device("meta"):
        model = cls(model_cfg)
    load_strict(model, sd, source=f"{weights_path} [{component}]", assign=True)
    return model, {"format": "unisurg", "source": str(weights_path), "component": component,
                   "unisurg_version": cfg.get("unisurg_version"), "notes": []}


def load_encoder(
    path: str | Path,
    *,
    which: str = "target_encoder",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    num_heads: int | None = None,
    pos_embed: str = "auto",
    rope_variant: str = "vjepa2",
) -> VideoViT:
    """Load a :class:`VideoViT` (eval mode) from our format, an official V-JEPA 2 file or HF VJEPA2 weights.

    Args:
        which: ``"target_encoder"`` (the EMA encoder, default) or ``"encoder"``; if the checkpoint
            has only the other one, it is loaded with a warning.
        num_heads / pos_embed / rope_variant: only for official and bare HF state dicts, whose
            shapes do not show them (``pos_embed``: ``"auto"``, ``"rope"`` or ``"sincos"``).
    The returned module has ``load_info`` (format, source, component, notes on inferred settings).
    """
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "unisurg":
        model, info = _load_ours(p, which, kind="encoder")
        return _finish(model, device=device, dtype=dtype, info=info)
    if fmt == "hf":
        hf_cfg, sd = interop_hf.read_hf_folder(p)
        model = interop_hf.encoder_from_hf(sd, interop_hf.encoder_config_from_hf(hf_cfg, source=str(p)), source=str(p))
        return _finish(model, device=device, dtype=dtype,
                       info={"format": "hf", "source": str(p), "component": "encoder", "notes": []})
    if fmt == "safetensors":
        obj, _ = read_safetensors(p)
    else:
        obj = torch_load_weights(p)
    source = str(p)
    if isinstance(obj, dict) and interop_hf.is_hf_state_dict(obj):
        ours = interop_hf.hf_encoder_state_dict(obj, source=source)
        cfg, notes = interop_vjepa2.infer_encoder_config(ours, num_heads=num_heads, pos_embed="rope",
                                                         rope_variant=rope_variant, source=source)
        model = interop_hf.encoder_from_hf(obj, cfg, source=source)
        return _finish(model, device=device, dtype=dtype,
                       info={"format": "hf", "source": source, "component": "encoder", "notes": notes})
    comps = interop_vjepa2.official_components(obj, source)
    component = _pick(list(comps), which, source)
    model, notes = interop_vjepa2.encoder_from_official(
        comps[component], source=f"{source} [{component}]", num_heads=num_heads, pos_embed=pos_embed,
        rope_variant=rope_variant,
    )
    return _finish(model, device=device, dtype=dtype,
                   info={"format": "vjepa2", "source": source, "component": component, "notes": notes})


def load_predictor(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    num_heads: int | None = None,
    pos_embed: str = "auto",
    rope_variant: str = "vjepa2",
) -> VideoPredictor:
    """Load the predictor from our format or an official V-JEPA 2 checkpoint (e.g. to start pretraining from it)."""
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "unisurg":
        model, info = _load_ours(p, "predictor", kind="predictor")
        return _finish(model, device=device, dtype=dtype, info=info)
    if fmt != "torch":
        raise CheckpointError(f"{p}: predictors load from our format or an official V-JEPA 2 .pt file, not {fmt}")
    obj = torch_load_weights(p)
    comps = interop_vjepa2.official_components(obj, str(p))
    if "predictor" not in comps:
        raise CheckpointError(f"{p}: no 'predictor' entry (found {sorted(comps)})")
    model, notes = interop_vjepa2.predictor_from_official(
        comps["predictor"], source=f"{p} [predictor]", num_heads=num_heads, pos_embed=pos_embed,
        rope_variant=rope_variant,
    )
    return _finish(model, device=device, dtype=dtype,
                   info={"format": "vjepa2", "source": str(p), "component": "predictor", "notes": notes})
