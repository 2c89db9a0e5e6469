"""The pretraining input pipeline: frame stores -> uint8 clips -> sampler -> masked batches.

Clips leave the workers as uint8 and are normalised on the device (4x less traffic). An
epoch is ``iterations_per_epoch`` steps of ``global_batch_size`` clips; the sampler's epoch is
the same epoch, so (epoch, batches done) locate every sample and mask for an exact resume.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from unisurg.curate.corpus_files import training_videos
from unisurg.curate.selection import load_selection, restrict_clip_dataset
from unisurg.data.clips import ClipDataset, ClipSpec, make_loader
from unisurg.data.sampler import BalancedSampler, UniformSampler
from unisurg.train.distributed import DistInfo
from unisurg.train.mask_collator import SampleMaskCollator, build_mask_generators
from unisurg.train.pretrain_config import PretrainConfig
from unisurg.typed_config import ConfigError


class MultiStoreClips(Dataset):
    """The clips of several frame stores as one dataset (sources kept for balanced sampling)."""

    def __init__(self, parts: list[ClipDataset]):
        if not parts:
            raise ValueError("no clip dataset given")
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts]).tolist()
        self.datasets = [d for p in parts for d in p.datasets]
        self.specialties = [s for p in parts for s in p.specialties]

    def __len__(self) -> int:
        return self.offsets[-1]

    def set_epoch(self, epoch: int) -> None:
        for p in self.parts:
            p.set_epoch(epoch)

    def __getitem__(self, index: int) -> torch.Tensor:
        k = bisect.bisect_right(self.offsets, index) - 1
        return self.parts[k][index - self.offsets[k]]


@dataclass
class TrainData:
    dataset: MultiStoreClips
    sampler: BalancedSampler | UniformSampler
    collator: SampleMaskCollator
    loader: DataLoader
    video_ids: dict[str, list[str]]  # per store, the videos trained on (for the leakage guard)
    per_rank_batch: int
    iterations_per_epoch: int
    grid: tuple[int, int, int]

    def start_epoch(self, epoch: int, batches_done: int = 0) -> None:
        """Position sampler, clips and masks at batch ``batches_done`` of ``epoch`` (before ``iter(loader)``)."""
        state = self.sampler.state_dict()
        self.sampler.load_state_dict({**state, "epoch": epoch, "start": batches_done * self.per_rank_batch})
        self.dataset.set_epoch(epoch)
        self.collator.set_epoch(epoch, start_batch=batches_done)


def clip_spec(cfg: PretrainConfig) -> ClipSpec:
    d = cfg.data
    return ClipSpec(frames=d.frames, stride=d.stride, crop=d.crop, resize_short=d.resize_short, random_crop=True,
                    flip=d.flip, temporal_jitter=d.temporal_jitter, short_video=d.short_video, output="uint8")


def _selections(cfg: PretrainConfig) -> list[str | None]:
    sel, stores = cfg.data.selection, cfg.data.stores
    if sel is None or isinstance(sel, str):
        sel = [sel] * len(stores)
    if len(sel) != len(stores):
        raise ConfigError(f"data.selection names {len(sel)} selections for {len(stores)} stores; give one per store "
                          "(null for none) or a single value for all")
    out = []
    for store, s in zip(stores, sel):
        if s == "auto":
            auto = Path(store) / "curation" / "selection.json"
            s = str(auto) if auto.exists() else None
        out.append(s)
    return out


def apply_curation(parts: list[ClipDataset], cfg: PretrainConfig) -> np.ndarray | None:
    """Restrict each store's clips to its curated selection; the combined per-clip weights
    (each store the same total mass) when ``data.sampler=curated``."""

    weights = []
    for part, path in zip(parts, _selections(cfg)):
        if path is None:
            weights.append(None)
            continue
        applied = load_selection(path).apply(part, honour_exclusions=cfg.data.honour_exclusions)
        restrict_clip_dataset(part, applied)
        weights.append(applied.weights)
    if cfg.data.sampler != "curated":
        return None
    if any(w is None for w in weights):
        missing = [s for s, w in zip(cfg.data.stores, weights) if w is None]
        raise ConfigError(f"data.sampler=curated needs a weights selection for every store (`unisurg curate cluster "
                          f"STORE --weights` then data.selection=auto); none for {missing}")
    return np.concatenate([w / w.sum() / len(weights) for w in weights])


def build_data(cfg: PretrainConfig, info: DistInfo) -> TrainData:
    """Datasets, sampler, mask collator and loader for this rank; errors name the config key to change."""
    d, s = cfg.data, cfg.schedule
    if not d.stores:
        raise ConfigError("data.stores: name at least one frame store made by `unisurg ingest` "
                          "(e.g. data.stores=[/path/to/store])")
    if s.global_batch_size % info.world:
        raise ConfigError(f"schedule.global_batch_size={s.global_batch_size} is not divisible by the "
                          f"{info.world} processes")
    per_rank = s.global_batch_size // info.world
    seed = cfg.run.seed if d.seed is None else d.seed
    spec = clip_spec(cfg)

    video_ids = {store: training_videos(store, include_datasets=d.include_datasets,
                                        honour_exclusions=d.honour_exclusions) for store in d.stores}
    parts = [ClipDataset(store, spec, seed=seed, video_ids=video_ids[store]) for store in d.stores]
    curated = apply_curation(parts, cfg)
    dataset = MultiStoreClips(parts)

    n = len(dataset)
    one_pass = (-(-n // info.world)) // per_rank  # batches per rank in one pass over the clips
    ipe = s.iterations_per_epoch
    if d.sampler in ("balanced", "curated"):
        ipe = ipe or one_pass
        sampler = BalancedSampler(dataset.datasets, dataset.specialties, num_samples=ipe * s.global_batch_size,
                                  seed=seed, num_replicas=info.world, rank=info.rank, weights=curated)
    else:
        if ipe is not None and ipe > one_pass:
            raise ConfigError(f"schedule.iterations_per_epoch={ipe} needs {ipe * s.global_batch_size} clips per epoch "
                              f"but data.sampler=uniform draws each of the {n} clips once (at most {one_pass}); "
                              "lower it, leave it unset, or use data.sampler=balanced (draws with replacement)")
        ipe = ipe or one_pass
        sampler = UniformSampler(n, seed=seed, num_replicas=info.world, rank=info.rank)
    if ipe < 1:
        raise ConfigError(f"the stores hold {n} clips of {d.frames} frames: fewer than one global batch of "
                          f"{s.global_batch_size}; lower schedule.global_batch_size or data.frames, or add videos")

    grid = (d.frames // cfg.model.encoder.tubelet_size, d.crop // cfg.model.encoder.patch_size, d.crop // cfg.model.encoder.patch_size)
    try:
        gens = build_mask_generators(cfg.mask, grid)
    except ValueError as e:
        raise ConfigError(f"mask: {e}") from None
    collator = SampleMaskCollator(gens, grid, seed=cfg.run.seed, tubelet_size=cfg.model.encoder.tubelet_size,
                                  patch_size=cfg.model.encoder.patch_size, per_rank_batch=per_rank, rank=info.rank,
                                  world=info.world)
    loader = make_loader(dataset, batch_size=per_rank, sampler=sampler, workers=d.workers, collate_fn=collator,
                         drop_last=True, pin_memory=d.pin_memory and info.device.type == "cuda",
                         prefetch_factor=d.prefetch_factor, reuse_batch_memory=True)  # one step per batch
    return TrainData(dataset, sampler, collator, loader, video_ids, per_rank, ipe, grid)
