"""How close a measured step is to what the machine can do: counted FLOPs against the measured matmul rate.

Shared by the benchmarks (``train_step.py``, ``probe_heads.py``, ``gpu/suite.py``):

* :func:`clock` -- the clock to time with: on a CPU with one torch thread, the process's CPU time
  (``time.process_time``), which a shared, oversubscribed machine does not inflate while the process
  waits for a core; otherwise wall time (GPU runs synchronise before reading it);
* :func:`count_flops` -- FLOPs of running a function, counted by ``torch.utils.flop_counter``
  (matmuls, convolutions and attention -- torch has no formula for the CPU flash-attention kernels,
  so those get the CUDA kernels' formula; element-wise work counts as 0, so the fraction below is
  the share of the machine's matmul peak the model arithmetic reaches);
* :func:`matmul_flops_per_s` -- the machine's own dense-matmul rate for a dtype, measured on square
  matrices with the same threads / device as the step (best of a few repetitions: the peak);
* :func:`limit_report` -- the JSON block: FLOPs, achieved FLOP/s, peak FLOP/s and their ratio.
"""

from __future__ import annotations

import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def clock(device: torch.device) -> callable:
    """CPU time for 1-thread CPU runs (robust to other processes on the cores), wall time otherwise."""
    if device.type == "cpu" and torch.get_num_threads() == 1:
        return time.process_time
    return time.perf_counter


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_flash_forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# torch counts the CUDA attention kernels but not the CPU flash-attention ones: same formulas for those
_CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_forward,
                  torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward}


def count_flops(fn) -> tuple[float, object]:
    """(FLOPs counted while running ``fn()``, its return value); attention counted on CPU too."""
    counter = FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION)
    with counter:
        out = fn()
    return float(counter.get_total_flops()), out


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 1024,
                       reps: int = 5) -> float:
    """Best-of-``reps`` FLOP/s of an ``n x n`` by ``n x n`` matmul (``2 n^3`` FLOPs) on ``device``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    now = clock(device)
    inner = 1 if device.type == "cpu" else 20  # GPU: enough work per reading to hide launch latency
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t0 = now()
        for _ in range(inner):
            a @ b
        sync(device)
        best = min(best, (now() - t0) / inner)
    return 2.0 * n ** 3 / best


def limit_report(flops: float, seconds: float, peak: float) -> dict:
    """FLOPs of a step, its achieved FLOP/s and the fraction of the measured matmul peak."""
    achieved = flops / seconds
    return {"gflop_per_step": round(flops / 1e9, 3), "achieved_gflop_per_s": round(achieved / 1e9, 2),
            "matmul_peak_gflop_per_s": round(peak / 1e9, 2), "fraction_of_matmul_peak": round(achieved / peak, 3)}
