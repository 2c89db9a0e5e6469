"""The ``unisurg`` command: a thin front over the library; each subcommand calls one function of a package."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unisurg import demo, demo_seeds
from unisurg._version import __version__
from unisurg.curate.command import add_parser as add_curate_command
from unisurg.curate.corpus_files import CurationError
from unisurg.curate.leakage_check import LeakageError
from unisurg.data.ingest import (
    IngestInputError,
    IngestParams,
    collect_inputs,
    default_workers,
    format_summary,
    ingest,
)
from unisurg.data.manifest import MANIFEST_NAME, Manifest, ManifestError
from unisurg.data.ray_engine import (
    RayUnavailableError,
    add_engine_arguments,
    ray_options_from,
)
from unisurg.data.store import StoreError
from unisurg.evaluation.command import add_parser as add_bench_commands
from unisurg.evaluation.finetune_command import add_parser as add_finetune_command
from unisurg.models.strict_load import CheckpointError
from unisurg.rank_exit import ends_rank
from unisurg.synth.generate import generate_dataset
from unisurg.train.command import add_parser as add_pretrain_command
from unisurg.typed_config import ConfigError
from unisurg.vlm.command import add_parser as add_vlm_commands


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


# -- synth ----------------------------------------------------------------------------------

def _add_synth(sub):
    p = sub.add_parser("synth", help="generate a synthetic surgical-video dataset (Cholec80 format)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--videos", type=_positive_int, default=8, help="number of videos (default 8)")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds per video (default 60)")
    p.add_argument("--height", type=_positive_int, default=240)
    p.add_argument("--width", type=_positive_int, default=320)
    p.add_argument("--fps", type=_positive_int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=_positive_int, default=1)
    p.add_argument("--overwrite", action="store_true", help="replace a dataset made with other parameters")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_synth)


def _run_synth(a) -> int:
    try:
        summary = generate_dataset(a.out, n_videos=a.videos, seconds=a.seconds, height=a.height, width=a.width,
                                   fps=a.fps, seed=a.seed, workers=a.workers, progress=not a.quiet,
                                   overwrite=a.overwrite)
    except ValueError as e:  # bad sizes, or a folder holding other data
        print(f"unisurg synth: error: {e}", file=sys.stderr)
        return 2
    n = len(summary.get("videos", []))
    print(f"wrote {n} synthetic videos with Cholec80-format annotations to {a.out}")
    return 0


# -- ingest / info ------------------------------------------------------------------------

def _add_ingest(sub):
    p = sub.add_parser("ingest", help="decode videos into a frame store (resumable, parallel)",
                       description="Inputs: video files, folders (searched recursively), glob patterns, "
                                   "or a CSV with columns path,dataset,specialty.")
    p.add_argument("inputs", nargs="+", help="files, folders, globs or .csv lists")
    p.add_argument("--out", required=True, type=Path, help="store folder (created; reused to resume)")
    p.add_argument("--fps", type=float, default=1.0, help="frames kept per second (default 1)")
    p.add_argument("--short-side", type=_positive_int, default=256, help="resize short side to this (default 256)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of stored frames (default 90)")
    p.add_argument("--dataset", help="dataset name for all inputs (default: the folder name)")
    p.add_argument("--specialty", help="specialty for all inputs (default: 'unspecified' or the CSV's column)")
    p.add_argument("--workers", type=_positive_int, default=None, help="parallel decoders (default: all cores)")
    p.add_argument("--force", action="store_true", help="re-ingest videos already done")
    p.add_argument("--no-skip-nonref", action="store_true",
                   help="decode every frame (default skips non-reference frames, taking a neighbour)")
    p.add_argument("--quiet", action="store_true")
    add_engine_arguments(p, "videos")
    p.set_defaults(func=_run_ingest)


def _run_ingest(a) -> int:
    items = collect_inputs(a.inputs, dataset=a.dataset, specialty=a.specialty)
    params = IngestParams(fps=a.fps, short_side=a.short_side, jpeg_quality=a.quality,
                          skip_nonref=not a.no_skip_nonref)
    summary = ingest(items, a.out, params, workers=a.workers or default_workers(), progress=not a.quiet,
                     force=a.force, engine=a.engine, ray=ray_options_from(a))
    print(format_summary(summary), file=sys.stderr if summary.failed else sys.stdout)
    return 0 if summary.ok else 1


def _add_info(sub):
    p = sub.add_parser("info", help="print a store's manifest")
    p.add_argument("store", type=Path)
    p.add_argument("--json", action="store_true", help="one JSON list of records")
    p.set_defaults(func=_run_info)


def _run_info(a) -> int:
    with Manifest(a.store / MANIFEST_NAME, readonly=True) as m:
        recs = m.records()
        meta = m.get_meta()
    if a.json:
        print(json.dumps([r.to_json() for r in recs], indent=1))
        return 0
    ok = [r for r in recs if r.status == "ok"]
    print(f"store {a.store}: {len(ok)} ok, {len(recs) - len(ok)} failed, "
          f"{sum(r.n_frames for r in ok)} frames; settings {meta}")
    by = {}
    for r in ok:
        by.setdefault((r.specialty, r.dataset), []).append(r)
    for (spec, ds), rs in sorted(by.items()):
        print(f"  {spec:24s} {ds:24s} {len(rs):6d} videos {sum(r.n_frames for r in rs):9d} frames")
    for r in recs:
        if r.status != "ok":
            print(f"  FAILED {r.source}: {r.error}")
    return 0


# -- demo -----------------------------------------------------------------------------------

def _add_demo_command(sub, name: str, help: str, out_help: str) -> None:
    """``demo`` and ``ablate``: the same pipeline (``unisurg.demo.run_demo`` / ``run_ablate``)."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--out", type=Path, default=Path("unisurg-demo"), help=out_help)
    p.add_argument("--quick", action="store_true", help="toy scale (a CI check of the whole path)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data, pretraining and probes")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="repeat over N seeds (--seed .. --seed+N-1), each in OUT/seed-<s>/, and report mean +- sd "
                        "over seeds with the paired per-seed results (default 1: one run in OUT)")
    p.set_defaults(func=lambda a: _run_demo_command(name, a))


def _run_demo_command(name: str, a) -> int:
    try:
        if a.seeds != 1:
            return demo_seeds.run_seeds(name, a.out, main, quick=a.quick, seed=a.seed, seeds=a.seeds)
        return getattr(demo, f"run_{name}")(a.out, main, quick=a.quick, seed=a.seed)
    except demo.DemoStepError as e:
        print(f"unisurg {name}: error: {e}", file=sys.stderr)
        return 1


def _add_demo(sub):
    _add_demo_command(sub, "demo", "synthetic data -> ingest -> pretrain -> benchmark -> report",
                      "working folder (default ./unisurg-demo)")


def _add_ablate(sub):
    _add_demo_command(sub, "ablate", "the demo's pipeline with each UniSurg component switched off in turn",
                      "working folder (default ./unisurg-demo; shares data and runs with the demo)")


# -- main -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unisurg", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for add in (_add_synth, _add_ingest, _add_info, add_curate_command, add_pretrain_command, add_bench_commands,
                add_vlm_commands, add_finetune_command, _add_demo, _add_ablate):
        add(sub)
    return parser


def _version() -> str:
    return f"unisurg {__version__}"


@ends_rank
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    try:
        return int(args.func(args) or 0)
    except (ConfigError, IngestInputError, StoreError, ManifestError, CheckpointError, CurationError, LeakageError,
            FileNotFoundError, RayUnavailableError) as e:
        print(f"unisurg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unisurg {args.command}: interrupted (finished work is kept; rerun to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
