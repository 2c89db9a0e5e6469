"""The official probe format: V-JEPA 2's ``AttentiveClassifier`` checkpoints, as SurgMotion saves them.

An official probe checkpoint (facebookresearch/vjepa2 ``evals/*/eval.py``, CAIR-HKISI/SurgMotion
``evals/foundation_phase_probing/eval.py``) is ``{"classifiers": [state_dict, ...], ...}``, one state
dict per head of the lr x wd grid (V-JEPA 2 prefixes the keys with ``module.`` from its DDP wrapper;
SurgMotion saves ``c.module.state_dict()``, without it). Key names of one head (read from
``src/models/attentive_pooler.py`` and ``src/models/utils/modules.py``)::

    pooler.query_tokens                                   [1, 1, D]
    pooler.blocks.{i}.norm1 / norm2 .weight|.bias         [D]        i = 0 .. depth-2
    pooler.blocks.{i}.attn.qkv .weight|.bias              [3D, D]
    pooler.blocks.{i}.attn.proj .weight|.bias             [D, D]
    pooler.blocks.{i}.mlp.fc1 / fc2 .weight|.bias         [H, D] / [D, H]
    pooler.cross_attention_block.norm1 / norm2 ...        [D]
    pooler.cross_attention_block.xattn.q .weight|.bias    [D, D]
    pooler.cross_attention_block.xattn.kv .weight|.bias   [2D, D]     (no xattn.proj: none exists)
    pooler.cross_attention_block.mlp.fc1 / fc2 ...
    linear .weight|.bias                                  [K, D]

It maps onto :class:`~unisurg.evaluation.probe.MultiProbe` with ``cross_proj=False`` and LayerNorm
``eps=1e-5`` (``nn.LayerNorm``'s default), ``init="vjepa2"``; ``nn.Linear`` weights ``[out, in]``
become our ``[P, in, out]``. The number of heads is not in the weights (pass ``heads``; V-JEPA 2 and
SurgMotion use 16). Only ``depth``, ``D``, the MLP width and ``K`` are read from the shapes.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from unisurg.data.clips import IMAGENET_MEAN, IMAGENET_STD
from unisurg.evaluation.probe import MultiProbe, ProbeSpec

OFFICIAL_EPS = 1e-5  # nn.LayerNorm's default, which AttentiveClassifier uses


class OfficialProbeError(ValueError):
    """A file that is not an official V-JEPA 2 / SurgMotion probe checkpoint, or one that does not fit."""


def _ours_to_official_names(depth: int) -> dict[str, tuple[str, bool]]:
    """``{our parameter name: (official key, is a Linear weight to transpose)}`` of one probe."""
    names: dict[str, tuple[str, bool]] = {"query": ("pooler.query_tokens", False),
                                          "head.weight": ("linear.weight", True), "head.bias": ("linear.bias", False)}
    sub = {"norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for i in range(depth - 1):
        for ours, theirs in (sub | {"attn.qkv": "attn.qkv", "attn.proj": "attn.proj"}).items():
            for leaf in ("weight", "bias"):
                is_linear = not ours.startswith("norm")
                names[f"blocks.{i}.{ours}.{leaf}"] = (f"pooler.blocks.{i}.{theirs}.{leaf}", is_linear and leaf == "weight")
    for ours, theirs in (sub | {"xattn.q": "xattn.q", "xattn.kv": "xattn.kv"}).items():
        for leaf in ("weight", "bias"):
            is_linear = not ours.startswith("norm")
            names[f"cross.{ours}.{leaf}"] = (f"pooler.cross_attention_block.{theirs}.{leaf}", is_linear and leaf == "weight")
    return names


def strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DistributedDataParallel's ``module.`` prefix (V-JEPA 2 saves the wrapped state dict)."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def official_spec(state: dict[str, torch.Tensor], heads: int = 16, where: str = "classifier") -> ProbeSpec:
    """The :class:`ProbeSpec` of one official head from its tensor shapes (``heads`` is not stored)."""
    state = strip_module_prefix(state)
    for need in ("pooler.query_tokens", "linear.weight", "pooler.cross_attention_block.mlp.fc1.weight"):
        if need not in state:
            raise OfficialProbeError(f"{where}: key {need!r} missing; not a V-JEPA 2 AttentiveClassifier state dict "
                                     f"(keys start with {sorted(state)[:3]})")
    D = int(state["pooler.query_tokens"].shape[-1])
    if tuple(state["pooler.query_tokens"].shape) != (1, 1, D):
        raise OfficialProbeError(f"{where}: pooler.query_tokens has shape {tuple(state['pooler.query_tokens'].shape)}; "
                                 "only one query token (a classifier) is supported")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"pooler\.blocks\.(\d+)\.", k))}
    if blocks != set(range(len(blocks))):
        raise OfficialProbeError(f"{where}: self-attention blocks {sorted(blocks)} are not numbered 0..n-1")
    hidden = int(state["pooler.cross_attention_block.mlp.fc1.weight"].shape[0])
    K = int(state["linear.weight"].shape[0])
    if D % heads:
        raise OfficialProbeError(f"{where}: embed dim {D} is not divisible by heads={heads}; pass the number of "
                                 "attention heads the probe was trained with")
    return ProbeSpec("attentive", D, K, D, depth=len(blocks) + 1, heads=heads, mlp_ratio=hidden / D,
                     eps=OFFICIAL_EPS, cross_proj=False, init="vjepa2")


def official_to_probe_state(state: dict[str, torch.Tensor], spec: ProbeSpec, where: str = "classifier") -> dict:
    """One official head's state dict -> the parameters of a 1-probe :class:`MultiProbe` of ``spec``."""
    state = strip_module_prefix(state)
    names = _ours_to_official_names(spec.depth)
    theirs = {k for k, _ in names.values()}
    unexpected = sorted(set(state) - theirs)
    missing = sorted(theirs - set(state))
    if unexpected or missing:
        hint = " (an output projection of the cross-attention is not part of the official probe)" \
            if any("xattn.proj" in k for k in unexpected) else ""
        raise OfficialProbeError(f"{where}: keys do not match a depth-{spec.depth} AttentiveClassifier: missing "
                                 f"{missing[:4]}, unexpected {unexpected[:4]}{hint}")
    out = {}
    for ours, (key, transpose) in names.items():
        t = state[key].detach().float()
        t = t.t() if transpose else t
        out[ours] = t.reshape(1, 1, 1, -1) if ours == "query" else t.unsqueeze(0)
    return out


