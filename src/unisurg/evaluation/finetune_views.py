"""Multi-view testing (VideoMAE / SurgRec: 5 temporal segments x 3 spatial crops, softmax averaged).

A test sample is seen as ``temporal x spatial`` views:

* temporal: clip-level samples spread ``T`` frames over their clip (:func:`unisurg.data.pixels.spread_indices`);
  view ``v`` of ``V`` shifts that frame grid by ``(v - (V - 1) / 2) / V`` of its stride, so the views
  together cover the clip ``V`` times more densely. Per-second samples (phase, triplets) have one
  temporal view: their clip is anchored on the labelled second (online: no future frame may enter).
* spatial: ``res x res`` crops of the stored frames (short side ``clip.resize_short``) centred on the
  short axis and at ``S`` evenly spaced positions along the long axis (first, ..., last; ``S = 1`` is
  the benchmark's centre crop).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from unisurg.backbones.features import ClipPixels
from unisurg.data.pixels import read_frames
from unisurg.datasets.samples import SplitData


def shifted_indices(indices: np.ndarray, view: int, n_views: int, n_frames: int) -> np.ndarray:
    """Temporal view ``view`` of ``n_views`` of a spread frame grid (module docstring), clipped to the video."""
    if n_views == 1 or len(indices) < 1:
        return indices
    stride = (float(indices[-1] - indices[0]) / (len(indices) - 1)) if len(indices) > 1 else float(n_frames)
    shift = int(round((view - (n_views - 1) / 2.0) * stride / n_views))
    return np.clip(indices + shift, 0, n_frames - 1)


def crop_offsets(size: int, res: int, n: int) -> list[int]:
    """``n`` crop starts along an axis of ``size`` pixels: evenly spaced from 0 to ``size - res`` (centre if n = 1)."""
    if size < res:
        raise ValueError(f"frames of {size} px cannot give crops of {res} px; set clip.short_side >= clip.res")
    if n == 1:
        return [(size - res) // 2]
    return [int(round(v)) for v in np.linspace(0, size - res, n)]


def spatial_crops(frames: np.ndarray, res: int, n: int) -> list[np.ndarray]:
    """``n`` crops ``[T, res, res, 3]`` of frames ``[T, H, W, 3]`` (module docstring)."""
    H, W = frames.shape[1:3]
    if H <= W:
        y = (H - res) // 2
        return [np.ascontiguousarray(frames[:, y:y + res, x:x + res]) for x in crop_offsets(W, res, n)]
    x = (W - res) // 2
    return [np.ascontiguousarray(frames[:, y:y + res, x:x + res]) for y in crop_offsets(H, res, n)]


class TestViews(Dataset):
    """``ds[i]`` -> uint8 ``[V, T, res, res, 3]``, every view of sample ``i`` (temporal-major)."""

    def __init__(self, pixels: ClipPixels, split: SplitData, temporal: int, spatial: int, per_second: bool):
        self.pixels, self.split = pixels, split
        self.temporal = 1 if per_second else temporal
        self.spatial = spatial

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        ref = self.split.refs[i]
        p = self.pixels
        if ref.indices is None:  # a still image: one view per spatial slot, all the same picture
            one = p.one(ref)
            return torch.from_numpy(np.stack([one] * (self.temporal * self.spatial)))
        vid = p.ids[ref.media]
        n = p.store.record(vid).n_frames
        views = []
        for v in range(self.temporal):
            frames = read_frames(p.store, vid, shifted_indices(ref.indices, v, self.temporal, n))
            views.extend(spatial_crops(frames, p.res, self.spatial))
        return torch.from_numpy(np.stack(views))
