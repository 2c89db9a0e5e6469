"""Speed of the synthetic surgical world on one core: rendering alone, and rendering + H.264 encoding.

Usage: python benchmarks/synth_speed.py [--seconds 20] [--height 240] [--width 320] [--presets superfast,veryfast]
Prints one JSON object. Frames/s are given on wall-clock time and on this process's CPU time
(the machine may be shared: CPU time is the fairer single-core figure).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import av  # noqa: E402

from unisurg.synth.generate import plan_video, render_video  # noqa: E402
from unisurg.synth.render import FrameRenderer  # noqa: E402


def _timed(fn) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--presets", default="ultrafast,superfast,veryfast")
    ap.add_argument("--crf", type=int, default=23)
    ap.add_argument("--repeats", type=int, default=3, help="best of N (shared machines are noisy)")
    args = ap.parse_args()

    plan = plan_video(0, 0, seconds=args.seconds, fps=args.fps, height=args.height, width=args.width)
    n = plan.n_frames
    result: dict = {"frames": n, "height": args.height, "width": args.width, "fps": args.fps, "crf": args.crf}

    setup = _timed(lambda: FrameRenderer(plan))
    result["setup_s"] = round(setup[0], 4)
    renderer = FrameRenderer(plan)

    def render_all():
        for i in range(n):
            renderer.render_yuv(i)

    best = min((_timed(render_all) for _ in range(args.repeats)), key=lambda x: x[1])
    result["render_fps_wall"] = round(n / best[0], 1)
    result["render_fps_cpu"] = round(n / best[1], 1)

    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            path = os.path.join(tmp, f"{preset}.mp4")
            best = min(
                (_timed(lambda: render_video(plan, path, crf=args.crf, preset=preset)) for _ in range(args.repeats)),
                key=lambda x: x[1],
            )
            result[f"render_encode_fps_wall[{preset}]"] = round(n / best[0], 1)
            result[f"render_encode_fps_cpu[{preset}]"] = round(n / best[1], 1)
            result[f"kbytes_per_s[{preset}]"] = round(os.path.getsize(path) / 1024 / args.seconds, 1)
    result["pyav"] = av.__version__
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
