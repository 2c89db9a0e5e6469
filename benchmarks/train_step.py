"""Median time of one full pretraining step, ours against the official V-JEPA 2 code, same run.

    python benchmarks/train_step.py [--config bench-s] [--threads 1] [--pos sincos rope]
                                    [--vjepa2-path /tmp/vjepa2_ref] [KEY=VALUE ...]

A step = target forward (EMA encoder, full clip, layer-normed) + context encoder on the visible
tokens + predictor + losses + backward + AdamW + EMA update. Both sides get the same clips and the
same masks: V-JEPA 2's two multiblock families (8 blocks at spatial scale 0.15, 2 at 0.7) drawn by
the official mask generator, truncated to equal counts as it does; our side runs the plain V-JEPA
L1 ("ours_ms", the comparison) and, on the same batch, the full UniSurg objective ("ours_unisurg_ms").

The official code is imported from ``--vjepa2-path`` (a checkout of facebookresearch/vjepa2 kept
outside this project; nothing of it is copied here). Its imports of ``timm`` (needs torchvision,
which does not import with the CPU torch) and ``einops`` are satisfied by stand-ins in
``--vjepa2-shims`` (default ``<path>/_shims``): ``timm.models.layers.drop_path`` and an unused
``einops.rearrange``. Its per-step logic (scheduler steps, target forward + layer norm, context
forward, predictor, L1 per mask, backward, AdamW from its ``init_opt``, foreach EMA) is re-stated
in :func:`official_step` from reading ``app/vjepa/train.py``.

Before timing, the official weights are loaded into our modules and both losses are computed on
the same batch ("loss_abs_diff"): a check that the two sides compute the same model and loss.
Steps alternate (ours, official, ours, ...) so machine load hits both alike; medians are compared,
on the process's CPU time when one thread runs (see ``hardware_limit.py``). Each side also reports
the counted FLOPs of a step and the achieved FLOP/s as a fraction of the machine's matmul rate
measured in the same run ("ours_limit", "official_limit"). Prints JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardware_limit import clock, count_flops, limit_report, matmul_flops_per_s  # noqa: E402
from official_code import add_official_args, put_official_on_path  # noqa: E402

from unisurg.data.clips import normalize_batch  # noqa: E402
from unisurg.train.masks import MaskBatch  # noqa: E402
from unisurg.models.strict_load import load_strict  # noqa: E402
from unisurg.train.pretrain_config import load_pretrain_config  # noqa: E402
from unisurg.train.distributed import DistInfo  # noqa: E402
from unisurg.train.optim import Schedules, build_optimizer  # noqa: E402
from unisurg.train.steps import StepConfig, train_step  # noqa: E402
from unisurg.train.trainer import build_models  # noqa: E402

VJEPA2_MASKS = ({"num_blocks": 8, "spatial_scale": (0.15, 0.15)}, {"num_blocks": 2, "spatial_scale": (0.7, 0.7)})


# -- the official side ---------------------------------------------------------------------------

def import_official(path: Path, shims: Path | None):
    put_official_on_path(path, shims)
    try:
        from app.vjepa.utils import init_opt
        from src.masks.multiseq_multiblock3d import _MaskGenerator
        from src.masks.utils import apply_masks
        from src.models.predictor import vit_predictor
        from src.models.vision_transformer import VisionTransformer
        from src.utils.wrappers import MultiSeqWrapper, PredictorMultiSeqWrapper
    except ImportError as e:
        raise SystemExit(f"cannot import the official code from {path} ({e}); if timm or einops is missing, put "
                         "stand-ins in --vjepa2-shims (see this file's docstring)") from e
    return dict(init_opt=init_opt, MaskGenerator=_MaskGenerator, apply_masks=apply_masks, vit_predictor=vit_predictor,
                VisionTransformer=VisionTransformer, MultiSeqWrapper=MultiSeqWrapper,
                PredictorMultiSeqWrapper=PredictorMultiSeqWrapper)


def build_official(o, cfg, use_rope: bool, total_steps: int):
    e, pr, d = cfg.model.encoder, cfg.model.predictor, cfg.data
    enc = o["VisionTransformer"](img_size=d.crop, patch_size=e.patch_size, num_frames=d.frames,
                                 tubelet_size=e.tubelet_size, embed_dim=e.embed_dim, depth=e.depth,
                                 num_heads=e.num_heads, mlp_ratio=4.0, qkv_bias=True,
                                 norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_sdpa=True, use_rope=use_rope,
                                 uniform_power=False)
    pred = o["vit_predictor"](img_size=d.crop, patch_size=e.patch_size, num_frames=d.frames,
                              tubelet_size=e.tubelet_size, embed_dim=e.embed_dim, predictor_embed_dim=pr.predictor_dim,
                              depth=pr.depth, num_heads=pr.num_heads, use_mask_tokens=True,
                              num_mask_tokens=len(VJEPA2_MASKS), zero_init_mask_tokens=True, use_rope=use_rope,
                              use_sdpa=True, uniform_power=False)
    encoder, predictor = o["MultiSeqWrapper"](enc), o["PredictorMultiSeqWrapper"](pred)
    target = copy.deepcopy(encoder)
    for p in target.parameters():
        p.requires_grad = False
    opt, scaler, sched, wd_sched = o["init_opt"](
        is_anneal=False, encoder=encoder, predictor=predictor, wd=cfg.optim.weight_decay,
        final_wd=cfg.optim.weight_decay, start_lr=cfg.optim.start_lr, ref_lr=cfg.optim.lr, final_lr=cfg.optim.final_lr,
        iterations_per_epoch=total_steps, warmup=0.1, num_epochs=1, ipe_scale=1.0, mixed_precision=False)
    return dict(encoder=encoder, predictor=predictor, target=target, opt=opt, sched=sched, wd_sched=wd_sched,
                momentum=cfg.ema.momentum)


def official_loss(o, s, clips, masks_enc, masks_pred):
    """Target forward + layer norm, context encoder, predictor, mean L1 over (clip length, mask family)."""
    with torch.no_grad():
        h = [F.layer_norm(hi, (hi.size(-1),)) for hi in s["target"](clips)]
    z = s["predictor"](s["encoder"](clips, masks_enc), masks_enc, masks_pred)
    terms = []
    for zi, hi, mi in zip(z, h, masks_pred):
        for zij, hij in zip(zi, o["apply_masks"](hi, mi, concat=False)):
            terms.append((zij - hij).abs().mean())
    return sum(terms) / len(terms)


def official_step(o, s, clips, masks_enc, masks_pred) -> float:
    s["sched"].step()
    s["wd_sched"].step()
    loss = official_loss(o, s, clips, masks_enc, masks_pred)
    loss.backward()
    s["opt"].step()
    s["opt"].zero_grad()
    m = s["momentum"]
    with torch.no_grad():
        tgt = list(s["target"].parameters())
        src = list(s["encoder"].parameters())
        torch._foreach_mul_(tgt, m)
        torch._foreach_add_(tgt, src, alpha=1 - m)
    return float(loss)  # the official loop reads the loss every step


# -- shared inputs ---------------------------------------------------------------------------------

def make_batch(o, cfg, seed: int):
    """Clips (uint8 for us, normalised float for them) and the official multiblock masks in both forms."""
    d, m = cfg.data, cfg.model.encoder
    g = torch.Generator().manual_seed(seed)
    b = cfg.schedule.global_batch_size
    clips_u8 = torch.randint(0, 256, (b, 3, d.frames, d.crop, d.crop), dtype=torch.uint8, generator=g)
    torch.manual_seed(seed)  # the official generator draws block positions from the global RNG
    gens = [o["MaskGenerator"](crop_size=(d.crop, d.crop), num_frames=d.frames, spatial_patch_size=(m.patch_size,) * 2,
                               temporal_patch_size=m.tubelet_size, spatial_pred_mask_scale=f["spatial_scale"],
                               temporal_pred_mask_scale=(1.0, 1.0), aspect_ratio=(0.75, 1.5), npred=f["num_blocks"])
            for f in VJEPA2_MASKS]
    enc_masks, pred_masks = zip(*(gen(b) for gen in gens))
    grid = (d.frames // m.tubelet_size, d.crop // m.patch_size, d.crop // m.patch_size)
    ours = []
    for me, mp in zip(enc_masks, pred_masks):
        tok = torch.zeros(b, grid[0] * grid[1] * grid[2], dtype=torch.bool)
        tok.scatter_(1, mp, True)
        tubes = tok.view(b, grid[0], grid[1] * grid[2]).all(dim=1)
        ours.append(MaskBatch(me.clone(), torch.ones_like(me, dtype=torch.bool), mp.clone(),
                              torch.ones_like(mp, dtype=torch.bool), tubes, False, False))
    return clips_u8, ours, [list(enc_masks)], [list(pred_masks)]


def copy_official_weights(s, models) -> None:
    """Load the official encoder / predictor / target weights into ours (same names; no pos tables)."""
    def sd(module):
        return {k: v for k, v in module.backbone.state_dict().items() if k not in ("pos_embed", "predictor_pos_embed")}

    load_strict(models.student.encoder, sd(s["encoder"]), source="official encoder")
    load_strict(models.student.predictor, sd(s["predictor"]), source="official predictor")
    load_strict(models.target, sd(s["target"]), source="official target")


# -- main ------------------------------------------------------------------------------------------

def bench_one(o, base_cfg_name: str, overrides: list[str], pos: str, steps: int, warmup: int, peak: float) -> dict:
    cfg = load_pretrain_config(base_cfg_name, overrides + [f"model.encoder.pos_embed={pos}", "loss.objective=vjepa",
                                                           "mask.kind=vjepa2", "run.threads=null"])
    total = steps + warmup + 2
    torch.manual_seed(0)
    info = DistInfo()
    ours = build_models(cfg, info, load_init=False)
    ours_u = build_models(load_pretrain_config(base_cfg_name, overrides + [
        f"model.encoder.pos_embed={pos}", "loss.objective=unisurg", "mask.kind=vjepa2", "run.threads=null"]), info,
        load_init=False)
    theirs = build_official(o, cfg, pos == "rope", total)
    clips_u8, masks, m_enc, m_pred = make_batch(o, cfg, seed=1)
    clips = [normalize_batch(clips_u8)]

    copy_official_weights(theirs, ours)
    with torch.no_grad():
        l_ours = float(ours.task.losses(clips[0], masks)["loss"])
        l_theirs = float(official_loss(o, theirs, clips, m_enc, m_pred))

    sched = Schedules(cfg.optim, cfg.ema, total, total)
    step_cfg = StepConfig(torch.device("cpu"), None, cfg.optim.grad_clip)
    opt = build_optimizer(ours.student, cfg.optim, step_cfg.device)
    opt_u = build_optimizer(ours_u.student, cfg.optim, step_cfg.device)
    times = {"ours": [], "official": [], "ours_unisurg": []}
    now = clock(torch.device("cpu"))
    for i in range(warmup + steps):
        hyper = sched(i)
        runs = (("ours", lambda: train_step(ours.task, opt, clips_u8, masks, hyper, step_cfg)),
                ("official", lambda: official_step(o, theirs, clips, m_enc, m_pred)),
                ("ours_unisurg", lambda: train_step(ours_u.task, opt_u, clips_u8, masks, hyper, step_cfg)))
        for name, fn in runs[i % 2:] + runs[:i % 2]:  # alternate who goes first
            t0 = now()
            fn()
            if i >= warmup:
                times[name].append(now() - t0)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    hyper = sched(warmup + steps)
    flops = {"ours": count_flops(lambda: train_step(ours.task, opt, clips_u8, masks, hyper, step_cfg))[0],
             "official": count_flops(lambda: official_step(o, theirs, clips, m_enc, m_pred))[0]}
    n_ctx = [int(m.context_idx.shape[1]) for m in masks]
    n_tgt = [int(m.target_idx.shape[1]) for m in masks]
    return {"pos_embed": pos, "ours_ms": round(med["ours"], 2), "official_ms": round(med["official"], 2),
            "ratio_ours_over_official": round(med["ours"] / med["official"], 3),
            "ours_unisurg_ms": round(med["ours_unisurg"], 2),
            "loss_ours": l_ours, "loss_official": l_theirs, "loss_abs_diff": abs(l_ours - l_theirs),
            "context_tokens_per_family": n_ctx, "target_tokens_per_family": n_tgt,
            "ours_limit": limit_report(flops["ours"], med["ours"] / 1e3, peak),
            "official_limit": limit_report(flops["official"], med["official"] / 1e3, peak)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="bench-s", help="pretraining preset or YAML (default bench-s)")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pos", nargs="+", default=["sincos", "rope"], choices=["sincos", "rope"])
    ap.add_argument("--steps", type=int, default=30, help="timed steps per implementation")
    ap.add_argument("--warmup", type=int, default=5)
    add_official_args(ap, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    o = import_official(args.vjepa2_path, args.vjepa2_shims)
    peak = matmul_flops_per_s(torch.device("cpu"))
    results = [bench_one(o, args.config, list(args.overrides), pos, args.steps, args.warmup, peak) for pos in args.pos]
    cfg = load_pretrain_config(args.config, list(args.overrides))
    print(json.dumps({
        "config": args.config, "threads": args.threads, "torch": torch.__version__,
        "architecture": {"width": cfg.model.encoder.embed_dim, "depth": cfg.model.encoder.depth,
                         "heads": cfg.model.encoder.num_heads, "img": cfg.data.crop,
                         "patch": cfg.model.encoder.patch_size, "frames": cfg.data.frames,
                         "tubelet": cfg.model.encoder.tubelet_size,
                         "predictor": [cfg.model.predictor.predictor_dim, cfg.model.predictor.depth,
                                       cfg.model.predictor.num_heads],
                         "batch": cfg.schedule.global_batch_size},
        "masks": "V-JEPA 2 multiblock (8 x 0.15 + 2 x 0.7), official generator, shared by both",
        "clock": "process CPU time" if clock(torch.device("cpu")) is time.process_time else "wall",
        "results": results}, indent=2))


if __name__ == "__main__":
    main()
