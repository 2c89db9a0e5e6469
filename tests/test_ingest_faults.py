"""Fault injection for the frame store and ingest (issue 15): concurrent writers, real-world video
quirks, read-only stores, disk full and I/O errors. Every test here failed before the fix."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import write_video

from unisurg.cli import main as cli_main
from unisurg.data import pack_writer
from unisurg.data.claims import STALE_AFTER_S, claim_video, ensure_claims_table
from unisurg.data.decode import decode_video
from unisurg.data.ingest import IngestItem, IngestParams, ingest
from unisurg.data.manifest import Manifest
from unisurg.data.store import FrameStore, StoreError
from unisurg.data.store_writer_id import current_writer

SRC = Path(__file__).resolve().parents[1] / "src"


def _items(paths, dataset="ds"):
    return [IngestItem(Path(p).resolve(), dataset, "sp") for p in paths]


def _env():
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}


def _pattern(h: int, w: int, i: int = 0, level: int = 60) -> np.ndarray:
    """Dark frame with a bright top-left quadrant (orientation is visible) and a moving mark."""
    img = np.full((h, w, 3), level, np.uint8)
    img[: h // 2, : w // 2] = 230
    x = (2 * i) % max(1, w - 4)
    img[h - 4:, x:x + 4] = 140
    return img


def _encode(path: Path, frames, *, fps=25, fmt=None, rotation=None, hflip=False, sar=None, start_s=0.0,
            codec="libx264") -> Path:
    """A real video of the given RGB frames; ``rotation``/``hflip``: display matrix; ``sar``: pixel
    aspect ratio; ``start_s``: first timestamp."""
    frames = list(frames)
    h, w = frames[0].shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            s.options = {"preset": "ultrafast", "crf": "12"}
        if sar is not None:
            s.codec_context.sample_aspect_ratio = Fraction(sar)
        if rotation is not None:
            s.set_display_rotation(rotation, hflip=hflip)
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i + int(round(start_s * fps)), Fraction(1, fps)
            for pkt in s.encode(f):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


def _block_means(img: np.ndarray, g: int = 4) -> np.ndarray:
    ys = np.linspace(0, img.shape[0], g + 1).astype(int)
    xs = np.linspace(0, img.shape[1], g + 1).astype(int)
    return np.array([[img[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].mean() for j in range(g)] for i in range(g)])


def _ok_rows(store: Path) -> dict[str, object]:
    with Manifest(store / "manifest.sqlite", readonly=True) as m:
        return {r.source: r for r in m.records("ok")}


# -- 1. concurrent writers --------------------------------------------------------------------

_GATED_INGEST = """
import sys, time
from pathlib import Path
from unisurg.cli import build_parser, main
build_parser()  # imports every command's modules now, not after the gate
gate = Path(sys.argv[1])
Path(sys.argv[2]).touch()  # ready
while not gate.exists():
    time.sleep(0.002)
