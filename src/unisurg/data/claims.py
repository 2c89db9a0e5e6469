"""Per-video claims: several ingest processes (on one host or, over a shared filesystem, on
several) can fill one store at once without losing or overwriting a video.

Before a process decodes a video it *claims* it: one ``BEGIN IMMEDIATE`` transaction of the
manifest database checks the video's row and any claim on it, picks the video's id (a new one is
unique among rows *and* claims, so two sources with the same name never share an id), and writes
a claim row ``(source, id, owner, host, pid, heartbeat)``. The claim is deleted in the same
transaction that records the result. A video claimed by a live writer is left to it; the
claimer's result is then read from the manifest. A claim is taken over only from a writer known
to be dead: a process of this host that no longer runs, or, on another host, one whose
heartbeat (renewed every ``HEARTBEAT_S`` by a background thread) is older than ``STALE_AFTER_S``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from unisurg.data.manifest import Manifest, VideoRecord
from unisurg.data.store_writer_id import WriterId, pid_alive

HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0

_SCHEMA = ("CREATE TABLE IF NOT EXISTS claims (source TEXT PRIMARY KEY, id TEXT UNIQUE NOT NULL, owner TEXT NOT NULL, "
           "host TEXT NOT NULL, pid INTEGER NOT NULL, start_ticks INTEGER, heartbeat REAL NOT NULL)")


@dataclass(frozen=True)
class ClaimOwner:
    host: str
    pid: int
    start_ticks: int | None
    heartbeat: float

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"


@dataclass(frozen=True)
class Claim:
    """``state``: "mine" (decode it as ``id``), "done" (an ok row exists: skip) or "busy"
    (claimed by the live ``owner``: ask again later)."""

    state: str
    id: str | None = None
    owner: ClaimOwner | None = None


def ensure_claims_table(conn: sqlite3.Connection) -> None:
    with conn:
        conn.execute(_SCHEMA)


def owner_alive(owner: ClaimOwner, me: WriterId, now: float | None = None) -> bool:
    if owner.host == me.host:
        return pid_alive(owner.pid, owner.start_ticks)
    return (now or time.time()) - owner.heartbeat < STALE_AFTER_S


class _IdsInUse:
    """``id in taken`` for :func:`unisurg.data.ingest.make_video_id`: rows and claims, queried live."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __contains__(self, vid: str) -> bool:
        return self.conn.execute("SELECT 1 FROM videos WHERE id = ? UNION ALL SELECT 1 FROM claims WHERE id = ? "
                                 "LIMIT 1", (vid, vid)).fetchone() is not None


def claim_video(manifest: Manifest, source: str, me: WriterId, *, is_done, new_id) -> Claim:
    """Claim ``source`` for ``me`` (see the module docstring).

    ``is_done(row: VideoRecord | None) -> bool``: whether the existing row makes the work
    unnecessary; ``new_id(taken) -> str``: an id for a source without a row, not ``in taken``.
    """
    conn = manifest.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = manifest.records_where("source = ?", (source,))
        row = rows[0] if rows else None
        if is_done(row):
            conn.execute("COMMIT")
            return Claim("done", row.id)
        c = conn.execute("SELECT id, owner, host, pid, start_ticks, heartbeat FROM claims WHERE source = ?",
                         (source,)).fetchone()
        if c is not None and c[1] != me.key:
            owner = ClaimOwner(c[2], c[3], c[4], c[5])
            if owner_alive(owner, me):
                conn.execute("COMMIT")
                return Claim("busy", c[0], owner)
        vid = row.id if row is not None else (c[0] if c is not None else new_id(_IdsInUse(conn)))
        conn.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (source, vid, me.key, me.host, me.pid, me.start_ticks, time.time()))
        conn.execute("COMMIT")
        return Claim("mine", vid)
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def record_and_release(manifest: Manifest, rec: VideoRecord, me: WriterId) -> None:
    """Write ``rec`` and drop ``me``'s claim on its source: one transaction."""
    with manifest.conn:
        manifest.upsert_in_transaction(rec)
        manifest.conn.execute("DELETE FROM claims WHERE source = ? AND owner = ?", (rec.source, me.key))


def release_claim(manifest: Manifest, source: str, me: WriterId) -> None:
    """Drop ``me``'s claim on ``source`` (after recording it, or giving up on it)."""
    with manifest.conn:
        manifest.conn.execute("DELETE FROM claims WHERE source = ? AND owner = ?", (source, me.key))


def release_all(manifest: Manifest, me: WriterId) -> None:
    """Drop every claim of ``me`` (at the end of a run, also an interrupted one)."""
    with manifest.conn:
        manifest.conn.execute("DELETE FROM claims WHERE owner = ?", (me.key,))


class Heartbeat:
    """Renews ``me``'s claims every ``HEARTBEAT_S`` from a background thread (its own connection),
    so writers on other hosts can tell a long decode from a dead process."""

    def __init__(self, db: Path, me: WriterId, every_s: float = HEARTBEAT_S):
        self.db, self.me, self.every = db, me, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="unisurg-claims-heartbeat", daemon=True)

    def _run(self) -> None:
        conn = sqlite3.connect(self.db, timeout=30)
        try:
            while not self._stop.wait(self.every):
                try:
                    with conn:
                        conn.execute("UPDATE claims SET heartbeat = ? WHERE owner = ?", (time.time(), self.me.key))
                except sqlite3.Error:
                    pass  # a busy or full database: the next beat retries; staleness needs 20 missed beats
        finally:
            conn.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
