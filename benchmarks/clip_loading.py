"""Clip loading rate against the bare JPEG-decode rate of the same frames, same run.

    python benchmarks/clip_loading.py [--frames 16] [--crop 224] [--clips 200] [--batch 4]

Builds a store from a synthetic 854x480 video (frames stored at 456x256, as ingest does with
the default short side), then measures, single process, one thread:
  * bare: ``simplejpeg.decode_jpeg`` of the clips' JPEG bytes already in memory (the floor of
    any JPEG-based loader);
  * dataset: ``ClipDataset[i]`` end to end (read from the pack, decode, crop, flip, to float,
    normalise) -> ``float32 [C, T, H, W]``;
  * loader: a DataLoader with 1 worker (adds worker IPC of the batches), clips/s after its first
    batch (the worker's start-up is paid once per epoch, not per clip); the uint8 loader with the
    batch ring (``reuse_batch_memory=True``, the pretraining loader's setting) and without it (a
    fresh shared-memory batch per step, as ``default_collate``).
Prints JSON with clips/s of each (best of the repeats), the ratios of the bests, and the median
over repeats of each pass's rate against the bare rate measured around it (target >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import simplejpeg
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_vs_ffmpeg import make_video  # noqa: E402

from unisurg.data.clips import ClipDataset, ClipSpec, make_loader  # noqa: E402
from unisurg.data.ingest import IngestItem, IngestParams, ingest  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4, help="loader batch size")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = tmp / "v.mp4"
        make_video(video, seconds=40)
        ingest([IngestItem(video, "bench", "bench")], tmp / "store", IngestParams(fps=25), progress=False)
        spec = ClipSpec(frames=args.frames, crop=args.crop, flip=True, stride=1)
        ds = ClipDataset(tmp / "store", spec)
        ds_u8 = ClipDataset(tmp / "store", ClipSpec(**{**spec.__dict__, "output": "uint8"}))
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[: args.clips].tolist()
        clips_bytes = []
        for i in order:
            vid, idx = ds.frame_indices(i)
            clips_bytes.append(ds.store.read_jpegs(vid, int(idx[0]), len(idx)))

        def interleaved():
            """Per clip: bare decode, float clip, uint8 clip, alternating, so load swings hit all three alike."""
            t = {"bare": 0.0, "dataset": 0.0, "dataset_uint8": 0.0}
            for i, jpegs in zip(order, clips_bytes):
                t0 = time.perf_counter()
                for j in jpegs:
                    simplejpeg.decode_jpeg(j, colorspace="RGB")
                t1 = time.perf_counter()
                ds[i]
                t2 = time.perf_counter()
                ds_u8[i]
                t3 = time.perf_counter()
                t["bare"] += t1 - t0
                t["dataset"] += t2 - t1
                t["dataset_uint8"] += t3 - t2
            return {k: len(order) / v for k, v in t.items()}

        def loader(d, ring=True):
            """Steady-state clips/s after the first batch (worker start-up, paid once per epoch, excluded)."""
            sub = torch.utils.data.Subset(d, order)
            dl = make_loader(sub, batch_size=args.batch, workers=1, drop_last=False, reuse_batch_memory=ring)
            it = iter(dl)
            next(it)
            t = time.perf_counter()
            n = sum(b.shape[0] for b in it)
            return n / (time.perf_counter() - t)

        runs = {"bare": [], "dataset": [], "dataset_uint8": [], "loader_1_worker": [], "loader_1_worker_uint8": [],
                "loader_1_worker_uint8_no_ring": []}
        for _ in range(args.repeats):
            for k, v in interleaved().items():
                runs[k].append(v)
            runs["loader_1_worker"].append(loader(ds))
            runs["loader_1_worker_uint8"].append(loader(ds_u8))
            runs["loader_1_worker_uint8_no_ring"].append(loader(ds_u8, ring=False))
        best = {k: max(v) for k, v in runs.items()}
        # paired: each loader pass against the bare rate measured around it (the passes before and after),
        # the median over repeats -- robust to load swings on a shared machine, unlike best-of ratios
        bare = runs["bare"]
        around = [(bare[r] + bare[min(r + 1, len(bare) - 1)]) / 2 for r in range(len(bare))]
        paired = {k: statistics.median(v / b for v, b in zip(runs[k], around))
                  for k in ("dataset_uint8", "loader_1_worker", "loader_1_worker_uint8", "loader_1_worker_uint8_no_ring")}
        h, w = ds.store.records[0].height, ds.store.records[0].width
        print(json.dumps({
            "benchmark": "clip_loading", "frames": args.frames, "crop": args.crop, "stored_frame": f"{w}x{h}",
            "loader_batch": args.batch,
            "clips_per_s": best, "all": runs,
            "ratio_dataset_vs_bare_decode": best["dataset"] / best["bare"],
            "ratio_dataset_uint8_vs_bare_decode": best["dataset_uint8"] / best["bare"],
            "ratio_loader_vs_bare_decode": best["loader_1_worker"] / best["bare"],
            "ratio_loader_uint8_vs_bare_decode": best["loader_1_worker_uint8"] / best["bare"],
            "ratio_loader_uint8_no_ring_vs_bare_decode": best["loader_1_worker_uint8_no_ring"] / best["bare"],
            "paired_median_ratio_vs_bare_decode": paired,
            "target": ">= 0.8",
        }, indent=1))


if __name__ == "__main__":
    main()