sys.exit(main(sys.argv[3:]))
"""


def _run_together(tmp_path: Path, commands: list[list[str]]) -> list[tuple[int, str, str]]:
    """Start the ``unisurg`` commands as separate processes and release them at the same moment."""
    gate = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _GATED_INGEST, str(gate), str(tmp_path / f"ready{i}"), *cmd],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, cmd in enumerate(commands)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(len(commands))) and time.time() < deadline:
        time.sleep(0.01)
    gate.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


@pytest.mark.slow
def test_two_concurrent_ingests_lose_and_overwrite_nothing(tmp_path):
    # two folders whose videos have the same names: both runs want the ids ds/v0 .. ds/v3
    srcs = {}
    for run in ("a", "b"):
        for i in range(4):
            level = 40 if run == "a" else 160
            srcs[(run, i)] = _encode(tmp_path / run / f"v{i}.mp4",
                                     [_pattern(48, 64, k, level + 10 * i) for k in range(200 if i == 0 else 30)])
    store = tmp_path / "store"
    results = _run_together(tmp_path, [["ingest", str(tmp_path / run), "--out", str(store), "--dataset", "ds",
                                         "--fps", "5", "--workers", "1", "--quiet"] for run in ("a", "b")])
    assert [r[0] for r in results] == [0, 0], results
    rows = _ok_rows(store)
    assert len(rows) == 8 and len({r.id for r in rows.values()}) == 8, sorted(r.id for r in rows.values())
    fs = FrameStore(store)
    for (run, i), src in srcs.items():
        rec = rows[str(src.resolve())]
        got = fs.read_frames(rec.id)
        want = decode_video(src, fps=5, short_side=48).frames
        assert got.shape[0] == len(want) == (40 if i == 0 else 6)
        # each stored video shows its own source (levels differ by >= 10 between any two)
        assert abs(float(got.mean()) - float(np.mean(want))) < 3, (run, i)
    with Manifest(store / "manifest.sqlite", readonly=True) as m:
        assert m.conn.execute("SELECT count(*) FROM claims").fetchone()[0] == 0
    assert not list((store / "frames").rglob("*.tmp*"))


@pytest.mark.slow
def test_concurrent_ingests_of_the_same_inputs_decode_each_video_once(tmp_path):
    for i in range(6):
        _encode(tmp_path / "in" / f"v{i}.mp4", [_pattern(48, 64, k, 40 + 20 * i) for k in range(40)])
    store = tmp_path / "store"
    results = _run_together(tmp_path, [["ingest", str(tmp_path / "in"), "--out", str(store), "--fps", "5",
                                        "--workers", workers, "--quiet"] for workers in ("1", "2")])
    assert [r[0] for r in results] == [0, 0], results
    outs = [(out, err) for _, out, err in results]
    ingested = [int(out.split("ingested ")[1].split(",")[0]) for out, _ in outs]
    assert sum(ingested) == 6, outs  # each video decoded by exactly one of the runs
    assert all("skipped" in out for out, _ in outs)
    assert len(FrameStore(store)) == 6
    assert not list((store / "frames").rglob("*.tmp*"))


def test_cleanup_removes_only_temp_files_of_dead_writers(tmp_path):
    src = write_video(tmp_path / "in" / "v0.mp4", n_frames=30)
    store = tmp_path / "store"
    ingest(_items([src]), store, progress=False)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        host = current_writer().host
        folder = store / "frames" / "ds"
        keep = [folder / f"x.ujpk.tmp.{live.pid}@{host}", folder / f"x.ujpk.tmp.{live.pid}@{host}.data",
                folder / f"y.ujpk.tmp.{dead.pid}@other-host"]  # another host's writer cannot be checked: kept
        drop = [folder / f"z.ujpk.tmp.{dead.pid}@{host}", folder / f"w.ujpk.tmp{dead.pid}"]
        for p in keep + drop:
            p.write_bytes(b"UJPK0001 partial")
        s = ingest(_items([write_video(tmp_path / "in" / "v1.mp4", n_frames=30, seed=1)]), store, progress=False)
        assert s.ok and s.done == ["ds/v1"]
        assert all(p.exists() for p in keep), [p.name for p in keep if not p.exists()]
        assert not any(p.exists() for p in drop)
    finally:
        live.kill()
        live.wait()


def test_video_claimed_by_a_live_writer_is_waited_for_then_taken_over_when_it_dies(tmp_path):
    src = write_video(tmp_path / "in" / "v0.mp4", n_frames=30)
    store = tmp_path / "store"
    ingest(_items([write_video(tmp_path / "in" / "other.mp4", n_frames=30, seed=3)]), store, progress=False)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    me = current_writer()
    with Manifest(store / "manifest.sqlite") as m, m.conn:
        m.conn.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (str(src.resolve()), "ds/v0", f"{holder.pid}@{me.host}#", me.host, holder.pid, None,
                        time.time()))
    t0 = time.monotonic()
    s = ingest(_items([src]), store, progress=False)
    waited = time.monotonic() - t0
    holder.wait()
    assert s.ok and s.done == ["ds/v0"]
    assert waited >= 1.0  # it did not decode a video another live process held
    assert len(FrameStore(store)) == 2


def test_claims_of_another_host_are_kept_while_its_heartbeat_is_fresh(tmp_path):
    store = tmp_path / "store"
    me = current_writer()
    with Manifest(store / "manifest.sqlite") as m:
        ensure_claims_table(m.conn)
        for src, age in (("/v/fresh.mp4", 5.0), ("/v/stale.mp4", STALE_AFTER_S + 5)):
            with m.conn:
                m.conn.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (src, "ds/" + Path(src).stem, "1@elsewhere#1", "elsewhere", 1, 1, time.time() - age))
        fresh = claim_video(m, "/v/fresh.mp4", me, is_done=lambda row: False, new_id=lambda taken: "x")
        stale = claim_video(m, "/v/stale.mp4", me, is_done=lambda row: False, new_id=lambda taken: "x")
        new = claim_video(m, "/v/other/fresh.mp4", me, is_done=lambda row: False,
                          new_id=lambda taken: "ds/fresh-2" if "ds/fresh" in taken else "ds/fresh")
    assert (fresh.state, fresh.owner.host) == ("busy", "elsewhere")
    assert (stale.state, stale.id) == ("mine", "ds/stale")  # taken over, same id
    assert (new.state, new.id) == ("mine", "ds/fresh-2")  # an id held by a claim is not reused


# -- 2. video quirks --------------------------------------------------------------------------

@pytest.mark.parametrize("rotation,hflip,k,mirror", [(90, False, 1, False), (-90, False, -1, False),
                                                     (180, False, 2, False), (90, True, 1, True)])
def test_display_matrix_rotates_and_mirrors_frames(tmp_path, rotation, hflip, k, mirror):
    # PyAV: the rotation is counter-clockwise on screen, a mirror is applied after it
    img = _pattern(48, 80)
    src = _encode(tmp_path / "r.mp4", [img] * 10, rotation=rotation, hflip=hflip)
    store = tmp_path / "store"
    assert ingest(_items([src]), store, IngestParams(fps=5, short_side=48), progress=False).ok
    fs = FrameStore(store)
    (rec,) = fs.records
    want = np.rot90(img, k)
    if mirror:
        want = want[:, ::-1]
    assert (rec.height, rec.width) == want.shape[:2]
    got = fs.read_frames(rec.id)[0]
    assert np.abs(_block_means(got) - _block_means(want)).max() < 12


def test_sample_aspect_ratio_stretches_frames(tmp_path):
    img = _pattern(48, 64)
    src = _encode(tmp_path / "anamorphic.mkv", [img] * 10, sar=Fraction(2, 1))  # 64 pixels, shown 128 wide
    d = decode_video(src, fps=5, short_side=48)
    assert (d.height, d.width) == (48, 128)
    assert np.abs(_block_means(d.frames[0]) - _block_means(img)).max() < 12


def test_mkv_with_a_start_offset_is_not_truncated(tmp_path):
    src = _encode(tmp_path / "late.mkv", [_pattern(48, 64, i) for i in range(50)], start_s=10.0)
    s = ingest(_items([src]), tmp_path / "store", IngestParams(fps=5, short_side=48), progress=False)
    assert s.ok, s.failed
    (rec,) = FrameStore(tmp_path / "store").records
    assert rec.n_frames == 10 and rec.duration_s == pytest.approx(2.0, abs=0.05)


def test_mpegts_with_a_timestamp_reset_is_kept_whole(tmp_path):
    a = _encode(tmp_path / "a.ts", [_pattern(48, 64, i, 40) for i in range(75)], fmt="mpegts")
    b = _encode(tmp_path / "b.ts", [_pattern(48, 64, i, 170) for i in range(75)], fmt="mpegts")
    joined = tmp_path / "joined.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())  # two recordings, both clocks start at 0
    store = tmp_path / "store"
    assert ingest(_items([joined]), store, IngestParams(fps=2, short_side=48), progress=False).ok
    (rec,) = FrameStore(store).records
    frames = FrameStore(store).read_frames(rec.id)
    assert rec.n_frames == 12 and rec.duration_s == pytest.approx(6.0, abs=0.1)
    # the dark background of recording a, then the bright one of b
    levels = frames[:, -8:-4, -8:].mean(axis=(1, 2, 3))
    assert (levels[:6] < 80).all() and (levels[6:] > 130).all(), levels.round()


@pytest.mark.parametrize("h,w", [(2048, 16), (16, 4096)])
def test_extreme_aspect_ratio_is_a_clear_error(tmp_path, h, w):
    src = _encode(tmp_path / f"strip{h}x{w}.mp4", [_pattern(h, w)] * 3)
    store = tmp_path / "store"
    s = ingest(_items([src]), store, progress=False)
    assert not s.ok
    (source, err) = s.failed[0]
    assert str(src.resolve()) in err and "aspect ratio" in err and "crop" in err, err
    assert len(FrameStore(store)) == 0


@pytest.mark.parametrize("flag,value,says", [("--fps", "0", "--fps"), ("--fps", "-1", "--fps"),
                                             ("--fps", "nan", "--fps"), ("--fps", "inf", "--fps"),
                                             ("--quality", "101", "--quality"), ("--quality", "0", "--quality"),
                                             ("--short-side", "5000", "--short-side")])
def test_bad_parameters_are_refused_before_a_store_is_made(tmp_path, capsys, flag, value, says):
    src = write_video(tmp_path / "a.mp4", n_frames=10)
    store = tmp_path / "store"
    assert cli_main(["ingest", str(src), "--out", str(store), flag, value, "--quiet"]) == 2
    assert says in capsys.readouterr().err
    assert not store.exists()


def test_decoded_frames_stream_memory_does_not_grow_with_length(tmp_path):
    # every frame kept (25 fps in and out): held in memory, 600 more frames are 600 * (64*96*3 pixels
    # + ~4 kB JPEG); streamed, the peak of Python-tracked memory (numpy, bytes) stays the same
    peaks = {}
    for n in (100, 700):
        src = write_video(tmp_path / f"v{n}.mp4", n_frames=n, fps=25, size=(64, 96))
        tracemalloc.start()
        try:
            s = ingest(_items([src]), tmp_path / f"store{n}", IngestParams(fps=25, short_side=64), progress=False)
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert s.ok and FrameStore(tmp_path / f"store{n}").records[0].n_frames == n
    assert peaks[700] - peaks[100] < 300_000, peaks  # held in memory: > 2.4 MB more


# -- 3. read-only stores ----------------------------------------------------------------------

def _readonly_runner():
    """A command prefix that runs its command with ``$STORE`` mounted read-only (a user and mount
    namespace: no root needed), or None where namespaces are unavailable."""
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount --bind / /mnt 2>/dev/null; true"],
                           capture_output=True)
    if probe.returncode != 0:
        return None
    return ["unshare", "-rm", "sh", "-c",
            'mount --bind "$STORE" "$STORE" && mount -o remount,ro,bind "$STORE" && exec "$@"', "sh"]


def test_readonly_store_can_be_read_trained_on_and_rerun(tmp_path):
    src = write_video(tmp_path / "in" / "v0.mp4", n_frames=30)
    store = tmp_path / "store"
    assert ingest(_items([src]), store, IngestParams(fps=2, short_side=32), progress=False).ok
    new_video = write_video(tmp_path / "in2" / "v9.mp4", n_frames=30, seed=9)
    runner = _readonly_runner()
    if runner is None and os.geteuid() == 0:
        pytest.skip("needs unshare (user namespaces) or a non-root user to make a read-only store")
    script = f"""
