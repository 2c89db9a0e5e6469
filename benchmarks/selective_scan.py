"""Time of the pure-PyTorch selective scans of :mod:`unisurg.models.endomamba` (the paths without mamba_ssm).

``reference``: the step-by-step recurrence (``mamba_ssm.selective_scan_ref`` semantics, L Python steps; the CPU
path); ``chunked``: the same in parallel chunks (``L / chunk`` steps, ``O(b d n chunk^2)`` memory; the CUDA path
without mamba_ssm); ``fused``: mamba_ssm's CUDA kernel when installed and on CUDA. Shapes of one EndoMamba-S temporal layer: ``d = 768`` (2 x 384), ``n = 16``,
``L = T x 196`` tokens. Prints one JSON object with seconds per call and the ratio reference / chunked, and the max
abs difference between the two.

    python benchmarks/selective_scan.py                       # CPU-sized: 2 frames
    python benchmarks/selective_scan.py --device cuda --frames 16 --batch 4
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from unisurg.models import endomamba as em


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--frames", type=int, default=2)
    p.add_argument("--tokens-per-frame", type=int, default=196)
    p.add_argument("--d-inner", type=int, default=768)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--chunk", type=int, default=em.SCAN_CHUNK)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    b, d, n, L = a.batch, a.d_inner, a.d_state, a.frames * a.tokens_per_frame
    u, delta, z = (torch.randn(b, d, L, device=dev) for _ in range(3))
    A = -torch.arange(1, n + 1.0, device=dev).repeat(d, 1)
    B, C = torch.randn(b, n, L, device=dev), torch.randn(b, n, L, device=dev)
    D, bias = torch.ones(d, device=dev), torch.full((d,), -4.0, device=dev)  # softplus(-4) ~ 0.018: Mamba's dt range
    args = (u, delta, A, B, C, D, z, bias)
    ref = em.selective_scan_reference(*args)
    chk = em.selective_scan_chunked(*args, chunk=a.chunk)
    out = {"shape": {"batch": b, "d_inner": d, "d_state": n, "L": L}, "chunk": a.chunk, "device": str(dev),
           "max_abs_diff": float((ref - chk).abs().max()),
           "reference_s": timed(lambda: em.selective_scan_reference(*args), dev, a.repeats),
           "chunked_s": timed(lambda: em.selective_scan_chunked(*args, chunk=a.chunk), dev, a.repeats)}
    out["ratio_reference_over_chunked"] = out["reference_s"] / out["chunked_s"]
    if em._fused_selective_scan is not None and dev.type == "cuda":
        out["fused_s"] = timed(lambda: em.selective_scan(*args), dev, a.repeats)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
