"""``unisurg finetune``: the command-line front of :mod:`unisurg.evaluation.finetune`.

    unisurg finetune --backbone unisurg:runs/tiny/final --dataset synthetic --root data/synth --config tiny \\
        run.out=ft-out train.epochs=3
    torchrun --nproc_per_node=8 -m unisurg.evaluation.finetune_command --backbone vjepa2:vitl.pt \\
        --dataset cholec80 --root /data/cholec80 --config vjepa2 run.strategy=fsdp
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from unisurg.backbones.spec import BackboneSpecError
from unisurg.data.media_store import MediaError
from unisurg.data.store import StoreError
from unisurg.datasets import AnnotationError, DatasetLayoutError, UnknownDatasetError
from unisurg.evaluation.command import _intermixed
from unisurg.evaluation.finetune import finetune
from unisurg.evaluation.finetune_config import load_finetune_config
from unisurg.evaluation.runner import BenchError
from unisurg.models.strict_load import CheckpointError
from unisurg.rank_exit import ends_rank
from unisurg.typed_config import ConfigError, to_dict

DESCRIPTION = """Fine-tune a whole backbone of the registry with a task head on a benchmark dataset: layer-wise LR
decay, drop path, AdamW (no decay on biases and norms), warm-up + cosine, mixup / cutmix + label smoothing, the
benchmark's augmentation, gradient clipping, optional weight EMA, bf16 + activation checkpointing on GPU, DDP / FSDP2
under torchrun (python -m unisurg.evaluation.finetune_command takes the same arguments). The checkpoint with the best
validation metric is tested with multi-view testing; results, tables and ribbons land in run.out with the probe
benchmark's format; run.out/best is the exported model (`unisurg predict VIDEO --model run.out/best`).
Presets: videomae (the VideoMAE / SurgRec recipe), vjepa2, tiny."""


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", required=True, metavar="SPEC", help="backbone spec, e.g. unisurg:PATH, vjepa2:FILE.pt")
    p.add_argument("--dataset", required=True, help="dataset adapter name (cholec80, synthetic, ...)")
    p.add_argument("--root", required=True, type=Path, help="dataset root folder, as distributed")
    p.add_argument("--split-scheme", default=None, help="split scheme of the adapter (one fold, e.g. loso_1)")
    p.add_argument("--config", default="videomae", help="preset (videomae, vjepa2, tiny) or YAML file")
    p.add_argument("--out", type=Path, default=None, help="output folder (same as run.out=...)")
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder from its last checkpoint")
    p.add_argument("--lenient", action="store_true", help="load an incomplete dataset (adapter strict=False) and repair faulty annotation entries, each recorded")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. optim.lr=1e-4")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``finetune`` on an ``argparse`` subparsers object (sets ``func=run``)."""
    p = subparsers.add_parser("finetune", help="fine-tune a whole backbone with a task head on a benchmark dataset",
                              description=DESCRIPTION)
    _add_arguments(p)
    _intermixed(p)
    p.set_defaults(func=run)
    return p


def _errors() -> tuple[type[BaseException], ...]:
    return (BackboneSpecError, AnnotationError, DatasetLayoutError, UnknownDatasetError, MediaError, BenchError,
            ConfigError, StoreError, CheckpointError, FileNotFoundError)


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides or [])
    if args.out is not None:
        overrides.append(f"run.out={args.out}")
    if args.lenient:
        overrides.append("lenient=true")
    try:
        cfg = load_finetune_config(args.config, overrides)
        if args.print_config:
            print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
            return 0
        res = finetune(args.backbone, args.dataset, args.root, config=cfg, split_scheme=args.split_scheme,
                       resume=args.resume, strict=not args.lenient)
    except _errors() as e:
        print(f"unisurg finetune: error: {e}", file=sys.stderr)
        return 2
    if res.run is not None:
        print(f"results: {res.out / 'results.json'}; tables: {res.out / 'table.md'}; model: {res.best_dir}")
    return 0


@ends_rank
def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m unisurg.evaluation.finetune_command``, e.g. under torchrun)."""
    parser = argparse.ArgumentParser(prog="unisurg finetune", description=DESCRIPTION)
    _add_arguments(parser)
    try:
        return run(parser.parse_intermixed_args(argv))
    except KeyboardInterrupt:
        print("unisurg finetune: interrupted (rerun with --resume to continue from the last checkpoint)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
