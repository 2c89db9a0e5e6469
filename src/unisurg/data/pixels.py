"""The clip protocol: which stored frames make a sample, and how they become the backbone's input.

Per-second tasks (phase, multi-label; docs/benchmark.md, the authors' release): one clip per labelled
second ``t``; frames at the store rate ``f`` (1 fps); stored frame ``k`` shows time ``k / f``.

* ``online`` (default): the ``T`` frames ending at ``t``: ``k_end - T + 1 .. k_end`` with
  ``k_end = floor(t * f)``; the label is the last frame's.
* ``offline``: ``T`` frames centred on ``t``: ``k_end - T//2 .. k_end + (T - 1 - T//2)``.
* Padding: indices before the first frame take the **first** frame (the authors' release repeats
  the last frame instead; we pad the start with the first frame so that no future frame leaks
  into an online clip), indices past the end take the last frame; a label second beyond the
  decoded video (annotation slightly longer than the video) takes the last frame.

Short-clip tasks (actions, skill): ``T`` frames spread uniformly over the clip's stored frames,
frame ``i`` = ``lo + floor((i + 0.5) * n / T)`` (repeats when ``n < T``).

Pixels: frames are stored at short side ``S = round(256 * res / 224)``; a sample is centre-cropped
to ``res x res`` (or, with training augmentation, one random-resized crop shared by all frames of
the clip; :mod:`unisurg.data.augment` for the authors' RandAugment and random erasing), then
normalised with the backbone's (or ImageNet's) mean and std on the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from unisurg.data.store import FrameStore, StoreError, decode_jpegs

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def per_second_indices(second: int, n_frames: int, frames: int, fps: float = 1.0, anchor: str = "online") -> np.ndarray:
    """Stored-frame indices ``[T]`` of the clip of labelled second ``second`` (see module docstring)."""
    if n_frames < 1:
        raise ValueError("per_second_indices: the video has no stored frame")
    end = int(math.floor(second * fps + 1e-9))
    if anchor == "online":
        idx = np.arange(end - frames + 1, end + 1)
    elif anchor == "offline":
        idx = np.arange(end - frames // 2, end - frames // 2 + frames)
    else:
        raise ValueError(f"clip.anchor={anchor!r}: use 'online' or 'offline'")
    return np.clip(idx, 0, n_frames - 1)


def spread_indices(lo: int, hi: int, frames: int) -> np.ndarray:
    """``T`` indices spread uniformly over stored frames ``lo .. hi-1`` (repeating when fewer than ``T``)."""
    n = hi - lo
    if n < 1:
        raise ValueError(f"spread_indices: empty frame range {lo}..{hi}")
    return lo + np.floor((np.arange(frames) + 0.5) * n / frames).astype(np.int64)


def read_frames(store: FrameStore, video_id: str, indices: np.ndarray) -> np.ndarray:
    """Decoded frames ``uint8 [len(indices), H, W, 3]``; one contiguous read of ``min..max``."""
    lo, hi = int(indices.min()), int(indices.max())
    block = decode_jpegs(store.read_jpegs(video_id, lo, hi - lo + 1))
    return block[indices - lo]


def center_crop(frames: np.ndarray | torch.Tensor, res: int):
    """Centre ``res x res`` crop of ``[..., H, W, 3]`` frames."""
    H, W = frames.shape[-3], frames.shape[-2]
    if res > H or res > W:
        raise StoreError(f"crop {res}x{res} larger than the stored frames ({H}x{W}); the frame store's short side "
                         "must be >= clip.res (clip.short_side)")
    y, x = (H - res) // 2, (W - res) // 2
    return frames[..., y:y + res, x:x + res, :]


def rrc_box(H: int, W: int, scale: tuple[float, float], ratio: tuple[float, float],
            rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random-resized-crop box ``(y, x, h, w)`` (Szegedy et al. 2015; the usual 10 tries, then
    a centre crop of the largest allowed aspect ratio)."""
    area = H * W
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        ar = math.exp(rng.uniform(*log_r))
        w = int(round(math.sqrt(target * ar)))
        h = int(round(math.sqrt(target / ar)))
        if 0 < w <= W and 0 < h <= H:
            return int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w
    in_ratio = W / H
    if in_ratio < ratio[0]:
        w, h = W, int(round(W / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = H, int(round(H * ratio[1]))
    else:
        h, w = H, W
    return (H - h) // 2, (W - w) // 2, h, w


def random_resized_crop(frames: np.ndarray, res: int, scale: tuple[float, float], ratio: tuple[float, float],
                        rng: np.random.Generator) -> np.ndarray:
    """One random-resized crop shared by all ``T`` frames ``uint8 [T, H, W, 3]`` -> ``[T, res, res, 3]``."""
    T, H, W, _ = frames.shape
    y, x, h, w = rrc_box(H, W, scale, ratio, rng)
    crop = torch.from_numpy(np.ascontiguousarray(frames[:, y:y + h, x:x + w])).permute(0, 3, 1, 2).float()
    out = F.interpolate(crop, size=(res, res), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def resize_image(img: np.ndarray, res: int, mode: str = "bilinear") -> np.ndarray:
    """Resize ``[H, W, C]`` (uint8 or float) to ``res x res`` (dense tasks: whole image, aspect not kept)."""
    t = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1)[None].float()
    kw = {"antialias": True, "align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(t, size=(res, res), mode=mode, **kw)[0].permute(1, 2, 0).numpy()
    return out.round().clip(0, 255).astype(np.uint8) if img.dtype == np.uint8 else out.astype(img.dtype)


def to_model_input(clips: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD, dtype=torch.float32) -> torch.Tensor:
    """uint8 ``[B, T, H, W, 3]`` -> normalised ``[B, 3, T, H, W]`` in ``dtype`` (on ``clips``' device).

    Also takes augmented clips ``float16 [B, T, H, W, 4]`` (:func:`unisurg.data.augment.erase_layer`):
    where channel 3 is set, channels 0-2 already hold random-erasing noise in the normalised space and are
    passed through; elsewhere they are pixel values, normalised as above.
    """
    x = clips.permute(0, 4, 1, 2, 3).float()
    erased = None
    if x.shape[1] == 4:
        x, erased = x[:, :3], x[:, 3:] > 0
    m = torch.tensor(mean, device=x.device, dtype=torch.float32).view(1, 3, 1, 1, 1) * 255.0
    s = torch.tensor(std, device=x.device, dtype=torch.float32).view(1, 3, 1, 1, 1) * 255.0
    out = (x - m) / s
    if erased is not None:
        out = torch.where(erased, x, out)
    return out.to(dtype)
