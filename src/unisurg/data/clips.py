"""Clips from the frame store: T consecutive stored frames -> float tensor ``[C, T, H, W]``.

Sample list: each video is cut into windows of T frames every ``stride`` frames (default T,
non-overlapping); with ``temporal_jitter`` a window's start moves randomly inside its stride.
Videos shorter than T follow ``short_video``:

* ``"pad_last"`` (default): all frames, then the last frame repeated up to T;
* ``"stretch"``: frame i of the clip is stored frame floor(i * n / T) (slower motion, same order);
* ``"drop"``: such videos give no sample.

Randomness (crop position, flip, jitter) comes from a generator keyed by (seed, epoch, index),
so a clip is the same whatever the number of DataLoader workers, and a resumed run sees the
same clips as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from unisurg.data.batch_ring import RingCollate, ring_buffer
from unisurg.data.store import FrameStore, StoreError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ClipSpec:
    frames: int = 16
    stride: int | None = None  # default: frames
    crop: int | tuple[int, int] = 224
    resize_short: int | None = None  # resize frames to this short side before cropping (None: as stored)
    random_crop: bool = True  # False: centre crop
    flip: bool = False
    temporal_jitter: bool = True
    normalize: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    short_video: Literal["pad_last", "stretch", "drop"] = "pad_last"
    # "uint8": raw [C, T, H, W] bytes laid out channels-last in memory (no transposing copy in
    # the loader), stacked by stack_clips and normalised on the device by normalize_batch: 4x less
    # worker->trainer traffic and no float work on the loader. What the trainer uses.
    output: Literal["float", "uint8"] = "float"

    @property
    def crop_hw(self) -> tuple[int, int]:
        return (self.crop, self.crop) if isinstance(self.crop, int) else tuple(self.crop)


def clip_frame_indices(n_frames: int, start: int, frames: int, short_video: str) -> np.ndarray:
    """Indices of the stored frames making one clip (see module docstring for short videos)."""
    if n_frames >= frames:
        return np.arange(start, start + frames)
    if short_video == "stretch":
        return (np.arange(frames) * n_frames) // frames
    return np.minimum(np.arange(frames), n_frames - 1)


class ClipDataset(Dataset):
    """Clips of T consecutive stored frames from a :class:`FrameStore`.

    ``samples`` is a list of (video index, start frame); ``datasets``/``specialties`` give each
    sample's source, for :class:`~unisurg.data.sampler.BalancedSampler`.
    """

    def __init__(self, store: FrameStore | str | Path, spec: ClipSpec = ClipSpec(), *, seed: int = 0,
                 include_datasets: list[str] | None = None, video_ids: list[str] | None = None):
        self.store = store if isinstance(store, FrameStore) else FrameStore(store)
        self.spec = spec
        self.seed = seed
        self.epoch = 0
        recs = self.store.records
        if include_datasets is not None:
            recs = [r for r in recs if r.dataset in set(include_datasets)]
        if video_ids is not None:
            wanted = set(video_ids)
            recs = [r for r in recs if r.id in wanted]
        self.videos = recs
        stride = spec.stride or spec.frames
        samples = []
        for vi, r in enumerate(recs):
            if r.n_frames < spec.frames:
                if spec.short_video != "drop":
                    samples.append((vi, 0))
                continue
            samples.extend((vi, s) for s in range(0, r.n_frames - spec.frames + 1, stride))
        if not samples:
            raise StoreError(f"{self.store.root}: no clip of {spec.frames} frames in {len(recs)} videos "
                             f"(short_video='{spec.short_video}')")
        self.samples = np.asarray(samples, dtype=np.int64)
        self.datasets = [recs[v].dataset for v, _ in samples]
        self.specialties = [recs[v].specialty for v, _ in samples]
        mean = torch.tensor(spec.mean, dtype=torch.float32) * 255.0
        std = torch.tensor(spec.std, dtype=torch.float32) * 255.0
        self._scale = (1.0 / std).view(3, 1, 1, 1)
        self._shift = (-mean / std).view(3, 1, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def frame_indices(self, index: int, rng: np.random.Generator | None = None) -> tuple[str, np.ndarray]:
        vi, start = (int(x) for x in self.samples[index])
        rec = self.videos[vi]
        T = self.spec.frames
        stride = self.spec.stride or T
        if rng is not None and self.spec.temporal_jitter and rec.n_frames >= T:
            start = min(start + int(rng.integers(0, stride)), rec.n_frames - T)
        return rec.id, clip_frame_indices(rec.n_frames, start, T, self.spec.short_video)

    def read_uint8(self, index: int, rng: np.random.Generator | None = None) -> torch.Tensor:
        """The clip's frames as ``uint8 [T, H, W, 3]`` before crop (stored size)."""
        vid, idx = self.frame_indices(index, rng)
        lo, hi = int(idx.min()), int(idx.max())
        jpegs = self.store.read_jpegs(vid, lo, hi - lo + 1)
        rec = self.store.record(vid)
        decoded = np.empty((len(jpegs), rec.height, rec.width, 3), dtype=np.uint8)
        for i, j in enumerate(jpegs):
            simplejpeg.decode_jpeg(j, colorspace="RGB", buffer=decoded[i])
        if len(idx) != len(decoded) or idx[0] != lo:
            decoded = decoded[idx - lo]
        return torch.from_numpy(decoded)

    def __getitem__(self, index: int) -> torch.Tensor:
        rng = self._rng(index)
        frames = self.read_uint8(index, rng)  # [T, H, W, 3] uint8
        s = self.spec
        if s.resize_short is not None and min(frames.shape[1:3]) != s.resize_short:
            frames = resize_short_side(frames, s.resize_short)
        ch, cw = s.crop_hw
        H, W = frames.shape[1:3]
        if ch > H or cw > W:
            raise StoreError(f"crop {ch}x{cw} larger than the frames ({H}x{W}); lower crop or set resize_short")
        if s.random_crop:
            y, x = int(rng.integers(0, H - ch + 1)), int(rng.integers(0, W - cw + 1))
        else:
            y, x = (H - ch) // 2, (W - cw) // 2
        flip = s.flip and rng.random() < 0.5
        if s.output == "uint8":
            crop = frames[:, y:y + ch, x:x + cw]  # a view: stack_clips copies it once, into the batch
            if flip:
                crop = crop.flip(2)  # [T, h, w, C], row copies only
            return crop.permute(3, 0, 1, 2)  # [C, T, h, w] view, channels-last memory
        # float: one transposing copy of the crop while still uint8 (4x fewer bytes), then convert
        clip = frames[:, y:y + ch, x:x + cw].permute(3, 0, 1, 2).contiguous()
        if flip:
            clip = clip.flip(-1)
        out = clip.float()
        if s.normalize:
            out.mul_(self._scale).add_(self._shift)  # (x - 255 mean) / (255 std)
        else:
            out.mul_(1.0 / 255.0)
        return out


