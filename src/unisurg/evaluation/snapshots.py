"""Every epoch's probes as candidates (``train.epoch_snapshots``): what choosing a checkpoint means.

SurgRec (``run_class_finetuning_videomae.py``) evaluates the head after every epoch on its validation
set, which is ``test.csv`` for 14 of its 16 datasets, and keeps the best checkpoint (``max_accuracy``):
the epoch is chosen, on test. With ``train.epoch_snapshots=true`` the probes of every epoch are kept
(a copy after each epoch) and stacked into one module of ``epochs x P`` candidates, epoch-major
(candidate ``e * P + p`` = probe ``p`` after epoch ``e + 1``); the benchmark then chooses among them
like among the lr x wd probes: on validation (honest) and, labelled, on test (paper-style).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def snapshot(probe: nn.Module) -> nn.Module:
    """A CPU copy of the probes as they are now (after an epoch)."""
    return copy.deepcopy(probe).cpu()


def stack_probes(modules: list[nn.Module]) -> nn.Module:
    """One stacked module holding the probes of ``modules`` in order (same class and spec)."""
    first = modules[0]
    if any(type(m) is not type(first) or m.spec != first.spec for m in modules):
        raise ValueError("stack_probes: every snapshot must be the same kind of probe with the same spec")
    out = type(first)(first.spec, sum(m.n_probes for m in modules), seed=0)
    with torch.no_grad():
        params = [dict(m.named_parameters()) for m in modules]
        for name, dst in out.named_parameters():
            dst.copy_(torch.cat([p[name].detach().cpu() for p in params]))
    out.checkpoint = getattr(first, "checkpoint", False)
    return out.eval()


def candidate_grid(cfg) -> tuple[list[tuple[float, float]], list[int] | None]:
    """(lr, wd) of every candidate and its epoch (None without ``train.epoch_snapshots``), epoch-major."""
    grid = cfg.train.grid()
    if not cfg.train.epoch_snapshots:
        return grid, None
    epochs = [e + 1 for e in range(cfg.train.epochs) for _ in grid]
    return grid * cfg.train.epochs, epochs
