"""Rendering half of the synthetic surgical world: a :class:`~unisurg.synth.plan.VideoPlan` to frames.

Everything expensive is precomputed once per video (tissue texture with margin for camera
drift, smoke noise bank, sensor-noise bank, vignette); a frame is then a gathered crop of the
texture, one alpha blend of upsampled haze, instruments drawn by anti-aliased distance-to-segment
on their bounding boxes only, a vignette multiply and a noise add, all in float32 numpy.

Frames are rendered directly in the encoder's format, YUV 4:2:0 (BT.601, limited range): every
operation here (alpha blends, scalar shading, vignette) is linear in colour, so compositing in
offset-free YUV equals compositing in RGB and converting, with half the pixels to touch (chroma
at quarter resolution) and no colour conversion before x264.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unisurg.synth.plan import KINDS, VideoPlan, plan_rng

# BT.601 limited-range RGB (0..255) -> offset-free Y'CbCr; add YUV_OFFSET to get the stored code values.
RGB_TO_YUV = np.array(
    [[0.256788, 0.504129, 0.097906], [-0.148223, -0.290993, 0.439216], [0.439216, -0.367788, -0.071427]],
    dtype=np.float64,
)
YUV_OFFSET = np.array([16.0, 128.0, 128.0])
_YUV_TO_RGB = np.linalg.inv(RGB_TO_YUV).astype(np.float32)


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """Offset-free BT.601 limited-range Y'CbCr of RGB in 0..255 (last axis = channels)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    m = RGB_TO_YUV
    out = [m[k, 0] * rgb[..., 0] + m[k, 1] * rgb[..., 1] + m[k, 2] * rgb[..., 2] for k in range(3)]
    return np.stack(out, -1).astype(np.float32)


