"""Turning frame- or segment-level annotations into one label per second (the 1 fps protocol).

The phase-recognition protocol predicts one label per second; the label of second ``t`` is the
label of the frame on screen at time ``t`` (Cholec80 at 25 fps: frames 0, 25, 50, ...).
"""

from __future__ import annotations

import math

import numpy as np


def seconds_in_video(last_frame: int, fps: float) -> int:
    """Number of whole-second instants ``t = 0, 1, ...`` that fall inside frames ``0..last_frame``.

    Frame ``k`` is on screen during ``[k/fps, (k+1)/fps)``, so the video lasts ``(last_frame+1)/fps``
    seconds and instants ``t < (last_frame+1)/fps`` are inside it.
    """
    return int(math.ceil((last_frame + 1) / fps - 1e-9))


def frame_labels_to_seconds(frames: np.ndarray, labels: np.ndarray, fps: float) -> np.ndarray:
    """One label per second from labels of increasing frame indices starting at 0.

    Second ``t`` takes the label of the last annotated frame ``<= floor(t * fps)``: with one row per
    frame (Cholec80, 25 fps) that is exactly frame ``25 t``; with sparser rows it is the label in
    force at that frame (a step function).

    Args:
        frames: ``int [n]`` strictly increasing, ``frames[0] == 0``.
        labels: ``int [n]``.
        fps: frame rate of the frame indices (25 for Cholec80, 0.5 for 1-every-2-s annotations).
    """
    frames = np.asarray(frames, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if frames.ndim != 1 or frames.shape != labels.shape or frames.size == 0:
        raise ValueError("frames and labels must be non-empty 1-D arrays of the same length")
    if frames[0] != 0 or np.any(np.diff(frames) <= 0):
        raise ValueError("frames must start at 0 and strictly increase")
    n = seconds_in_video(int(frames[-1]), fps)
    targets = np.floor(np.arange(n, dtype=np.float64) * fps + 1e-9).astype(np.int64)
    idx = np.searchsorted(frames, targets, side="right") - 1
    return labels[idx]


def segments_to_seconds(
    starts: np.ndarray, ends: np.ndarray, labels: np.ndarray, background: int, n_seconds: int | None = None
) -> np.ndarray:
    """One label per second from ``[start, end)`` segments in seconds (OphNet).

    Second ``t`` gets the label of the segment with ``start <= t < end``; where segments overlap the
    one that starts later wins (ties: the later row), and seconds covered by no segment get
    ``background``.  The video is taken to last ``ceil(max(end))`` seconds unless ``n_seconds`` is
    given.
    """
    starts = np.asarray(starts, dtype=np.float64)
    ends = np.asarray(ends, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if n_seconds is None:
        n_seconds = int(math.ceil(float(ends.max()) - 1e-9)) if ends.size else 0
    out = np.full(n_seconds, background, dtype=np.int64)
    order = np.lexsort((np.arange(starts.size), starts))  # by start, then by row
    for i in order:
        lo = int(math.ceil(starts[i] - 1e-9))
        hi = int(math.ceil(ends[i] - 1e-9))  # integer t < end  <=>  t <= ceil(end) - 1
        out[max(lo, 0) : max(min(hi, n_seconds), 0)] = labels[i]
    return out
