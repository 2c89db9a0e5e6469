"""GPU suite: what the paper's stage 1 needs, measured on one GPU (and on two, if present), in one script.

    python benchmarks/gpu/suite.py --out gpu_suite.json            # on a GPU machine, < 10 minutes
    python benchmarks/gpu/suite.py --dry-run --out /tmp/dry.json   # CPU, tiny sizes, seconds (CI)

Parts (each writes its block into the JSON file as soon as it finishes, and the pretraining part
after each variant, marked ``"unfinished": true`` until the part ends, so a run cut short keeps what
it measured; ``--budget-s`` skips what would not start in time):

1. ``pretrain``: one UniSurg stage-1 training step (``vitl-stage1``: ViT-L/16, T=16, 224 px, tube
   masks, predictor 384 x 12, bf16 autocast, fused AdamW, EMA), built by the trainer's own
   ``build_models`` / ``train_step``, in four variants: with / without activation checkpointing x
   with / without ``torch.compile``. Per variant: clips/s, step time, peak memory per GPU, counted
   FLOPs of the step (``torch.utils.flop_counter``) and MFU against (a) the bf16 matmul rate
   measured on this GPU in the same run and (b) the vendor's dense bf16 peak when the device name
   is known (H100 / H200: 989 TFLOP/s; A100: 312).
2. ``loader``: clips/s of the uint8 clip loader (``ClipDataset`` + ``make_loader``, stage-1 clip
   settings) on a store of synthetic 854x480 footage, for 1, 2, 4, ... workers up to the CPU
   count, and the fewest workers whose rate covers the fastest pretraining variant's clips/s.
3. ``probes``: one training step of 20 stacked attentive probes (4 blocks, 16 heads) at the paper's
   size: ViT-L tokens of 64 frames at 256 px (8192 tokens x 1024), bf16; time, FLOPs, MFU, memory
   (activation checkpointing if the plain step runs out of memory).
4. ``ddp``: if two GPUs exist, the pretraining step in two processes under DDP over NCCL (the
   trainer's ``init_distributed`` / ``build_models``); clips/s in total and the scaling efficiency
   against one GPU.

``--dry-run`` runs every part on the CPU at tiny sizes (``tiny`` encoder, 4 frames of 32 px,
2-process DDP over gloo, ``torch.compile`` with the ``eager`` backend) so the script keeps working
in CI; its numbers mean nothing. Prints the JSON at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hardware_limit import count_flops, matmul_flops_per_s  # noqa: E402

from unisurg.evaluation.probe_optim import BatchedAdamW  # noqa: E402
from unisurg.evaluation.probe import MultiProbe, ProbeSpec  # noqa: E402
from unisurg.data.clips import ClipDataset, make_loader, stack_clips  # noqa: E402
from unisurg.models.vit import token_grid  # noqa: E402
from unisurg.train.pretrain_config import load_pretrain_config  # noqa: E402
from unisurg.train.data import clip_spec  # noqa: E402
from unisurg.rank_exit import leave_rank  # noqa: E402
from unisurg.train.distributed import DistInfo, init_distributed, shutdown, unwrap  # noqa: E402
from unisurg.train.mask_collator import SampleMaskCollator, build_mask_generators  # noqa: E402
from unisurg.train.optim import StepHyperparams, build_optimizer  # noqa: E402
from unisurg.train.steps import StepConfig, train_step  # noqa: E402
from unisurg.train.trainer import build_models  # noqa: E402

# vendor dense bf16 peaks (no sparsity), by a substring of torch.cuda.get_device_name
NOMINAL_BF16 = {"H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12, "L40S": 362e12, "B200": 2250e12}


@dataclass(frozen=True)
class Sizes:
    config: str
    overrides: tuple[str, ...]  # pretraining config overrides (clip size, model size)
    batch: int  # clips per GPU per step
    warmup: int
    steps: int
    video_s: int  # loader: seconds of synthetic footage
    video_hw: tuple[int, int]
    loader_batches: int
    probe_tokens: int
    probe_dim: int
    probe_batch: int
    probe_heads: int
    matmul_n: int


GPU = Sizes("vitl-stage1", ("data.frames=16", "data.crop=224"), batch=32, warmup=3, steps=10, video_s=60,
            video_hw=(480, 854), loader_batches=12, probe_tokens=32 * 16 * 16, probe_dim=1024, probe_batch=4,
            probe_heads=16, matmul_n=8192)
DRY = Sizes("tiny", ("data.frames=4", "data.crop=32", "data.resize_short=null", "model.encoder.embed_dim=32",
                     "model.encoder.depth=1", "model.encoder.num_heads=2", "model.predictor.predictor_dim=16",
                     "model.predictor.depth=1", "model.predictor.num_heads=2"),
            batch=2, warmup=1, steps=2, video_s=2, video_hw=(48, 64), loader_batches=3, probe_tokens=16,
            probe_dim=32, probe_batch=2, probe_heads=4, matmul_n=256)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def nominal_peak(dev: torch.device) -> float | None:
    if dev.type != "cuda":
        return None
    name = torch.cuda.get_device_name(dev)
    hits = [v for k, v in NOMINAL_BF16.items() if k in name]
    return max(hits) if hits else None


def timed(fn, warmup: int, steps: int, dev: torch.device) -> float:
    """Mean wall seconds per call after ``warmup`` calls (GPU synchronised around the timed calls)."""
    for _ in range(warmup):
        fn()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(dev)
    return (time.perf_counter() - t0) / steps


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    return None if not peak else round(flops / seconds / peak, 6)


def memory_gib(dev: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(dev) / 2 ** 30, 2) if dev.type == "cuda" else None


def reset_memory(dev: torch.device) -> None:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


# -- 1. pretraining step -------------------------------------------------------------------------------

def pretrain_config(sz: Sizes, act_checkpoint: bool, batch: int):
    return load_pretrain_config(sz.config, list(sz.overrides) + [
        f"model.encoder.act_checkpoint={str(act_checkpoint).lower()}", f"model.predictor.act_checkpoint={str(act_checkpoint).lower()}", "run.compile=false", "run.dtype=bf16",
        f"schedule.global_batch_size={batch}", "run.threads=null"])


def pretrain_step_fn(cfg, info: DistInfo, batch: int, compile_backend: str | None, seed: int = 0):
    """(step function, models) of one stage-1 training step on random uint8 clips with the config's masks."""
    torch.manual_seed(seed)
    models = build_models(cfg, info, load_init=False)
    if compile_backend is not None:  # what run.compile does, with a selectable backend (eager in the dry run)
        inner = unwrap(models.student)
        for part in (inner.encoder, getattr(inner, "predictor", None), getattr(inner, "decoder", None), models.target):
            if part is not None:
                part.compile(backend=compile_backend)
    d, m = cfg.data, cfg.model.encoder
    shape = (3, d.frames, d.crop, d.crop)
    grid = token_grid(shape, m.tubelet_size, m.patch_size)
    collate = SampleMaskCollator(build_mask_generators(cfg.mask, grid), grid, seed=seed, tubelet_size=m.tubelet_size,
                                 patch_size=m.patch_size, per_rank_batch=batch, rank=info.rank, world=info.world)
    g = torch.Generator().manual_seed(seed + info.rank)
    clips, masks = collate([torch.randint(0, 256, shape, dtype=torch.uint8, generator=g) for _ in range(batch)])
    clips = clips.to(info.device)
    opt = build_optimizer(models.student, cfg.optim, info.device)
    step_cfg = StepConfig(info.device, torch.bfloat16 if info.device.type == "cuda" else None, cfg.optim.grad_clip)
    hyper = StepHyperparams(lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, momentum=cfg.ema.momentum)
    return (lambda: train_step(models.task, opt, clips, masks, hyper, step_cfg)), models


