"""``unisurg ingest``: decode many videos into a frame store, in parallel, resumably.

Crash safety: a video's frame pack is written atomically (temp + fsync + rename) *before* its
manifest row is committed, and the row is one SQLite transaction. Killed at any moment, the
store holds only complete videos marked ok; a rerun skips them (same source path, size and
mtime) and redoes the rest. Failed videos are recorded with their reason and retried on rerun.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
import re
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import simplejpeg
from tqdm import tqdm

from unisurg.data.decode import VideoDecodeError, decode_video
from unisurg.data.manifest import MANIFEST_NAME, Manifest, VideoRecord
from unisurg.data.ray_engine import RayOptions, check_engine, ray_map
from unisurg.data.store import StoreError, write_pack

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".mpg", ".mpeg", ".m4v", ".webm", ".wmv", ".flv", ".ts", ".mts")
STORE_FORMAT = 1


class IngestInputError(ValueError):
    pass


@dataclass(frozen=True)
class IngestItem:
    source: Path
    dataset: str
    specialty: str


@dataclass(frozen=True)
class IngestParams:
    fps: float = 1.0
    short_side: int = 256
    jpeg_quality: int = 90
    skip_nonref: bool = True

    def store_meta(self) -> dict:
        return {"format": STORE_FORMAT, "fps": float(self.fps), "short_side": self.short_side,
                "jpeg_quality": self.jpeg_quality}


@dataclass
class IngestSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, error)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


# -- inputs ---------------------------------------------------------------------------------

def _read_list_csv(path: Path, specialty: str | None) -> list[IngestItem]:
    items = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        rows = [r for r in reader]
    if not rows:
        raise IngestInputError(f"{path}: empty list; expected a CSV with columns path,dataset,specialty")
    start = 1 if [c.strip().lower() for c in rows[0][:1]] == ["path"] else 0
    for lineno, row in enumerate(rows[start:], start=start + 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 2:
            raise IngestInputError(f"{path}, line {lineno}: expected path,dataset[,specialty], got {row!r}")
        src = Path(row[0].strip())
        if not src.is_absolute():
            src = path.parent / src
        spec = row[2].strip() if len(row) > 2 and row[2].strip() else (specialty or "unspecified")
        items.append(IngestItem(src, row[1].strip(), spec))
    return items


def collect_inputs(inputs: list[str], dataset: str | None = None, specialty: str | None = None) -> list[IngestItem]:
    """Expand files, folders (recursive), globs and ``.csv`` lists into ingest items.

    Without ``dataset``, a video's dataset is the name of the folder given (or of its parent
    folder for a single file).
    """
    items: list[IngestItem] = []

    def add(p: Path, ds: str | None):
        items.append(IngestItem(p.resolve(), dataset or ds or p.parent.name or "default", specialty or "unspecified"))

    for raw in inputs:
        p = Path(raw)
        if p.suffix.lower() == ".csv" and p.is_file():
            items.extend(_read_list_csv(p, specialty))
        elif p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_EXTENSIONS and q.is_file())
            if not found:
                raise IngestInputError(f"{p}: folder holds no video file ({', '.join(VIDEO_EXTENSIONS)})")
            for q in found:
                add(q, p.resolve().name)
        elif p.exists():
            add(p, None)
        elif any(ch in raw for ch in "*?["):
            found = sorted(Path(q) for q in glob.glob(raw, recursive=True) if Path(q).is_file())
            if not found:
                raise IngestInputError(f"{raw}: pattern matches no file")
            for q in found:
                add(q, None)
        else:
            raise IngestInputError(f"{raw}: no such file, folder or pattern")
    seen: set[Path] = set()
    unique = []
    for it in items:
        if it.source not in seen:
            seen.add(it.source)
            unique.append(it)
    return unique


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def make_video_id(item: IngestItem, taken: set[str]) -> str:
    base = f"{_slug(item.dataset)}/{_slug(item.source.stem)}"
    if base not in taken:
        return base
    return f"{base}-{hashlib.sha1(str(item.source).encode()).hexdigest()[:8]}"


# -- one video --------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ingest_one(item: IngestItem, video_id: str, store_root: Path, params: IngestParams) -> VideoRecord:
    """Decode one video and write its pack; never raises for a bad video (returns a failed record)."""
    rec = VideoRecord(id=video_id, dataset=item.dataset, specialty=item.specialty,
                      source=str(item.source), status="failed", fps=params.fps)
    try:
        st = item.source.stat()
        rec.size_bytes, rec.mtime_ns = st.st_size, st.st_mtime_ns
        video = decode_video(item.source, fps=params.fps, short_side=params.short_side,
                             skip_nonref=params.skip_nonref)
        jpegs = [simplejpeg.encode_jpeg(f, quality=params.jpeg_quality, colorspace="RGB") for f in video.frames]
        rel = Path("frames") / f"{video_id}.ujpk"
        write_pack(store_root / rel, jpegs, video.height, video.width)
        rec.sha256 = _sha256(item.source)
        rec.status, rec.n_frames, rec.height, rec.width = "ok", len(jpegs), video.height, video.width
        rec.native_fps, rec.duration_s, rec.codec, rec.pack = video.native_fps, video.duration_s, video.codec, str(rel)
    except VideoDecodeError as e:
        rec.error = str(e)
    except FileNotFoundError:
        rec.error = f"{item.source}: file not found"
    except OSError as e:
        rec.error = f"{item.source}: {e}"
    except Exception as e:  # a decoder bug must not stop an ingest of many files
        rec.error = f"{item.source}: unexpected {type(e).__name__}: {e}"
    return rec


def _ingest_one_star(args):
    return ingest_one(*args)


# -- many videos ------------------------------------------------------------------------------

def _check_store_params(manifest: Manifest, params: IngestParams, root: Path) -> None:
    meta = manifest.get_meta()
    want = params.store_meta()
    if not meta:
        manifest.set_meta(want)
        return
    diff = {k: (meta.get(k), v) for k, v in want.items() if meta.get(k) != v}
    if diff:
        what = ", ".join(f"{k}: store has {a}, asked {b}" for k, (a, b) in diff.items())
        raise StoreError(f"{root}: this store was built with other settings ({what}); "
                         f"ingest into a new --out folder or repeat the store's settings")


def _clean_temp_files(root: Path) -> None:
    frames = root / "frames"
    if frames.exists():
        for tmp in frames.rglob("*.ujpk.tmp*"):
            tmp.unlink(missing_ok=True)


def ingest(items: list[IngestItem], store_root: str | Path, params: IngestParams = IngestParams(), *,
           workers: int = 1, progress: bool = True, force: bool = False, engine: str = "local",
           ray: RayOptions | None = None) -> IngestSummary:
    """Ingest ``items`` into the store at ``store_root``; see the module docstring for guarantees.

    ``engine="ray"``: one Ray task per video on the cluster ``ray.address`` (the store must be on
    storage every node mounts at the same path); tasks write packs, this process alone writes the
    manifest (:mod:`unisurg.data.ray_engine`)."""
    check_engine(engine)
    root = Path(store_root)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary = IngestSummary()
    with Manifest(root / MANIFEST_NAME) as manifest:
        _check_store_params(manifest, params, root)
        _clean_temp_files(root)
        existing = manifest.by_source()
        taken = manifest.ids()
        todo: list[tuple[IngestItem, str, Path, IngestParams]] = []
        for item in items:
            old = existing.get(str(item.source))
            if old is not None:
                try:
                    st = item.source.stat()
                    same = (old.size_bytes, old.mtime_ns) == (st.st_size, st.st_mtime_ns)
                except OSError:
                    same = False
                if (old.status == "ok" and same and not force and old.pack
                        and (root / old.pack).exists()):
                    summary.skipped.append(old.id)
                    continue
                vid = old.id
            else:
                vid = make_video_id(item, taken)
                taken.add(vid)
            todo.append((item, vid, root, params))

        bar = tqdm(total=len(todo), desc="ingest", unit="video", disable=not progress, file=sys.stderr)

        def record(rec: VideoRecord):
            manifest.upsert(rec)
            if rec.status == "ok":
                summary.done.append(rec.id)
            else:
                summary.failed.append((rec.source, rec.error or "unknown error"))
            bar.update(1)
            bar.set_postfix(failed=len(summary.failed))

        try:
            if engine == "ray":
                for _, rec in ray_map(_ingest_one_star, todo, ray or RayOptions()):
                    record(rec)
                _clean_temp_files(root)  # of attempts killed mid-write; every task has finished
            elif workers <= 1 or len(todo) <= 1:
                for args in todo:
                    record(ingest_one(*args))
            else:
                with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                    pending: set = set()
                    queue = iter(todo)
                    for args in queue:  # keep a bounded number in flight: memory stays flat on huge lists
                        pending.add(pool.submit(_ingest_one_star, args))
                        if len(pending) >= 4 * workers:
                            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                            for fut in finished:
                                record(fut.result())
                    for fut in wait(pending).done:
                        record(fut.result())
        finally:
            bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def format_summary(summary: IngestSummary) -> str:
    lines = [f"ingested {len(summary.done)}, skipped {len(summary.skipped)} (already done), "
             f"failed {len(summary.failed)} in {summary.seconds:.1f}s"]
    for src, err in summary.failed:
        lines.append(f"  FAILED {src}: {err}")
    return "\n".join(lines)


def default_workers() -> int:
    return max(1, (os.cpu_count() or 1))
