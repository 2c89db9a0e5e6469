"""``unisurg ingest``: decode many videos into a frame store, in parallel, resumably.

Crash safety: a video's frame pack is written atomically (temp + fsync + rename) *before* its
manifest row is committed, and the row is one SQLite transaction. Killed at any moment, the
store holds only complete videos marked ok; a rerun skips them (same source path, size and
mtime) and redoes the rest. Failed videos are recorded with their reason and retried on rerun.

Concurrent writers: several ingest runs (processes, or hosts sharing the store's filesystem) may
fill one store at once; each claims a video before decoding it (:mod:`unisurg.data.claims`), so
none is lost or overwritten, and a video another run is decoding is waited for, not redone.
Temporary files carry their writer's host and pid; start-up cleanup removes only those of dead
writers. A write failure of the store itself (disk full, I/O error) stops the run with a
:class:`StoreWriteError` naming the path; temporary files are removed and the store keeps every
finished video, so a rerun after freeing space completes. Memory per worker is bounded: frames
stream from the decoder to the pack file (:mod:`unisurg.data.pack_writer`).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import math
import os
import re
import sqlite3
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import simplejpeg
from tqdm import tqdm

from unisurg.data.claims import (
    Heartbeat,
    claim_video,
    ensure_claims_table,
    release_all,
    release_claim,
)
from unisurg.data.decode import VideoDecodeError, VideoSampler
from unisurg.data.manifest import MANIFEST_NAME, Manifest, ManifestError, VideoRecord
from unisurg.data.pack_writer import PackWriter
from unisurg.data.ray_engine import RayExecutor, RayOptions, check_engine
from unisurg.data.store_access import store_writable
from unisurg.data.store_errors import StoreError, StoreWriteError, describe_write_error
from unisurg.data.store_writer_id import current_writer, temp_owner_dead

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".mpg", ".mpeg", ".m4v", ".webm", ".wmv", ".flv", ".ts", ".mts")
STORE_FORMAT = 1
FPS_RANGE = (0.001, 1000.0)  # one frame in ~17 minutes .. 1000 per second
SHORT_SIDE_RANGE = (16, 4096)
QUALITY_RANGE = (1, 100)


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

    def validate(self) -> None:
        """Raise IngestInputError for a setting no video could be ingested with (before a store
        is created and bound to it)."""
        problems = []
        fps = self.fps
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) \
                or not FPS_RANGE[0] <= fps <= FPS_RANGE[1]:
            problems.append(f"--fps must be a number from {FPS_RANGE[0]:g} to {FPS_RANGE[1]:g} frames per second, "
                            f"got {fps!r}")
        for name, flag, value, (lo, hi) in (("short_side", "--short-side", self.short_side, SHORT_SIDE_RANGE),
                                            ("jpeg_quality", "--quality", self.jpeg_quality, QUALITY_RANGE)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                problems.append(f"{flag} must be an integer from {lo} to {hi}, got {value!r}")
        if problems:
            raise IngestInputError("; ".join(problems))

    def store_meta(self) -> dict:
        return {"format": STORE_FORMAT, "fps": float(self.fps), "short_side": self.short_side,
                "jpeg_quality": self.jpeg_quality}


@dataclass
class IngestSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, error)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (source, id of the stored video with its bytes)
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
    """Decode one video and write its pack, streaming (bounded memory whatever the length).

    A bad video gives a failed record, never an exception; a failure to write the store
    (:class:`StoreWriteError`: disk full, I/O error) is raised, its temporary files removed.
    """
    rec = VideoRecord(id=video_id, dataset=item.dataset, specialty=item.specialty,
                      source=str(item.source), status="failed", fps=params.fps)
    try:
        st = item.source.stat()
        rec.size_bytes, rec.mtime_ns = st.st_size, st.st_mtime_ns
        sampler = VideoSampler(item.source, fps=params.fps, short_side=params.short_side,
                               skip_nonref=params.skip_nonref)
        rel = Path("frames") / f"{video_id}.ujpk"
        with PackWriter(store_root / rel) as pack:
            last, last_jpeg = None, b""
            for frame in sampler:
                if frame is not last:  # a frame repeated at consecutive times is encoded once
                    last, last_jpeg = frame, simplejpeg.encode_jpeg(frame, quality=params.jpeg_quality,
                                                                    colorspace="RGB")
                pack.add(last_jpeg)
            video = sampler.info
            pack.truncate(video.n_frames)
            pack.commit(video.height, video.width)
        rec.sha256 = _sha256(item.source)
        rec.status, rec.n_frames, rec.height, rec.width = "ok", video.n_frames, video.height, video.width
        rec.native_fps, rec.duration_s, rec.codec, rec.pack = video.native_fps, video.duration_s, video.codec, str(rel)
    except StoreWriteError:
        raise
    except VideoDecodeError as e:
        rec.error = str(e)
    except FileNotFoundError:
        rec.error = f"{item.source}: file not found"
    except OSError as e:
        rec.error = f"{item.source}: {e}"
    except Exception as e:  # a decoder bug must not stop an ingest of many files
        rec.error = f"{item.source}: unexpected {type(e).__name__}: {e}"
    return rec


# -- many videos ------------------------------------------------------------------------------

def _check_store_params(manifest: Manifest, params: IngestParams, root: Path) -> None:
    """Bind a new store to ``params`` or check an existing one's; atomic (concurrent first runs)."""
    want = params.store_meta()
    conn = manifest.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        meta = manifest.get_meta()
        if not meta:
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                             [(k, json.dumps(v)) for k, v in want.items()])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    _compare_params(meta, want, root)


