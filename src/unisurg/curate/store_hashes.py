"""Perceptual hashes of every stored frame of a store (cached, incremental), and of media files.

Store: ``STORE/curation/phash.npz`` holds, per ok video, the 64-bit hash and the thumbnail
contrast of each stored frame (:func:`unisurg.curate.phash.hash_frames`), with the video's
:func:`~unisurg.curate.corpus_files.video_signature`. A rerun hashes only videos that are new or
were re-ingested since; the cache is rewritten atomically when done (and every few minutes on a
long run, so an interrupted run keeps most of its work).

Media (benchmark test videos, any video file or frame folder): decoded with
:func:`~unisurg.data.decode.decode_video` at the store's frame rate, so frame k of a test video and
frame k of a stored copy show the same instant; at a short side of at most 128 px (the hash reads a
32 x 32 area thumbnail, so more pixels add nothing but memory). Frame folders are taken at their
own rate and resampled to the store rate as the benchmark does. Results are cached under
``STORE/curation/media_hashes/`` keyed by path, size, mtime and settings.

Frames whose thumbnail contrast is below ``min_contrast`` (black screens, fades) carry no
structure and are marked invalid for matching (:meth:`FrameHashes.valid`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable, Literal

import numpy as np
from tqdm import tqdm

from unisurg.atomic_files import write_atomic
from unisurg.curate.corpus_files import CurationError, curation_dir, video_signature
from unisurg.curate.phash import hash_frames
from unisurg.data.decode import decode_video
from unisurg.data.image_files import read_image
from unisurg.data.media_store import list_frame_images, resample_folder_indices
from unisurg.data.ray_engine import RayOptions, check_engine, ray_map
from unisurg.data.store import FrameStore

PHASH_NAME = "phash.npz"
HASH_CACHE_VERSION = 1
DEFAULT_MIN_CONTRAST = 4.0  # thumbnail std (0-255) below which a frame is near-uniform (phash.hash_frames)
MEDIA_SHORT_SIDE_MAX = 128
HashKind = Literal["dct", "dhash"]


@dataclass
class FrameHashes:
    """Per-video frame hashes (``uint64``, temporal order) and thumbnail contrasts (``float32``)."""

    hashes: dict[str, np.ndarray] = field(default_factory=dict)
    contrast: dict[str, np.ndarray] = field(default_factory=dict)
    kind: str = "dct"

    def __len__(self) -> int:
        return len(self.hashes)

    def valid(self, min_contrast: float = DEFAULT_MIN_CONTRAST) -> dict[str, np.ndarray]:
        """``{video id: bool mask}`` of frames informative enough to match."""
        return {k: c >= min_contrast for k, c in self.contrast.items()}

    def subset(self, ids: Iterable[str]) -> "FrameHashes":
        ids = [i for i in ids if i in self.hashes]
        return FrameHashes({i: self.hashes[i] for i in ids}, {i: self.contrast[i] for i in ids}, self.kind)

    @property
    def n_frames(self) -> int:
        return int(sum(len(h) for h in self.hashes.values()))


def hash_store_video(store: FrameStore, video_id: str, kind: HashKind = "dct", chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Hashes and contrasts of every stored frame of one video, decoded ``chunk`` frames at a time."""
    n = store.record(video_id).n_frames
    hs, cs = [], []
    for s in range(0, n, chunk):
        h, c = hash_frames(store.read_frames(video_id, s, min(chunk, n - s)), kind=kind)
        hs.append(h)
        cs.append(c)
    return np.concatenate(hs), np.concatenate(cs)


# -- the store cache ----------------------------------------------------------------------------


def phash_path(store_root: str | Path) -> Path:
    return curation_dir(store_root) / PHASH_NAME


def _read_cache(path: Path, kind: str, log: Callable[[str], None]) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """``{video id: (signature, hashes, contrast)}`` from the cache file (empty if absent or of another kind)."""
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            ids, sigs, offsets = z["ids"].tolist(), z["signatures"].tolist(), z["offsets"]
            hashes, contrast = z["hashes"], z["contrast"]
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
        log(f"note: {path} is unreadable ({e}); hashing every video again")
        return {}
    if meta.get("kind") != kind or meta.get("version") != HASH_CACHE_VERSION:
        log(f"note: {path} holds {meta.get('kind')} hashes (version {meta.get('version')}); recomputing {kind} hashes")
        return {}
    return {v: (s, hashes[offsets[i]:offsets[i + 1]], contrast[offsets[i]:offsets[i + 1]]) for i, (v, s) in enumerate(zip(ids, sigs))}


