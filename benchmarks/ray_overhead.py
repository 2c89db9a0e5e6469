"""The Ray engine's overhead against the local process pool, same worker count, same run: ``unisurg ingest``.

    python benchmarks/ray_overhead.py [--videos 8] [--seconds 30] [--workers 2] [--repeats 3]

Makes ``--videos`` H.264 videos (854x480, 25 fps, B-frames; the texture of ingest_vs_ffmpeg.py), then
times alternately a full ingest into a fresh store with ``--engine local --workers W`` (a spawned
process pool, as the command runs it) and with ``--engine ray`` on a local Ray started once with
``num_cpus=W`` (one task per video, the driver committing manifest rows). Ray's start-up (a cluster
is started once per session, not per command) is reported apart, as is its first (cold-worker) run.
Prints JSON: median wall times and ``ray_over_local`` = ray / local (the goal: <= 1.15).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_vs_ffmpeg import make_video  # noqa: E402  (a sibling script)

from unisurg.data.ingest import IngestParams, collect_inputs, ingest  # noqa: E402
from unisurg.data.ray_engine import RayOptions, import_ray  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tmp = Path(tempfile.mkdtemp(prefix="ray_overhead_"))
    try:
        src = tmp / "videos" / "bench"
        src.mkdir(parents=True)
        make_video(src / "v00.mp4", a.seconds)
        for i in range(1, a.videos):  # same content, distinct files: same work per task
            shutil.copy(src / "v00.mp4", src / f"v{i:02d}.mp4")
        items = collect_inputs([str(src)])
        params = IngestParams()

        ray_mod = import_ray()  # the optional extra (pip install 'unisurg[ray]')
        t0 = time.perf_counter()
        ray_mod.init(num_cpus=a.workers, include_dashboard=False, log_to_driver=False)  # connect() then reuses it
        startup = time.perf_counter() - t0

        def run(engine: str, k: int) -> float:
            store = tmp / f"store-{engine}-{k}"
            t = time.perf_counter()
            s = ingest(items, store, params, workers=a.workers, progress=False, engine=engine, ray=RayOptions())
            dt = time.perf_counter() - t
            assert s.ok and len(s.done) == len(items), s.failed
            shutil.rmtree(store)
            return dt

        cold = run("ray", -1)
        local, ray_t = [], []
        for k in range(a.repeats):
            local.append(run("local", k))
            ray_t.append(run("ray", k))
        ray_mod.shutdown()
        med_l, med_r = statistics.median(local), statistics.median(ray_t)
        print(json.dumps({
            "command": "ingest", "videos": a.videos, "seconds_per_video": a.seconds, "workers": a.workers,
            "cpu_count": os.cpu_count(), "repeats": a.repeats,
            "local_s": [round(x, 3) for x in local], "ray_s": [round(x, 3) for x in ray_t],
            "local_median_s": round(med_l, 3), "ray_median_s": round(med_r, 3),
            "ray_over_local": round(med_r / med_l, 3),
            "ray_first_run_s": round(cold, 3), "ray_startup_s": round(startup, 3),
        }, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
