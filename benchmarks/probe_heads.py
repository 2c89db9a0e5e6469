"""Cost of training 20 attentive probes at once vs one probe (issue 4's target: at most 3x).

Three measurements, printed as one JSON object:

``cached`` (features read from the cache, the default ``unisurg bench`` path): one training step
(forward + backward + AdamW) of

* ``one``: a :class:`MultiProbe` holding 1 probe;
* ``batched``: a :class:`MultiProbe` holding P probes (stacked weights, one bmm / SDPA per layer);
* ``loop`` (reference): P separate 1-probe modules stepped one after the other, the naive way.

``online`` (``--backbone``; the issue's framing "all fed by one frozen forward per batch", which is
also the path of the paper's augmented protocol, ``features.online=true``): the frozen encoder's
forward on a clip batch plus the step of 1 probe vs of P probes.

``official`` (``--vjepa2-path`` or ``$VJEPA2_PATH``, a checkout of facebookresearch/vjepa2 kept
outside the project, see ``official_code.py``): the same step of our P stacked probes against the
official V-JEPA 2 frozen-eval loop on the same cached tokens: P ``AttentiveClassifier``s
(``src/models/attentive_pooler.py``), each with its own ``torch.optim.AdamW``, stepped as
``evals/video_classification_frozen/eval.py`` does (all forwards, each loss backward, each
optimizer step, each zero_grad). Steps alternate (ours, official, official, ours, ...) and the
medians are compared; on a 1-thread CPU run the clock is the process's CPU time (see
``hardware_limit.py``). Both sides also report the counted FLOPs of a step and the achieved
FLOP/s as a fraction of the machine's matmul rate measured in the same run.
With ``--cpu-bf16`` (CPU) both also run under bf16 autocast (ours: ``train.amp_cpu=true``), so one run
gives ours in bf16 against the official loop as it runs on a CPU (fp32: its ``torch.cuda.amp.autocast``
does nothing there) and against the official loop forced into the same CPU bf16 autocast.

``flop_model``: FLOPs counted by ``torch.utils.flop_counter`` (on the meta device, so no real
arithmetic) for the paper's sizes: ViT-L and ViT-g on 64 frames at 256 px (8192 tokens), ViT-L
on 16 x 224 (1568 tokens), with the 4-block probe and, for comparison, V-JEPA 1's 1-block probe and
a 4-block probe of width 256 (``probe.width=256``: an input projection, then narrow blocks).
``predicted_ratio_*`` is the ratio of FLOPs: what a saturated device gives. Each measured ratio is
printed next to the FLOP ratio of the same shapes, which shows whether any gap is overhead.

The probes share no arithmetic (each has its own weights over all tokens), so on hardware that one
probe already saturates, P probes cost P times one; only the frozen forward is shared.

    python benchmarks/probe_heads.py                                   # CPU-sized, 1 thread
    python benchmarks/probe_heads.py --tokens 256 --dim 256 --heads 16 --vjepa2-path /tmp/vjepa2 \
        --no-loop --no-flop-model --no-cached --cpu-bf16               # against the official loop
    python benchmarks/probe_heads.py --backbone large --bb-width 256 --frames 16 --res 64
    python benchmarks/probe_heads.py --device cuda --tokens 8192 --dim 1024 --heads 16 --bf16 \\
        --backbone large --frames 64 --res 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardware_limit import clock, count_flops, limit_report, matmul_flops_per_s  # noqa: E402
from official_code import add_official_args, put_official_on_path  # noqa: E402

from unisurg.evaluation.probe_optim import BatchedAdamW  # noqa: E402
from unisurg.evaluation.probe import MultiProbe, ProbeSpec  # noqa: E402
from unisurg.models import build_encoder  # noqa: E402


def _step_fn(probe, opt, x_fn, y, bf16: bool = False):
    """One probe training step; ``x_fn()`` yields the tokens (cached, or a frozen forward); with ``bf16`` the
    forward runs under bf16 autocast and the loss, backward and update outside it (as ``train_probes``)."""
    def step():
        with torch.autocast(y.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = probe(x_fn())
        loss = torch.nn.functional.cross_entropy(out.float().flatten(0, 1), y.repeat(out.shape[0]), reduction="none")
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


def official_loop_step(a, x: torch.Tensor, y: torch.Tensor, dev: torch.device, bf16: bool):
    """The official frozen-eval loop over ``a.probes`` V-JEPA 2 ``AttentiveClassifier``s (one AdamW each)."""
    put_official_on_path(a.vjepa2_path, a.vjepa2_shims)
    from src.models.attentive_pooler import AttentiveClassifier  # the official module, imported from the checkout

    heads = [AttentiveClassifier(embed_dim=a.dim, num_heads=a.heads, depth=a.depth, num_classes=a.classes,
                                 norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                 use_activation_checkpointing=a.official_checkpointing).to(dev)
             for _ in range(a.probes)]
    opts = [torch.optim.AdamW(h.parameters(), lr=1e-3, weight_decay=0.05) for h in heads]
    crit = torch.nn.CrossEntropyLoss()

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            outs = [h(x) for h in heads]
        losses = [crit(o.float(), y) for o in outs]
        for loss in losses:
            loss.backward()
        for o in opts:
            o.step()
        for o in opts:
            o.zero_grad()
    return step


def interleaved_medians(fns: dict, steps: int, warmup: int, dev: torch.device) -> dict:
    """Median seconds per call of each function, calls alternating so that machine load hits all alike."""
    now = clock(dev)
    names = list(fns)
    times = {n: [] for n in names}
    for i in range(warmup + steps):
        order = names if i % 2 == 0 else names[::-1]
        for n in order:
            sync_dev(dev)
            t0 = now()
            fns[n]()
            sync_dev(dev)
            if i >= warmup:
                times[n].append(now() - t0)
    return {n: statistics.median(v) for n, v in times.items()}


def sync_dev(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def sweep_ratios(enc_flops: float, probe_flops: float, probes: int) -> dict:
    """FLOP ratios of one frozen forward + P probe steps against one probe, and against P separate runs."""
    sweep = enc_flops + probes * probe_flops
    return {"over_one": sweep / (enc_flops + probe_flops), "over_separate_runs": sweep / (probes * (enc_flops + probe_flops))}


def probe_step_flops(tokens: int, dim: int, depth: int, heads: int, batch: int = 1, classes: int = 7,
                     width: int | None = None) -> float:
    """FLOPs of one 1-probe training step (forward + backward) on ``[batch, tokens, dim]``, counted on meta.

    ``width``: the probe's width (an input projection ``dim -> width`` first); None = ``dim``, V-JEPA 2's.
    """
    with torch.device("meta"):
        probe = MultiProbe(ProbeSpec("attentive", dim, classes, width or dim, depth=depth, heads=heads), 1)
        x = torch.empty(batch, tokens, dim)
        return count_flops(lambda: probe(x).sum().backward())[0]


def encoder_forward_flops(preset: str, frames: int, res: int, batch: int = 1, **overrides) -> tuple[float, int, int]:
    """(FLOPs, tokens, width) of a frozen encoder forward on ``[batch, 3, frames, res, res]``, counted on meta."""
    with torch.device("meta"):
        enc = build_encoder(preset, **overrides)
        x = torch.empty(batch, 3, frames, res, res)
        with torch.no_grad():
            flops, tokens = count_flops(lambda: enc(x))
    return flops, tokens.shape[1], enc.config.embed_dim


def flop_model(probes: int) -> list[dict]:
    """Predicted (FLOP) ratios of P probes vs 1 at the papers' sizes."""
    rows = []
    for preset, frames, res in (("large", 64, 256), ("giant", 64, 256), ("large", 16, 224)):
        enc_f, n, d = encoder_forward_flops(preset, frames, res)
        # V-JEPA 2's probe (4 blocks at the backbone's width), V-JEPA 1's (1 block), a narrow 4-block one
        for depth, width in ((4, d), (1, d), (4, 256)):
            pf = probe_step_flops(n, d, depth, 16, width=width)
            ratio = sweep_ratios(enc_f, pf, probes)
            rows.append({
                "backbone": f"vit-{preset}", "frames": frames, "res": res, "tokens": n, "probe_depth": depth,
                "probe_width": width,
                "tflop_frozen_forward": round(enc_f / 1e12, 3), "tflop_probe_step": round(pf / 1e12, 3),
                "predicted_ratio_online": round(ratio["over_one"], 2),
                "predicted_ratio_vs_separate_runs": round(ratio["over_separate_runs"], 3),
            })
    return rows