def _compare_params(meta: dict, want: dict, root: Path) -> None:
    diff = {k: (meta.get(k), v) for k, v in want.items() if meta and meta.get(k) != v}
    if diff:
        what = ", ".join(f"{k}: store has {a}, asked {b}" for k, (a, b) in diff.items())
        raise StoreError(f"{root}: this store was built with other settings ({what}); "
                         f"ingest into a new --out folder or repeat the store's settings")


def _clean_temp_files(root: Path) -> list[Path]:
    """Remove temporary pack files of writers known to be dead (this host's finished processes);
    those of live writers, here or on other hosts, are theirs. Returns what was removed."""
    removed = []
    frames = root / "frames"
    if frames.exists():
        for tmp in frames.rglob("*.ujpk.tmp*"):
            if temp_owner_dead(tmp.name):
                try:
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
                except OSError:
                    pass  # not ours to insist on
    return removed


def _up_to_date(row: VideoRecord | None, item: IngestItem, root: Path) -> bool:
    """The store already holds ``item`` unchanged: an ok row with the file's size and mtime, and its pack."""
    if row is None or row.status != "ok" or not row.pack:
        return False
    try:
        st = item.source.stat()
    except OSError:
        return False
    return (row.size_bytes, row.mtime_ns) == (st.st_size, st.st_mtime_ns) and (root / row.pack).exists()


class _ContentIndex:
    """The store's ok videos by size, to recognise a new path holding a stored video's exact bytes.

    Ingesting a moved or copied folder again would otherwise store every video twice (new paths, new ids),
    and pretraining would weigh them double. Only a file whose size matches a stored one is hashed.
    """

    def __init__(self, rows, root: Path):
        self.root = root
        self.by_size: dict[int, list[VideoRecord]] = {}
        for r in rows:
            if r.status == "ok" and r.sha256 and r.size_bytes and r.pack:
                self.by_size.setdefault(r.size_bytes, []).append(r)

    def find(self, source: Path) -> str | None:
        try:
            rows = self.by_size.get(source.stat().st_size)
            digest = _sha256(source) if rows else None
        except OSError:
            return None  # unreadable: ingest reports it
        # the twin's pack is checked only on a match: no stat per stored video on every run
        return next((r.id for r in rows or () if r.sha256 == digest and (self.root / r.pack).exists()), None)