def yuv420p_to_rgb(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Packed yuv420p ``[H*3/2, W]`` uint8 -> ``[H, W, 3]`` uint8 RGB (BT.601 limited, nearest chroma upsampling)."""
    flat = frame.reshape(-1)
    n = height * width
    y = flat[:n].reshape(height, width).astype(np.float32)
    u = flat[n : n + n // 4].reshape(height // 2, width // 2)
    v = flat[n + n // 4 : n + n // 2].reshape(height // 2, width // 2)
    planes = (
        y - 16.0,
        u.astype(np.float32).repeat(2, 0).repeat(2, 1) - 128.0,
        v.astype(np.float32).repeat(2, 0).repeat(2, 1) - 128.0,
    )
    rgb = np.empty((height, width, 3), dtype=np.float32)
    for k in range(3):  # explicit 3x3 product: no BLAS call per frame
        rgb[..., k] = _YUV_TO_RGB[k, 0] * planes[0] + _YUV_TO_RGB[k, 1] * planes[1] + _YUV_TO_RGB[k, 2] * planes[2]
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def gaussian_noise_field(rng: np.random.Generator, h: int, w: int, sigma_px: float) -> np.ndarray:
    """White noise low-passed by a Gaussian of ``sigma_px`` (via FFT, periodic), standardised, ``[h, w]`` float32."""
    white = rng.standard_normal((h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    spec = np.fft.rfft2(white) * np.exp(-2.0 * (np.pi * sigma_px) ** 2 * (fx * fx + fy * fy))
    f = np.fft.irfft2(spec, s=(h, w))
    f -= f.mean()
    return (f / max(float(f.std()), 1e-8)).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def tissue_texture(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Tissue-like RGB texture ``[h, w, 3]`` float32 in 0..255; feature sizes relative to ``scale`` (frame width).

    Low-frequency height blobs coloured between dark and light flesh tones, yellowish fat patches,
    a vessel network (thin ridges at zero crossings of band-passed noise, only in some regions),
    relief shading from the height gradient, fine grain and sparse specular highlights.
    """
    hue = rng.uniform(-1, 1, 3) * np.array([18.0, 12.0, 12.0])
    dark = np.array([120.0, 35.0, 38.0]) + hue
    light = np.array([225.0, 120.0, 110.0]) + hue
    fat = np.array([225.0, 185.0, 120.0]) + rng.uniform(-15, 15, 3)
    vessel = np.array([95.0, 15.0, 35.0]) + rng.uniform(-15, 15, 3)

    height = (
        0.65 * gaussian_noise_field(rng, h, w, 0.09 * scale)
        + 0.3 * gaussian_noise_field(rng, h, w, 0.03 * scale)
        + 0.12 * gaussian_noise_field(rng, h, w, 0.01 * scale)
    )
    mix = _sigmoid(1.6 * height + rng.uniform(-0.4, 0.4))[..., None]
    img = dark + (light - dark) * mix

    fat_mask = _sigmoid(4.0 * (gaussian_noise_field(rng, h, w, 0.07 * scale) - rng.uniform(0.6, 1.2)))[..., None]
    img += (fat - img) * fat_mask * 0.85

    ridge = gaussian_noise_field(rng, h, w, 0.025 * scale)
    lines = np.exp(-((ridge / 0.12) ** 2))
    where = _sigmoid(3.0 * gaussian_noise_field(rng, h, w, 0.1 * scale))
    v_alpha = (0.75 * lines * where)[..., None]
    img += (vessel - img) * v_alpha

    gy, gx = np.gradient(height)
    shade = 1.0 + np.clip((gx - gy) * (0.35 * scale / 40.0), -0.35, 0.35)
    img *= shade[..., None]
    img += 6.0 * gaussian_noise_field(rng, h, w, 0.7)[..., None]

    spec = gaussian_noise_field(rng, h, w, 0.006 * scale) + 0.8 * height
    thr = float(np.quantile(spec, 0.993))
    s = np.clip((spec - thr) * 3.0, 0.0, 1.0)[..., None]
    img += (np.array([255.0, 250.0, 245.0]) - img) * s
    return np.clip(img, 0, 255).astype(np.float32)


def _lerp_taps(n_out: int, n_in: int, offset: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-tap linear interpolation of a periodic length-``n_in`` signal at ``n_out`` points shifted by ``offset`` samples."""
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5 + offset
    i0 = np.floor(pos).astype(np.intp)
    frac = (pos - i0).astype(np.float32)
    return i0 % n_in, (i0 + 1) % n_in, frac


def _upsample(low: np.ndarray, rows: tuple, cols: tuple) -> np.ndarray:
    """Separable bilinear upsampling by gathers (no BLAS: tiny matmuls thrash threads on a shared machine)."""
    r0, r1, fr = rows
    c0, c1, fc = cols
    tmp = low[r0] * (1.0 - fr[:, None]) + low[r1] * fr[:, None]
    out = tmp[:, c0]
    out *= 1.0 - fc
    out += tmp[:, c1] * fc
    return out


@dataclass
class ToolStyle:
    """Colours and sizes of one instrument kind in one video (RGB 0..255, radii in px)."""

    shaft: np.ndarray
    metal: np.ndarray
    accent: np.ndarray
    radius: float


def _tool_styles(rng: np.random.Generator, w: int) -> dict[str, ToolStyle]:
    r = rng.uniform(0.03, 0.04) * w
    tint = rng.uniform(-8, 8, 3)
    black = np.array([38.0, 38.0, 44.0]) + tint
    silver = np.array([175.0, 178.0, 182.0]) + tint
    metal = np.array([200.0, 200.0, 205.0]) + tint
    styles = {
        "grasper": ToolStyle(black, metal, metal, r),
        "hook": ToolStyle(black * 1.1, metal, metal, r * 0.95),
        "bipolar": ToolStyle(np.array([40.0, 60.0, 105.0]) + tint, metal, np.array([60.0, 90.0, 170.0]), r * 0.9),
        "scissors": ToolStyle(black * 0.9, np.array([205.0, 175.0, 95.0]) + tint, metal, r),
        "clipper": ToolStyle(silver, metal * 0.95, np.array([235.0, 225.0, 200.0]), r * 1.15),
        "irrigator": ToolStyle(silver * 1.05, metal, np.array([30.0, 30.0, 30.0]), r * 0.9),
        "bag": ToolStyle(black, metal, np.array([215.0, 215.0, 200.0]) + rng.uniform(-15, 15, 3), r),
    }
    return styles


# Tip geometry in tip-local units of the shaft radius: u forward along the shaft, v across.
# Each capsule: (u0, v0, u1, v1, radius, jaw_gain_v); jaw_gain adds jaw*gain to |v1| (opening).
_TIPS: dict[str, list[tuple[float, float, float, float, float, float]]] = {
    "grasper": [(-0.4, 0.0, 0.3, 0.0, 0.75, 0.0), (0.2, 0.4, 2.4, 0.45, 0.32, 1.1), (0.2, -0.4, 2.4, -0.45, 0.32, -1.1)],
    "hook": [(-0.3, 0.0, 2.8, 0.0, 0.28, 0.0), (2.8, 0.0, 2.8, 1.2, 0.28, 0.0)],
    "bipolar": [(0.0, 0.35, 2.6, 0.3, 0.22, 0.5), (0.0, -0.35, 2.6, -0.3, 0.22, -0.5)],
    "scissors": [(0.0, 0.0, 2.5, 0.45, 0.3, 0.9), (0.0, 0.0, 2.5, -0.15, 0.3, -0.9)],
    "clipper": [(0.0, 0.55, 2.0, 0.55, 0.42, 0.8), (0.0, -0.55, 2.0, -0.55, 0.42, -0.8)],
    "irrigator": [(-0.2, 0.0, 0.6, 0.0, 0.85, 0.0)],
    "bag": [(-0.4, 0.0, 0.3, 0.0, 0.75, 0.0), (0.2, 0.35, 2.2, 0.3, 0.32, 0.3), (0.2, -0.35, 2.2, -0.3, 0.32, -0.3)],
}
_TIPS_NP = {k: np.array(v, dtype=np.float32) for k, v in _TIPS.items()}


def _bbox(xs: np.ndarray, ys: np.ndarray, pad: float, w: int, h: int) -> tuple[int, int, int, int] | None:
    x0 = max(int(np.floor(xs.min() - pad)), 0)
    x1 = min(int(np.ceil(xs.max() + pad)) + 1, w)
    y0 = max(int(np.floor(ys.min() - pad)), 0)
    y1 = min(int(np.ceil(ys.max() + pad)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _clip_segment(a: np.ndarray, b: np.ndarray, w: int, h: int, pad: float) -> np.ndarray:
    """Move ``a`` (the port, off screen) along a->b to where the segment enters the padded frame."""
    d = b - a
    t0 = 0.0
    for k, lim in ((0, w), (1, h)):
        if abs(d[k]) > 1e-9:
            lo, hi = sorted(((-pad - a[k]) / d[k], (lim + pad - a[k]) / d[k]))
            t0 = max(t0, lo)
    return a + min(t0, 1.0) * d


def _capsules_alpha(px: np.ndarray, py: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (max over capsules) on a pixel grid; caps ``[P, 5]`` = (ax, ay, bx, by, r)."""
    ax, ay, bx, by, r = (caps[:, k, None, None] for k in range(5))
    dx, dy = bx - ax, by - ay
    l2 = np.maximum(dx * dx + dy * dy, 1e-6)
    rx, ry = px - ax, py - ay
    t = np.clip((rx * dx + ry * dy) / l2, 0.0, 1.0)
    ex, ey = rx - t * dx, ry - t * dy
    dist = np.sqrt(ex * ex + ey * ey)
    return np.clip(r + 0.5 - dist, 0.0, 1.0).max(0)


_SHAFT_BINS = 256


def _shaft_luts(r: float, shaft: np.ndarray, spec: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cross-shaft profiles: coverage and alpha-premultiplied YUV colour, at full (Y) and half (CbCr) resolution.

    A cylinder lit from the camera: brightness ``0.55 + 0.45 sqrt(1 - v^2)`` across it (v = offset
    in radii) plus a specular streak at v = -0.35; coverage anti-aliased over one plane pixel.
    The table spans |v| <= 1 + 1.5 / r, past the anti-aliased rim at half resolution, so its
    end bins (where out-of-range indices are clipped to) have zero coverage. Returns
    (span, Y coverage, Y colour, CbCr coverage, CbCr colour ``[2, bins]``).
    """
    span = 1.0 + 1.5 / r
    v = ((np.arange(_SHAFT_BINS) + 0.5) / _SHAFT_BINS * 2.0 - 1.0) * span
    shade = 0.55 + 0.45 * np.sqrt(np.clip(1.0 - v * v, 0.0, 1.0))
    streak = 0.7 * np.clip(1.0 - ((v + 0.35) / 0.22) ** 2, 0.0, 1.0)
    col = shaft[None, :] * shade[:, None] + (spec - shaft)[None, :] * streak[:, None]
    a_full = np.clip(r + 0.5 - np.abs(v) * r, 0.0, 1.0)
    a_half = np.clip(r / 2 + 0.5 - np.abs(v) * r / 2, 0.0, 1.0)
    f32 = np.float32
    lut_c = (col[:, 1:] * a_half[:, None]).T  # [2, bins]
    return span, a_full.astype(f32), (col[:, 0] * a_full).astype(f32), a_half.astype(f32), np.ascontiguousarray(lut_c, dtype=f32)


def _pool2(a: np.ndarray) -> np.ndarray:
    """2x2 mean of an even-sized 2-D array (the footprint of one 4:2:0 chroma sample)."""
    return 0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2])


class FrameRenderer:
    """Renders the frames of one :class:`VideoPlan`; texture and noise banks are built at construction.

    ``render_yuv(i)`` gives frame ``i`` as packed yuv420p ``[H*3/2, W]`` uint8 (what the encoder
    takes); ``render(i)`` the same frame as ``[H, W, 3]`` uint8 RGB. ``tools=False`` leaves the
    instruments out (tests use it to check that instruments are drawn where the plan puts them).
    """

    def __init__(self, plan: VideoPlan, noise_bank: int = 8):
        h, w = plan.height, plan.width
        if h % 2 or w % 2 or h < 16 or w < 16:
            raise ValueError(f"frame size must be even and at least 16x16 for yuv420p, got height={h}, width={w}")
        self.plan = plan
        self.h, self.w = h, w
        rng = plan_rng(plan.seed, plan.index, 1)
        # Texture margin covers the largest camera offset plus the zoom-out overflow (even, for 4:2:0).
        over = 0.5 * (1.0 / float(plan.zoom.min()) - 1.0)
        self.mx = 2 * (int(np.ceil(np.abs(plan.camera[:, 0]).max() + over * w)) // 2 + 2)
        self.my = 2 * (int(np.ceil(np.abs(plan.camera[:, 1]).max() + over * h)) // 2 + 2)
        tex = rgb_to_yuv(tissue_texture(rng, h + 2 * self.my, w + 2 * self.mx, scale=float(w)))
        self.tex_y = np.ascontiguousarray(tex[..., 0])
        self.tex_c = np.ascontiguousarray(np.stack([_pool2(tex[..., 1]), _pool2(tex[..., 2])], 0))  # planar [2, h, w]
        self.styles = _tool_styles(rng, w)
        self.bag_size = rng.uniform(0.1, 0.15) * w
        self.yuv = {
            kind: (rgb_to_yuv(st.shaft), rgb_to_yuv(st.metal), rgb_to_yuv(st.accent)) for kind, st in self.styles.items()
        }
        self.spec_yuv = rgb_to_yuv(np.array([235.0, 235.0, 235.0]))
        self.shaft_luts = {kind: _shaft_luts(st.radius, self.yuv[kind][0], self.spec_yuv) for kind, st in self.styles.items()}

        # Smoke: a bank of periodic low-res fields, cross-faded over time and drifting upwards.
        self.sh, self.sw = max(h // 8, 4), max(w // 8, 4)
        nb = 10
        fields = np.stack([gaussian_noise_field(rng, self.sh, self.sw, 1.6) for _ in range(nb)])
        self.smoke_fields = np.clip(0.55 + 0.35 * fields, 0.0, 1.0)
        self.smoke_order = rng.permutation(np.resize(np.arange(nb), 4 * nb))
        self.smoke_period = rng.uniform(2.5, 4.0)  # s per cross-fade
        self.smoke_rise = rng.uniform(0.3, 0.8)  # low-res rows per second
        self.smoke_yuv = rgb_to_yuv(np.array([225.0, 220.0, 215.0]) + rng.uniform(-10, 10, 3))
        self.up_w2 = _lerp_taps(w // 2, self.sw, 0.0)

        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx + 0.5 - w / 2) / (w / 2)) ** 2 + ((yy + 0.5 - h / 2) / (h / 2)) ** 2
        self.vignette = (1.0 - rng.uniform(0.25, 0.45) * r2 / 2.0).astype(np.float32)
        self.vignette2 = np.ascontiguousarray(_pool2(self.vignette))
        sigma = rng.uniform(1.0, 2.5)  # luma sensor noise, in code values
        self.noise = (rng.standard_normal((noise_bank, h, w)) * sigma + 16.5).astype(np.float32)
        self.noise_pick = rng.integers(0, noise_bank, plan.n_frames)

        self.Y = np.empty((h, w), dtype=np.float32)
        self.C = np.empty((2, h // 2, w // 2), dtype=np.float32)  # planar Cb, Cr: channel-last loops would be 2 long
        self.tmp3 = np.empty((h // 2, 2, w), dtype=np.float32)
        self.xs = np.arange(w, dtype=np.float64) - w / 2 + 0.5
        self.ys = np.arange(h, dtype=np.float64) - h / 2 + 0.5
        self.xs2 = 2.0 * np.arange(w // 2) + 1.0 - w / 2
        self.ys2 = 2.0 * np.arange(h // 2) + 1.0 - h / 2

    def _background(self, i: int) -> None:
        z = float(self.plan.zoom[i])
        cx = self.mx + self.w / 2 + float(self.plan.camera[i, 0])
        cy = self.my + self.h / 2 + float(self.plan.camera[i, 1])
        xi = np.floor(cx + self.xs / z).astype(np.intp)
        yi = np.floor(cy + self.ys / z).astype(np.intp)
        np.take(self.tex_y.take(yi, axis=0), xi, axis=1, out=self.Y)
        xi2 = np.floor((cx + self.xs2 / z) / 2).astype(np.intp)
        yi2 = np.floor((cy + self.ys2 / z) / 2).astype(np.intp)
        np.take(self.tex_c.take(yi2, axis=1), xi2, axis=2, out=self.C)

    def _smoke(self, i: int) -> None:
        level = float(self.plan.smoke[i])
        if level <= 0.005:
            return
        t = i / self.plan.fps
        k = t / self.smoke_period
        j = int(k) % len(self.smoke_order)
        f = k - int(k)
        a = self.smoke_fields[self.smoke_order[j]]
        b = self.smoke_fields[self.smoke_order[(j + 1) % len(self.smoke_order)]]
        low = ((1.0 - f) * a + f * b) * np.float32(level)
        # The haze is smooth at the 8-px scale, so one half-resolution opacity field serves both
        # chroma and (repeated over 2x2 blocks) luma.
        alpha2 = _upsample(low, _lerp_taps(self.h // 2, self.sh, self.smoke_rise * t), self.up_w2)
        y3 = self.Y.reshape(self.h // 2, 2, self.w)
        tmp = np.subtract(self.smoke_yuv[0], y3, out=self.tmp3)
        tmp *= alpha2.repeat(2, axis=1)[:, None, :]
        y3 += tmp
        self.C += (self.smoke_yuv[1:, None, None] - self.C) * alpha2

    def _even_box(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = box
        return x0 - x0 % 2, y0 - y0 % 2, min(x1 + x1 % 2, self.w), min(y1 + y1 % 2, self.h)

    def _grid(self, box: tuple[int, int, int, int], origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x0, y0, x1, y1 = box
        px = np.arange(x0, x1, dtype=np.float32)[None, :] + np.float32(0.5 - origin[0])
        py = np.arange(y0, y1, dtype=np.float32)[:, None] + np.float32(0.5 - origin[1])
        return px, py

    def _composite(self, box, alpha: np.ndarray, col_y, col_c) -> None:
        """Alpha-blend a colour (constant or per pixel) into Y at full and into CbCr at half resolution."""
        x0, y0, x1, y1 = box
        reg = self.Y[y0:y1, x0:x1]
        reg += (col_y - reg) * alpha
        reg_c = self.C[:, y0 // 2 : y1 // 2, x0 // 2 : x1 // 2]
        reg_c += (col_c - reg_c) * _pool2(alpha)

    def _draw_tool(self, kind: str, tip: np.ndarray, port: np.ndarray, jaw: float) -> None:
        st = self.styles[kind]
        shaft, metal, accent = self.yuv[kind]
        r = st.radius
        d = tip - port
        length = float(np.hypot(*d))
        if length < 1e-3:
            return
        d = d / length
        nrm = np.array([-d[1], d[0]])
        a = _clip_segment(port, tip, self.w, self.h, r + 2)
        box = _bbox(np.array([a[0], tip[0]]), np.array([a[1], tip[1]]), r + 1.5, self.w, self.h)
        if box is not None:
            x0, y0, x1, y1 = self._even_box(box)
            span, lut_a, lut_y, lut_a2, lut_c = self.shaft_luts[kind]
            self._shaft_pass(self.Y, (x0, y0, x1, y1), 1, a, tip, d, nrm, r * span, lut_a, lut_y)
            self._shaft_pass(self.C, (x0 // 2, y0 // 2, x1 // 2, y1 // 2), 2, a, tip, d, nrm, r * span, lut_a2, lut_c)
        # Tip: capsules in tip-local coordinates (units of the shaft radius), jaws opened by ``jaw``.
        u0, v0, u1, v1, rr, gain = _TIPS_NP[kind].T
        ends = np.stack([u0, v0, u1, v1 + jaw * gain], 1) * r
        p0 = tip + ends[:, :1] * d + ends[:, 1:2] * nrm
        p1 = tip + ends[:, 2:3] * d + ends[:, 3:4] * nrm
        self._stamp(np.concatenate([p0, p1, (rr * r)[:, None]], 1), metal)
        if kind == "clipper" and jaw < 0.35:  # the clip between closing jaws
            c0, c1 = tip + 0.7 * r * d, tip + 1.8 * r * d
            self._stamp(np.array([[*c0, *c1, 0.3 * r]]), accent)
        elif kind == "irrigator":  # suction holes on the shaft
            self._stamp(np.array([[*(tip - k * r * d), *(tip - k * r * d), 0.28 * r] for k in (1.2, 2.2, 3.2)]), accent)
        elif kind == "bag":
            self._draw_bag(tip, d, accent)

    def _shaft_pass(self, plane, box, step: int, a, tip, d, nrm, half_span: float, lut_a: np.ndarray, lut_col: np.ndarray) -> None:
        """Blend the shaft a->tip into one plane (``step`` = plane pixel size in frame pixels).

        ``half_span`` is the distance (frame pixels) from the axis to the last table bin.

        Coverage and colour depend only on the signed distance across the shaft, so both come
        from lookup tables (premultiplied colour); a linear ramp past the tip cuts the end.
        """
        x0, y0, x1, y1 = box
        px = (np.arange(x0, x1, dtype=np.float64) + 0.5) * step - a[0]
        py = (np.arange(y0, y1, dtype=np.float64) + 0.5) * step - a[1]
        k = _SHAFT_BINS / (2.0 * half_span)
        fx = (px * (nrm[0] * k) + _SHAFT_BINS / 2).astype(np.float32)[None, :]
        fy = (py * (nrm[1] * k)).astype(np.float32)[:, None]
        idx = np.floor(fx + fy).astype(np.intp)
        length = float(np.hypot(*(tip - a)))
        ex = ((length - px * d[0]) / step + 0.5).astype(np.float32)[None, :]
        ey = (-py * d[1] / step).astype(np.float32)[:, None]
        end = np.clip(ex + ey, 0.0, 1.0)
        alpha = lut_a.take(idx, mode="clip")
        alpha *= end
        col = lut_col.take(idx, axis=-1, mode="clip")  # [h, w] for Y, [2, h, w] for CbCr
        col *= end
        reg = plane[..., y0:y1, x0:x1]
        reg *= 1.0 - alpha
        reg += col

    def _stamp(self, caps: np.ndarray, color: np.ndarray) -> None:
        caps = caps.astype(np.float32)
        pad = float(caps[:, 4].max()) + 1.5
        box = _bbox(caps[:, [0, 2]].ravel(), caps[:, [1, 3]].ravel(), pad, self.w, self.h)
        if box is None:
            return
        box = self._even_box(box)
        px, py = self._grid(box, np.zeros(2))
        self._composite(box, _capsules_alpha(px, py, caps), color[0], color[1:, None, None])

    def _draw_bag(self, tip: np.ndarray, d: np.ndarray, color: np.ndarray) -> None:
        """Specimen bag: translucent whitish ellipse hanging from the grasper tip, lit from above."""
        down = d + np.array([0.0, 1.2])
        down = down / np.hypot(*down)
        ra, rb = self.bag_size, 0.7 * self.bag_size
        c = tip + down * ra * 0.9
        box = _bbox(np.array([c[0]]), np.array([c[1]]), ra + 2, self.w, self.h)
        if box is None:
            return
        box = self._even_box(box)
        px, py = self._grid(box, c)
        u = (px * np.float32(down[0]) + py * np.float32(down[1])) / np.float32(ra)
        v = (py * np.float32(down[0]) - px * np.float32(down[1])) / np.float32(rb)
        alpha = np.clip((1.0 - np.sqrt(u * u + v * v)) * np.float32(rb) + 0.5, 0.0, 1.0) * np.float32(0.85)
        shade = 0.75 + 0.25 * np.clip(-u, -1.0, 1.0) + 0.2 * np.clip(1.0 - 2.0 * np.abs(v + 0.3), 0.0, 1.0)
        self._composite(box, alpha, color[0] * shade, color[1:, None, None] * _pool2(shade))

    def render_yuv(self, i: int, tools: bool = True) -> np.ndarray:
        """Frame ``i`` as packed yuv420p, ``[H*3/2, W]`` uint8 (Y plane, then Cb, then Cr)."""
        if not 0 <= i < self.plan.n_frames:
            raise IndexError(f"frame {i} out of range for a video of {self.plan.n_frames} frames")
        self._background(i)
        self._smoke(i)
        if tools:
            for hand in reversed(self.plan.hands):  # assisting hand under the working one
                k = int(hand.kind[i])
                if k >= 0:
                    self._draw_tool(KINDS[k], hand.tip[i], hand.port[i], float(hand.jaw[i]))
        h, w = self.h, self.w
        y, c = self.Y, self.C
        y *= self.vignette
        y += self.noise[self.noise_pick[i]]  # noise bank carries the +16.5 offset (+0.5: round on cast)
        np.clip(y, 16.0, 235.0, out=y)
        c *= self.vignette2
        c += 128.5
        np.clip(c, 16.0, 240.0, out=c)
        out = np.empty((h * 3 // 2, w), dtype=np.uint8)
        np.copyto(out[:h], y, casting="unsafe")
        np.copyto(out.reshape(-1)[h * w :].reshape(2, h // 2, w // 2), c, casting="unsafe")
        return out

    def render(self, i: int, tools: bool = True) -> np.ndarray:
        """Frame ``i`` as ``[H, W, 3]`` uint8 RGB (converted from the yuv420p frame the encoder gets)."""
        return yuv420p_to_rgb(self.render_yuv(i, tools), self.h, self.w)
