"""Cost of training 20 attentive probes at once vs one probe, on the same frozen tokens.

Times one training step (forward + backward + AdamW) of:

* ``one``: a :class:`MultiProbe` holding 1 probe;
* ``batched``: a :class:`MultiProbe` holding P probes (stacked weights, one bmm / SDPA per layer);
* ``loop`` (reference): P separate 1-probe modules stepped one after the other, the naive way.

and prints JSON with the per-step times and the ratios ``batched / one`` (target <= 3) and
``loop / batched``. The FLOPs of P probes are P times those of one, so the ratio stays below P
only as far as one probe leaves the hardware idle (kernel launches, Python, small matmuls); on
large token sets (64 frames at 256 px: 8192 tokens of width 1024) the step is compute-bound and
the ratio tends to P: what batching still saves there is the loop's overhead.

    python benchmarks/probe_heads.py                     # CPU-sized defaults
    python benchmarks/probe_heads.py --device cuda --tokens 8192 --dim 1024 --heads 16 --batch 4
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from unisurg.bench.optim import BatchedAdamW
from unisurg.bench.probe import MultiProbe, ProbeSpec


def _step_fn(probe, opt, x, y):
    def step():
        out = probe(x)
        loss = torch.nn.functional.cross_entropy(out.flatten(0, 1), y.repeat(out.shape[0]), reduction="none")
        opt.zero_grad()
        loss.view(out.shape[0], -1).mean(1).sum().backward()
        opt.step()
    return step


def _time(fn, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA)")
    ap.add_argument("--no-loop", action="store_true", help="skip the P-module loop reference")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    spec = ProbeSpec("attentive", a.dim, a.classes, a.dim, depth=a.depth, heads=a.heads)
    x = torch.randn(a.batch, a.tokens, a.dim, device=dev)
    y = torch.randint(0, a.classes, (a.batch,), device=dev)
    lrs = [1e-3] * a.probes
    wds = [0.05] * a.probes

    def timed(probe_list):
        fns = [_step_fn(p, BatchedAdamW(p, [1e-3] * p.n_probes, [0.05] * p.n_probes), x, y) for p in probe_list]

        def step():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
                for f in fns:
                    f()
        return _time(step, a.steps, a.warmup, dev)

    one = timed([MultiProbe(spec, 1).to(dev)])
    batched_probe = MultiProbe(spec, a.probes).to(dev)
    batched = _time(_step_fn(batched_probe, BatchedAdamW(batched_probe, lrs, wds), x, y), a.steps, a.warmup, dev) \
        if not a.bf16 else timed([batched_probe])
    loop = None if a.no_loop else timed([MultiProbe(spec, 1).to(dev) for _ in range(a.probes)])
    print(json.dumps({
        "device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
        "threads": a.threads, "probes": a.probes, "batch": a.batch, "tokens": a.tokens, "dim": a.dim,
        "heads": a.heads, "depth": a.depth, "bf16": a.bf16,
        "step_s_one_probe": round(one, 6), "step_s_batched": round(batched, 6),
        "step_s_loop_of_modules": None if loop is None else round(loop, 6),
        "ratio_batched_over_one": round(batched / one, 3), "target_ratio": 3.0,
        "ratio_loop_over_batched": None if loop is None else round(loop / batched, 3),
    }, indent=1))


if __name__ == "__main__":
    main()
