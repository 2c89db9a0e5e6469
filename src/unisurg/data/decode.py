"""Decode a video file to frames sampled at a fixed rate, resized to a given short side.

Output frame k is the decoded frame nearest in time to ``k / fps``, for k = 0 .. ceil(D*fps)-1
where D is the video duration. At 1 fps almost every decoded frame would be thrown away, so by
default the decoder skips frames that no other frame references (``skip_frame=NONREF``: the
non-reference B-frames of H.264/HEVC); when the nearest frame was skipped, a neighbour one or
two frames (40-80 ms at 25 fps) away serves instead. Only kept frames are converted and scaled.

Time is the frames' own timeline, not one clock: each frame advances it by its distance from the
previous frame, and where timestamps jump backwards or far ahead (an MPEG-TS of two recordings
joined, a camera clock reset) by one nominal frame duration instead, so no part of the video is
dropped. A stream starting at t > 0 starts at 0. Frames are shown as their container says:
rotated/mirrored by the display matrix and stretched by the sample aspect ratio
(:mod:`unisurg.data.video_geometry`).

Decoding streams: :class:`VideoSampler` yields one output frame at a time and holds at most two
decoded pictures, so memory does not grow with the video's length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from unisurg.data.video_geometry import (
    GeometryError,
    Orientation,
    display_size,
    orientation_from_matrix,
    parse_display_matrix,
    stored_size,
)


class VideoDecodeError(RuntimeError):
    """A video that cannot be ingested; the message names the file and the reason."""


@dataclass
class VideoInfo:
    """What decoding found; ``n_frames`` is final once the sampler is exhausted."""

    height: int = 0
    width: int = 0
    native_fps: float | None = None
    duration_s: float = 0.0
    codec: str = ""
    n_frames: int = 0
    orientation: str = "none"
    sample_aspect_ratio: float | None = None
    discontinuities: int = 0  # timestamp jumps bridged by one frame duration


@dataclass
class DecodedVideo:
    frames: list[np.ndarray]  # uint8 [H, W, 3] each
    height: int
    width: int
    native_fps: float | None
    duration_s: float
    codec: str
    info: VideoInfo = field(default_factory=VideoInfo)


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


def _frame_orientation(frame) -> Orientation:
    for sd in frame.side_data or ():
        if getattr(sd.type, "name", "") == "DISPLAYMATRIX":
            return orientation_from_matrix(parse_display_matrix(bytes(sd)))
    return Orientation()


def max_timestamp_gap(nominal_dt: float) -> float:
    """Largest forward step between consecutive decoded frames taken at face value: 10 nominal
    frame durations or 2 s, whichever is larger (skipped non-reference frames make steps of 2-4
    frames; anything beyond is a clock jump, bridged by one frame duration)."""
    return max(2.0, 10 * nominal_dt)


class VideoSampler:
    """Iterate over the frames of ``path`` sampled at ``fps`` (see the module docstring).

    Yields ``uint8 [H, W, 3]`` arrays; a frame repeated at consecutive output times (fps above
    the native rate) is the same array object. Frames beyond ``info.n_frames`` may be yielded
    (at most ``truncation_tolerance_s * fps`` of them, when the container declares a slightly
    shorter duration than the frames span): the consumer drops them after the loop.
    """

    def __init__(self, path: str | Path, *, fps: float = 1.0, short_side: int | None = 256,
                 skip_nonref: bool = True, threads: int = 1, truncation_tolerance_s: float = 1.0):
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive finite number, got {fps}")
        self.path = Path(path)
        self.fps, self.short_side, self.skip_nonref = fps, short_side, skip_nonref
        self.threads, self.tolerance = threads, truncation_tolerance_s
        self.info = VideoInfo()

    # -- geometry of the first frame --------------------------------------------------------
    def _geometry(self, frame, stream) -> tuple[Orientation, tuple[int, int], tuple[int, int]]:
        """(orientation, size to scale the decoded picture to, stored size)."""
        try:
            orient = _frame_orientation(frame)
            sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
            sar = Fraction(sar) if sar else None
            if sar is not None and sar == 1:
                sar = None
            disp_h, disp_w = display_size(frame.height, frame.width, sar, orient)
            what = f"{self.path}"
            if self.short_side is None and sar is None:
                stored_size(disp_h, disp_w, int(min(disp_h, disp_w)), what=what)  # bounds only
                out = (int(disp_h), int(disp_w))
            else:
                out = stored_size(disp_h, disp_w, self.short_side, what=what)
        except GeometryError as e:
            raise VideoDecodeError(str(e)) from None
        scale_to = (out[1], out[0]) if orient.swaps_axes else out
        self.info.orientation = orient.describe()
        self.info.sample_aspect_ratio = float(sar) if sar else None
        return orient, scale_to, out

    def __iter__(self) -> Iterator[np.ndarray]:
        path = self.path
        container = _open(path)
        try:
            if not container.streams.video:
                raise VideoDecodeError(f"{path}: no video stream (streams: {[s.type for s in container.streams]})")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            ctx.thread_count = self.threads
            ctx.thread_type = "AUTO" if self.threads != 1 else "SLICE"
            if self.skip_nonref:
                ctx.skip_frame = "NONREF"
            declared = _stream_duration(container, stream)
            native_fps = float(stream.average_rate) if stream.average_rate else None
            frame_dt = 1.0 / native_fps if native_fps else 0.04
            max_gap = max_timestamp_gap(frame_dt)
            step = Fraction(1) / Fraction(self.fps).limit_denominator(1000)
            info = self.info
            info.native_fps, info.codec = native_fps, ctx.name

            orient = scale_to = None
            cache: dict[int, np.ndarray] = {}  # id(frame) -> converted picture, for prev and current only

            def convert(frame) -> np.ndarray:
                arr = cache.get(id(frame))
                if arr is None:
                    arr = frame.to_ndarray(format="rgb24", height=scale_to[0], width=scale_to[1],
                                           interpolation="BILINEAR")
                    arr = np.ascontiguousarray(orient.apply(arr))
                    cache[id(frame)] = arr
                return arr

            prev = prev_t = None
            k, target, emitted = 0, 0.0, 0
            t = None  # position of the current frame on the video's own timeline
            raw_prev = raw_last = None
            try:
                for frame in container.decode(stream):
                    raw = float(frame.pts * frame.time_base) if frame.pts is not None else None
                    if t is None:
                        t = 0.0
                        orient, scale_to, out = self._geometry(frame, stream)
                        info.height, info.width = out
                    elif raw is None or raw_prev is None:
                        t += frame_dt
                    else:
                        gap = raw - raw_prev
                        if 0 < gap <= max_gap:
                            t += gap
                        else:  # a clock jump: continue by frame order
                            info.discontinuities += 1
                            t += frame_dt
                    if raw is not None:
                        raw_prev = raw_last = raw
                    while t >= target:
                        # nearest of (previous frame, this frame) to the target time
                        use_prev = prev is not None and abs(prev_t - target) <= abs(t - target)
                        yield convert(prev if use_prev else frame)
                        emitted += 1
                        k += 1
                        target = float(k * step)
                    if prev is not None and prev is not frame:
                        cache.pop(id(prev), None)
                    prev, prev_t = frame, t
            except av.FFmpegError as e:
                if prev is None:
                    raise VideoDecodeError(f"{path}: no decodable frame ({e.strerror or e})") from None
                raise VideoDecodeError(f"{path}: corrupt or truncated stream after {t or 0:.2f}s "
                                       f"({e.strerror or e})") from None
            if prev is None:
                raise VideoDecodeError(f"{path}: no decodable frame in the video stream")

            span = prev_t + frame_dt
            # The container's duration may count from 0 or from the first timestamp (Matroska
            # stores the end time): the frames reach it if either their span or their end does.
            abs_end = (raw_last + frame_dt) if raw_last is not None else span
            reached = max(span, abs_end)
            if declared is not None and declared - reached > max(self.tolerance, 0.05 * declared):
                raise VideoDecodeError(f"{path}: truncated: frames stop at {span:.2f}s of a declared {declared:.2f}s")
            consistent = declared is not None and not info.discontinuities and abs(declared - span) <= max(
                self.tolerance, 0.05 * declared)
            duration = declared if consistent else round(span, 6)
            n_out = max(1, math.ceil(round(duration * self.fps, 6)))
            while emitted < n_out and float(emitted * step) < span:
                yield convert(prev)  # trailing targets inside the last frame's display time
                emitted += 1
            info.duration_s = duration
            info.n_frames = min(emitted, n_out)
        finally:
            container.close()


def decode_video(path: str | Path, *, fps: float = 1.0, short_side: int | None = 256,
                 skip_nonref: bool = True, threads: int = 1,
                 truncation_tolerance_s: float = 1.0) -> DecodedVideo:
    """All sampled frames of ``path`` in memory (short videos; ingest streams with :class:`VideoSampler`).

    Raises VideoDecodeError for an empty, unreadable, truncated or frameless file, one with no
    video stream, or one whose picture cannot be stored (aspect ratio, orientation). A file whose
    frames stop more than ``truncation_tolerance_s`` (and 5%) before the duration its container
    declares is reported as truncated.
    """
    sampler = VideoSampler(path, fps=fps, short_side=short_side, skip_nonref=skip_nonref, threads=threads,
                           truncation_tolerance_s=truncation_tolerance_s)
    frames = [f.copy() for f in sampler]  # repeated frames are one object: copy so callers may edit
    info = sampler.info
    del frames[info.n_frames:]
    return DecodedVideo(frames, info.height, info.width, info.native_fps, info.duration_s, info.codec, info)
