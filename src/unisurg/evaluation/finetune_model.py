"""The fine-tuned model: any torch-module backbone of the registry + a task head, trained whole.

``FinetuneModel(x)``: normalised clips ``[B, C, T, H, W]`` -> backbone tokens ``[B, N, D]`` -> head ``[B, out]``.

Heads: ``linear`` = LayerNorm of the mean-pooled tokens -> dropout -> Linear (VideoMAE's fine-tuning head,
what SurgRec's benchmark trains); ``attentive`` = one attentive probe of the benchmark
(:class:`unisurg.evaluation.probe.MultiProbe` with one probe) on all tokens.

Encoder-side helpers work on any backbone module by finding its list of transformer blocks (the
largest ``nn.ModuleList`` of identical modules): stochastic depth where blocks have a ``drop_path``
module, activation checkpointing, the layer index of each parameter for layer-wise LR decay.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    checkpoint_wrapper,
)

from unisurg.evaluation.probe import MultiProbe, ProbeSpec
from unisurg.models.blocks import DropPath

# parameter-name pieces of the layers below the first block (patch / position embeddings, class tokens, stems)
_EMBED = re.compile(r"(^|\.)(patch_embed|pos_embed|cls_token|mask_token|embeddings|stem|conv1|bn1|time_embed|"
                    r"temporal_embed|register_tokens|rope)")


class LinearHead(nn.Module):
    """VideoMAE's fine-tuning head: ``Linear(dropout(LayerNorm(mean_n tokens)))``; the linear layer is
    initialised trunc-normal(0.02) x ``init_scale`` with zero bias (VideoMAE ``init_scale`` = 0.001)."""

    def __init__(self, dim: int, out_dim: int, init_scale: float = 0.001, dropout: float = 0.0, eps: float = 1e-6):
        super().__init__()
        self.fc_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, out_dim)
        nn.init.trunc_normal_(self.fc.weight, std=0.02)
        with torch.no_grad():
            self.fc.weight.mul_(init_scale)
        nn.init.zeros_(self.fc.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.fc_norm(tokens.mean(dim=1))))


class AttentiveHead(nn.Module):
    """One attentive probe of the benchmark (V-JEPA 2's classifier) as a head: ``[B, N, D] -> [B, out]``."""

    def __init__(self, spec: ProbeSpec, seed: int = 0):
        super().__init__()
        self.spec = spec
        self.probe = MultiProbe(spec, 1, seed)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.probe(tokens)[0]


def build_head(kind: str, dim: int, out_dim: int, *, depth: int = 4, heads: int = 16, init_scale: float = 0.001,
               dropout: float = 0.0, seed: int = 0) -> nn.Module:
    if kind == "linear":
        return LinearHead(dim, out_dim, init_scale, dropout)
    if kind == "attentive":
        if dim % heads:
            raise ValueError(f"model.head_heads={heads} does not divide the backbone width {dim}")
        return AttentiveHead(ProbeSpec("attentive", dim, out_dim, dim, depth=depth, heads=heads), seed)
    raise ValueError(f"model.head={kind!r}: use 'linear' or 'attentive'")


def head_json(kind: str, head: nn.Module) -> dict:
    """What rebuilds the head (stored in ``model.json``)."""
    if kind == "linear":
        return {"kind": "linear", "dim": head.fc.in_features, "out_dim": head.fc.out_features,
                "eps": head.fc_norm.eps}
    return {"kind": "attentive", "probe": head.spec.to_json()}


def head_from_json(d: dict) -> nn.Module:
    if d.get("kind") == "linear":
        return LinearHead(int(d["dim"]), int(d["out_dim"]), eps=float(d.get("eps", 1e-6)))
    if d.get("kind") == "attentive":
        return AttentiveHead(ProbeSpec.from_json(d["probe"]))
    raise ValueError(f"model.json head: unknown kind {d.get('kind')!r} (linear | attentive)")


class FinetuneModel(nn.Module):
    """Backbone module + head (see the module docstring); the only module DDP / FSDP2 wrap."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone(x)
        if isinstance(tokens, (list, tuple)):
            tokens = tokens[-1]
        if tokens.dim() != 3:
            raise ValueError(f"backbone returned shape {tuple(tokens.shape)}; a head needs tokens [B, N, D]")
        return self.head(tokens)


# -- encoder-side helpers ---------------------------------------------------------------------


def find_blocks(module: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """``(name, blocks)``: the largest ``nn.ModuleList`` whose children are all of one class (the transformer
    blocks of a ViT, the stages of a ResNet fall back to None: their lists mix classes)."""
    best = None
    for name, m in module.named_modules():
        if "text" in name.split(".")[-5:] or "backbone_text" in name:
            continue  # a vision-language model's text tower (SurgVLP) is not on the image forward
        if isinstance(m, nn.ModuleList) and len(m) > 0 and len({type(c) for c in m}) == 1:
            if best is None or len(m) > len(best[1]):
                best = (name, m)
    return best


def set_drop_path(blocks: nn.ModuleList | None, rate: float) -> int:
    """Stochastic depth on the blocks that have a ``drop_path`` module (our ViT blocks): block ``i`` of ``L``
    drops its residual branches with probability ``rate * i / (L - 1)`` (the linear ramp of
    :func:`unisurg.models.blocks.make_blocks`). Returns how many blocks took it (0: the model has none)."""
    if blocks is None:
        return 0
    n, done = len(blocks), 0
    for i, blk in enumerate(blocks):
        if hasattr(blk, "drop_path") and isinstance(blk.drop_path, (nn.Identity, DropPath)):
            r = rate * i / max(n - 1, 1)
            blk.drop_path = DropPath(r) if r > 0 else nn.Identity()
            done += 1
    return done


def enable_activation_checkpointing(backbone: nn.Module, blocks: nn.ModuleList | None) -> bool:
    """Recompute block activations in the backward: our ViT through its own switch, any other model by
    wrapping its blocks (``checkpoint_wrapper``; state-dict keys stay the same). False if no block list."""
    if hasattr(backbone, "act_checkpoint"):
        backbone.act_checkpoint = True
        return True
    if blocks is None:
        return False

    for i in range(len(blocks)):
        blocks[i] = checkpoint_wrapper(blocks[i])
    return True


def layer_index_fn(block_path: str | None, n_blocks: int):
    """``name -> layer`` for layer-wise LR decay over ``FinetuneModel`` parameter names: 0 = embeddings,
    ``i + 1`` = block ``i``, ``n_blocks + 1`` = everything after the blocks (final norm, head)."""
    pattern = re.compile(rf"^backbone\.{re.escape(block_path)}\.(\d+)\.") if block_path else None
    top = n_blocks + 1

    def layer_of(name: str) -> int:
        if name.startswith("head."):
            return top
        if pattern is not None:
            m = pattern.match(name.replace("._checkpoint_wrapped_module", ""))
            if m:
                return int(m.group(1)) + 1
        inner = name.removeprefix("backbone.")
        if _EMBED.search(inner):
            return 0
        return top

    return layer_of
