"""``unisurg curate``: embed, cluster, dedup and leakage-check a frame store.

    unisurg curate embed   STORE --backbone random:tiny@0 [--unit clip|frame] [--frames 16] [--stride 16] [--res 224]
    unisurg curate cluster STORE --levels 1000,100 (--target N | --weights) [--metric l2|cosine] [--seed 0]
    unisurg curate dedup   STORE [--keep-one] [--max-distance 8] [--min-fraction 0.5] [--json]
    unisurg curate leakage STORE --benchmark cholec80:/data/cholec80[:40_40] ... [--videos FILE ...] [--exclude-hits]

Everything is written under ``STORE/curation/`` (see :mod:`unisurg.curate.corpus_files`). Only
argparse runs at import time; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unisurg.backbones.spec import BackboneSpecError
from unisurg.curate.corpus_files import CurationError
from unisurg.curate.embed import EmbedProtocol, embed_store
from unisurg.curate.leakage_check import (
    check_leakage,
    exclude_leaking_videos,
    format_leakage_summary,
)
from unisurg.curate.row_shards import join_torchrun
from unisurg.curate.selection import (
    curate_selection,
    format_selection_summary,
    level_specs,
    parse_levels,
)
from unisurg.curate.store_dedup import (
    find_store_duplicates,
    format_dedup_summary,
    keep_one_per_duplicate_group,
)
from unisurg.data.ray_engine import (
    RayUnavailableError,
    add_engine_arguments,
    ray_options_from,
)
from unisurg.data.store import StoreError
from unisurg.rank_exit import ends_rank


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or comma-separated integers, got {text!r}") from None


def _fail(command: str, err: Exception) -> int:
    print(f"unisurg curate {command}: error: {err}", file=sys.stderr)
    return 2


def _known_errors() -> tuple[type[BaseException], ...]:
    return (CurationError, BackboneSpecError, StoreError, RayUnavailableError)


def _guarded(command: str, fn):
    def run(a) -> int:
        try:
            return fn(a)
        except _known_errors() as e:
            return _fail(command, e)

    return run


# -- embed --------------------------------------------------------------------------------------


def _add_embed(sub) -> None:
    p = sub.add_parser("embed", help="embed every clip (or frame) of a store with a backbone, in resumable shards",
                       description="Writes STORE/curation/embeddings/<backbone fingerprint>/<protocol>/; a rerun reuses finished "
                                   "shards and appends videos ingested since.")
    p.add_argument("store", type=Path)
    p.add_argument("--backbone", required=True, help="backbone spec, e.g. random:tiny@0, unisurg:runs/x/last, vjepa2:vitl.pt")
    p.add_argument("--unit", choices=("clip", "frame"), default="clip", help="one embedding per clip (default) or per frame")
    p.add_argument("--frames", type=_positive_int, default=16, help="clip length T in stored frames (default 16; = data.frames)")
    p.add_argument("--stride", type=_positive_int, default=None, help="between clip starts (default: --frames; = data.stride)")
    p.add_argument("--short-video", choices=("pad_last", "stretch", "drop"), default="pad_last", help="= data.short_video")
    p.add_argument("--frame-step", type=_positive_int, default=1, help="--unit frame: every k-th stored frame (default 1)")
    p.add_argument("--res", type=_positive_int, default=None, help="crop size (default: the backbone's img_size)")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="stored embedding precision")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--shard-size", type=_positive_int, default=4096, help="embeddings per shard file")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers decoding frames (default 0)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--force", action="store_true", help="recompute every shard")
    p.add_argument("--quiet", action="store_true")
    add_engine_arguments(p, "shards on GPU (else CPU) actors,")
    p.set_defaults(func=_guarded("embed", _run_embed))


def _run_embed(a) -> int:
    proto = EmbedProtocol(unit=a.unit, frames=a.frames, stride=a.stride, short_video=a.short_video, frame_step=a.frame_step,
                          res=a.res, dtype=a.dtype)
    res = embed_store(a.store, a.backbone, protocol=proto, batch_size=a.batch_size, shard_size=a.shard_size, workers=a.workers,
                      device=a.device, force=a.force, progress=not a.quiet, log=lambda m: print(m, file=sys.stderr),
                      engine=a.engine, ray=ray_options_from(a))
    print(res.summary())
    return 0


# -- cluster ------------------------------------------------------------------------------------


def _add_cluster(sub) -> None:
    p = sub.add_parser("cluster", help="hierarchical k-means on the embeddings + balanced selection (subset or weights)",
                       description="Writes STORE/curation/selection.json (or --out) and the hierarchy next to it; "
                                   "pretraining reads the selection through data config.")
    p.add_argument("store", type=Path)
    p.add_argument("--embeddings", type=Path, default=None, help="embedding folder (default: the store's only one)")
    p.add_argument("--levels", required=True, help="clusters per level, level 1 first, e.g. 1000,100")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--target", type=_positive_int, help="select this many clips, balanced over the top-level clusters")
    what.add_argument("--weights", action="store_true", help="give every clip a sampling weight instead")
    p.add_argument("--weight-mode", choices=("recursive", "top"), default="recursive",
                   help="--weights: balance every level (recursive, default) or the top level only")
    p.add_argument("--leaf", choices=("random", "closest"), default="random", help="--target: pick at level 1 at random or closest to the centroid")
    p.add_argument("--metric", choices=("l2", "cosine"), default="l2")
    p.add_argument("--iters", type=_positive_int, default=20, help="Lloyd updates per k-means run (default 20)")
    p.add_argument("--resample-steps", type=_int_list, default=[0], help="resampling rounds, one value or one per level (default 0)")
    p.add_argument("--resample-size", type=_int_list, default=[1], help="points per cluster in a resampling round (one or per level)")
    p.add_argument("--resample-strategy", choices=("closest", "random"), default="closest")
    p.add_argument("--coarse", type=_int_list, default=None, help="build a level as coarse k-means + splits (0 = off; one or per level)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-exclusions", action="store_true", help="ignore STORE/curation/exclude.json")
    p.add_argument("--out", type=Path, default=None, help="selection file (default STORE/curation/selection.json)")
    p.add_argument("--device", default=None, help="k-means device (default: cpu; cuda for large corpora). Under torchrun "
                   "the embeddings are sharded over the processes (gloo on cpu, NCCL on cuda; see docs/distributed.md)")
    p.set_defaults(func=_guarded("cluster", _run_cluster))


def _run_cluster(a) -> int:
    specs = level_specs(parse_levels(a.levels), n_iter=a.iters, resample_steps=a.resample_steps, resample_size=a.resample_size,
                        resample_strategy=a.resample_strategy, coarse=a.coarse)
    placement, device = join_torchrun(a.device)
    path, doc = curate_selection(a.store, levels=specs, kind="weights" if a.weights else "subset", target=a.target,
                                 embeddings=a.embeddings, metric=a.metric, seed=a.seed, leaf_strategy=a.leaf,
                                 weight_mode=a.weight_mode, honour_exclusions=not a.no_exclusions, out=a.out, device=device,
                                 log=lambda m: print(m, file=sys.stderr) if placement.rank == 0 else None, placement=placement)
    if placement.rank == 0:
        print(format_selection_summary(path, doc))
    return 0


# -- dedup --------------------------------------------------------------------------------------


def _add_dedup(sub) -> None:
    p = sub.add_parser("dedup", help="near-duplicate videos and shared segments (perceptual hashes of stored frames)",
                       description="Writes STORE/curation/duplicates.json; --keep-one also writes STORE/curation/exclude.json.")
    p.add_argument("store", type=Path)
    p.add_argument("--max-distance", type=int, default=8, help="Hamming distance (of 64 bits) for two frames to match (default 8)")
    p.add_argument("--min-fraction", type=float, default=0.5, help="aligned share of the shorter video to report a pair (default 0.5)")
    p.add_argument("--min-frames", type=_positive_int, default=5, help="aligned frames to report a pair (default 5)")
    p.add_argument("--full-fraction", type=float, default=0.8, help="share above which a pair is 'same' / 'contained' (default 0.8)")
    p.add_argument("--min-contrast", type=float, default=4.0, help="frames with less thumbnail contrast never match (default 4)")
    p.add_argument("--scope", choices=("all", "within", "across"), default="all", help="pairs within datasets, across, or both")
    p.add_argument("--keep-one", action="store_true", help="exclude all but the longest video of each same/contained group")
    p.add_argument("--workers", type=_positive_int, default=1, help="processes hashing frames")
    p.add_argument("--out", type=Path, default=None, help="report file (default STORE/curation/duplicates.json)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of the summary")
    p.add_argument("--quiet", action="store_true")
    add_engine_arguments(p, "frame hashes per video")
    p.set_defaults(func=_guarded("dedup", _run_dedup))


def _run_dedup(a) -> int:
    report = find_store_duplicates(a.store, max_distance=a.max_distance, min_fraction=a.min_fraction, min_frames=a.min_frames,
                                   min_contrast=a.min_contrast, full_fraction=a.full_fraction, scope=a.scope, workers=a.workers,
                                   progress=not a.quiet, out=a.out, log=lambda m: print(m, file=sys.stderr), engine=a.engine,
                                   ray=ray_options_from(a))
    dropped = keep_one_per_duplicate_group(a.store, report) if a.keep_one else None
    if a.json:
        print(json.dumps({**report, "dropped": dropped}, indent=1))
    else:
        print(format_dedup_summary(report, dropped))
    return 0


# -- leakage ------------------------------------------------------------------------------------


def _add_leakage(sub) -> None:
    p = sub.add_parser("leakage", help="find corpus videos that overlap benchmark test videos",
                       description="Writes STORE/curation/leakage.json, which `unisurg pretrain` checks before training. "
                                   "Exit status 1 when leakage is found.")
    p.add_argument("store", type=Path)
    p.add_argument("--benchmark", action="append", default=[], metavar="DATASET:ROOT[:SCHEME]",
                   help="a benchmark read by its adapter, e.g. cholec80:/data/cholec80:40_40 (repeatable)")
    p.add_argument("--videos", nargs="+", default=[], metavar="FILE", help="test video files or frame folders")
    p.add_argument("--splits", default="test", help="splits of the benchmarks to check (comma-separated, default test)")
    p.add_argument("--max-distance", type=int, default=8)
    p.add_argument("--min-frames", type=_positive_int, default=5, help="aligned frames that count as leakage (default 5)")
    p.add_argument("--min-contrast", type=float, default=4.0)
    p.add_argument("--frame-folder-fps", type=float, default=None, help="rate of frame-folder test media (default: the record's)")
    p.add_argument("--skip-missing", action="store_true", help="check the test videos present, list the missing ones")
    p.add_argument("--exclude-hits", action="store_true", help="write the leaking videos to STORE/curation/exclude.json")
    p.add_argument("--workers", type=_positive_int, default=1)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_guarded("leakage", _run_leakage))


def _run_leakage(a) -> int:
    report = check_leakage(a.store, benchmarks=a.benchmark, videos=a.videos, splits=[s for s in a.splits.split(",") if s],
                           max_distance=a.max_distance, min_frames=a.min_frames, min_contrast=a.min_contrast,
                           frame_folder_fps=a.frame_folder_fps, skip_missing=a.skip_missing, workers=a.workers,
                           progress=not a.quiet, log=lambda m: print(m, file=sys.stderr))
    if a.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_leakage_summary(report))
    if a.exclude_hits and report["hits"]:
        path = exclude_leaking_videos(a.store, report)
        print(f"wrote {len(report['leaking_videos'])} leaking videos to {path}")
    return 1 if report["hits"] else 0


def add_parser(subparsers) -> None:
    """Register ``curate`` and its subcommands on the ``unisurg`` parser's subparsers."""
    p = subparsers.add_parser("curate", help="curate a store: embeddings, clustering + balanced selection, dedup, leakage",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="curate_command", required=True, metavar="STEP")
    for add in (_add_embed, _add_cluster, _add_dedup, _add_leakage):
        add(sub)


@ends_rank
def main(argv: list[str] | None = None) -> int:
    """``python -m unisurg.curate.command ...`` (the same as ``unisurg curate ...``)."""
    parser = argparse.ArgumentParser(prog="unisurg")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
