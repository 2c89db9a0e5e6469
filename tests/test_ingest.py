"""Ingest: real decoding, the frame store, bad inputs, resume after a crash."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import write_video
from unisurg.cli import main as cli_main
from unisurg.data.decode import VideoDecodeError, decode_video, output_size
from unisurg.data.ingest import IngestItem, IngestParams, collect_inputs, ingest
from unisurg.data.manifest import Manifest
from unisurg.data.store import FrameStore, StoreError, read_pack_index


def _block_means(img: np.ndarray, grid=(8, 8)) -> np.ndarray:
    ys = np.linspace(0, img.shape[0], grid[0] + 1).astype(int)
    xs = np.linspace(0, img.shape[1], grid[1] + 1).astype(int)
    return np.array([[img[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].reshape(-1, 3).mean(0) for j in range(grid[1])]
                     for i in range(grid[0])])


def _items(paths, dataset="ds", specialty="sp"):
    return [IngestItem(Path(p).resolve(), dataset, specialty) for p in paths]


def test_output_size_matches_ffmpeg_rounding():
    assert output_size(1080, 1920, 256) == (256, 456)  # ffmpeg scale=-2:256 gives 456
    assert output_size(480, 854, 256) == (256, 456)
    assert output_size(1920, 1080, 256) == (456, 256)


def test_real_mpeg4_clip_gives_two_frames(shared, tmp_path):
    src = shared / "endovis17_robotic" / "short_source.mp4"
    summary = ingest(_items([src], "endovis17", "robotic"), tmp_path / "store", progress=False)
    assert summary.ok and len(summary.done) == 1
    store = FrameStore(tmp_path / "store")
    (rec,) = store.records
    assert rec.n_frames == 2 and (rec.height, rec.width) == (256, 456)
    assert rec.codec == "mpeg4" and rec.native_fps == pytest.approx(10.0)
    assert rec.duration_s == pytest.approx(2.0, abs=0.05)
    frames = store.read_frames(rec.id)
    assert frames.shape == (2, 256, 456, 3)
    # frame 0 is the video's first frame resized: compare 8x8-block means with the full-size
    # frame decoded independently (PyAV at native size, block means in numpy)
    with av.open(str(src)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    a, b = _block_means(frames[0]), _block_means(first)
    assert np.abs(a - b).mean() < 4 and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98


def test_frames_are_taken_at_the_right_times(tmp_path):
    # 4 s at 25 fps, frame i has its square at x = 2i; at 1 fps frame k must be source frame ~25k
    src = write_video(tmp_path / "v.mp4", n_frames=100, fps=25, size=(64, 256))
    d = decode_video(src, fps=1, short_side=64, skip_nonref=False)
    assert len(d.frames) == 4
    for k, f in enumerate(d.frames):
        row = f[64 // 4 + 4].astype(int).sum(-1)
        x = int(np.argmax(row > 600))
        assert abs(x - 2 * 25 * k) <= 1
    # skipping non-reference frames moves each kept frame by at most 2 source frames
    d2 = decode_video(src, fps=1, short_side=64, skip_nonref=True)
    assert len(d2.frames) == 4
    for k, f in enumerate(d2.frames):
        x = int(np.argmax(f[64 // 4 + 4].astype(int).sum(-1) > 600))
        assert abs(x - 2 * 25 * k) <= 2 * 2 + 1


def _make_bad_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    bad = {}
    bad["empty"] = folder / "empty.mp4"
    bad["empty"].write_bytes(b"")
    bad["text"] = folder / "notes.mp4"
    bad["text"].write_text("this is not a video\n" * 50)
    # truncated: a Matroska file cut in half (header intact, frames stop early)
    full = write_video(folder / "_full.mkv", n_frames=150, fps=25, size=(64, 64))
    data = full.read_bytes()
    bad["truncated"] = folder / "truncated.mkv"
    bad["truncated"].write_bytes(data[: len(data) // 3])
    full.unlink()
    # truncated mp4: the index (moov) is at the end, so cutting it loses the index
    full = write_video(folder / "_full.mp4", n_frames=100, fps=25, size=(64, 64))
    bad["truncated_mp4"] = folder / "cut.mp4"
    bad["truncated_mp4"].write_bytes(full.read_bytes()[:2000])
    full.unlink()
    # no video stream: audio only
    bad["audio"] = folder / "audio_only.mkv"
    with av.open(str(bad["audio"]), "w") as out:
        s = out.add_stream("mp2", rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152 * 2), dtype=np.int16).reshape(1, -1),
                                           format="s16", layout="stereo")
        frame.sample_rate = 44100
        for _ in range(5):
            for pkt in s.encode(frame):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    # a video stream without one decodable frame: packets of garbage
    bad["nodecode"] = folder / "garbage_frames.mkv"
    with av.open(str(bad["nodecode"]), "w") as out:
        s = out.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        rng = np.random.default_rng(0)
        for i in range(10):
            pkt = av.Packet(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
            pkt.stream, pkt.time_base = s, Fraction(1, 25)
            pkt.pts = pkt.dts = i
            out.mux(pkt)
    return bad


def test_bad_inputs_are_recorded_and_do_not_stop_the_others(tmp_path, capsys):
    bad = _make_bad_inputs(tmp_path / "in")
    good = [write_video(tmp_path / "in" / f"good{i}.mp4", n_frames=60, fps=25, size=(64, 96), seed=i) for i in range(2)]
    store = tmp_path / "store"
    code = cli_main(["ingest", str(tmp_path / "in"), "--out", str(store), "--workers", "2", "--quiet"])
    assert code != 0
    err = capsys.readouterr().err
    recs = {Path(r.source).name: r for r in Manifest(store / "manifest.sqlite", readonly=True).records()}
    assert {recs[g.name].status for g in good} == {"ok"}
    expect = {"empty": "empty file", "text": "not a readable video", "truncated": "truncated",
              "truncated_mp4": "", "audio": "no video stream", "nodecode": "no decodable frame"}
    for key, path in bad.items():
        r = recs[path.name]
        assert r.status == "failed", key
        assert str(path) in r.error and expect[key] in r.error, (key, r.error)
        assert str(path) in err  # the summary names every failure
    assert len(FrameStore(store)) == 2


def test_info_json_lists_every_field(tmp_path, capsys):
    src = write_video(tmp_path / "a.mp4", n_frames=50)
    assert cli_main(["ingest", str(src), "--out", str(tmp_path / "s"), "--quiet", "--dataset", "d1",
                     "--specialty", "General surgery"]) == 0
    capsys.readouterr()
    assert cli_main(["info", str(tmp_path / "s"), "--json"]) == 0
    (rec,) = json.loads(capsys.readouterr().out)
    for key in ("id", "dataset", "specialty", "source", "status", "error", "n_frames", "height", "width",
                "native_fps", "duration_s", "sha256"):
        assert key in rec
    import hashlib

    assert rec["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert (rec["dataset"], rec["specialty"], rec["status"], rec["n_frames"]) == ("d1", "General surgery", "ok", 2)


def test_csv_list_and_other_containers(tmp_path):
    a = write_video(tmp_path / "v" / "a.avi", n_frames=30, codec="mpeg4")
    b = write_video(tmp_path / "v" / "b.mkv", n_frames=30)
    lst = tmp_path / "list.csv"
    lst.write_text("path,dataset,specialty\nv/a.avi,cholec80,Laparoscopic cholecystectomy\n"
                   f"{b},kvasir,Colonoscopy\n")
    items = collect_inputs([str(lst)])
    assert [(i.dataset, i.specialty) for i in items] == [("cholec80", "Laparoscopic cholecystectomy"),
                                                           ("kvasir", "Colonoscopy")]
    s = ingest(items, tmp_path / "s", progress=False)
    assert s.ok and len(s.done) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("path,dataset\nonly_a_path\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 2"):
        collect_inputs([str(bad)])


def test_resume_after_crash_between_pack_and_commit(tmp_path, monkeypatch):
    vids = [write_video(tmp_path / "in" / f"v{i}.mp4", n_frames=50, seed=i) for i in range(4)]
    store = tmp_path / "store"
    calls = {"n": 0}
    real_upsert = Manifest.upsert

    def crashing_upsert(self, rec):
        calls["n"] += 1
        if calls["n"] == 3:  # the 3rd video's pack is on disk, its row never committed
            raise KeyboardInterrupt
        return real_upsert(self, rec)

    monkeypatch.setattr(Manifest, "upsert", crashing_upsert)
    with pytest.raises(KeyboardInterrupt):
        ingest(_items(vids), store, progress=False)
    monkeypatch.setattr(Manifest, "upsert", real_upsert)
    # a half-written pack from a crash inside write_pack is left as a temp file
    (store / "frames" / "ds" / "v3.ujpk.tmp999").write_bytes(b"UJPK0001 partial")
    done_before = {r.id for r in Manifest(store / "manifest.sqlite", readonly=True).records()}
    assert done_before == {"ds/v0", "ds/v1"}
    s = ingest(_items(vids), store, progress=False)
    assert sorted(s.skipped) == ["ds/v0", "ds/v1"] and sorted(s.done) == ["ds/v2", "ds/v3"]
    assert not list((store / "frames").rglob("*.tmp*"))
    fs = FrameStore(store)
    assert [r.n_frames for r in fs.records] == [2, 2, 2, 2]
    # same content as a clean ingest
    clean = tmp_path / "clean"
    ingest(_items(vids), clean, progress=False)
    for r in fs.records:
        np.testing.assert_array_equal(fs.read_frames(r.id), FrameStore(clean).read_frames(r.id))


@pytest.mark.slow
def test_sigkill_mid_ingest_then_resume(tmp_path):
    vids = [write_video(tmp_path / "in" / f"v{i}.mp4", n_frames=250, fps=25, size=(120, 160), seed=i)
            for i in range(8)]
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "unisurg.cli", "ingest", str(tmp_path / "in"), "--out", str(store),
           "--workers", "1", "--quiet", "--fps", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = store / "manifest.sqlite"
    deadline = time.time() + 60
    n_ok = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                n_ok = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute(
                    "SELECT count(*) FROM videos WHERE status='ok'").fetchone()[0]
            except sqlite3.Error:
                n_ok = 0
            if n_ok >= 2:
                break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fs = FrameStore(store)
    killed_with = len(fs.records)
    assert 2 <= killed_with < 8, "the kill must land mid-ingest"
    for r in fs.records:  # everything marked ok is complete
        assert read_pack_index(store / r.pack).n == r.n_frames == 50
        assert fs.read_frames(r.id).shape[0] == 50
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"skipped {killed_with}" in out.stdout
    assert len(FrameStore(store).records) == 8


def test_store_settings_mismatch_is_an_error(tmp_path):
    src = write_video(tmp_path / "a.mp4", n_frames=30)
    ingest(_items([src]), tmp_path / "s", IngestParams(fps=1), progress=False)
    with pytest.raises(StoreError, match="fps: store has 1.0, asked 2.0"):
        ingest(_items([src]), tmp_path / "s", IngestParams(fps=2), progress=False)


def test_missing_store_error_names_the_fix(tmp_path):
    with pytest.raises(StoreError, match="unisurg ingest"):
        FrameStore(tmp_path / "nothing")


def test_a_moved_folder_is_not_ingested_twice(tmp_path, capsys):
    """The same bytes under a new path (a moved folder, one video in two datasets) are not stored again; a
    different file of the same size is."""
    a = write_video(tmp_path / "old" / "v0.mp4", n_frames=30, fps=25, size=(64, 96), seed=0)
    store = tmp_path / "store"
    assert ingest(_items([a]), store, IngestParams(fps=5), progress=False).done == ["ds/v0"]
    moved = tmp_path / "new" / "v0.mp4"
    moved.parent.mkdir()
    shutil.copy(a, moved)
    other = tmp_path / "new" / "v1.mp4"
    data = bytearray(a.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    other.write_bytes(bytes(data))
    s = ingest(_items([moved, other], dataset="other"), store, IngestParams(fps=5), progress=False)
    assert s.duplicates == [(str(moved.resolve()), "ds/v0")]
    assert len(s.done) + len(s.failed) == 1  # the other file was ingested (or failed to decode): not a duplicate
    sources = [Path(r.source) for r in Manifest(store / "manifest.sqlite", readonly=True).records()]
    assert moved.resolve() not in sources and other.resolve() in sources
    cli_main(["ingest", str(moved.parent), "--out", str(store), "--fps", "5", "--quiet"])
    out = capsys.readouterr()
    assert "1 file(s) with the same bytes as a stored video" in out.out + out.err and "= ds/v0" in out.out + out.err