def pretrain_part(sz: Sizes, dev: torch.device, peak: float, nominal: float | None, dry: bool,
                  deadline: float, keep=lambda block: None) -> dict:
    """The four variants; before each, ``keep(block)`` gets the rows so far, so a run killed mid-part keeps them."""
    rows, flops = [], None
    block = {"config": sz.config, "overrides": list(sz.overrides), "variants": rows}
    backend = "eager" if dry else "inductor"
    for compiled in (False, True):
        for ac in (False, True):
            name = f"act_checkpoint={ac},compile={compiled}"
            keep(block)
            if time.perf_counter() > deadline:
                rows.append({"variant": name, "skipped": "time budget"})
                continue
            reset_memory(dev)
            try:
                step, models = pretrain_step_fn(pretrain_config(sz, ac, sz.batch), DistInfo(device=dev), sz.batch,
                                                backend if compiled else None)
                if flops is None:  # the same arithmetic in every variant: counted once, eagerly
                    flops = count_flops(step)[0]
                sec = timed(step, sz.warmup + (2 if compiled else 0), sz.steps, dev)
            except torch.cuda.OutOfMemoryError:
                rows.append({"variant": name, "batch": sz.batch, "error": "out of memory"})
                continue
            rows.append({"variant": name, "batch": sz.batch, "step_s": round(sec, 6),
                         "clips_per_s": round(sz.batch / sec, 2), "peak_memory_gib": memory_gib(dev),
                         "gflop_per_step": round(flops / 1e9, 6), "achieved_tflop_per_s": round(flops / sec / 1e12, 4),
                         "mfu_vs_measured_matmul": mfu(flops, sec, peak), "mfu_vs_nominal": mfu(flops, sec, nominal)})
            del step, models  # free this variant's weights and optimizer state before the next one
    return block


