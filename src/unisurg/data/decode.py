"""Decode a video file to frames sampled at a fixed rate, resized to a given short side.

Output frame k is the decoded frame nearest in time to ``k / fps``, for k = 0 .. ceil(D*fps)-1
where D is the video duration. At 1 fps almost every decoded frame would be thrown away, so by
default the decoder skips frames that no other frame references (``skip_frame=NONREF``: the
non-reference B-frames of H.264/HEVC); when the nearest frame was skipped, a neighbour one or
two frames (40-80 ms at 25 fps) away serves instead. Only kept frames are converted and scaled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


class VideoDecodeError(RuntimeError):
    """A video that cannot be ingested; the message names the file and the reason."""


@dataclass
class DecodedVideo:
    frames: list[np.ndarray]  # uint8 [H, W, 3] each
    height: int
    width: int
    native_fps: float | None
    duration_s: float
    codec: str


def output_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(H, W) with the short side = ``short_side``, the other rounded to an even number (as ffmpeg's -2)."""
    if height <= width:
        w = max(2, int(round(width * short_side / height / 2)) * 2)
        return short_side, w
    h = max(2, int(round(height * short_side / width / 2)) * 2)
    return h, short_side


def _open(path: Path) -> av.container.InputContainer:
    if not path.exists():
        raise VideoDecodeError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"{path}: empty file (0 bytes)")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        raise VideoDecodeError(f"{path}: not a readable video container ({e.strerror or e})") from None


def _stream_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def decode_video(path: str | Path, *, fps: float = 1.0, short_side: int | None = 256,
                 skip_nonref: bool = True, threads: int = 1,
                 truncation_tolerance_s: float = 1.0) -> DecodedVideo:
    """Decode ``path`` at ``fps`` frames per second, resized to ``short_side`` (None: native size).

    Raises VideoDecodeError for an empty, unreadable, truncated or frameless file, or one with no
    video stream. A file whose frames stop more than ``truncation_tolerance_s`` (and 5%) before
    the duration its container declares is reported as truncated.
    """
    path = Path(path)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    container = _open(path)
    try:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: no video stream (streams: {[s.type for s in container.streams]})")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        ctx.thread_count = threads
        ctx.thread_type = "AUTO" if threads != 1 else "SLICE"
        if skip_nonref:
            ctx.skip_frame = "NONREF"
        declared = _stream_duration(container, stream)
        native_fps = float(stream.average_rate) if stream.average_rate else None
        frame_dt = 1.0 / native_fps if native_fps else 0.04
        step = Fraction(1) / Fraction(fps).limit_denominator(1000)

        kept: list[np.ndarray] = []
        size: tuple[int, int] | None = None
        prev = prev_t = None
        k, target = 0, 0.0
        last_t = None
        t0 = None

        def emit(frame):
            nonlocal size
            if size is None:
                size = output_size(frame.height, frame.width, short_side) if short_side else (frame.height, frame.width)
            kept.append(frame.to_ndarray(format="rgb24", height=size[0], width=size[1],
                                         interpolation="BILINEAR"))

        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * frame.time_base)
                if t0 is None:
                    t0 = t  # streams may start at a non-zero timestamp
                t -= t0
                last_t = t
                while t >= target:
                    # nearest of (previous frame, this frame) to the target time
                    use_prev = prev is not None and abs(prev_t - target) <= abs(t - target)
                    emit(prev if use_prev else frame)
                    k += 1
                    target = float(k * step)
                prev, prev_t = frame, t
        except av.FFmpegError as e:
            if not kept and prev is None:
                raise VideoDecodeError(f"{path}: no decodable frame ({e.strerror or e})") from None
            raise VideoDecodeError(f"{path}: corrupt or truncated stream after {last_t or 0:.2f}s ({e.strerror or e})") from None
        if prev is None:
            raise VideoDecodeError(f"{path}: no decodable frame in the video stream")

        span = last_t + frame_dt
        duration = declared if declared is not None else span
        n_out = max(1, math.ceil(round(duration * fps, 6)))
        if declared is not None and declared - span > max(truncation_tolerance_s, 0.05 * declared):
            raise VideoDecodeError(f"{path}: truncated: frames stop at {span:.2f}s of a declared {declared:.2f}s")
        while len(kept) < n_out and float(len(kept) * step) < span:
            emit(prev)  # trailing targets inside the last frame's display time
        del kept[n_out:]
        return DecodedVideo(kept, size[0], size[1], native_fps, duration, ctx.name)
    finally:
        container.close()