def _ingest_readonly(items: list[IngestItem], root: Path, params: IngestParams, force: bool) -> IngestSummary:
    """A store that may not be written: fine when it already holds every input, else a clear error."""
    t0 = time.perf_counter()
    path = root / MANIFEST_NAME
    if not path.exists():
        raise StoreWriteError(f"{root}: cannot create a store here: the folder is read-only; choose a writable --out")
    with Manifest(path, readonly=True) as m:
        _compare_params(m.get_meta(), params.store_meta(), root)
        rows = m.by_source()
    summary = IngestSummary()
    missing = []
    for item in items:
        row = rows.get(str(item.source))
        if not force and _up_to_date(row, item, root):
            summary.skipped.append(row.id)
        else:
            missing.append(str(item.source))
    if missing:
        shown = ", ".join(missing[:3]) + (f" ... ({len(missing)} in all)" if len(missing) > 3 else "")
        raise StoreWriteError(f"{root}: the store is read-only and does not hold (an up-to-date copy of) {shown}; "
                              "ingest into a writable copy of the store")
    summary.seconds = time.perf_counter() - t0
    return summary


class _InlineExecutor:
    """``submit`` runs the call at once (one worker: no process pool, same code path)."""

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # noqa: B036 -- re-raised by fut.result() in the caller
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            fut.set_exception(e)
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _open_manifest(root: Path) -> Manifest:
    try:
        return Manifest(root / MANIFEST_NAME)
    except sqlite3.DatabaseError as e:
        raise ManifestError(f"{root / MANIFEST_NAME}: cannot open the manifest ({e}); if the file is damaged, "
                            "move it away and re-ingest into a new --out folder") from None


def _manifest_write_error(root: Path, e: sqlite3.Error, what: str) -> StoreWriteError:
    msg = str(e)
    hint = ("no space left for the manifest; free space and rerun: finished videos are kept" if "full" in msg
            else "check the disk and rerun: finished videos are kept")
    return StoreWriteError(f"{root / MANIFEST_NAME}: cannot {what}: {msg}; {hint}")


RECHECK_CLAIMED_S = 1.0  # how often videos claimed by another run are asked for again


