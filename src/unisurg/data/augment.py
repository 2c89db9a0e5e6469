"""Training augmentation of the probing protocol (docs/benchmark.md): RandAugment and random erasing for clips.

The authors' release follows V-JEPA 2's frozen evaluation ("[14]" in the UniSurg paper); its
``VideoTransform`` with ``auto_augment=True``, ``reprob=0.25``, RRC scale 0.08-1 and no flip does, per
clip (``augment="paper"``):

1. **RandAugment** on the uint8 frames, timm's ``rand-m7-n4-mstd0.5-inc1`` with bicubic resampling and
   fill 128: ``n`` ops drawn uniformly *with* replacement from the list; each applied with probability
   0.5; magnitude ``~ N(m, mstd)`` clipped to [0, 10]; signed ops take a random sign. One draw per clip:
   the same ops, magnitudes and signs for every frame. Image statistics (auto-contrast range, equalize
   histogram, contrast mean) stay each frame's own, as the reference applies the PIL op frame by frame.
2. **Random-resized crop** to ``res`` (one box per clip, :func:`unisurg.data.pixels.random_resized_crop`).
3. **Normalisation** with the backbone's mean/std (on the device, :func:`unisurg.data.pixels.to_model_input`).
4. **Random erasing** (timm's ``RandomErasing(p, mode="pixel", max_count=1)`` in V-JEPA 2's default cube
   mode): with probability ``p`` one rectangle (area 2-33 %, log-uniform aspect 0.3-3.3, up to 100
   tries) shared by all frames, each frame's rectangle filled with its own per-pixel N(0, 1) noise in the
   normalised space.

V-JEPA 2 normalises before the crop; the crop's linear resize and the per-channel affine normalisation
commute, so the order differs from ours only by our crop's rounding to uint8.

Erasing lives in the normalised space but normalisation happens on the device with the backbone's
statistics, so an augmented clip travels as ``float16 [T, H, W, 4]`` (:func:`erase_layer`): channels
0-2 are the pixel values 0-255, and where channel 3 is 1 they already hold the normalised-space noise.

Ops act on ``uint8 [T, H, W, 3]`` torch tensors and reproduce PIL's arithmetic (truncation, fixed-point
luma, 3x3 smoothing with copied borders, affine sampling with border clamping and Keys a = -1 bicubic),
so that they agree with the reference's PIL calls to within one grey level.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from unisurg.data.pixels import random_resized_crop

FILL = 128  # timm's fill colour for the geometric ops (its ``img_mean`` default)
MAX_LEVEL = 10.0  # magnitudes live in [0, MAX_LEVEL]

# timm ``_RAND_TRANSFORMS`` (severity of Posterize/Solarize/enhancements decreases with magnitude)
RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
# timm ``_RAND_INCREASING_TRANSFORMS`` (``inc1``: every op grows stronger with magnitude); the reference's choice
RAND_OPS_INCREASING = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                       "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                       "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
CHUNK_VALUES = 1 << 19  # values (about 2 MB of float32) per chunk of frames in the interpolating resampler


def _check_frames(frames: torch.Tensor) -> None:
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"augment: expected uint8 frames [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")


# -- colour ops (PIL ImageOps / ImageEnhance semantics) ------------------------------------------------


def _keys(frames: torch.Tensor) -> torch.Tensor:
    """Index of each value into per-(frame, channel) 256-bin tables: ``(t * 3 + c) * 256 + v``."""
    T = frames.shape[0]
    base = (torch.arange(T, device=frames.device).view(T, 1, 1, 1) * 3
            + torch.arange(3, device=frames.device).view(1, 1, 1, 3)) * 256
    return base + frames.long()


def channel_histograms(frames: torch.Tensor) -> torch.Tensor:
    """``int64 [T, 3, 256]``: each frame's per-channel histogram (PIL ``Image.histogram`` of an RGB frame)."""
    T = frames.shape[0]
    return torch.bincount(_keys(frames).reshape(-1), minlength=T * 3 * 256).view(T, 3, 256)


