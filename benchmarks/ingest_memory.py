"""Peak memory of one ingest worker against the video's length (issue 15: memory must not grow with it).

    python benchmarks/ingest_memory.py [--seconds 10 40 160] [--fps 25] [--short-side 256] [--src DIR]

Makes one 25 fps, 180x320 H.264 video per length, then ingests each in a fresh process (one
worker: what every worker of a parallel ingest does) and reads that process's peak resident set
size (``ru_maxrss``). Sampling at ``--fps 25`` keeps every frame, so a 160 s video stands in for a
4000-frame one (a 67-minute recording at the default 1 fps) without minutes of encoding. Also
measured: the peak of a process that only imports the ingest module, so ``above_imports_mb`` is what
the ingest itself needs. Prints JSON: per length the frame count, peak RSS, peak above the imports,
time, and the least-squares growth in MB per 1000 stored frames (about 0 for bounded memory; about
350 MB -- 256x456x3 bytes a frame at short side 256 -- when every frame is held).

``--src`` runs another checkout's ``src`` folder (e.g. the code before the fix) in the same run,
for a ratio measured on one machine at one time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from unisurg.data.ingest import IngestItem, IngestParams, ingest
src, store, fps, short = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
if src != "-":
    s = ingest([IngestItem(Path(src), "bench", "x")], store, IngestParams(fps=fps, short_side=short),
               workers=1, progress=False)
    assert s.ok, s.failed
print(json.dumps({"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": time.perf_counter() - t0}))
"""


def make_video(path: Path, seconds: float, fps: int = 25, size=(180, 320)) -> int:
    """A moving textured scene (compresses like footage, decodes in real time many times over)."""
    h, w = size
    rng = np.random.default_rng(0)
    tex = rng.integers(30, 220, size=(h + 64, w + 64, 3), dtype=np.uint8)
    n = int(round(seconds * fps))
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "28"}
        for i in range(n):
            dy, dx = (i // 3) % 64, (i // 2) % 64
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(tex[dy:dy + h, dx:dx + w]), format="rgb24")
            for pkt in s.encode(frame):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return n


def run_child(src_dir: Path, video: str, store: Path, fps: float, short_side: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src_dir), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _CHILD, video, str(store), str(fps), str(short_side)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(src_dir: Path, videos: list[tuple[float, Path, int]], work: Path, fps: float, short_side: int,
            tag: str) -> dict:
    base = run_child(src_dir, "-", work / f"none-{tag}", fps, short_side)["peak_rss_kb"] / 1024
    rows = []
    for seconds, path, n_src in videos:
        r = run_child(src_dir, str(path), work / f"store-{tag}-{seconds:g}", fps, short_side)
        peak = r["peak_rss_kb"] / 1024
        rows.append({"video_seconds": seconds, "stored_frames": int(np.ceil(seconds * fps)),
                     "peak_rss_mb": round(peak, 1), "above_imports_mb": round(peak - base, 1),
                     "seconds": round(r["seconds"], 2)})
    x = np.array([r["stored_frames"] for r in rows], float)
    y = np.array([r["peak_rss_mb"] for r in rows], float)
    slope = float(np.polyfit(x, y, 1)[0] * 1000) if len(rows) > 1 else float("nan")
    return {"src": str(src_dir), "imports_only_mb": round(base, 1), "runs": rows,
            "growth_mb_per_1000_frames": round(slope, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[10, 40, 160])
    ap.add_argument("--fps", type=float, default=25.0, help="ingest rate (25: every frame of the 25 fps videos)")
    ap.add_argument("--short-side", type=int, default=256)
    ap.add_argument("--src", type=Path, action="append", default=[],
                    help="also measure this checkout's src folder (repeatable)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="unisurg-mem-") as tmp:
        work = Path(tmp)
        videos = []
        for sec in a.seconds:
            p = work / f"v{sec:g}.mp4"
            videos.append((sec, p, make_video(p, sec)))
        results = [measure(ROOT / "src", videos, work, a.fps, a.short_side, "this")]
        for i, src in enumerate(a.src):
            results.append(measure(src.resolve(), videos, work, a.fps, a.short_side, f"other{i}"))
    out = {"benchmark": "ingest_memory", "fps": a.fps, "short_side": a.short_side,
           "video": "25 fps, 180x320, H.264", "results": results}
    if len(results) > 1:
        last = [r["runs"][-1]["above_imports_mb"] for r in results]
        out["longest_video_above_imports_ratio_other_over_this"] = [round(v / max(last[0], 1e-9), 1) for v in last[1:]]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