def ingest(items: list[IngestItem], store_root: str | Path, params: IngestParams = IngestParams(), *,
           workers: int = 1, progress: bool = True, force: bool = False, engine: str = "local",
           ray: RayOptions | None = None) -> IngestSummary:
    """Ingest ``items`` into the store at ``store_root``; see the module docstring for guarantees.

    ``engine="ray"``: one Ray task per video on the cluster ``ray.address`` (the store must be on
    storage every node mounts at the same path); tasks write packs, this process alone claims videos
    and writes the manifest (:mod:`unisurg.data.ray_engine`)."""
    params.validate()
    check_engine(engine)
    root = Path(store_root)
    if not store_writable(root):
        return _ingest_readonly(items, root, params, force)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreWriteError(describe_write_error(root, e, "create the store folder")) from None
    t0 = time.perf_counter()
    summary = IngestSummary()
    me = current_writer()
    with _open_manifest(root) as manifest:
        try:
            _check_store_params(manifest, params, root)
            ensure_claims_table(manifest.conn)
            existing = manifest.by_source()
        except sqlite3.DatabaseError as e:
            raise _manifest_write_error(root, e, "prepare the store") from None
        _clean_temp_files(root)
        todo: deque[IngestItem] = deque()
        same_bytes = _ContentIndex(existing.values(), root)
        for item in items:  # fast path without a transaction: the unchanged videos of a rerun
            old = existing.get(str(item.source))
            if not force and _up_to_date(old, item, root):
                summary.skipped.append(old.id)
            elif old is None and (twin := same_bytes.find(item.source)) is not None:
                summary.duplicates.append((str(item.source), twin))
            else:
                todo.append(item)

        bar = tqdm(total=len(todo), desc="ingest", unit="video", disable=not progress, file=sys.stderr)

        def record(rec: VideoRecord):
            try:
                manifest.upsert(rec)
                release_claim(manifest, rec.source, me)
            except sqlite3.DatabaseError as e:
                raise _manifest_write_error(root, e, f"record video {rec.id}") from None
            if rec.status == "ok":
                summary.done.append(rec.id)
            else:
                summary.failed.append((rec.source, rec.error or "unknown error"))
            bar.update(1)
            bar.set_postfix(failed=len(summary.failed))

        def claim(item: IngestItem):
            try:
                return claim_video(manifest, str(item.source), me,
                                   is_done=lambda row: not force and _up_to_date(row, item, root),
                                   new_id=lambda taken: make_video_id(item, taken))
            except sqlite3.DatabaseError as e:
                raise _manifest_write_error(root, e, f"claim {item.source}") from None

        inline = engine == "local" and (workers <= 1 or len(todo) <= 1)
        if engine == "ray":
            pool = RayExecutor(ray or RayOptions()) if todo else _InlineExecutor()  # nothing to do never starts Ray
            ahead = getattr(pool, "max_in_flight", 1)
        else:
            pool = (_InlineExecutor() if inline
                    else ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")))
            ahead = 1 if inline else 2 * workers  # claims taken ahead of the workers
        pending: dict[Future, IngestItem] = {}
        deferred: list[IngestItem] = []
        next_recheck = 0.0
        clean_exit = False
        try:
            with Heartbeat(root / MANIFEST_NAME, me):
                while todo or deferred or pending:
                    while todo and len(pending) < ahead:
                        item = todo.popleft()
                        c = claim(item)
                        if c.state == "done":  # finished meanwhile by another run
                            summary.skipped.append(c.id)
                            bar.update(1)
                        elif c.state == "busy":
                            deferred.append(item)
                            bar.set_postfix(failed=len(summary.failed), waiting=f"{len(deferred)} claimed by "
                                            f"{c.owner.describe()}")
                        else:
                            pending[pool.submit(ingest_one, item, c.id, root, params)] = item
                    if pending:
                        finished, _ = wait(list(pending), timeout=0.5, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            pending.pop(fut)
                            record(fut.result())  # a StoreWriteError of a worker stops the run here
                    elif not todo and deferred:
                        time.sleep(max(0.0, min(RECHECK_CLAIMED_S, next_recheck - time.monotonic())))
                    if not todo and deferred and time.monotonic() >= next_recheck:
                        todo.extend(deferred)
                        deferred.clear()
                        next_recheck = time.monotonic() + RECHECK_CLAIMED_S
            if engine == "ray":
                _clean_temp_files(root)  # of tasks killed mid-write (their worker is dead); all have finished
            clean_exit = True
            try:  # merge the journal into the manifest: a copy of the store is then one file
                manifest.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass  # another reader holds it open: the last connection to close merges it
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
            try:
                release_all(manifest, me)
            except sqlite3.Error:
                if clean_exit:
                    raise
                # already failing: claims of a dead process are taken over by the next run
    summary.seconds = time.perf_counter() - t0
    return summary


def format_summary(summary: IngestSummary) -> str:
    lines = [f"ingested {len(summary.done)}, skipped {len(summary.skipped)} (already done), "
             f"failed {len(summary.failed)} in {summary.seconds:.1f}s"]
    if summary.duplicates:
        lines.append(f"  not ingested: {len(summary.duplicates)} file(s) with the same bytes as a stored video "
                     "(a moved folder, or one video in two datasets):")
        lines += [f"    {src} = {vid}" for src, vid in summary.duplicates[:10]]
        if len(summary.duplicates) > 10:
            lines.append(f"    ... ({len(summary.duplicates)} in all)")
    for src, err in summary.failed:
        lines.append(f"  FAILED {src}: {err}")
    return "\n".join(lines)


def default_workers() -> int:
    return max(1, (os.cpu_count() or 1))