def apply_lut(frames: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Per-(frame, channel) look-up ``lut [T, 3, 256]`` (values clipped to 0..255, as PIL's ``point``)."""
    return lut.clamp(0, 255).to(torch.uint8).reshape(-1)[_keys(frames)]


def invert(frames: torch.Tensor) -> torch.Tensor:
    """``255 - v`` (PIL ``ImageOps.invert``)."""
    return 255 - frames


def posterize(frames: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep the ``bits`` most significant bits (PIL ``ImageOps.posterize``; timm: 8 or more = unchanged)."""
    if bits >= 8:
        return frames.clone()
    return frames & ((0xFF << (8 - max(int(bits), 0))) & 0xFF)


def solarize(frames: torch.Tensor, threshold: int) -> torch.Tensor:
    """Invert the values at or above ``threshold`` (PIL ``ImageOps.solarize``)."""
    return torch.where(frames.short() >= int(threshold), 255 - frames, frames)  # int16: a threshold of 256 is legal


def solarize_add(frames: torch.Tensor, add: int, threshold: int = 128) -> torch.Tensor:
    """Add ``add`` (saturating at 255) to the values below ``threshold`` (timm ``solarize_add``)."""
    f = frames.short()
    return torch.where(f < int(threshold), (f + int(add)).clamp(0, 255), f).to(torch.uint8)


def auto_contrast(frames: torch.Tensor) -> torch.Tensor:
    """Stretch each frame's channel range ``[lo, hi]`` to ``[0, 255]``: ``int(v * 255/(hi-lo) - lo * 255/(hi-lo))``
    clipped (PIL ``ImageOps.autocontrast`` with no cutoff, in double precision); a flat channel is unchanged."""
    hist = channel_histograms(frames) > 0
    v = torch.arange(256, device=frames.device)
    lo = torch.where(hist, v, 256).amin(-1, keepdim=True)
    hi = torch.where(hist, v, -1).amax(-1, keepdim=True)
    # tensor / tensor: torch turns ``scalar / tensor`` into a reciprocal product, one ulp off PIL's double
    scale = torch.full_like(lo, 255, dtype=torch.float64) / (hi - lo).clamp(min=1).double()
    lut = (v.double() * scale - lo.double() * scale).trunc().long()
    return apply_lut(frames, torch.where(hi > lo, lut, v))


def equalize(frames: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each frame's channels (PIL ``ImageOps.equalize``): with ``step = (N - n_last)
    // 255`` (``n_last`` = count of the highest present value), ``lut[i] = (step // 2 + sum_{j<i} h_j) // step``;
    a channel with one value or ``step = 0`` is unchanged."""
    hist = channel_histograms(frames)
    v = torch.arange(256, device=frames.device)
    present = hist > 0
    last = torch.where(present, v, -1).amax(-1, keepdim=True)
    n_last = hist.gather(-1, last.clamp(min=0))
    step = (hist.sum(-1, keepdim=True) - n_last) // 255
    before = hist.cumsum(-1) - hist
    lut = (step // 2 + before) // step.clamp(min=1)
    keep = (present.sum(-1, keepdim=True) <= 1) | (step == 0)
    return apply_lut(frames, torch.where(keep, v, lut))


def blend(degenerate: torch.Tensor, frames: torch.Tensor, factor: float) -> torch.Tensor:
    """``degenerate + factor * (frames - degenerate)`` in float32, truncated and clipped to 0..255 (PIL
    ``Image.blend``, the core of every ``ImageEnhance`` op)."""
    a = degenerate.float()
    out = a + torch.tensor(factor, dtype=torch.float32) * (frames.float() - a)
    return out.clamp_(0, 255).trunc_().to(torch.uint8)


def luma(frames: torch.Tensor) -> torch.Tensor:
    """``int64 [T, H, W]`` ITU-R 601-2 luma ``(19595 R + 38470 G + 7471 B + 2^15) >> 16`` (PIL ``convert("L")``)."""
    f = frames.long()
    return (f[..., 0] * 19595 + f[..., 1] * 38470 + f[..., 2] * 7471 + 0x8000) >> 16


def color(frames: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the frame's grey version (PIL ``ImageEnhance.Color``): 0 = grey, 1 = unchanged."""
    return blend(luma(frames).unsqueeze(-1).expand_as(frames), frames, factor)


def contrast(frames: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with a flat frame at the rounded mean luma of that frame (PIL ``ImageEnhance.Contrast``)."""
    y = luma(frames)
    mean = torch.floor(y.flatten(1).sum(1).double() / y[0].numel() + 0.5)
    return blend(mean.view(-1, 1, 1, 1).expand(frames.shape), frames, factor)


def brightness(frames: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with black (PIL ``ImageEnhance.Brightness``)."""
    return blend(torch.zeros_like(frames), frames, factor)


def smooth(frames: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageFilter.SMOOTH``: 3x3 kernel ``[[1,1,1],[1,5,1],[1,1,1]] / 13``, rounded; the one-pixel border
    is copied unchanged (PIL does not filter it)."""
    T, H, W, _ = frames.shape
    out = frames.clone()
    if H < 3 or W < 3:
        return out
    k = torch.ones(3, 3, dtype=torch.float32, device=frames.device)
    k[1, 1] = 5.0
    x = frames.permute(0, 3, 1, 2).reshape(T * 3, 1, H, W).float()
    s = F.conv2d(x, k.view(1, 1, 3, 3))  # exact integer sums in float32
    s = torch.div(2 * s + 13, 26, rounding_mode="floor")  # round(s / 13); never a tie since 13 is odd
    out[:, 1:-1, 1:-1] = s.view(T, 3, H - 2, W - 2).permute(0, 2, 3, 1).to(torch.uint8)
    return out


def sharpness(frames: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the smoothed frame (PIL ``ImageEnhance.Sharpness``): 0 = smoothed, 2 = sharpened."""
    return blend(smooth(frames), frames, factor)


# -- geometric ops (PIL Image.transform(AFFINE) semantics) ----------------------------------------------


def _keys_kernel(t: torch.Tensor, a: float = -1.0) -> torch.Tensor:
    """Keys' cubic convolution kernel; ``a = -1`` is the kernel of PIL's affine ``transform`` (BICUBIC)."""
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((t - 5) * t + 8) * t * a - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def affine(frames: torch.Tensor, coeffs, interpolation: str = "bicubic", fill: int = FILL) -> torch.Tensor:
    """Resample every frame with one affine map (PIL ``Image.transform(size, AFFINE, coeffs)``).

    The output pixel with centre ``(x, y)`` (``x = col + 0.5``) takes the input at ``(a x + b y + c,
    d x + e y + f)`` for ``coeffs = (a, b, c, d, e, f)``; a position outside ``[0, W) x [0, H)`` takes
    ``fill``; inside, the interpolation taps are clamped to the border. ``nearest`` takes the pixel under the
    position; ``bilinear``/``bicubic`` (Keys a = -1) are truncated and clipped to 0..255 as PIL does.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"affine: interpolation={interpolation!r}; use one of {INTERPOLATIONS}")
    T, H, W, C = frames.shape
    a, b, c, d, e, f = (float(v) for v in coeffs)
    dev = frames.device
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64, device=dev) + 0.5,
                            torch.arange(W, dtype=torch.float64, device=dev) + 0.5, indexing="ij")
    xi, yi = a * xs + b * ys + c, d * xs + e * ys + f
    inside = ((xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)).view(1, H * W, 1)
    flat = frames.reshape(T, H * W, C)
    if interpolation == "nearest":
        idx = yi.floor().clamp(0, H - 1).long() * W + xi.floor().clamp(0, W - 1).long()
        out = flat.index_select(1, idx.view(-1))
    else:
        x, y = xi - 0.5, yi - 0.5
        x0, y0 = x.floor(), y.floor()
        dx, dy = x - x0, y - y0
        if interpolation == "bilinear":
            offsets, kernel = (0, 1), (lambda t: (1 - t.abs()).clamp(min=0))
        else:
            offsets, kernel = (-1, 0, 1, 2), _keys_kernel
        taps = []  # (flat source index, weight) per tap, shared by all frames
        for j in offsets:
            wy = kernel(dy - j)
            if not bool(wy.any()):  # e.g. translations and shears along x never move rows
                continue
            rows = (y0 + j).clamp(0, H - 1).long() * W
            for i in offsets:
                w = wy * kernel(dx - i)
                if bool(w.any()):
                    taps.append(((rows + (x0 + i).clamp(0, W - 1).long()).view(-1), w.view(1, H * W, 1).float()))
        out = torch.empty_like(flat)
        step = max(1, CHUNK_VALUES // (H * W * C))  # a few frames at a time: the gathers stay in cache
        for s in range(0, T, step):
            src = flat[s:s + step].float()
            acc = torch.zeros_like(src)
            for idx, w in taps:
                acc.addcmul_(src.index_select(1, idx), w)
            # PIL truncates a double; +1e-3 keeps a float32 sum that is an integer in exact arithmetic from
            # truncating to the one below
            out[s:s + step] = acc.add_(1e-3).clamp_(0, 255).trunc_()
    out = torch.where(inside, out, torch.full_like(out, int(fill)))
    return out.view(T, H, W, C)


def rotate(frames: torch.Tensor, degrees: float, interpolation: str = "bicubic", fill: int = FILL) -> torch.Tensor:
    """Counter-clockwise rotation by ``degrees`` about the image centre ``(W/2, H/2)``, same size (PIL ``rotate``)."""
    T, H, W, _ = frames.shape
    ang = -math.radians(degrees)
    a, b = round(math.cos(ang), 15), round(math.sin(ang), 15)
    d, e = -b, a
    cx, cy = W / 2.0, H / 2.0
    return affine(frames, (a, b, cx - a * cx - b * cy, d, e, cy - d * cx - e * cy), interpolation, fill)


def shear_x(frames: torch.Tensor, factor: float, interpolation: str = "bicubic", fill: int = FILL) -> torch.Tensor:
    """Output ``(x, y)`` takes input ``(x + factor * y, y)`` (timm ``shear_x``)."""
    return affine(frames, (1, factor, 0, 0, 1, 0), interpolation, fill)


def shear_y(frames: torch.Tensor, factor: float, interpolation: str = "bicubic", fill: int = FILL) -> torch.Tensor:
    """Output ``(x, y)`` takes input ``(x, factor * x + y)`` (timm ``shear_y``)."""
    return affine(frames, (1, 0, 0, factor, 1, 0), interpolation, fill)


def translate_x(frames: torch.Tensor, pixels: float, interpolation: str = "bicubic", fill: int = FILL) -> torch.Tensor:
    """Output ``(x, y)`` takes input ``(x + pixels, y)``: the content moves left by ``pixels`` (timm)."""
    return affine(frames, (1, 0, pixels, 0, 1, 0), interpolation, fill)


def translate_y(frames: torch.Tensor, pixels: float, interpolation: str = "bicubic", fill: int = FILL) -> torch.Tensor:
    """Output ``(x, y)`` takes input ``(x, y + pixels)``: the content moves up by ``pixels``."""
    return affine(frames, (1, 0, 0, 0, 1, pixels), interpolation, fill)


# -- RandAugment --------------------------------------------------------------------------------------


def _signed(v: float, rng: np.random.Generator) -> float:
    return -v if rng.random() > 0.5 else v


def op_argument(name: str, level: float, rng: np.random.Generator):
    """timm's level-to-argument map (``level`` in [0, 10]; signed ops draw their sign from ``rng``):

    Rotate 30 L degrees, ShearX/Y 0.3 L, TranslateX/YRel 0.45 L of the width/height (all signed);
    Posterize ``int(4 L)`` bits kept (Increasing: ``4 - int(4 L)``); Solarize threshold ``int(256 L)``
    (Increasing: ``256 - int(256 L)``); SolarizeAdd ``int(110 L)``; Color/Contrast/Brightness/Sharpness
    factor ``1.8 L + 0.1`` (Increasing: ``1 +- 0.9 L``), with ``L = level / 10``. No-argument ops give None.
    """
    L = level / MAX_LEVEL
    base = name.removesuffix("Increasing")
    inc = name.endswith("Increasing")
    if base in ("AutoContrast", "Equalize", "Invert"):
        return None
    if base == "Rotate":
        return _signed(L * 30.0, rng)
    if base in ("ShearX", "ShearY"):
        return _signed(L * 0.3, rng)
    if base in ("TranslateXRel", "TranslateYRel"):
        return _signed(L * 0.45, rng)
    if base == "Posterize":
        return 4 - int(L * 4) if inc else int(L * 4)
    if base == "Solarize":
        return 256 - int(L * 256) if inc else int(L * 256)
    if base == "SolarizeAdd":
        return int(L * 110)
    if base in ("Color", "Contrast", "Brightness", "Sharpness"):
        return 1.0 + _signed(L * 0.9, rng) if inc else L * 1.8 + 0.1
    raise ValueError(f"RandAugment: unknown op {name!r}; known: {sorted(set(RAND_OPS + RAND_OPS_INCREASING))}")


def apply_op(frames: torch.Tensor, name: str, arg, interpolation: str = "bicubic", fill: int = FILL) -> torch.Tensor:
    """Apply one RandAugment op with its argument (from :func:`op_argument`) to every frame."""
    base = name.removesuffix("Increasing")
    T, H, W, _ = frames.shape
    if base == "AutoContrast":
        return auto_contrast(frames)
    if base == "Equalize":
        return equalize(frames)
    if base == "Invert":
        return invert(frames)
    if base == "Posterize":
        return posterize(frames, arg)
    if base == "Solarize":
        return solarize(frames, arg)
    if base == "SolarizeAdd":
        return solarize_add(frames, arg)
    enhance = {"Color": color, "Contrast": contrast, "Brightness": brightness, "Sharpness": sharpness}
    if base in enhance:
        return enhance[base](frames, arg)
    if base == "Rotate":
        return rotate(frames, arg, interpolation, fill)
    if base == "ShearX":
        return shear_x(frames, arg, interpolation, fill)
    if base == "ShearY":
        return shear_y(frames, arg, interpolation, fill)
    if base == "TranslateXRel":
        return translate_x(frames, arg * W, interpolation, fill)
    if base == "TranslateYRel":
        return translate_y(frames, arg * H, interpolation, fill)
    raise ValueError(f"RandAugment: unknown op {name!r}; known: {sorted(set(RAND_OPS + RAND_OPS_INCREASING))}")


@dataclass(frozen=True)
class RandAugment:
    """RandAugment (Cubuk et al. 2020) as timm's ``rand-m{m}-n{n}-mstd{mstd}-inc{increasing}``, one draw per clip.

    ``sample`` draws ``n`` op names uniformly with replacement; each is kept with probability ``prob``
    (timm: 0.5); a kept op draws its magnitude ``N(m, mstd)`` (exactly ``m`` when ``mstd = 0``) clipped to
    [0, 10], then its argument (:func:`op_argument`). ``__call__`` applies the kept ops in order to all frames.
    """

    n: int = 4
    m: float = 7.0
    mstd: float = 0.5
    increasing: bool = True
    prob: float = 0.5
    interpolation: str = "bicubic"
    fill: int = FILL

    def __post_init__(self):
        if self.n < 0 or not 0 <= self.m <= MAX_LEVEL or self.mstd < 0 or not 0 <= self.prob <= 1:
            raise ValueError(f"RandAugment(n={self.n}, m={self.m}, mstd={self.mstd}, prob={self.prob}): need n >= 0, "
                             f"0 <= m <= {MAX_LEVEL:g}, mstd >= 0, 0 <= prob <= 1")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"RandAugment: interpolation={self.interpolation!r}; use one of {INTERPOLATIONS}")

    @property
    def ops(self) -> tuple[str, ...]:
        return RAND_OPS_INCREASING if self.increasing else RAND_OPS

    def sample(self, rng: np.random.Generator) -> list[tuple[str, object]]:
        """The ``(name, argument)`` of the ops to apply, in order (skipped ops are left out)."""
        out = []
        for k in rng.integers(0, len(self.ops), size=self.n):
            if rng.random() > self.prob:
                continue
            level = self.m + self.mstd * rng.standard_normal() if self.mstd > 0 else self.m
            level = min(MAX_LEVEL, max(0.0, float(level)))
            name = self.ops[int(k)]
            out.append((name, op_argument(name, level, rng)))
        return out

    def apply(self, frames: torch.Tensor, ops: list[tuple[str, object]]) -> torch.Tensor:
        _check_frames(frames)
        for name, arg in ops:
            frames = apply_op(frames, name, arg, self.interpolation, self.fill)
        return frames

    def __call__(self, frames, rng: np.random.Generator):
        """``uint8 [T, H, W, 3]`` (numpy or torch) -> the same type, shape and dtype."""
        as_numpy = isinstance(frames, np.ndarray)
        t = torch.from_numpy(np.ascontiguousarray(frames)) if as_numpy else frames
        out = self.apply(t, self.sample(rng))
        return out.numpy() if as_numpy else out


# -- random erasing -----------------------------------------------------------------------------------


def erase_box(H: int, W: int, rng: np.random.Generator, area: tuple[float, float] = (0.02, 1 / 3),
              aspect: tuple[float, float] = (0.3, 1 / 0.3), tries: int = 100) -> tuple[int, int, int, int] | None:
    """One random-erasing rectangle ``(y, x, h, w)`` (Zhong et al. 2020; timm ``RandomErasing``):
    target area ``U(area) * H * W``, aspect ``h / w`` log-uniform in ``aspect``, ``h = round(sqrt(A r))``,
    ``w = round(sqrt(A / r))``, accepted when ``h < H`` and ``w < W``, placed uniformly; ``None`` when all
    ``tries`` fail (V-JEPA 2's cube mode tries 100 times)."""
    log_r = (math.log(aspect[0]), math.log(aspect[1]))
    for _ in range(tries):
        target = rng.uniform(area[0], area[1]) * H * W
        r = math.exp(rng.uniform(*log_r))
        h, w = int(round(math.sqrt(target * r))), int(round(math.sqrt(target / r)))
        if w < W and h < H:
            return int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w
    return None


def erase_layer(frames, rng: np.random.Generator, prob: float = 0.25, **box_kw) -> np.ndarray:
    """``uint8 [T, H, W, 3]`` -> ``float16 [T, H, W, 4]``: the pixels plus random erasing to be finished on the
    device (see the module docstring). With probability ``prob`` one :func:`erase_box` rectangle, shared by all
    frames, gets channel 3 = 1 and per-frame, per-pixel N(0, 1) values in channels 0-2 (normalised space)."""
    frames = np.asarray(frames)
    T, H, W, _ = frames.shape
    out = np.zeros((T, H, W, 4), np.float16)
    out[..., :3] = frames
    if rng.random() < prob:
        box = erase_box(H, W, rng, **box_kw)
        if box is not None:
            y, x, h, w = box
            out[:, y:y + h, x:x + w, :3] = rng.standard_normal((T, h, w, 3), dtype=np.float32)
            out[:, y:y + h, x:x + w, 3] = 1
    return out


# -- the training pipelines -----------------------------------------------------------------------------


def paper_augment(frames: np.ndarray, res: int, rrc_scale: tuple[float, float], rrc_ratio: tuple[float, float],
                  randaug: RandAugment, erase_prob: float, rng: np.random.Generator) -> np.ndarray:
    """The authors' training augmentation of one clip (module docstring, steps 1, 2 and 4):
    ``uint8 [T, H, W, 3]`` -> ``float16 [T, res, res, 4]`` (RandAugment, random-resized crop, erasing layer)."""
    frames = randaug(frames, rng)
    frames = random_resized_crop(frames, res, rrc_scale, rrc_ratio, rng)
    return erase_layer(frames, rng, erase_prob)


def train_augment(clip_cfg, rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray] | None:
    """The ``clip.augment`` pipeline of one sample, drawing from ``rng``: ``None`` for ``none`` (centre crop),
    the random-resized crop alone for ``rrc``, :func:`paper_augment` for ``paper``."""
    c = clip_cfg
    if c.augment == "none":
        return None
    if c.augment == "rrc":
        return lambda frames: random_resized_crop(frames, c.res, tuple(c.rrc_scale), tuple(c.rrc_ratio), rng)
    if c.augment == "paper":
        ra = RandAugment(n=c.randaug_n, m=c.randaug_m, mstd=c.randaug_mstd, increasing=c.randaug_increasing)
        return lambda frames: paper_augment(frames, c.res, tuple(c.rrc_scale), tuple(c.rrc_ratio), ra,
                                            c.erase_prob, rng)
    raise ValueError(f"clip.augment={c.augment!r}: use 'none', 'rrc' or 'paper'")