def _batch_buffer(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An empty batch tensor; in a DataLoader worker, in shared memory, so that sending it to the
    trainer process copies nothing more (as ``default_collate`` does)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    reused = ring_buffer(shape, like.dtype) if like.device.type == "cpu" else None
    if reused is not None:  # make_loader's RingCollate: a slot of this worker's ring, already shared and mapped
        return reused
    numel = math.prod(shape)
    storage = like.untyped_storage()._new_shared(numel * like.element_size(), device=like.device)
    return torch.empty(0, dtype=like.dtype, device=like.device).set_(storage).view(shape)


def stack_clips(clips: list[torch.Tensor]) -> torch.Tensor:
    """Stack ``[C, T, H, W]`` clips into ``[B, C, T, H, W]`` without transposing channels-last ones.

    Clips whose channels are innermost in memory (``output="uint8"``: views of the crop in the
    decoded frames) are copied once each into a ``[B, T, H, W, C]`` batch (shared memory in a
    worker), returned as a ``[B, C, T, H, W]`` view of it; the transposition then happens on the
    device, inside ``normalize_batch``, where it is free. Other clips (float) are stacked into the same
    kind of buffer (shared memory in a worker, a ring slot with ``reuse_batch_memory``).
    """
    if all(c.dim() == 4 and c.stride(0) == 1 for c in clips):
        shapes = {tuple(c.shape) for c in clips}
        if len(shapes) != 1:
            raise ValueError(f"stack_clips: clips of different shapes {sorted(shapes)}")
        c0 = clips[0].permute(1, 2, 3, 0)
        out = _batch_buffer((len(clips), *c0.shape), c0)
        torch.stack([c.permute(1, 2, 3, 0) for c in clips], out=out)
        return out.permute(0, 4, 1, 2, 3)
    if clips and all(c.shape == clips[0].shape and c.dtype == clips[0].dtype for c in clips):
        return torch.stack(clips, out=_batch_buffer((len(clips), *clips[0].shape), clips[0]))
    return torch.stack(clips)


def normalize_batch(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 ``[B, C, T, H, W]`` (any strides) -> contiguous normalised float32 on ``x``'s device."""
    m = torch.tensor(mean, device=x.device, dtype=torch.float32).view(1, 3, 1, 1, 1) * 255.0
    s = torch.tensor(std, device=x.device, dtype=torch.float32).view(1, 3, 1, 1, 1) * 255.0
    out = torch.empty(x.shape, device=x.device, dtype=torch.float32)  # contiguous [B, C, T, H, W]
    torch.sub(x, m, out=out)
    return out.div_(s)


def resize_short_side(frames: torch.Tensor, short: int) -> torch.Tensor:
    """Resize uint8 ``[T, H, W, 3]`` so the short side is ``short`` (bilinear, antialiased)."""
    T, H, W, _ = frames.shape
    scale = short / min(H, W)
    size = (max(1, round(H * scale)), max(1, round(W * scale)))
    x = frames.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def make_loader(dataset: Dataset, *, batch_size: int, sampler=None, workers: int = 0, collate_fn=None,
                drop_last: bool = True, pin_memory: bool = False, prefetch_factor: int = 2,
                reuse_batch_memory: bool = False) -> DataLoader:
    """A DataLoader with the settings that matter for throughput (workers, pinning, prefetch).

    With workers, ``reuse_batch_memory`` has them stack uint8 clips into a ring of shared buffers
    (:mod:`unisurg.data.batch_ring`): no shared memory allocated per batch, but a batch's memory is
    overwritten ``prefetch_factor + 3`` batches of its worker later, so only a loop that uses each batch
    and drops it (a training loop) should ask for it.
    """
    collate = collate_fn or stack_clips
    if workers > 0 and reuse_batch_memory:
        collate = RingCollate(collate, slots=prefetch_factor + 3)
    kw = dict(batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
              drop_last=drop_last, pin_memory=pin_memory, shuffle=False if sampler is not None else None)
    if workers > 0:
        kw.update(prefetch_factor=prefetch_factor, persistent_workers=False)
    if kw["shuffle"] is None:
        kw.pop("shuffle")
    return DataLoader(dataset, **kw)
