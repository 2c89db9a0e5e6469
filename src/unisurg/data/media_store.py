"""Benchmark media -> a frame store (1 fps JPEG packs, short side S), built once and reused.

Videos go through :func:`unisurg.data.ingest.ingest` (resumable, parallel). Datasets distributed
as folders of frames (CholecT50, PmLR50, EgoSurgery, PitVis) are packed here: the folder's images,
in natural name order, are taken at the folder's frame rate ``r`` (``clip.frame_folder_fps``, else
the record's ``fps_source``, else 1) and resampled to the store rate ``f`` by taking, for stored
frame ``k``, image ``floor(k * r / f)`` (nearest earlier image), then resized to short side S.

One store per (rate, short side, JPEG quality), shared by all datasets:
``CACHE/frames/fps<f>-s<S>-q<Q>/``. A pack written for a folder is atomic (temp + rename) and
its manifest row is committed after it, as for videos, so an interrupted build resumes.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import simplejpeg
import torch

from unisurg.data.claims import (
    claim_video,
    ensure_claims_table,
    record_and_release,
    release_claim,
)
from unisurg.data.clips import resize_short_side
from unisurg.data.decode import output_size
from unisurg.data.image_files import read_image
from unisurg.data.ingest import (
    IngestItem,
    IngestParams,
    format_summary,
    ingest,
    make_video_id,
)
from unisurg.data.manifest import MANIFEST_NAME, Manifest, VideoRecord
from unisurg.data.store import FrameStore, StoreError, write_pack
from unisurg.data.store_access import store_writable
from unisurg.data.store_writer_id import current_writer

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class MediaError(FileNotFoundError):
    """A benchmark record's media (video file, frame folder, image) is missing or unreadable."""


