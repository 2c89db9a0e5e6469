"""Strict state-dict loading whose errors name every offending key (never a silent partial load)."""

from __future__ import annotations

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model it is loaded into."""


def _show(items: list[str], limit: int = 20) -> str:
    head = ", ".join(items[:limit])
    return head + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def check_state_dict(module: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and wrongly shaped keys, if any."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{k} (checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)})"
        for k in sorted(set(expected) & set(state_dict))
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = [f"{source}: the weights do not fit {type(module).__name__}"]
    if missing:
        parts.append(f"missing key(s): {_show(missing)}")
    if unexpected:
        parts.append(f"unexpected key(s): {_show(unexpected)}")
    if mismatched:
        parts.append(f"shape mismatch: {_show(mismatched)}")
    parts.append(
        "the checkpoint was made for a different architecture or is damaged; check the preset / "
        "num_heads / pos_embed arguments or re-export the checkpoint"
    )
    raise CheckpointError("\n  ".join(parts))


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Keys of floating-point tensors holding NaN or +-inf, each with its count."""
    bad = []
    for k, v in tensors.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel() and v.device.type != "meta":
            n = int((~torch.isfinite(v)).sum())
            if n:
                bad.append(f"{k} ({n} of {v.numel()})")
    return bad


def check_finite(tensors: dict[str, torch.Tensor], *, source: str) -> None:
    """Refuse weights holding NaN / inf (a diverged run's checkpoint), naming the tensors."""
    bad = nonfinite_tensors(tensors)
    if bad:
        shown = ", ".join(bad[:8]) + (f", ... ({len(bad)} tensors in all)" if len(bad) > 8 else "")
        raise CheckpointError(f"{source}: non-finite weights (NaN or inf) in {shown}; the checkpoint comes from a "
                              "diverged run or is damaged; use an earlier checkpoint")


def load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str, assign: bool = False) -> nn.Module:
    """``module.load_state_dict(state_dict, strict=True)`` after :func:`check_state_dict` and
    :func:`check_finite` (weights with NaN / inf are never loaded)."""
    check_state_dict(module, state_dict, source=source)
    check_finite(state_dict, source=source)
    module.load_state_dict(state_dict, strict=True, assign=assign)
    return module


class RequiredKeys(dict):
    """A state dict whose missing entries raise :class:`CheckpointError` naming the key and the file (for code
    that reads architecture hyper-parameters off tensor shapes)."""

    def __init__(self, state_dict: dict, *, source: str):
        super().__init__(state_dict)
        self.source = source

    def __missing__(self, key):
        raise CheckpointError(f"{self.source}: missing key {key!r}, which the architecture needs; the checkpoint is "
                              "incomplete or of another model")
