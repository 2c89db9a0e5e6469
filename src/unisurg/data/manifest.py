"""The corpus manifest: one SQLite table, one row per source video.

SQLite rather than Parquet because ingest is incremental and must survive being killed at any
moment: each finished video is one committed transaction (WAL journal), so a crash loses at
most the video in flight and never leaves a torn file. Readers (loaders, ``unisurg info``)
open it read-only while an ingest may still be writing.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

MANIFEST_NAME = "manifest.sqlite"
SCHEMA_VERSION = 1


@dataclass
class VideoRecord:
    id: str
    dataset: str
    specialty: str
    source: str
    status: str  # "ok" | "failed"
    error: str | None = None
    n_frames: int = 0
    height: int = 0
    width: int = 0
    native_fps: float | None = None
    fps: float | None = None  # sampling rate of the stored frames
    duration_s: float | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    mtime_ns: int | None = None
    codec: str | None = None
    pack: str | None = None  # frame pack, relative to the store root
    ingested_at: float | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


_FIELDS = [f.name for f in dataclasses.fields(VideoRecord)]
_TYPES = {
    "id": "TEXT PRIMARY KEY", "n_frames": "INTEGER", "height": "INTEGER", "width": "INTEGER",
    "native_fps": "REAL", "fps": "REAL", "duration_s": "REAL", "size_bytes": "INTEGER",
    "mtime_ns": "INTEGER", "ingested_at": "REAL",
}


class ManifestError(RuntimeError):
    pass


def _uri(path: Path, query: str) -> str:
    return f"file:{quote(str(path.resolve()))}?{query}"


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection, also where nothing may be written (a read-only mount, a folder
    without write permission, a snapshot).

    Reading a WAL database normally creates the ``-shm`` index beside it. Where that fails the
    file is opened ``immutable`` (no locks, no index) -- correct as long as nothing writes it, and
    nothing can on a read-only medium. An immutable reader ignores the ``-wal`` journal, so when a
    non-empty one was left by an interrupted ingest (committed rows not yet merged), the manifest
    and its journal are copied to a private temporary folder and read there instead.
    """
    conn = sqlite3.connect(_uri(path, "mode=ro"), uri=True, timeout=30)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.DatabaseError:
        conn.close()
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        tmp = Path(tempfile.mkdtemp(prefix="unisurg-manifest-"))
        atexit.register(shutil.rmtree, tmp, True)
        shutil.copyfile(path, tmp / path.name)
        shutil.copyfile(wal, tmp / wal.name)
        return sqlite3.connect(_uri(tmp / path.name, "mode=ro"), uri=True, timeout=30)
    return sqlite3.connect(_uri(path, "mode=ro&immutable=1"), uri=True, timeout=30)


class Manifest:
    """Read/write access to ``STORE/manifest.sqlite``."""

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            if not self.path.exists():
                raise ManifestError(f"{self.path}: no manifest here; is this a store made by `unisurg ingest`?")
            self.conn = open_readonly(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=30)
            deadline = time.monotonic() + 30.0
            while True:  # two writers creating one store: the switch to WAL ignores the busy timeout
                try:
                    self._create_schema()
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or time.monotonic() > deadline:
                        raise
                    self.conn.rollback()
                    time.sleep(0.05)
        try:
            self.conn.execute("SELECT 1 FROM videos LIMIT 1")
        except sqlite3.DatabaseError as e:
            raise ManifestError(f"{self.path}: not a readable manifest ({e})") from None

    def _create_schema(self) -> None:
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        cols = ", ".join(f"{n} {_TYPES.get(n, 'TEXT')}" for n in _FIELDS)
        self.conn.execute(f"CREATE TABLE IF NOT EXISTS videos ({cols})")
        self.conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self.conn.execute("CREATE INDEX IF NOT EXISTS videos_source ON videos(source)")
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- store-wide parameters ------------------------------------------------------------
    def get_meta(self) -> dict:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def set_meta(self, meta: dict) -> None:
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                  [(k, json.dumps(v)) for k, v in meta.items()])

    # -- rows -----------------------------------------------------------------------------
    def upsert(self, rec: VideoRecord) -> None:
        with self.conn:  # one transaction per video: committed, or not there at all
            self.upsert_in_transaction(rec)

    def upsert_in_transaction(self, rec: VideoRecord) -> None:
        """The row of ``rec``, inside the caller's transaction (see :mod:`unisurg.data.claims`)."""
        if rec.ingested_at is None:
            rec.ingested_at = time.time()
        row = [getattr(rec, n) for n in _FIELDS]
        self.conn.execute(f"INSERT OR REPLACE INTO videos VALUES ({', '.join('?' * len(_FIELDS))})", row)

    def records_where(self, where: str, args: tuple = ()) -> list[VideoRecord]:
        q = f"SELECT {', '.join(_FIELDS)} FROM videos WHERE {where} ORDER BY id"
        return [VideoRecord(*row) for row in self.conn.execute(q, args)]

    def records(self, status: str | None = None) -> list[VideoRecord]:
        if status is not None:
            return self.records_where("status = ?", (status,))
        return self.records_where("1")

    def by_source(self) -> dict[str, VideoRecord]:
        return {r.source: r for r in self.records()}

    def ids(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT id FROM videos")}
