"""Shared test fixtures: tiny real video files made with PyAV, and the optional ../shared folder."""

from __future__ import annotations

import faulthandler
import os
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch

torch.set_num_threads(1)
# DataLoader workers start from a clean single-threaded server, not by forking this process: the suite leaves
# helper threads behind (tqdm monitors, Ray, claim heartbeats) and a fork while one holds a lock can hang a
# worker for ever (seen: a worker stuck in torch's lazy CUDA seeding after the benchmark tests).
torch.multiprocessing.set_start_method("forkserver", force=True)

SHARED = Path(__file__).resolve().parents[2] / "shared"
# No test takes minutes; one that hangs (a deadlocked worker, a rank that never joins) ends the run with every
# thread's stack on stderr instead of holding CI until its time limit.
TEST_WATCHDOG_S = float(os.environ.get("UNISURG_TEST_WATCHDOG_S", "900"))


@pytest.fixture(autouse=True)
def _watchdog(request):
    def fire():
        capture = request.config.pluginmanager.getplugin("capturemanager")
        if capture is not None:
            capture.suspend_global_capture(in_=False)  # the stacks go to the real stderr, not a capture file
        sys.stderr.write(f"\n{request.node.nodeid} still running after {TEST_WATCHDOG_S:.0f} s; every thread:\n")
        sys.stderr.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        os._exit(70)

    timer = threading.Timer(TEST_WATCHDOG_S, fire)
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()


# tiny random backbones for the benchmark tests
BB_A = "random:tiny@0?embed_dim=32&depth=1&num_heads=2"
BB_B = "random:tiny@1?embed_dim=32&depth=1&num_heads=2"


def bench_cli(*argv: str) -> int:
    """``unisurg bench|extract|predict|embed ...`` through the same parser as the command line."""
    from unisurg.cli import build_parser

    a = build_parser().parse_args(list(argv))
    return a.func(a)


def torchrun(*argv: str, timeout: float = 500) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=2 ARGV`` (one thread per rank); a failure shows the tails
    of both streams, and a rank that dies on a signal prints its Python stack (faulthandler)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-4000:]}"
    return done


def synth_store(root: Path, n_videos: int = 2, seconds: float = 8.0, seed: int = 0) -> Path:
    """A tiny frame store for training tests: synthetic videos (64x80 px, 8 fps) ingested at 4 fps, short side 64."""
    from unisurg.data.ingest import IngestParams, collect_inputs, ingest
    from unisurg.synth.generate import generate_dataset

    generate_dataset(root / "synth", n_videos=n_videos, seconds=seconds, height=64, width=80, fps=8, seed=seed,
                     progress=False)
    items = collect_inputs([str(root / "synth" / "videos")], dataset="synth", specialty="general")
    assert ingest(items, root / "store", IngestParams(fps=4, short_side=64), workers=1, progress=False).ok
    return root / "store"


def write_video(path: Path, n_frames: int = 50, fps: int = 25, size: tuple[int, int] = (64, 96),
                codec: str = "libx264", seed: int = 0, bframes: bool = True) -> Path:
    """A real encoded video whose frame i shows a bright square at x = i (so frames are tellable apart)."""
    h, w = size
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 90, size=(h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            s.options = {"preset": "ultrafast", "crf": "18"} | ({} if bframes else {"bframes": "0"})
            if bframes:
                s.options = {"preset": "veryfast", "crf": "18", "bframes": "3"}
        for i in range(n_frames):
            img = base.copy()
            x = (i * 2) % (w - 8)
            img[h // 4: h // 4 + 8, x: x + 8] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for pkt in s.encode(frame):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


@pytest.fixture
def shared() -> Path:
    if not (SHARED / "real-data").is_dir():
        pytest.skip("../shared/real-data is not present (only in the project's development checkout)")
    return SHARED / "real-data"
