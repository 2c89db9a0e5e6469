"""Hugging Face ``transformers`` VJEPA2 weights -> our encoder (no ``transformers`` import needed).

HF names the encoder ``encoder.embeddings.patch_embeddings.proj``, ``encoder.layer.N.{norm1,
attention.{query,key,value,proj}, norm2, mlp.fc1, mlp.fc2}``, ``encoder.layernorm``, with separate
q/k/v projections, RoPE positions, and input ``[B, T, C, H, W]``. We fuse q/k/v (in that order)
into ``attn.qkv``; the loaded module keeps our ``[B, C, T, H, W]`` input. HF's RoPE derives token
rows from ``crop_size`` rather than from the input, so its outputs equal ours (and the official
code's) for inputs of ``crop_size`` pixels.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from unisurg.models.integrity import read_safetensors, torch_load_weights
from unisurg.models.strict_load import CheckpointError, load_strict
from unisurg.models.vit import EncoderConfig, VideoViT

HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
HF_MODEL_PREFIXES = ("vjepa2.", "model.")  # VJEPA2ForVideoClassification nests the model under "vjepa2."


def is_hf_state_dict(state_dict: dict) -> bool:
    return any(isinstance(k, str) and (".encoder.layer." in f".{k}" or "encoder.embeddings.patch_embeddings" in k)
               for k in state_dict)


def _strip_model_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for p in HF_MODEL_PREFIXES:
            if k.startswith(p + "encoder."):
                k = k[len(p):]
                break
        out[k] = v
    return out


def hf_encoder_state_dict(sd: dict[str, torch.Tensor], *, source: str) -> dict[str, torch.Tensor]:
    """Our encoder state dict from HF VJEPA2 weights. Non-encoder entries (predictor, pooler, classifier)
    are left out; any ``encoder.*`` entry that has no place in our encoder is an error naming it."""
    sd = _strip_model_prefix(sd)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in sd.items():
        if not key.startswith("encoder."):
            continue
        k = key[len("encoder."):]
        if k.startswith("embeddings.patch_embeddings.proj."):
            out["patch_embed.proj." + k.rsplit(".", 1)[1]] = value
        elif k.startswith("layernorm."):
            out["norm." + k.split(".", 1)[1]] = value
        elif m := re.fullmatch(r"layer\.(\d+)\.attention\.(query|key|value)\.(weight|bias)", k):
            qkv.setdefault((int(m.group(1)), m.group(3)), {})[m.group(2)] = value
        elif m := re.fullmatch(r"layer\.(\d+)\.attention\.proj\.(weight|bias)", k):
            out[f"blocks.{m.group(1)}.attn.proj.{m.group(2)}"] = value
        elif m := re.fullmatch(r"layer\.(\d+)\.(norm1|norm2|mlp\.fc1|mlp\.fc2)\.(weight|bias)", k):
            out[f"blocks.{m.group(1)}.{m.group(2)}.{m.group(3)}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: HF encoder key(s) with no counterpart in our encoder: {unknown[:20]}")
    for (i, kind), parts in sorted(qkv.items()):
        lacking = [p for p in ("query", "key", "value") if p not in parts]
        if lacking:
            raise CheckpointError(
                f"{source}: missing key(s) "
                + ", ".join(f"encoder.layer.{i}.attention.{p}.{kind}" for p in lacking)
            )
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    if not out:
        raise CheckpointError(f"{source}: no 'encoder.*' weights found (is this a VJEPA2 checkpoint?)")
    return out


def encoder_config_from_hf(cfg: dict, *, source: str) -> EncoderConfig:
    """Our :class:`EncoderConfig` from a VJEPA2 ``config.json``."""
    if cfg.get("model_type") not in (None, "vjepa2"):
        raise CheckpointError(f"{source}: model_type={cfg.get('model_type')!r}, expected 'vjepa2'")
    act = cfg.get("hidden_act", "gelu")
    if act != "gelu":
        raise CheckpointError(f"{source}: hidden_act={act!r} is not supported (only exact 'gelu')")
    patch = cfg.get("patch_size", 16)
    if isinstance(patch, (list, tuple)):
        if len(set(patch)) != 1:
            raise CheckpointError(f"{source}: non-square patch_size={patch} is not supported")
        patch = patch[0]
    dim = int(cfg.get("hidden_size", 1024))
    ratio = float(cfg.get("mlp_ratio", 4.0))
    return EncoderConfig(
        embed_dim=dim,
        depth=int(cfg.get("num_hidden_layers", 24)),
        num_heads=int(cfg.get("num_attention_heads", 16)),
        mlp_ratio=ratio,
        mlp_hidden_dim=int(dim * ratio),
        patch_size=int(patch),
        tubelet_size=int(cfg.get("tubelet_size", 2)),
        in_chans=int(cfg.get("in_chans", 3)),
        qkv_bias=bool(cfg.get("qkv_bias", True)),
        norm_eps=float(cfg.get("layer_norm_eps", 1e-6)),
        pos_embed="rope",
        rope_variant="vjepa2",
    )


def _load_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """One weight file of a HF folder (safetensors or torch); errors name the file."""
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    return torch_load_weights(path)


def read_hf_folder(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config dict, full state dict) of a ``save_pretrained`` folder (single file or sharded)."""
    cfg_path = folder / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: cannot read the HF config ({e})") from e
    for name in HF_WEIGHT_FILES:
        p = folder / name
        if not p.exists():
            continue
        if name.endswith(".index.json"):
            index = json.loads(p.read_text())
            sd: dict[str, torch.Tensor] = {}
            for shard in sorted(set(index.get("weight_map", {}).values())):
                sd.update(_load_weight_file(folder / shard))
            return cfg, sd
        return cfg, _load_weight_file(p)
    raise CheckpointError(f"{folder}: HF folder without weights; expected one of {list(HF_WEIGHT_FILES)}")


def encoder_from_hf(sd: dict[str, torch.Tensor], cfg: EncoderConfig, *, source: str) -> VideoViT:
    ours = hf_encoder_state_dict(sd, source=source)
    with torch.device("meta"):
        model = VideoViT(cfg)
    load_strict(model, ours, source=source, assign=True)
    return model
