"""``unisurg demo``: the whole pipeline on synthetic data, CPU only, no download.

Stages (each prints what it did; each is skipped when its output is already there):
1. ``unisurg synth``: synthetic surgical videos with Cholec80-format labels;
2. ``unisurg ingest``: decode them at 1 fps into a frame store;
3. load a few balanced training batches of clips, as pretraining will.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoScale:
    videos: int
    seconds: float
    height: int
    width: int
    short_side: int
    frames: int
    crop: int
    batch: int
    batches: int


FULL = DemoScale(videos=12, seconds=90, height=120, width=160, short_side=80, frames=16, crop=64, batch=8, batches=4)
QUICK = DemoScale(videos=4, seconds=24, height=64, width=96, short_side=64, frames=8, crop=48, batch=4, batches=2)


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def run_demo(out: Path, *, quick: bool = False, seed: int = 0) -> int:
    import torch

    from unisurg.data.clips import ClipDataset, ClipSpec, make_loader
    from unisurg.data.ingest import IngestParams, collect_inputs, format_summary, ingest
    from unisurg.data.sampler import BalancedSampler
    from unisurg.data.synth import generate_dataset

    scale = QUICK if quick else FULL
    out = Path(out)
    t0 = time.perf_counter()
    synth_dir, store_dir = out / "synth", out / "store"

    _say(f"1/3 synth: {scale.videos} videos x {scale.seconds:.0f} s at {scale.width}x{scale.height} -> {synth_dir}")
    summary = generate_dataset(synth_dir, n_videos=scale.videos, seconds=scale.seconds, height=scale.height,
                               width=scale.width, seed=seed, workers=2, progress=True)
    _say(f"    {len(summary['videos'])} videos, phases: {', '.join(summary['phases'])}")

    _say(f"2/3 ingest at 1 fps, short side {scale.short_side} -> {store_dir}")
    items = collect_inputs([str(synth_dir / "videos")], dataset="synthetic", specialty="Laparoscopic cholecystectomy")
    s = ingest(items, store_dir, IngestParams(fps=1.0, short_side=scale.short_side), workers=2, progress=True)
    _say("    " + format_summary(s).replace("\n", "\n    "))
    if not s.ok:
        return 1

    _say(f"3/3 load {scale.batches} balanced batches of {scale.batch} clips, T={scale.frames}, crop {scale.crop}")
    ds = ClipDataset(store_dir, ClipSpec(frames=scale.frames, crop=scale.crop, flip=True), seed=seed)
    sampler = BalancedSampler(ds.datasets, ds.specialties, num_samples=scale.batch * scale.batches, seed=seed)
    for i, batch in enumerate(make_loader(ds, batch_size=scale.batch, sampler=sampler, workers=1)):
        _say(f"    batch {i}: {tuple(batch.shape)} {batch.dtype}, mean {batch.mean():+.3f}, std {batch.std():.3f}")
    _say(f"done in {time.perf_counter() - t0:.1f}s; the store is ready for `unisurg pretrain`")
    del torch
    return 0
