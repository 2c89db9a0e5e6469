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


def clip_window(second: int, frames: int, fps: float = 1.0, anchor: str = "online") -> np.ndarray:
    """Unclipped stored-frame indices ``[T]`` of the clip of ``second`` (may be < 0 at the start)."""
    end = int(math.floor(second * fps + 1e-9))
    if anchor == "online":
        return np.arange(end - frames + 1, end + 1)
    if anchor == "offline":
        return np.arange(end - frames // 2, end - frames // 2 + frames)
    raise ValueError(f"clip.anchor={anchor!r}: use 'online' or 'offline'")


def surgmotion_positions(frames: int) -> np.ndarray:
    """Positions within a ``T``-frame window that SurgMotion's loader reads (``src/datasets/video_surgical.py``,
    a T-line clip file with frame_step 1): ``linspace(0, T-1, T-1).astype(int64)`` then the last index once
    more to make ``T`` (for T = 64: 0..61, 63, 63; frame 62 is dropped, frame 63 repeated)."""
    if frames < 2:
        return np.zeros(frames, np.int64)
    pos = np.linspace(0, frames - 1, frames - 1).astype(np.int64)
    return np.concatenate([pos, [frames - 1]])


def per_second_indices(second: int, n_frames: int, frames: int, fps: float = 1.0, anchor: str = "online",
                       start: str = "first", positions: str = "consecutive") -> np.ndarray:
    """Stored-frame indices ``[T]`` of the clip of labelled second ``second`` (see module docstring).

    ``start``: how a clip reaching before the first frame is filled: ``"first"`` (ours: the first frame
    repeated before the start), ``"last"`` (frames ``0..end`` then the last of them repeated, the reading of
    SurgMotion's released clip lists that pad at the end), ``"skip"`` (such seconds get no clip, filtered by
    the caller; here as ``"first"``). ``positions``: ``"consecutive"`` or ``"surgmotion"``
    (:func:`surgmotion_positions` of the window)."""
    if n_frames < 1:
        raise ValueError("per_second_indices: the video has no stored frame")
    idx = clip_window(second, frames, fps, anchor)
    if start == "last" and idx[0] < 0:
        real = idx[idx >= 0]
        idx = np.concatenate([real, np.full(frames - real.size, real[-1] if real.size else 0)])
    elif start not in ("first", "last", "skip"):
        raise ValueError(f"clip.start={start!r}: use 'first', 'last' or 'skip'")
    if positions == "surgmotion":
        idx = idx[surgmotion_positions(frames)]
    elif positions != "consecutive":
        raise ValueError(f"clip.positions={positions!r}: use 'consecutive' or 'surgmotion'")
    return np.clip(idx, 0, n_frames - 1)


def squash(frames: np.ndarray, size: int) -> np.ndarray:
    """SurgMotion's field of view: every frame ``uint8 [..., H, W, 3]`` resized to ``size x size`` whatever its
    aspect ratio (their loader squashes to 512x512, then resizes to 292 and centre-crops 256: a 16:9 frame keeps
    87.7% of its width, squeezed; we squash the stored frame straight to the resize size, same field of view)."""
    lead = frames.shape[:-3]
    H, W = frames.shape[-3], frames.shape[-2]
    if (H, W) == (size, size):
        return frames
    t = torch.from_numpy(np.ascontiguousarray(frames.reshape(-1, H, W, 3))).permute(0, 3, 1, 2).float()
    out = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy().reshape(*lead, size, size, 3)


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


def strided_indices(lo: int, hi: int, frames: int, rate: int, views: int = 1) -> list[np.ndarray]:
    """VideoMAE's test sampling (SurgRec): ``T`` frames every ``rate`` stored frames from a window of ``T * rate``;
    ``views`` windows evenly spaced over ``lo .. hi-1`` (one: the centred window), indices past the end repeat the
    last frame."""
    n = hi - lo
    if n < 1:
        raise ValueError(f"strided_indices: empty frame range {lo}..{hi}")
    span = frames * rate
    free = max(n - span, 0)
    starts = [free // 2] if views == 1 else [int(free / (views - 1) * i) for i in range(views)]
    return [lo + np.minimum(s + np.arange(0, span, rate), n - 1) for s in starts]


def crop_at(frames: np.ndarray | torch.Tensor, res: int, pos: float = 0.5):
    """``res x res`` crop of ``[..., H, W, 3]`` frames at relative position ``pos`` along both axes (0.5 = centre)."""
    H, W = frames.shape[-3], frames.shape[-2]
    if res > H or res > W:
        raise StoreError(f"crop {res}x{res} larger than the stored frames ({H}x{W}); the frame store's short side "
                         "must be >= clip.res (clip.short_side)")
    y, x = int(pos * (H - res)), int(pos * (W - res))
    return frames[..., y:y + res, x:x + res, :]


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
