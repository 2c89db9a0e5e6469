"""Samples of a benchmark split: what each clip/image is made of, its target and its metric group."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class SampleRef:
    """One probe input.

    Attributes:
        key: unique within the split (``"video01@37"``: second 37 of video01).
        group: index into :attr:`SplitData.groups` (the video / clip / image it belongs to).
        media: resolved path of the video file or frame folder (looked up in the frame store), or
            of the still image (dense tasks).
        indices: stored-frame indices ``int64 [T]`` of the clip; ``None`` for a still image.
        crop: where the ``res x res`` crop sits along each axis, 0 = top/left, 0.5 = centre (default),
            1 = bottom/right (the spatial test views of SurgRec's protocol).
    """

    key: str
    group: int
    media: str
    indices: np.ndarray | None = None
    crop: float = 0.5


@dataclass(eq=False)
class SplitData:
    """All samples of one split, in a fixed order (the order of the feature cache).

    ``targets``: per-sample targets (classes ``int64 [n]``, multi-hot ``uint8 [n, C]``, scores
    ``float [n]``) or, for dense tasks, a list of ``(target path, extra)`` per sample.
    ``groups``: names of the metric units (videos, clips, images); ``group_info`` their metadata
    (e.g. full per-second ground truth of a video, the test subset of an image).
    """

    name: str
    refs: list[SampleRef]
    targets: Any
    groups: list[str]
    group_info: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.refs)

    def group_index(self) -> np.ndarray:
        return np.fromiter((r.group for r in self.refs), dtype=np.int64, count=len(self.refs))

    def keys_digest(self) -> str:
        """SHA-1 of the sample keys and frame indices: the cache is only reused for the same samples."""

        h = hashlib.sha1()
        for r in self.refs:
            h.update(r.key.encode())
            h.update(r.media.encode())
            if r.indices is not None:
                h.update(np.ascontiguousarray(r.indices, dtype=np.int64).tobytes())
        return h.hexdigest()
