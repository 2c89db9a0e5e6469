"""The frame store: sampled frames of every ingested video, JPEG-encoded, one pack file per video.

Layout::

    STORE/manifest.sqlite          one row per source video (see manifest.py)
    STORE/frames/<dataset>/<name>.ujpk

A pack is a small header, the byte offsets of every frame, then the JPEG bytes back to back::

    b"UJPK0001" | uint32 n, height, width, reserved | int64 offsets[n + 1] | jpeg bytes

Why this format (measured, see benchmarks/clip_loading.py): JPEG frames decode ~10x faster
than re-decoding H.264, and a clip of T consecutive frames is one ``pread`` of contiguous bytes,
with one file per video rather than millions of small files. A pack is written to a temporary
name, fsynced and renamed, so a reader never sees a torn pack.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg

from unisurg.data.manifest import MANIFEST_NAME, Manifest, ManifestError, VideoRecord
from unisurg.data.pack_writer import MAGIC, write_pack_streaming
from unisurg.data.pack_writer import PACK_HEADER as _HEADER
from unisurg.data.store_errors import StoreError, StoreWriteError  # noqa: F401  (StoreWriteError: re-exported)


def write_pack(path: Path, jpegs: list[bytes], height: int, width: int) -> None:
    """Write a frame pack atomically (temp file, fsync, rename); see :mod:`unisurg.data.pack_writer`."""
    write_pack_streaming(path, jpegs, height, width)


@dataclass
class PackIndex:
    path: Path
    n: int
    height: int
    width: int
    data_start: int
    offsets: np.ndarray  # int64 [n + 1], relative to data_start


def read_pack_index(path: Path) -> PackIndex:
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size:
                raise StoreError(f"{path}: truncated frame pack header")
            magic, n, h, w, _ = _HEADER.unpack(head)
            if magic != MAGIC:
                raise StoreError(f"{path}: not a unisurg frame pack (bad magic {magic!r})")
            raw = f.read(8 * (n + 1))
    except FileNotFoundError:
        raise StoreError(f"{path}: frame pack missing; re-run `unisurg ingest` on this store") from None
    if len(raw) < 8 * (n + 1):
        raise StoreError(f"{path}: truncated frame pack index")
    offsets = np.frombuffer(raw, dtype="<i8")
    return PackIndex(path, n, h, w, _HEADER.size + 8 * (n + 1), offsets)


def read_jpegs(index: PackIndex, start: int, count: int) -> list[bytes]:
    """The JPEG bytes of frames ``start .. start+count-1``: one contiguous read."""
    if start < 0 or start + count > index.n:
        raise IndexError(f"{index.path}: frames {start}..{start + count - 1} outside 0..{index.n - 1}")
    lo, hi = int(index.offsets[start]), int(index.offsets[start + count])
    fd = os.open(index.path, os.O_RDONLY)
    try:
        blob = os.pread(fd, hi - lo, index.data_start + lo)
    finally:
        os.close(fd)
    rel = index.offsets[start:start + count + 1] - lo
    return [blob[rel[i]:rel[i + 1]] for i in range(count)]


def decode_jpegs(jpegs: list[bytes], out: np.ndarray | None = None) -> np.ndarray:
    """Decode same-sized JPEG frames to ``uint8 [n, H, W, 3]`` (RGB)."""
    first = simplejpeg.decode_jpeg(jpegs[0], colorspace="RGB")
    if out is None:
        out = np.empty((len(jpegs),) + first.shape, dtype=np.uint8)
    out[0] = first
    for i in range(1, len(jpegs)):
        out[i] = simplejpeg.decode_jpeg(jpegs[i], colorspace="RGB")
    return out


class FrameStore:
    """Read access to a store: the manifest's ok videos and their frames.

    Pack indexes are read lazily and cached per process, so a DataLoader worker pays the
    header read once per video it touches.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest_path = self.root / MANIFEST_NAME
        if not manifest_path.exists():
            raise StoreError(f"{self.root}: no {MANIFEST_NAME}; create the store with `unisurg ingest ... --out {self.root}`")
        try:
            with Manifest(manifest_path, readonly=True) as m:
                self.meta = m.get_meta()
                self.all_records = m.records()
        except ManifestError as e:
            raise StoreError(str(e)) from None
        self.records = [r for r in self.all_records if r.status == "ok" and r.n_frames > 0]
        self._by_id = {r.id: r for r in self.records}
        self._index: dict[str, PackIndex] = {}

    def __len__(self) -> int:
        return len(self.records)

    def record(self, video_id: str) -> VideoRecord:
        try:
            return self._by_id[video_id]
        except KeyError:
            raise StoreError(f"{self.root}: no ingested video with id '{video_id}'") from None

    def index(self, video_id: str) -> PackIndex:
        idx = self._index.get(video_id)
        if idx is None:
            rec = self.record(video_id)
            idx = read_pack_index(self.root / rec.pack)
            if idx.n != rec.n_frames:
                raise StoreError(f"{idx.path}: pack holds {idx.n} frames, manifest says {rec.n_frames}; re-ingest this video")
            self._index[video_id] = idx
        return idx

    def read_jpegs(self, video_id: str, start: int, count: int) -> list[bytes]:
        return read_jpegs(self.index(video_id), start, count)

    def read_frames(self, video_id: str, start: int = 0, count: int | None = None) -> np.ndarray:
        """Decoded frames ``uint8 [count, H, W, 3]``."""
        idx = self.index(video_id)
        if count is None:
            count = idx.n - start
        return decode_jpegs(read_jpegs(idx, start, count))

    def __getstate__(self):  # DataLoader workers start with an empty index cache
        state = dict(self.__dict__)
        state["_index"] = {}
        return state