import json, sys
from unisurg.cli import main
from unisurg.data.store import FrameStore
from unisurg.data.clips import ClipDataset, ClipSpec
from unisurg.curate.corpus_files import store_records
fs = FrameStore({str(store)!r})
print("FRAMES", fs.read_frames(fs.records[0].id).shape)
print("RECORDS", len(store_records({str(store)!r})[1]))
print("CLIP", tuple(ClipDataset({str(store)!r}, ClipSpec(frames=2, crop=32))[0].shape))
assert main(["info", {str(store)!r}]) == 0
assert main(["curate", "dedup", {str(store)!r}]) == 0  # results go to $UNISURG_CURATION_DIR
assert main(["ingest", {str(src)!r}, "--out", {str(store)!r}, "--fps", "2", "--short-side", "32", "--quiet"]) == 0
code = main(["ingest", {str(new_video)!r}, "--out", {str(store)!r}, "--fps", "2", "--short-side", "32", "--quiet"])
print("NEW", code)
"""
    if runner is not None:
        cmd = runner + [sys.executable, "-c", script]
    else:  # not root: folder and manifest without write permission
        os.chmod(store / "manifest.sqlite", 0o444)
        os.chmod(store, 0o555)
        cmd = [sys.executable, "-c", script]
    try:
        out = subprocess.run(cmd, env={**_env(), "STORE": str(store), "UNISURG_CURATION_DIR": str(tmp_path / "cur")},
                             capture_output=True, text=True, timeout=120)
    finally:
        os.chmod(store, 0o755)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "FRAMES (3, 32, 48, 3)" in out.stdout and "RECORDS 1" in out.stdout and "CLIP (3, 2, 32, 32)" in out.stdout
    assert "NEW 2" in out.stdout and "read-only" in out.stderr and str(new_video) in out.stderr
    assert "Traceback" not in out.stderr
    assert list((tmp_path / "cur").glob("store-*/duplicates.json"))


def test_readonly_store_with_an_unmerged_journal_loses_no_row(tmp_path):
    runner = _readonly_runner()
    if runner is None:
        pytest.skip("needs unshare (user namespaces) to mount a store read-only")
    vids = [write_video(tmp_path / "in" / f"v{i}.mp4", n_frames=30, seed=i) for i in range(2)]
    live = tmp_path / "live"
    ingest(_items(vids[:1]), live, IngestParams(fps=2, short_side=32), progress=False)
    # a second video committed to the journal only (a crash before any checkpoint), then the
    # store copied as it is to a medium that is mounted read-only
    keep = sqlite3.connect(live / "manifest.sqlite")
    keep.execute("PRAGMA wal_autocheckpoint=0")
    m = Manifest(live / "manifest.sqlite")
    m.conn.execute("PRAGMA wal_autocheckpoint=0")
    first = m.records()[0]
    first.id, first.source = "ds/copy", "/elsewhere/copy.mp4"
    m.upsert(first)
    store = tmp_path / "store"
    shutil.copytree(live, store)
    m.close()
    keep.close()
    assert (store / "manifest.sqlite-wal").stat().st_size > 0
    script = (f"from unisurg.data.store import FrameStore; print('IDS', sorted(r.id for r in "
              f"FrameStore({str(store)!r}).records))")
    out = subprocess.run(runner + [sys.executable, "-c", script], env={**_env(), "STORE": str(store)},
                         capture_output=True, text=True, timeout=60)
    assert "IDS ['ds/copy', 'ds/v0']" in out.stdout, out.stderr[-2000:]


# -- 4. disk full and I/O errors --------------------------------------------------------------

@pytest.mark.parametrize("where", ["write", "fsync"])
def test_disk_full_stops_cleanly_and_a_rerun_completes(tmp_path, monkeypatch, where):
    vids = [write_video(tmp_path / "in" / f"v{i}.mp4", n_frames=30, seed=i) for i in range(4)]
    store = tmp_path / "store"
    calls = {"n": 0}
    if where == "write":  # the disk fills while the 3rd video's frames are written

        real_add = pack_writer.PackWriter.add

        def add(self, jpeg):
            calls["n"] += 1
            if calls["n"] == 2 * 2 + 1:  # 2 frames a video: the first frame of the 3rd video
                self._guard(lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
            return real_add(self, jpeg)

        monkeypatch.setattr(pack_writer.PackWriter, "add", add)
    else:  # the disk fills when the 3rd video's pack is flushed
        real_fsync = os.fsync

        def fsync(fd):
            if os.readlink(f"/proc/self/fd/{fd}").endswith(tuple(f"v{i}.ujpk" for i in range(4))) or ".tmp" in \
                    os.readlink(f"/proc/self/fd/{fd}"):
                calls["n"] += 1
                if calls["n"] == 3:
                    raise OSError(errno.ENOSPC, "No space left on device")
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(StoreError) as e:
        ingest(_items(vids), store, IngestParams(fps=1), progress=False)
    msg = str(e.value)
    assert "No space left" in msg and "ENOSPC" in msg and str(store / "frames" / "ds" / "v2.ujpk") in msg, msg
    assert not list((store / "frames").rglob("*.tmp*"))
    assert sorted(r.id for r in _ok_rows(store).values()) == ["ds/v0", "ds/v1"]
    monkeypatch.undo()
    s = ingest(_items(vids), store, IngestParams(fps=1), progress=False)
    assert s.ok and sorted(s.skipped) == ["ds/v0", "ds/v1"] and sorted(s.done) == ["ds/v2", "ds/v3"]
    assert [r.n_frames for r in FrameStore(store).records] == [2, 2, 2, 2]


def test_manifest_full_is_an_error_naming_it_and_rerun_completes(tmp_path, monkeypatch, capsys):
    vids = [write_video(tmp_path / "in" / f"v{i}.mp4", n_frames=30, seed=i) for i in range(3)]
    store = tmp_path / "store"
    real = Manifest.upsert
    calls = {"n": 0}

    def upsert(self, rec):
        calls["n"] += 1
        if calls["n"] == 2:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, rec)

    monkeypatch.setattr(Manifest, "upsert", upsert)
    assert cli_main(["ingest", str(tmp_path / "in"), "--out", str(store), "--quiet", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert str(store / "manifest.sqlite") in err and "full" in err and "Traceback" not in err
    assert len(_ok_rows(store)) == 1 and not list((store / "frames").rglob("*.tmp*"))
    monkeypatch.undo()
    assert cli_main(["ingest", str(tmp_path / "in"), "--out", str(store), "--quiet", "--workers", "1"]) == 0
    assert len(FrameStore(store)) == 3


def test_corrupt_manifest_during_ingest_names_the_file(tmp_path, capsys):
    src = write_video(tmp_path / "a.mp4", n_frames=10)
    store = tmp_path / "store"
    store.mkdir()
    (store / "manifest.sqlite").write_bytes(b"this is not an sqlite database" * 100)
    assert cli_main(["ingest", str(src), "--out", str(store), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(store / "manifest.sqlite") in err and "Traceback" not in err


def test_real_full_disk_in_a_tiny_tmpfs(tmp_path):
    """The same on a real, nearly full 1 MiB filesystem (where a user and mount namespace is available)."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"],
            capture_output=True).returncode != 0:
        pytest.skip("needs unshare and tmpfs mounts in a user namespace")
    vids = [write_video(tmp_path / "in" / f"v{i}.mp4", n_frames=20, fps=25, size=(64, 96), seed=i) for i in range(6)]
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = f"""
import os, pathlib
from unisurg.cli import main
mnt = pathlib.Path({str(mnt)!r})
st = os.statvfs(mnt)
filler = mnt / "filler"
filler.write_bytes(b"x" * (st.f_bavail * st.f_frsize - 900_000))  # packs ~220 kB (+ as much while written)
args = ["ingest", {str(tmp_path / 'in')!r}, "--out", str(mnt / "store"), "--fps", "25", "--short-side", "64",
        "--quality", "100", "--quiet", "--workers", "1"]
print("FIRST", main(args), flush=True)
print("TMP", sorted(str(p) for p in mnt.rglob("*.tmp*")), flush=True)
print("OK", len(list((mnt / "store" / "frames").rglob("*.ujpk"))), flush=True)
filler.unlink()
print("SECOND", main(args), flush=True)
from unisurg.data.store import FrameStore
print("STORED", len(FrameStore(mnt / "store")))
"""
    out = subprocess.run(["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=4m tmpfs "{mnt}" && exec "$@"',
                          "sh", sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=120)
    assert "FIRST 2" in out.stdout, (out.stdout, out.stderr[-2000:])
    assert "TMP []" in out.stdout and "OK 0" not in out.stdout, out.stdout
    assert "No space left" in out.stderr and "Traceback" not in out.stderr
    assert "SECOND 0" in out.stdout and "STORED 6" in out.stdout, (out.stdout, out.stderr[-2000:])
