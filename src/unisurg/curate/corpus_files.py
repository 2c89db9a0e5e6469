"""The files curation keeps next to a frame store, and the exclusion list every consumer honours.

Layout (all under ``STORE/curation/``, each file written to a temporary name and renamed)::

    embeddings/<backbone fingerprint>/<protocol>/   index.json, samples.npy, shard_XXXXX.npy   (embed.py)
    selection.json, selection.hierarchy.npz         curated subset or sampler weights       (selection.py)
    phash.npz                                       perceptual hash of every stored frame   (store_hashes.py)
    media_hashes/                                   hashes of benchmark test videos          (store_hashes.py)
    duplicates.json                                 near-duplicate report                    (store_dedup.py)
    leakage.json                                    benchmark leakage report                 (leakage_check.py)
    exclude.json                                    videos to leave out of training          (this module)

``exclude.json``::

    {"format": "unisurg-exclusions", "version": 1, "updated": "<ISO time>",
     "videos": {"<video id>": {"source": "dedup" | "leakage" | ..., "reason": "...", ...}}}

Each writer owns the entries of its ``source`` (a rerun of ``curate dedup --keep-one`` replaces
the dedup entries and keeps the leakage ones, and vice versa).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from typing import Iterable, Mapping

from unisurg.atomic_files import write_json_atomic
from unisurg.curate.curation_location import resolve_curation_dir
from unisurg.data.manifest import MANIFEST_NAME, Manifest, ManifestError, VideoRecord
from unisurg.data.store import StoreError

CURATION_DIR = "curation"
EXCLUDE_NAME = "exclude.json"
EXCLUDE_FORMAT = "unisurg-exclusions"


class CurationError(ValueError):
    """A curation input that cannot be used (missing or foreign file, mismatched settings); the
    message names the file or option and how to fix it."""


def curation_dir(store_root: str | Path) -> Path:
    """``STORE/curation``, or a per-user folder for a read-only store (see curation_location)."""
    return resolve_curation_dir(store_root, CURATION_DIR)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")




def read_json(path: Path, what: str, expected_format: str | None = None) -> dict:
    """A JSON object from ``path``; errors name the file and what it should be."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what} here")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CurationError(f"{path}: not a readable {what} ({e}); delete it and rerun the command that wrote it") from None
    if not isinstance(obj, dict):
        raise CurationError(f"{path}: a {what} must be a JSON object, got {type(obj).__name__}")
    if expected_format is not None and obj.get("format") != expected_format:
        raise CurationError(f"{path}: format is {obj.get('format')!r}, expected {expected_format!r}: not a {what}")
    return obj


def store_records(store_root: str | Path) -> tuple[dict, list[VideoRecord]]:
    """The store settings and its ok videos (read-only; an ingest may be running)."""
    path = Path(store_root) / MANIFEST_NAME
    if not path.exists():
        raise StoreError(f"{store_root}: no {MANIFEST_NAME}; create the store with `unisurg ingest ... --out {store_root}`")
    try:
        with Manifest(path, readonly=True) as m:
            meta = m.get_meta()
            recs = [r for r in m.records("ok") if r.n_frames > 0]
    except ManifestError as e:
        raise StoreError(str(e)) from None
    return meta, recs


def video_signature(rec: VideoRecord) -> str:
    """What identifies a stored video's frames: count, source checksum, size and ingest time.
    A re-ingest (new frames under the same id) changes it."""
    return f"{rec.n_frames}|{rec.sha256 or ''}|{rec.height}x{rec.width}|{rec.ingested_at or 0:.6f}"


def manifest_digest(store_root: str | Path) -> str:
    """sha256 over the store settings and every ok video's id and :func:`video_signature`:
    it changes when a video is added, removed or re-ingested."""
    meta, recs = store_records(store_root)
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for r in sorted(recs, key=lambda r: r.id):
        h.update(f"{r.id}\0{video_signature(r)}\n".encode())
    return h.hexdigest()


# -- the exclusion list -------------------------------------------------------------------------


def exclusions_path(store_root: str | Path) -> Path:
    return curation_dir(store_root) / EXCLUDE_NAME


def read_exclusions(store_root: str | Path) -> dict[str, dict]:
    """``{video id: entry}`` of ``STORE/curation/exclude.json`` (empty when there is none)."""
    path = exclusions_path(store_root)
    if not path.exists():
        return {}
    doc = read_json(path, "exclusion list", EXCLUDE_FORMAT)
    videos = doc.get("videos")
    if not isinstance(videos, dict):
        raise CurationError(f"{path}: key 'videos' must map video ids to entries")
    return videos


def excluded_videos(store_root: str | Path) -> set[str]:
    """Ids of the videos the exclusion list leaves out of training."""
    return set(read_exclusions(store_root))


def update_exclusions(store_root: str | Path, source: str, entries: Mapping[str, dict]) -> Path:
    """Replace the entries written by ``source`` with ``entries`` (others are kept); returns the path."""
    current = read_exclusions(store_root)
    kept = {v: e for v, e in current.items() if e.get("source") != source}
    for vid, entry in entries.items():
        kept[vid] = {**entry, "source": source}
    doc = {"format": EXCLUDE_FORMAT, "version": 1, "updated": now_iso(), "videos": dict(sorted(kept.items()))}
    return write_json_atomic(exclusions_path(store_root), doc)


def training_videos(store_root: str | Path, *, include_datasets: Iterable[str] | None = None,
                    honour_exclusions: bool = True) -> list[str]:
    """The ok videos of a store that pretraining would use: optionally only some datasets, and
    without the videos of ``exclude.json``. Pass the same list to ``ClipDataset(video_ids=...)``
    and to :func:`unisurg.train.leakage_guard.guard_corpus` so both agree."""
    _, recs = store_records(store_root)
    if include_datasets is not None:
        keep = set(include_datasets)
        recs = [r for r in recs if r.dataset in keep]
    drop = excluded_videos(store_root) if honour_exclusions else set()
    return [r.id for r in recs if r.id not in drop]


__all__ = [
    "CurationError",
    "curation_dir",
    "excluded_videos",
    "exclusions_path",
    "manifest_digest",
    "read_exclusions",
    "training_videos",
    "update_exclusions",
    "video_signature",
]