def probe_to_official_state(probe: MultiProbe, index: int = 0) -> dict[str, torch.Tensor]:
    """Probe ``index`` of a :class:`MultiProbe` with the official layout as an official state dict
    (the inverse of :func:`official_to_probe_state`), e.g. to hand a probe to the authors' code."""
    spec = probe.spec
    if spec.cross_proj or spec.width != spec.embed_dim:
        raise OfficialProbeError("only a probe with probe.cross_proj=false and no input projection (width = "
                                 "embed dim) has the official layout")
    params = dict(probe.named_parameters())
    out = {}
    for ours, (key, transpose) in _ours_to_official_names(spec.depth).items():
        t = params[ours].detach()[index].float().cpu()
        out[key] = (t.t() if transpose else t).reshape(1, 1, -1).clone() if ours == "query" else \
            (t.t() if transpose else t).contiguous().clone()
    return out


def read_classifiers(path: str | Path) -> list[dict[str, torch.Tensor]]:
    """The head state dicts of an official checkpoint file (``{"classifiers": [...]}``, or one bare
    classifier state dict). Loaded with ``weights_only=True`` (no code from the file runs)."""
    path = Path(path)
    if not path.is_file():
        raise OfficialProbeError(f"{path}: no such checkpoint file")
    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors of every kind: report the file, not a traceback
        raise OfficialProbeError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(ck, dict) and "classifiers" in ck:
        heads = ck["classifiers"]
        if not isinstance(heads, (list, tuple)) or not heads or not all(isinstance(h, dict) for h in heads):
            raise OfficialProbeError(f"{path}: 'classifiers' must be a non-empty list of state dicts")
        return [dict(h) for h in heads]
    if isinstance(ck, dict) and any(str(k).endswith("pooler.query_tokens") for k in ck):
        return [dict(ck)]
    keys = sorted(ck)[:5] if isinstance(ck, dict) else type(ck).__name__
    raise OfficialProbeError(f"{path}: expected {{'classifiers': [state_dict, ...]}} (a V-JEPA 2 / SurgMotion eval "
                             f"checkpoint) or one AttentiveClassifier state dict; found {keys}")


