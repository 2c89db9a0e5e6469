"""Training ``P`` probes at once on frozen features, and collecting their outputs on a split.

One batch of frozen tokens (from the cache, or from the backbone on augmented pixels with
``features.online``) feeds every probe; the summed per-probe losses are back-propagated once;
:class:`~unisurg.evaluation.probe_optim.BatchedAdamW` steps every probe with its own lr and wd, all on a
cosine schedule to 0 (optional linear warmup). No ``.item()`` in the step: losses are accumulated
on the device and read once per epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from unisurg.datasets.samples import SplitData
from unisurg.evaluation.mixing import BatchMixer, smooth_one_hot
from unisurg.evaluation.probe_optim import BatchedAdamW, cosine_factor


class _WithTargets(Dataset):
    def __init__(self, inputs: Dataset, task, split: SplitData):
        self.inputs, self.task, self.split = inputs, task, split

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, i):
        return self.inputs[i], self.task.target(self.split, i), i


@dataclass
class TrainHistory:
    loss: list[list[float]] = field(default_factory=list)  # [epoch][probe] mean training loss
    steps: int = 0
    seconds: float = 0.0


def _autocast(device: torch.device, tc):
    """The probes' autocast: ``train.amp_dtype`` on CUDA; bfloat16 on CPU with ``train.amp_cpu``; else off."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=getattr(torch, tc.amp_dtype), enabled=tc.amp)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.amp and tc.amp_cpu and device.type == "cpu")


def grad_scaler(device: torch.device, tc):
    """A ``GradScaler`` for float16 autocast on CUDA (SurgMotion: fp16 + GradScaler); None otherwise. One scaler
    for all probes (SurgMotion keeps one per head: an overflow in one head skips only that head's step there)."""
    if tc.amp and tc.amp_dtype == "float16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def train_probes(probe: torch.nn.Module, inputs: Dataset, task, split: SplitData, cfg, device: torch.device, *,
                 encoder: Callable | None = None, progress: bool = False,
                 log: Callable[[str], None] = print, on_epoch: Callable[[int], None] | None = None) -> TrainHistory:
    """Train every probe of ``probe`` (a stacked module) on ``split``.

    ``inputs[i]`` is sample ``i``'s frozen features or, with ``encoder``, its uint8 pixels (the
    encoder then runs the frozen backbone on each batch).
    """
    tc = cfg.train
    grid = tc.grid()
    if len(grid) != probe.n_probes:
        raise ValueError(f"{probe.n_probes} probes but {len(grid)} (lr, wd) pairs in train.lrs x train.wds")
    opt = BatchedAdamW(probe, [g[0] for g in grid], [g[1] for g in grid], betas=tuple(tc.betas), eps=tc.eps,
                       decay_all=tc.decay_all)
    scaler = grad_scaler(device, tc)
    soft = tc.label_smoothing > 0 or tc.mixup_alpha > 0 or tc.cutmix_alpha > 0
    if soft and task.name not in ("phase", "clip"):
        raise ValueError(f"train.label_smoothing / mixup / cutmix apply to class tasks (phase, clip), not {task.name}")
    mixer = BatchMixer(tc.mixup_alpha, tc.cutmix_alpha, switch_prob=tc.mix_switch_prob, seed=tc.seed) \
        if (tc.mixup_alpha > 0 or tc.cutmix_alpha > 0) else None
    offset = 1 if tc.schedule_step == "before" else 0
    n = len(inputs)
    steps_per_epoch = math.ceil(n / tc.batch_size)
    total = steps_per_epoch * tc.epochs
    warmup = int(round(tc.warmup_fraction * total))
    data = _WithTargets(inputs, task, split)
    hist = TrainHistory()
    t0 = time.perf_counter()
    step = 0
    probe.train()

    for epoch in range(tc.epochs):
        if hasattr(inputs, "set_epoch"):
            inputs.set_epoch(epoch)
        gen = torch.Generator().manual_seed(tc.seed * 1000 + epoch)
        loader = DataLoader(data, batch_size=tc.batch_size, shuffle=True, generator=gen, drop_last=False,
                            num_workers=cfg.features.workers, pin_memory=device.type == "cuda")
        running = torch.zeros(probe.n_probes, device=device)
        for x, y, _ in tqdm(loader, desc=f"probes epoch {epoch + 1}/{tc.epochs}", disable=not progress):
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if soft:
                y = smooth_one_hot(y, task.out_dim, tc.label_smoothing)
            if mixer is not None:
                x, y = mixer(x, y, encoder.mean, encoder.std)
            if encoder is not None:
                x = encoder(x)
            opt.set_factor(cosine_factor(step + offset, total, warmup))
            with _autocast(device, tc):
                out = probe(x)
            per_probe = task.loss(out, y)
            opt.zero_grad()
            if scaler is None:
                per_probe.sum().backward()
                opt.step()
            else:
                scaler.scale(per_probe.sum()).backward()
                scaler.step(opt)
                scaler.update()
            running += per_probe.detach()
            step += 1
        hist.loss.append((running / steps_per_epoch).cpu().tolist())
        if on_epoch is not None:
            on_epoch(epoch)
        best = min(hist.loss[-1])
        log(f"  epoch {epoch + 1}/{tc.epochs}: mean training loss over probes "
            f"{float(np.mean(hist.loss[-1])):.4f} (best probe {best:.4f})")
    hist.steps, hist.seconds = step, time.perf_counter() - t0
    probe.eval()
    return hist


@torch.no_grad()
def collect_outputs(probe: torch.nn.Module, inputs: Dataset, task, split: SplitData, cfg, device: torch.device, *,
                    progress: bool = False) -> np.ndarray:
    """``task.collect`` of every probe on every sample of ``split``: ``[P, n, ...]`` numpy, in split order."""
    probe.eval()
    loader = DataLoader(_Indexed(inputs), batch_size=cfg.train.eval_batch_size, shuffle=False,
                        num_workers=cfg.features.workers)
    parts = []

    for x, idx in tqdm(loader, desc=f"evaluate {split.name}", disable=not progress):
        with _autocast(device, cfg.train):
            out = probe(x.to(device, non_blocking=True))
        parts.append(task.collect(out.float(), split, idx.numpy()))
    return np.concatenate(parts, axis=1)


class _Indexed(Dataset):
    def __init__(self, inputs: Dataset):
        self.inputs = inputs

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, i):
        return self.inputs[i], i
