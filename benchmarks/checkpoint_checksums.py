"""Cost of the checkpoint and feature-cache checksums against writing and reading the same bytes, same run.

    python benchmarks/checkpoint_checksums.py [--mib 512] [--repeats 3]

Writes a safetensors file of ``--mib`` MiB of float32 weights (a ViT-L encoder + EMA target +
predictor is ~2.6 GiB in fp32; optimizer state doubles that), then measures, single process:
  * write: ``safetensors.torch.save_file`` + fsync (what a checkpoint costs anyway);
  * sha256: :func:`unisurg.models.integrity.sha256_file` of the written file (added at save and at
    verification on resume / load);
  * read: the file's bytes read back (the floor of any load at resume);
  * finite: :func:`unisurg.models.strict_load.nonfinite_tensors` on the tensors (added at load).
Prints JSON with MiB/s of each, the ratios sha256 / write and (sha256 + finite) / read, and the
seconds the checks add to one checkpoint of ``--ckpt-gib`` GiB (default 5: a ViT-L run's weights
+ AdamW state in fp32).
The file sits in the page cache after writing, so sha256 and read are CPU-bound here; from a cold
disk both are bounded by the disk and the ratio drops.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from unisurg.models.integrity import sha256_file
from unisurg.models.strict_load import nonfinite_tensors


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ckpt-gib", type=float, default=5.0)
    args = ap.parse_args()
    torch.manual_seed(0)
    n_tensors = 64
    per = args.mib * 2**20 // 4 // n_tensors
    sd = {f"blocks.{i}.weight": torch.randn(per) for i in range(n_tensors)}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "weights.safetensors"

        def write():
            save_file(sd, str(path))
            with open(path, "rb+") as f:
                os.fsync(f.fileno())

        t_write = best(write, args.repeats)
        t_hash = best(lambda: sha256_file(path), args.repeats)
        t_read = best(path.read_bytes, args.repeats)
        loaded = {k: v.clone() for k, v in load_file(str(path)).items()}
        t_finite = best(lambda: nonfinite_tensors(loaded), args.repeats)
        size = path.stat().st_size / 2**20
    print(json.dumps({
        "mib": round(size, 1), "threads": torch.get_num_threads(),
        "write_mib_s": round(size / t_write, 1), "sha256_mib_s": round(size / t_hash, 1),
        "read_mib_s": round(size / t_read, 1), "finite_check_mib_s": round(size / t_finite, 1),
        "sha256_over_write": round(t_hash / t_write, 3),
        "sha256_plus_finite_over_read": round((t_hash + t_finite) / t_read, 3),
        "added_s_per_checkpoint_save": round(args.ckpt_gib * 1024 / (size / t_hash), 2),
        # resume: one hash pass (newest_intact_checkpoint) + the finite check of the weights (about half the bytes)
        "added_s_per_resume": round(args.ckpt_gib * 1024 / (size / t_hash)
                                    + args.ckpt_gib * 1024 / (size / t_finite) / 2, 2),
    }, indent=1))


if __name__ == "__main__":
    main()