def _write_cache(path: Path, kind: str, entries: dict[str, tuple[str, np.ndarray, np.ndarray]]) -> None:
    ids = sorted(entries)
    lengths = [len(entries[v][1]) for v in ids]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    hashes = np.concatenate([entries[v][1] for v in ids]).astype(np.uint64) if ids else np.zeros(0, np.uint64)
    contrast = np.concatenate([entries[v][2] for v in ids]).astype(np.float32) if ids else np.zeros(0, np.float32)
    write_atomic(path, lambda f: np.savez(
        f, meta=np.array(json.dumps({"kind": kind, "version": HASH_CACHE_VERSION})), ids=np.array(ids, dtype=str),
        signatures=np.array([entries[v][0] for v in ids], dtype=str), offsets=offsets, hashes=hashes, contrast=contrast))


_WORKER_STORE: FrameStore | None = None


def _init_worker(root: str) -> None:
    global _WORKER_STORE
    _WORKER_STORE = FrameStore(root)


def _hash_in_worker(args: tuple[str, str]) -> tuple[str, np.ndarray, np.ndarray]:
    vid, kind = args
    h, c = hash_store_video(_WORKER_STORE, vid, kind)
    return vid, h, c


def _hash_as_ray_task(args: tuple[str, str, str]) -> tuple[str, np.ndarray, np.ndarray]:
    """One video's hashes on a Ray worker (the store opened per task: a long-lived worker never sees a stale manifest)."""
    root, vid, kind = args
    return (vid, *hash_store_video(FrameStore(root), vid, kind))


def store_hashes(store_root: str | Path, *, kind: HashKind = "dct", workers: int = 1, progress: bool = False,
                 checkpoint_seconds: float = 300.0, log: Callable[[str], None] = print, engine: str = "local",
                 ray: RayOptions | None = None) -> tuple[FrameHashes, dict]:
    """Hashes of every ok video's stored frames, from the cache where still valid; returns them
    and ``{"hashed": n, "reused": n, "frames": n, "seconds": s}``. ``engine="ray"``: one Ray task
    per video returning its hashes; this process alone writes the cache."""
    check_engine(engine)
    t0 = time.perf_counter()
    store = FrameStore(store_root)
    path = phash_path(store_root)
    cached = _read_cache(path, kind, log)
    sigs = {r.id: video_signature(r) for r in store.records}
    entries = {v: e for v, e in cached.items() if sigs.get(v) == e[0]}
    todo = [v for v in sigs if v not in entries]
    last_save = time.monotonic()

    bar = tqdm(total=len(todo), desc="phash", unit="video", disable=not progress)

    def done(vid: str, h: np.ndarray, c: np.ndarray) -> None:
        nonlocal last_save
        entries[vid] = (sigs[vid], h, c)
        bar.update(1)
        if time.monotonic() - last_save > checkpoint_seconds:
            _write_cache(path, kind, entries)
            last_save = time.monotonic()

    try:
        if engine == "ray":
            for _, (vid, h, c) in ray_map(_hash_as_ray_task, [(str(store_root), v, kind) for v in todo], ray or RayOptions()):
                done(vid, h, c)
        elif workers <= 1 or len(todo) <= 1:
            for vid in todo:
                done(vid, *hash_store_video(store, vid, kind))
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                     initargs=(str(store_root),)) as pool:
                for vid, h, c in pool.map(_hash_in_worker, [(v, kind) for v in todo], chunksize=4):
                    done(vid, h, c)
    finally:
        bar.close()
        if todo or set(entries) != set(cached):
            _write_cache(path, kind, {v: entries[v] for v in sigs if v in entries})
    out = FrameHashes({v: entries[v][1] for v in sigs}, {v: entries[v][2] for v in sigs}, kind)
    return out, {"hashed": len(todo), "reused": len(sigs) - len(todo), "frames": out.n_frames,
                 "seconds": round(time.perf_counter() - t0, 3)}


# -- media files --------------------------------------------------------------------------------


def media_short_side(store_short_side: int | None) -> int:
    return min(int(store_short_side or MEDIA_SHORT_SIDE_MAX), MEDIA_SHORT_SIDE_MAX)


