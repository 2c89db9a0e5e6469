"""How a decoded picture is meant to be shown: display matrix (rotation/mirroring), sample aspect
ratio (non-square pixels), and the stored size with a bounded aspect ratio.

Display matrix: the 3x3 matrix of FFmpeg's ``AV_FRAME_DATA_DISPLAYMATRIX`` side data (libavutil
``display.h``: nine int32, 16.16 fixed point except the last column). FFmpeg applies it to row
vectors, ``[x' y' 1] = [x y 1] M`` in image coordinates (y down), so with ``a, b, c, d`` the
upper-left 2x2 block ``[[a, b], [c, d]]``: ``x' = a x + c y`` and ``y' = b x + d y``. A rotation by
θ counter-clockwise on screen is ``[[cos θ, -sin θ], [sin θ, cos θ]]`` (what PyAV's
``VideoStream.set_display_rotation`` writes and ``VideoFrame.rotation`` reads back); a horizontal
mirror after it negates the first column. Only the eight axis-aligned orientations (multiples of
90 degrees, optionally mirrored: the EXIF orientations phones write) are supported; any other
matrix is refused with an error rather than stored wrongly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

# A wider or taller picture than this is refused: the stored frames and every clip cropped from
# them would be mostly one axis (a 16x2048 scan line would become 256x32768 pixels).
MAX_ASPECT_RATIO = 8.0
# libjpeg's limit on either side of a JPEG image
JPEG_MAX_SIDE = 65500


class GeometryError(ValueError):
    """A picture geometry unisurg cannot store faithfully; the message says why."""


@dataclass(frozen=True)
class Orientation:
    """Axis-aligned display transform: transpose first, then flip rows / columns."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @property
    def swaps_axes(self) -> bool:
        return self.transpose

    def apply(self, img: np.ndarray) -> np.ndarray:
        """``img`` (H, W, C) as displayed; a view, made contiguous by the caller if needed."""
        if self.transpose:
            img = img.transpose(1, 0, 2)
        if self.flip_rows:
            img = img[::-1]
        if self.flip_cols:
            img = img[:, ::-1]
        return img

    def describe(self) -> str:
        if self == Orientation():
            return "none"
        return ",".join(n for n, on in (("transpose", self.transpose), ("vflip", self.flip_rows),
                                        ("hflip", self.flip_cols)) if on)


def parse_display_matrix(raw: bytes) -> np.ndarray:
    """The 2x2 block ``[[a, b], [c, d]]`` of a display matrix side-data buffer, as floats."""
    if len(raw) < 36:
        raise GeometryError(f"display matrix side data has {len(raw)} bytes, expected 36")
    m = np.frombuffer(raw[:36], dtype="<i4").astype(np.float64)
    return np.array([[m[0], m[1]], [m[3], m[4]]]) / 65536.0


def orientation_from_matrix(m: np.ndarray) -> Orientation:
    """The axis-aligned transform of a display matrix's 2x2 block (see the module docstring).

    ``x' = a x + c y, y' = b x + d y``: with ``b = c = 0`` the axes stay (a flip where a or d is
    negative); with ``a = d = 0`` they swap (``x' = c y``, ``y' = b x``): transpose, then flip the
    columns where c < 0 and the rows where b < 0. Scaling is ignored (only signs matter).
    """
    (a, b), (c, d) = m
    scale = max(abs(a), abs(b), abs(c), abs(d))
    if scale == 0:
        return Orientation()  # an all-zero matrix carries no information; FFmpeg ignores it too
    a, b, c, d = (v / scale for v in (a, b, c, d))
    tol = 1e-3
    if abs(b) < tol and abs(c) < tol and abs(abs(a) - 1) < tol and abs(abs(d) - 1) < tol:
        return Orientation(False, d < 0, a < 0)
    if abs(a) < tol and abs(d) < tol and abs(abs(b) - 1) < tol and abs(abs(c) - 1) < tol:
        return Orientation(True, b < 0, c < 0)
    angle = math.degrees(math.atan2(c, a))
    raise GeometryError(f"display matrix rotates by {angle:.1f} degrees (matrix {m.round(4).tolist()}); only "
                        "multiples of 90 degrees are supported: re-encode the video upright (e.g. ffmpeg -i IN OUT)")


def display_size(height: int, width: int, sar: Fraction | None, orientation: Orientation) -> tuple[float, float]:
    """(H, W) of the picture as shown: width scaled by the sample aspect ratio, then axes swapped
    when the display matrix rotates by +-90 degrees."""
    w = width * float(sar) if sar and sar > 0 else float(width)
    h = float(height)
    return (w, h) if orientation.swaps_axes else (h, w)


def stored_size(disp_h: float, disp_w: float, short_side: int | None, *, what: str,
                max_aspect: float = MAX_ASPECT_RATIO) -> tuple[int, int]:
    """(H, W) of the stored frames: short side ``short_side`` (None: the displayed short side), the
    long side in proportion and rounded to an even number (ffmpeg's ``scale=-2``).

    Raises GeometryError naming ``what`` when the aspect ratio exceeds ``max_aspect`` or a side
    would exceed the JPEG limit.
    """
    lo, hi = min(disp_h, disp_w), max(disp_h, disp_w)
    if lo <= 0:
        raise GeometryError(f"{what}: empty picture ({disp_w:g}x{disp_h:g})")
    if hi / lo > max_aspect:
        raise GeometryError(f"{what}: picture of {disp_w:g}x{disp_h:g} (width x height, as displayed) has an aspect "
                            f"ratio of {hi / lo:.1f}:1, above the supported {max_aspect:g}:1; crop it to the region "
                            "of interest before ingesting")
    short = short_side if short_side else int(round(lo))
    long_ = max(2, int(round(hi * short / lo / 2)) * 2)
    if long_ > JPEG_MAX_SIDE:
        raise GeometryError(f"{what}: stored frames would be {long_} pixels long, above the JPEG limit of "
                            f"{JPEG_MAX_SIDE}; use a smaller --short-side")
    return (short, long_) if disp_h <= disp_w else (long_, short)