def store_root(cache_dir: Path, fps: float, short_side: int, quality: int) -> Path:
    return Path(cache_dir).expanduser() / "frames" / f"fps{fps:g}-s{short_side}-q{quality}"


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def list_frame_images(folder: Path) -> list[Path]:
    """Images of a frame folder in natural order (``2.png`` before ``10.png``)."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise MediaError(f"{folder}: frame folder holds no image ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(files, key=_natural_key)


def resample_folder_indices(n_images: int, folder_fps: float, store_fps: float) -> np.ndarray:
    """Image index of every stored frame: ``floor(k * r / f)`` for ``k < ceil(n * f / r)``."""
    n_out = max(1, math.ceil(round(n_images * store_fps / folder_fps, 6)))
    return np.minimum((np.arange(n_out) * folder_fps / store_fps).astype(np.int64), n_images - 1)


def _encode_resized(path: Path, short_side: int, quality: int) -> tuple[bytes, int, int]:
    img = np.array(read_image(path))  # writable copy (PIL arrays are read-only)
    h, w = output_size(img.shape[0], img.shape[1], short_side)
    if (h, w) != img.shape[:2]:
        img = resize_short_side(torch.from_numpy(img)[None], min(h, w))[0].numpy()
    return simplejpeg.encode_jpeg(np.ascontiguousarray(img), quality=quality, colorspace="RGB"), img.shape[0], img.shape[1]


def _folder_signature(folder: Path, images: list[Path]) -> tuple[int, int]:
    """(total bytes, newest mtime) of the images: a changed folder is re-packed."""
    stats = [p.stat() for p in images]
    return sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats)


def claim_folder(manifest: Manifest, folder: Path, dataset: str, is_done, poll_s: float = 0.5) -> tuple[str, str]:
    """Claim a frame folder as ingest claims a video (:mod:`unisurg.data.claims`), waiting while
    another live writer holds it; ``("done", id)`` or ``("mine", id)``."""
    me = current_writer()
    item = IngestItem(folder, dataset, "unspecified")
    while True:
        c = claim_video(manifest, str(folder), me, is_done=is_done, new_id=lambda taken: make_video_id(item, taken))
        if c.state != "busy":
            return c.state, c.id
        time.sleep(poll_s)


def pack_frame_folder(folder: Path, root: Path, dataset: str, params: IngestParams, folder_fps: float,
                      manifest: Manifest, taken: set[str], existing: dict[str, VideoRecord]) -> str:
    """Pack one frame folder into the store (skipped when already packed and unchanged); returns its id."""
    images = list_frame_images(folder)
    size, mtime = _folder_signature(folder, images)
    old = existing.get(str(folder))
    if old is not None and old.status == "ok" and (old.size_bytes, old.mtime_ns) == (size, mtime) \
            and old.pack and (root / old.pack).exists():
        return old.id
    state, vid = claim_folder(manifest, folder, dataset, lambda row: row is not None and row.status == "ok"
                              and (row.size_bytes, row.mtime_ns) == (size, mtime) and bool(row.pack)
                              and (root / row.pack).exists())
    if state == "done":  # packed meanwhile by a concurrent build
        return vid
    try:
        picks = resample_folder_indices(len(images), folder_fps, params.fps)
        jpegs, hw, cache = [], None, {}
        for i in picks:
            if i not in cache:
                cache = {i: _encode_resized(images[i], params.short_side, params.jpeg_quality)}
            data, h, w = cache[i]
            if hw is None:
                hw = (h, w)
            elif hw != (h, w):
                raise MediaError(f"{images[i]}: frame size {h}x{w} differs from the folder's first frame {hw[0]}x{hw[1]}")
            jpegs.append(data)
        rel = Path("frames") / f"{vid}.ujpk"
        write_pack(root / rel, jpegs, hw[0], hw[1])
        rec = VideoRecord(id=vid, dataset=dataset, specialty="unspecified", source=str(folder), status="ok",
                          n_frames=len(jpegs), height=hw[0], width=hw[1], native_fps=folder_fps, fps=params.fps,
                          duration_s=len(images) / folder_fps, size_bytes=size, mtime_ns=mtime, codec="images",
                          pack=str(rel))
        record_and_release(manifest, rec, current_writer())
    except BaseException:
        release_claim(manifest, str(folder), current_writer())
        raise
    return vid


def build_store(media: Iterable[tuple[Path, float | None]], cache_dir: Path, dataset: str, *, fps: float,
                short_side: int, quality: int = 90, workers: int = 1, progress: bool = False) -> tuple[FrameStore, dict[str, str]]:
    """Ingest the given media into the shared store; returns the store and ``{str(resolved media path): store id}``.

    ``media``: ``(path, folder_fps)`` pairs; ``folder_fps`` is used for frame folders only.
    Raises :class:`MediaError` naming every missing file (all of them, not only the first).
    """
    params = IngestParams(fps=fps, short_side=short_side, jpeg_quality=quality)
    root = store_root(cache_dir, fps, short_side, quality)
    items = {}
    for path, folder_fps in media:
        p = Path(path).resolve()
        items.setdefault(str(p), (p, folder_fps))
    missing = [k for k, (p, _) in items.items() if not p.exists()]
    if missing:
        shown = ", ".join(missing[:5]) + (f" ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise MediaError(f"{dataset}: media not found: {shown}. The annotations were found but not the videos/frames; "
                         "put the media where the dataset's layout expects it (see the adapter's docstring)")
    videos = [IngestItem(p, dataset, "unspecified") for p, _ in items.values() if p.is_file()]
    summary = ingest(videos, root, params, workers=workers, progress=progress)  # also creates/validates the store
    if summary.failed:
        raise MediaError(f"{dataset}: some videos could not be decoded:\n{format_summary(summary)}")
    folders = [(p, ffps) for p, ffps in items.values() if p.is_dir()]
    if folders and store_writable(root):
        with Manifest(root / MANIFEST_NAME) as manifest:
            ensure_claims_table(manifest.conn)
            existing, taken = manifest.by_source(), manifest.ids()
            for p, ffps in folders:
                pack_frame_folder(p, root, dataset, params, float(ffps or 1.0), manifest, taken, existing)
    # a read-only store must already hold every folder: checked below with the videos
    store = FrameStore(root)
    ids = {r.source: r.id for r in store.records}
    ids.update({src: vid for src, vid in summary.duplicates if src not in ids})  # same bytes: one copy of the frames
    lost = [k for k in items if k not in ids]
    if lost:
        raise StoreError(f"{root}: media not in the store after ingest: {', '.join(lost[:5])}")
    return store, {k: ids[k] for k in items}