def hash_video_file(path: str | Path, *, fps: float, short_side: int = MEDIA_SHORT_SIDE_MAX, kind: HashKind = "dct",
                    segment: tuple[float | None, float | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of a video file sampled at ``fps`` (frames ``floor(start*fps) .. ceil(end*fps)-1`` of a segment)."""

    video = decode_video(path, fps=fps, short_side=short_side)
    frames = video.frames
    if segment is not None:
        a = 0 if segment[0] is None else max(0, int(math.floor(segment[0] * fps + 1e-9)))
        b = len(frames) if segment[1] is None else max(a + 1, int(math.ceil(segment[1] * fps - 1e-9)))
        frames = frames[a:b]
    if not frames:  # a segment past the end of the video
        return np.zeros(0, np.uint64), np.zeros(0, np.float32)
    return hash_frames(np.stack(frames), kind=kind)


def hash_images(paths: list[Path], *, kind: HashKind = "dct") -> tuple[np.ndarray, np.ndarray]:
    """Hashes of image files taken as consecutive frames (any size; one image at a time in memory)."""

    hs, cs = [], []
    for p in paths:
        h, c = hash_frames(np.asarray(read_image(p))[None], kind=kind)
        hs.append(h)
        cs.append(c)
    if not hs:
        return np.zeros(0, np.uint64), np.zeros(0, np.float32)
    return np.concatenate(hs), np.concatenate(cs)


def hash_frame_folder(folder: str | Path, *, folder_fps: float, fps: float, kind: HashKind = "dct") -> tuple[np.ndarray, np.ndarray]:
    """Hashes of a folder of frames (natural name order) at ``folder_fps``, resampled to ``fps``."""

    images = list_frame_images(Path(folder))
    picks = resample_folder_indices(len(images), folder_fps, fps)
    uniq, inverse = np.unique(picks, return_inverse=True)
    h, c = hash_images([images[i] for i in uniq], kind=kind)
    return h[inverse], c[inverse]


def _media_cache_key(path: Path, settings: dict) -> str:
    p = path.resolve()
    if p.is_dir():
        stats = [q.stat() for q in p.iterdir() if q.is_file()]
        sig = [sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0), len(stats)]
    else:
        st = p.stat()
        sig = [st.st_size, st.st_mtime_ns]
    return hashlib.sha1(json.dumps([str(p), sig, settings, HASH_CACHE_VERSION], sort_keys=True).encode()).hexdigest()


def media_hashes(path: str | Path, *, fps: float, short_side: int = MEDIA_SHORT_SIDE_MAX, kind: HashKind = "dct",
                 folder_fps: float = 1.0, segment: tuple[float | None, float | None] | None = None,
                 cache_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of a video file or a frame folder (see module doc), cached in ``cache_dir`` when given."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such video file or frame folder")
    settings = {"fps": fps, "short_side": short_side, "kind": kind, "folder_fps": folder_fps if path.is_dir() else None,
                "segment": list(segment) if segment is not None else None}
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{_media_cache_key(path, settings)}.npz"
        if cache_file.exists():
            try:
                with np.load(cache_file) as z:
                    return z["hashes"], z["contrast"]
            except (OSError, KeyError, ValueError):
                cache_file.unlink(missing_ok=True)
    if path.is_dir():
        h, c = hash_frame_folder(path, folder_fps=folder_fps, fps=fps, kind=kind)
    else:
        h, c = hash_video_file(path, fps=fps, short_side=short_side, kind=kind, segment=segment)
    if cache_file is not None:
        write_atomic(cache_file, lambda f: np.savez(f, hashes=h, contrast=c))
    return h, c


def media_cache_dir(store_root: str | Path) -> Path:
    return curation_dir(store_root) / "media_hashes"


def store_rate(store_root: str | Path) -> tuple[float, int]:
    """``(fps, short side)`` the store was ingested with."""
    store = FrameStore(store_root)
    fps, short = store.meta.get("fps"), store.meta.get("short_side")
    if not fps:
        raise CurationError(f"{store_root}: the manifest records no frame rate; re-create the store with `unisurg ingest`")
    return float(fps), int(short or MEDIA_SHORT_SIDE_MAX)


__all__ = [
    "DEFAULT_MIN_CONTRAST",
    "FrameHashes",
    "hash_frame_folder",
    "hash_images",
    "hash_store_video",
    "hash_video_file",
    "media_cache_dir",
    "media_hashes",
    "media_short_side",
    "phash_path",
    "store_hashes",
    "store_rate",
]