def cached_timings(a, spec, x, timed) -> dict:
    """One probe, P stacked probes and (unless --no-loop) P separate modules, on cached tokens."""
    one = timed(spec, [1], lambda: x)
    batched = timed(spec, [a.probes], lambda: x)
    loop = None if a.no_loop else timed(spec, [1] * a.probes, lambda: x)
    return {
        "tokens": a.tokens, "dim": a.dim,
        "step_s_one_probe": round(one, 6), "step_s_batched": round(batched, 6),
        "step_s_loop_of_modules": None if loop is None else round(loop, 6),
        "ratio_batched_over_one": round(batched / one, 3),
        "ratio_loop_over_batched": None if loop is None else round(loop / batched, 3),
        "predicted_ratio_flops": float(a.probes),  # nothing shared: P x the FLOPs of one
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=128, help="cached: tokens per clip")
    ap.add_argument("--dim", type=int, default=128, help="cached: token width")
    ap.add_argument("--heads", type=int, default=4, help="probe heads")
    ap.add_argument("--depth", type=int, default=4, help="probe blocks (3 self-attention + 1 cross)")
    ap.add_argument("--width", type=int, default=None, help="probe width (input projection first); default: token width")
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--backbone", default=None, help="online: encoder preset run frozen every step (e.g. large)")
    ap.add_argument("--bb-width", type=int, default=None, help="online: override the preset's width")
    ap.add_argument("--bb-heads", type=int, default=None, help="online: override the preset's heads")
    ap.add_argument("--frames", type=int, default=16, help="online: clip frames")
    ap.add_argument("--res", type=int, default=64, help="online: clip resolution")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CUDA)")
    ap.add_argument("--cpu-bf16", action="store_true",
                    help="with --vjepa2-path on CPU: also time ours and the official loop under CPU bf16 autocast")
    ap.add_argument("--no-loop", action="store_true", help="skip the P-module loop reference")
    ap.add_argument("--no-cached", action="store_true", help="skip the cached one / batched / loop timings")
    ap.add_argument("--no-flop-model", action="store_true", help="skip the paper-size FLOP table")
    ap.add_argument("--official-checkpointing", action="store_true",
                    help="official classifiers with activation checkpointing (as its eval config does)")
    add_official_args(ap, required=False)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    y = torch.randint(0, a.classes, (a.batch,), device=dev)
    report: dict = {"device": str(dev) if dev.type != "cuda" else torch.cuda.get_device_name(dev),
                    "threads": a.threads, "probes": a.probes, "batch": a.batch, "probe_depth": a.depth,
                    "probe_width": a.width, "probe_heads": a.heads, "bf16": a.bf16, "target_ratio": 3.0}

    def timed(spec, n_probes_each: list[int], x_fn):
        mods = [MultiProbe(spec, n).to(dev) for n in n_probes_each]
        fns = [_step_fn(m, BatchedAdamW(m, [1e-3] * m.n_probes, [0.05] * m.n_probes), x_fn, y, a.bf16) for m in mods]

        def step():
            for f in fns:
                f()
        return _time(step, a.steps, a.warmup, dev)

    # cached tokens
    spec = ProbeSpec("attentive", a.dim, a.classes, a.width or a.dim, depth=a.depth, heads=a.heads)
    x = torch.randn(a.batch, a.tokens, a.dim, device=dev)
    if not a.no_cached:
        report["cached"] = cached_timings(a, spec, x, timed)

    if a.vjepa2_path is not None:
        if a.width not in (None, a.dim):
            raise SystemExit("--vjepa2-path: the official probe has no input projection; leave --width unset")
        def ours_step_fn(bf16: bool):
            mp = MultiProbe(spec, a.probes).to(dev)
            return _step_fn(mp, BatchedAdamW(mp, [1e-3] * a.probes, [0.05] * a.probes), lambda: x, y, bf16)
        fns = {"ours": ours_step_fn(a.bf16), "official": official_loop_step(a, x, y, dev, a.bf16)}
        cpu_bf16 = a.cpu_bf16 and dev.type == "cpu" and not a.bf16
        if cpu_bf16:  # the same two steps under CPU bf16 autocast (ours: train.amp_cpu=true)
            fns.update(ours_bf16=ours_step_fn(True), official_bf16=official_loop_step(a, x, y, dev, True))
        med = interleaved_medians(fns, a.steps, a.warmup, dev)
        peak = matmul_flops_per_s(dev, torch.bfloat16 if a.bf16 else torch.float32)
        f_ours = count_flops(fns["ours"])[0]
        f_off = count_flops(fns["official"])[0]
        report["official"] = {
            "tokens": a.tokens, "dim": a.dim,
            "clock": "process CPU time" if clock(dev) is time.process_time else "wall",
            "official_checkpointing": a.official_checkpointing,
            "step_s_ours": round(med["ours"], 4), "step_s_official_loop": round(med["official"], 4),
            "ratio_ours_over_official": round(med["ours"] / med["official"], 3), "target_ratio": 0.67,
            "ours_limit": limit_report(f_ours, med["ours"], peak),
            "official_limit": limit_report(f_off, med["official"], peak),
        }
        if cpu_bf16:
            peak16 = matmul_flops_per_s(dev, torch.bfloat16)
            report["official"].update({
                "step_s_ours_bf16": round(med["ours_bf16"], 4), "step_s_official_loop_bf16": round(med["official_bf16"], 4),
                # the official eval wraps its step in torch.cuda.amp.autocast, inactive on CPU: it runs fp32 there
                "ratio_ours_bf16_over_official_as_it_runs_on_cpu": round(med["ours_bf16"] / med["official"], 3),
                "ratio_ours_bf16_over_official_bf16": round(med["ours_bf16"] / med["official_bf16"], 3),
                "ours_bf16_limit": limit_report(f_ours, med["ours_bf16"], peak16),
                "official_bf16_limit": limit_report(f_off, med["official_bf16"], peak16),
            })

    if a.backbone:
        overrides = {k: v for k, v in (("embed_dim", a.bb_width), ("num_heads", a.bb_heads)) if v is not None}
        enc = build_encoder(a.backbone, **overrides).to(dev).eval().requires_grad_(False)
        clips = torch.randn(a.batch, 3, a.frames, a.res, a.res, device=dev)

        def frozen():
            with torch.no_grad():
                return enc(clips)
        n_tok, width = frozen().shape[1:]
        ospec = ProbeSpec("attentive", width, a.classes, a.width or width, depth=a.depth, heads=a.heads)
        enc_only = _time(frozen, a.steps, a.warmup, dev)
        one = timed(ospec, [1], frozen)
        batched = timed(ospec, [a.probes], frozen)
        enc_f = encoder_forward_flops(a.backbone, a.frames, a.res, a.batch, **overrides)[0]
        pf = probe_step_flops(n_tok, width, a.depth, a.heads, a.batch, a.classes, width=a.width)
        ratio = sweep_ratios(enc_f, pf, a.probes)
        report["online"] = {
            "backbone": a.backbone, **overrides, "depth": enc.config.depth, "frames": a.frames, "res": a.res,
            "tokens": n_tok, "step_s_frozen_forward_only": round(enc_only, 6),
            "step_s_one_probe": round(one, 6), "step_s_batched": round(batched, 6),
            "ratio_batched_over_one": round(batched / one, 3),
            "predicted_ratio_flops": round(ratio["over_one"], 3),
            # against P separate runs, each with its own frozen forward (the naive sweep)
            "ratio_batched_over_separate_runs": round(batched / (a.probes * one), 3),
            "predicted_ratio_vs_separate_runs_flops": round(ratio["over_separate_runs"], 3),
        }

    if not a.no_flop_model:
        report["flop_model"] = flop_model(a.probes)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