def load_official_probes(path: str | Path, heads: int = 16, indices: list[int] | None = None) -> MultiProbe:
    """A :class:`MultiProbe` holding the heads of an official checkpoint (all, or ``indices``), in file order."""
    states = read_classifiers(path)
    chosen = list(range(len(states))) if indices is None else list(indices)
    for i in chosen:
        if not 0 <= i < len(states):
            raise OfficialProbeError(f"{path}: head {i} requested but the checkpoint has {len(states)} heads")
    spec = official_spec(states[chosen[0]], heads, f"{path} classifiers[{chosen[0]}]")
    probe = MultiProbe(spec, len(chosen), seed=0)
    parts = []
    for i in chosen:
        s = official_spec(states[i], heads, f"{path} classifiers[{i}]")
        if s != spec:
            raise OfficialProbeError(f"{path}: classifiers[{i}] has another shape ({s}) than classifiers[{chosen[0]}]")
        parts.append(official_to_probe_state(states[i], spec, f"{path} classifiers[{i}]"))
    with torch.no_grad():
        for name, p in probe.named_parameters():
            p.copy_(torch.cat([part[name] for part in parts]))
    return probe.eval()


def is_official_checkpoint(path: str | Path) -> bool:
    """A probe given as a file (``.pt``, ``.pth``, ``.pth.tar``, ``.tar``) rather than a unisurg probe folder."""
    p = Path(path)
    return p.is_file() and (p.suffix in (".pt", ".pth", ".tar", ".ckpt"))


def official_probe_meta(probe: MultiProbe, clip: dict, class_names: list[str] | None, source: str | Path,
                        head: int) -> dict:
    """The ``probe.json``-like record ``predict`` needs for an official head (which carries none): phase task,
    all patch tokens, ImageNet mean/std (SurgMotion's loader), the given clip protocol and class names
    (``phase_0..`` when not given); no backbone fingerprint to check against."""

    K = probe.spec.out_dim
    names = list(class_names) if class_names else [f"phase_{k}" for k in range(K)]
    if len(names) != K:
        raise OfficialProbeError(f"{source}: the head has {K} classes but {len(names)} class names were given")
    return {"format": "official-vjepa2-classifier", "task": "phase", "class_names": names, "clip": dict(clip),
            "features_mode": "tokens", "norm": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "probe": probe.spec.to_json(), "source": str(source), "head": head, "backbone": None}


def official_heads(path: str | Path, heads: int, n_grid: int, token_dim: int, n_classes: int) -> MultiProbe:
    """All heads of an official checkpoint for ``unisurg bench`` (``probe.official=PATH``): they take the places
    of the ``train.lrs x train.wds`` grid, so the grid must have as many entries (e.g. SurgMotion's 20 heads =
    5 lrs x 4 wds; the order of the file is the order of the grid)."""
    probe = load_official_probes(path, heads=heads)
    if probe.n_probes != n_grid:
        raise OfficialProbeError(f"{path}: {probe.n_probes} heads but train.lrs x train.wds has {n_grid} entries; set "
                                 "train.lrs / train.wds to the grid the heads were trained with (same order)")
    if probe.spec.embed_dim != token_dim:
        raise OfficialProbeError(f"{path}: the heads read tokens of width {probe.spec.embed_dim} but the backbone gives "
                                 f"{token_dim}; use the backbone the heads were trained on")
    if probe.spec.out_dim != n_classes:
        raise OfficialProbeError(f"{path}: the heads have {probe.spec.out_dim} classes but the dataset {n_classes}")
    return probe
