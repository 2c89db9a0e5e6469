"""``unisurg pretrain``: the command-line front of :mod:`unisurg.train` (argparse only at import time).

    unisurg pretrain --config tiny data.stores=[STORE] run.out=runs/t
    unisurg pretrain --config vitl-stage1 data.stores=[/data/a,/data/b] --resume
    torchrun --nproc_per_node=8 -m unisurg.train.command --config vitl-stage1 data.stores=[...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unisurg.curate.corpus_files import CurationError
from unisurg.curate.leakage_check import LeakageError
from unisurg.data.store import StoreError
from unisurg.models.strict_load import CheckpointError
from unisurg.rank_exit import ends_rank
from unisurg.train.divergence import TrainingDiverged
from unisurg.train.pretrain_config import load_pretrain_config
from unisurg.train.trainer import print_config, train
from unisurg.typed_config import ConfigError

DESCRIPTION = """Pretrain a video encoder: UniSurg (default objective), SurgRec-JEPA (loss.objective=vjepa) or
SurgRec-MAE (loss.objective=mae). --config takes a preset (tiny, bench-s, vitl-stage1, vitl-stage2,
surgrec-jepa, surgrec-mae) or a YAML file (which may start with `base: PRESET`); then any number of
dotted overrides such as optim.lr=3e-4 data.stores=[/data/store]. Multi-GPU / multi-node: launch
with torchrun (python -m unisurg.train.command takes the same arguments)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``pretrain`` on an ``argparse`` subparsers object (sets ``func=run``)."""
    p = subparsers.add_parser("pretrain", help="pretrain a video encoder (UniSurg, SurgRec-JEPA, SurgRec-MAE)",
                              description=DESCRIPTION)
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="preset name or YAML file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. optim.lr=3e-4")
    p.add_argument("--out", type=Path, default=None, help="output folder (same as run.out=...)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in the output folder from its latest checkpoint (starts fresh if none)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


def run(args: argparse.Namespace) -> int:
    """Load and validate the config, then train (or print it). Returns the exit status."""

    overrides = list(args.overrides or [])
    if args.out is not None:
        overrides.append(f"run.out={args.out}")
    cfg = load_pretrain_config(args.config, overrides)
    if args.print_config:
        print_config(cfg)
        return 0
    try:
        train(cfg, resume=args.resume)
    except TrainingDiverged as e:
        print(f"unisurg pretrain: error: {e}", file=sys.stderr)
        return 3
    return 0


@ends_rank
def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m unisurg.train.command``, e.g. under torchrun)."""
    parser = argparse.ArgumentParser(prog="unisurg pretrain", description=DESCRIPTION)
    _add_arguments(parser)
    args = parser.parse_args(argv)

    try:
        return run(args)
    except (ConfigError, StoreError, CheckpointError, CurationError, LeakageError, FileNotFoundError) as e:
        print(f"unisurg pretrain: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("unisurg pretrain: interrupted (rerun with --resume to continue from the last checkpoint)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
