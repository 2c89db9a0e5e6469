"""Plausibility limits of annotation values: what no real surgical recording reaches.

The limits are generous (a day of video; the longest videos of the supported datasets last a few
hours) and exist to catch unit and typing mistakes before they allocate a label vector: an end
time written in milliseconds (3,600,000 "seconds" = 1,000 hours) or a frame id with extra digits
(10,000,000 at 1 fps = 116 days).
"""

from __future__ import annotations

import math

import numpy as np

MAX_VIDEO_SECONDS = 24 * 3600  # one day


def plausible_seconds(value: float) -> bool:
    """A time (seconds from the start of a video) that is finite, >= 0 and within a day."""
    return math.isfinite(value) and 0 <= value <= MAX_VIDEO_SECONDS


def describe_seconds(value: float) -> str:
    """``3600000`` -> ``"3600000 s (1000.0 hours)"`` for error messages."""
    return f"{value:g} s ({value / 3600:.1f} hours)" if math.isfinite(value) else f"{value}"


def integral(value) -> int | None:
    """``value`` as an int if it is an integer or an integral finite float (``2.0``), else None
    (``2.9``, NaN, inf, strings, bools)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None