# -- 2. loader -----------------------------------------------------------------------------------------

def make_store(root: Path, sz: Sizes) -> Path:
    from ingest_vs_ffmpeg import make_video

    from unisurg.data.ingest import IngestItem, IngestParams, ingest

    video = root / "footage.mp4"
    make_video(video, seconds=sz.video_s, size=sz.video_hw)
    params = IngestParams(fps=25) if sz.video_hw[0] >= 256 else IngestParams(fps=25, short_side=sz.video_hw[0])
    ingest([IngestItem(video, "suite", "suite")], root / "store", params, progress=False)
    return root / "store"


def loader_rate(ds, batch: int, workers: int, batches: int) -> float:
    """Clips/s over ``batches`` batches after the first (worker start-up excluded)."""
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0)).tolist()
    sub = torch.utils.data.Subset(ds, (order * (1 + (batches + 1) * batch // len(order)))[:(batches + 1) * batch])
    dl = make_loader(sub, batch_size=batch, workers=workers, collate_fn=stack_clips, drop_last=True,
                     pin_memory=torch.cuda.is_available())
    it = iter(dl)
    next(it)
    t0 = time.perf_counter()
    n = sum(b.shape[0] for b in it)
    return n / (time.perf_counter() - t0)


def loader_part(sz: Sizes, need_clips_per_s: float | None, deadline: float) -> dict:
    cfg = pretrain_config(sz, False, sz.batch)
    cpus = os.cpu_count() or 1
    counts = [w for w in (1, 2, 4, 8, 16, 32) if w <= cpus] or [1]
    with tempfile.TemporaryDirectory() as tmp:
        ds = ClipDataset(make_store(Path(tmp), sz), clip_spec(cfg))
        rates = {}
        for w in counts:
            if time.perf_counter() > deadline:
                break
            rates[w] = round(loader_rate(ds, sz.batch, w, sz.loader_batches), 2)
    enough = [w for w, r in rates.items() if need_clips_per_s is not None and r >= need_clips_per_s]
    return {"cpu_count": cpus, "clip": {"frames": cfg.data.frames, "crop": cfg.data.crop,
                                        "resize_short": cfg.data.resize_short},
            "clips_per_s_by_workers": rates, "gpu_needs_clips_per_s": need_clips_per_s,
            "workers_needed": min(enough) if enough else None}


# -- 3. probes -----------------------------------------------------------------------------------------

def probe_part(sz: Sizes, dev: torch.device, peak: float, nominal: float | None, probes: int = 20) -> dict:
    spec = ProbeSpec("attentive", sz.probe_dim, 7, sz.probe_dim, depth=4, heads=sz.probe_heads)
    x = torch.randn(sz.probe_batch, sz.probe_tokens, sz.probe_dim, device=dev)
    y = torch.randint(0, 7, (sz.probe_batch,), device=dev)
    out = {"probes": probes, "tokens": sz.probe_tokens, "dim": sz.probe_dim, "batch": sz.probe_batch}
    for checkpoint in (False, True):
        reset_memory(dev)
        try:
            mp = MultiProbe(spec, probes, checkpoint=checkpoint).to(dev)
            opt = BatchedAdamW(mp, [1e-3] * probes, [0.05] * probes)

            def step():
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    o = mp(x)
                loss = torch.nn.functional.cross_entropy(o.float().flatten(0, 1), y.repeat(probes))
                opt.zero_grad()
                (loss * probes).backward()
                opt.step()
            flops = count_flops(step)[0]
            sec = timed(step, sz.warmup, sz.steps, dev)
        except torch.cuda.OutOfMemoryError:
            out["out_of_memory_without_checkpointing"] = True
            continue
        return {**out, "act_checkpoint": checkpoint, "step_s": round(sec, 6), "peak_memory_gib": memory_gib(dev),
                "gflop_per_step": round(flops / 1e9, 6), "mfu_vs_measured_matmul": mfu(flops, sec, peak),
                "mfu_vs_nominal": mfu(flops, sec, nominal)}
    return {**out, "error": "out of memory with and without activation checkpointing"}


# -- 4. DDP --------------------------------------------------------------------------------------------

def ddp_rank(rank: int, sz: Sizes, result: str, dry: bool) -> None:
    """One rank of the DDP part, in its own fresh process (``--ddp-rank``; the parent set the rendezvous env)."""
    if dry:
        torch.set_num_threads(1)
    info = init_distributed("cpu" if dry else "cuda")
    try:
        cfg = pretrain_config(sz, False, 2 * sz.batch)
        step, _ = pretrain_step_fn(cfg, info, sz.batch, None)
        sec = timed(step, sz.warmup, sz.steps, info.device)
        if info.is_main:
            Path(result).write_text(json.dumps({"backend": torch.distributed.get_backend(), "world": info.world,
                                                "batch_per_rank": sz.batch, "step_s": sec,
                                                "peak_memory_gib": memory_gib(info.device)}))
    finally:
        shutdown(info)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(argv: list[str], world: int, timeout_s: float) -> None:
    """Start ``world`` fresh interpreters of this script as the ranks of one job and wait for all of them.

    Fresh processes, not forks: a fork of a process with other threads (a test runner's, a progress
    bar's) can inherit a held lock and hang for ever. A rank that fails or outlives ``timeout_s``
    stops every rank, and the error carries the ranks' output.
    """
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv, "--ddp-rank", str(rank)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + timeout_s
    outputs, failed = [], None
    for rank, p in enumerate(procs):
        try:
            out = p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
            if p.returncode != 0:
                failed = failed or f"rank {rank} exited with {p.returncode}"
        except subprocess.TimeoutExpired:
            failed = failed or f"rank {rank} still running after {timeout_s:.0f} s"
            p.kill()
            out = p.communicate()[0]
        outputs.append(out)
        if failed:  # the others would wait for this rank for ever
            for q in procs:
                q.kill()
    if failed:
        tails = "\n".join(f"--- rank {r} ---\n{o[-1500:]}" for r, o in enumerate(outputs))
        raise RuntimeError(f"DDP part: {failed}\n{tails}")


def ddp_part(sz: Sizes, dry: bool, one_gpu_clips_per_s: float | None, timeout_s: float) -> dict:
    if not dry and torch.cuda.device_count() < 2:
        return {"skipped": f"{torch.cuda.device_count()} GPU(s): DDP needs 2"}
    with tempfile.TemporaryDirectory() as tmp:
        result = str(Path(tmp) / "ddp.json")
        run_ranks(["--ddp-result", result, "--batch", str(sz.batch)] + (["--dry-run"] if dry else []), 2, timeout_s)
        r = json.loads(Path(result).read_text())
    clips = 2 * sz.batch / r["step_s"]
    return {**r, "step_s": round(r["step_s"], 4), "clips_per_s_total": round(clips, 2),
            "scaling_vs_one_gpu": None if not one_gpu_clips_per_s else round(clips / (2 * one_gpu_clips_per_s), 3)}


# -- main ----------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks that every part runs")
    ap.add_argument("--out", type=Path, default=Path("gpu_suite.json"), help="JSON written after every part")
    ap.add_argument("--parts", nargs="+", default=["pretrain", "loader", "probes", "ddp"],
                    choices=["pretrain", "loader", "probes", "ddp"])
    ap.add_argument("--batch", type=int, default=None, help="clips per GPU in the pretraining step (default 32)")
    ap.add_argument("--budget-s", type=float, default=540.0, help="skip what starts after this many seconds")
    ap.add_argument("--ddp-rank", type=int, default=None, help=argparse.SUPPRESS)  # a rank started by the ddp part
    ap.add_argument("--ddp-result", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    sz = DRY if a.dry_run else GPU
    if a.batch:
        sz = Sizes(**{**sz.__dict__, "batch": a.batch})
    if a.ddp_rank is not None:
        ddp_rank(a.ddp_rank, sz, a.ddp_result, a.dry_run)
        leave_rank(0)  # not interpreter teardown: a gloo thread may still be releasing the last collective
    if a.dry_run:
        torch.set_num_threads(1)
        dev = torch.device("cpu")
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU machine, or pass --dry-run")
    else:
        dev = torch.device("cuda", 0)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    deadline = time.perf_counter() + a.budget_s
    peak = matmul_flops_per_s(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32, n=sz.matmul_n)
    report: dict = {"dry_run": a.dry_run, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                    "gpus": torch.cuda.device_count(), "torch": torch.__version__,
                    "matmul_peak_tflop_per_s": round(peak / 1e12, 3), "nominal_bf16_tflop_per_s":
                        None if nominal_peak(dev) is None else nominal_peak(dev) / 1e12, "parts": {}}

    def save():
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=1))

    def keep(part: str):
        """Write a part's block as it grows, marked unfinished: a run killed inside the part keeps what it measured."""
        def put(block: dict) -> None:
            report["parts"][part] = {**block, "unfinished": True}
            save()
        return put

    best = None
    steps = {"pretrain": lambda: pretrain_part(sz, dev, peak, nominal_peak(dev), a.dry_run, deadline,
                                               keep("pretrain")),
             "loader": lambda: loader_part(sz, best, deadline),
             "probes": lambda: probe_part(sz, dev, peak, nominal_peak(dev)),
             "ddp": lambda: ddp_part(sz, a.dry_run, plain, max(60.0, deadline - time.perf_counter()))}
    plain = None
    for part in ("pretrain", "loader", "probes", "ddp"):
        if part not in a.parts:
            continue
        if time.perf_counter() > deadline:
            report["parts"][part] = {"skipped": "time budget"}
            continue
        t0 = time.perf_counter()
        try:
            report["parts"][part] = steps[part]()
        except Exception as e:  # one failing part must lose neither the others' numbers nor its own so far
            done = {k: v for k, v in report["parts"].get(part, {}).items() if k != "unfinished"}
            report["parts"][part] = {**done, "error": f"{type(e).__name__}: {e}",
                                     "traceback": traceback.format_exc()[-3000:]}
        report["parts"][part]["seconds"] = round(time.perf_counter() - t0, 1)
        if part == "pretrain":
            ok = [r for r in report["parts"][part].get("variants", []) if "clips_per_s" in r]
            best = max((r["clips_per_s"] for r in ok), default=None)
            plain = next((r["clips_per_s"] for r in ok if r["variant"] == "act_checkpoint=False,compile=False"), None)
        save()
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
