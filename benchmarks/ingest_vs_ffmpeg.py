"""Ingest throughput against ffmpeg on the same file, one core each, same run.

    python benchmarks/ingest_vs_ffmpeg.py [--seconds 60] [--repeats 3]

Makes a 60 s, 25 fps, 854x480 H.264 video (x264 defaults: B-frames, like most recordings),
then times alternately
  ffmpeg -threads 1 -filter_threads 1 -i V -vf fps=1,scale=-2:256 -f rawvideo -pix_fmt rgb24 out
and our full ingest of the same file (decode at 1 fps, resize to short side 256, JPEG-encode,
write the pack, sha256), both pinned to one core. Prints JSON with the median times and the
throughput ratio ffmpeg_time / ours_time (>= 1 means we are faster).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np


def make_video(path: Path, seconds: int, fps: int = 25, size=(480, 854)) -> None:
    """A panned smooth texture with moving blobs and noise: compresses like real footage, not like a test card."""
    h, w = size
    rng = np.random.default_rng(0)
    big = rng.random((h // 8 + 40, w // 8 + 80, 3)).astype(np.float32)
    for _ in range(3):  # smooth the random field
        big = (big + np.roll(big, 1, 0) + np.roll(big, 1, 1) + np.roll(big, -1, 0) + np.roll(big, -1, 1)) / 5
    tex = np.kron(big, np.ones((8, 8, 1), np.float32))
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    tex = (tex * np.array([200, 90, 80], np.float32) + 30).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "23"}
        for i in range(seconds * fps):
            dy, dx = int(20 + 15 * np.sin(i / 50)), int(40 + 30 * np.cos(i / 70))
            img = tex[dy:dy + h, dx:dx + w].copy()
            cx, cy = int(w / 2 + w / 3 * np.sin(i / 20)), int(h / 2 + h / 4 * np.cos(i / 31))
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < 40 ** 2
            img[mask] = 200
            img = np.clip(img.astype(np.int16) + rng.integers(-4, 5, img.shape, dtype=np.int16), 0, 255).astype(np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)


def time_ffmpeg(video: Path, out: Path) -> float:
    cmd = ["taskset", "-c", "0", "ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-threads", "1",
           "-filter_threads", "1", "-i", str(video), "-vf", "fps=1,scale=-2:256",
           "-f", "rawvideo", "-pix_fmt", "rgb24", str(out)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def time_ours(video: Path, store: Path, skip_nonref: bool) -> float:
    code = (
        "import sys, time; from pathlib import Path;"
        "from unisurg.data.ingest import IngestItem, IngestParams, ingest_one;"
        f"item = IngestItem(Path({str(video)!r}), 'bench', 'bench');"
        "t = time.perf_counter();"
        f"r = ingest_one(item, 'bench/v', Path({str(store)!r}), IngestParams(skip_nonref={skip_nonref}));"
        "dt = time.perf_counter() - t; assert r.status == 'ok', r.error; print(dt, r.n_frames)"
    )
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], check=True, capture_output=True, text=True)
    dt, n = out.stdout.split()
    return float(dt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is not on PATH: install it (e.g. apt-get install ffmpeg) to run this comparison")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = tmp / "bench.mp4"
        make_video(video, args.seconds)
        times = {"ffmpeg": [], "ours": [], "ours_full_decode": []}
        for _ in range(args.repeats):  # interleaved: drift in machine load hits all alike
            times["ffmpeg"].append(time_ffmpeg(video, tmp / "out.raw"))
            times["ours"].append(time_ours(video, tmp / "store", True))
            times["ours_full_decode"].append(time_ours(video, tmp / "store2", False))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(json.dumps({
            "benchmark": "ingest_vs_ffmpeg",
            "video": {"seconds": args.seconds, "fps": 25, "size": "854x480", "codec": "h264 (x264 veryfast, B-frames)"},
            "median_s": med, "all_s": times,
            "ratio_throughput_ours_vs_ffmpeg": med["ffmpeg"] / med["ours"],
            "ratio_throughput_full_decode_vs_ffmpeg": med["ffmpeg"] / med["ours_full_decode"],
            "target": ">= 0.9",
        }, indent=1))


if __name__ == "__main__":
    main()
