"""Command-line front of the benchmark: ``unisurg bench | extract | predict | embed``.

Wire into the main parser with ``add_parser(subparsers)``; only argparse runs at import time, the
heavy modules are imported inside each command.

    unisurg bench --backbone random:tiny@0 --backbone unisurg:runs/tiny/last --dataset synthetic \\
        --root data/synth --out bench-out --config tiny train.epochs=2
    unisurg extract --backbone vjepa2:vitl.pt --dataset cholec80 --root /data/cholec80
    unisurg predict video.mp4 --backbone unisurg:runs/tiny/last --probe bench-out/runs/synthetic/UniSurg-tiny
    unisurg embed video.mp4 --backbone unisurg:runs/tiny/last --out video_features.npy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from pickle import UnpicklingError

from unisurg.backbones.features import FeatureCacheError
from unisurg.backbones.spec import BackboneSpecError
from unisurg.data.media_store import MediaError
from unisurg.data.ray_engine import (
    RayUnavailableError,
    add_engine_arguments,
    ray_options_from,
)
from unisurg.data.store import StoreError
from unisurg.datasets import AnnotationError, DatasetLayoutError, UnknownDatasetError
from unisurg.evaluation.finetune_predict import predict_finetuned
from unisurg.evaluation.official_probe import OfficialProbeError
from unisurg.evaluation.predict import (
    ProbeFormatError,
    ProbeMismatchError,
    embed_video,
    predict_video,
)
from unisurg.evaluation.protocols import explain, protocol_config
from unisurg.evaluation.runner import BenchError, extract_features, run_benchmark
from unisurg.evaluation.zero_shot import RESULTS_NAME, run_zero_shot
from unisurg.models.strict_load import CheckpointError
from unisurg.typed_config import ConfigError, check_output_folder

CONFIG_HELP = "preset (paper, tiny) or YAML file; default: paper (the authors' protocol)"
OVERRIDES_HELP = "config overrides key=value, e.g. train.epochs=2 clip.frames=16 cache_dir=/fast/cache"


class _IntermixedParser(argparse.ArgumentParser):
    """A subcommand parser that accepts ``key=value`` overrides anywhere among the options
    (plain argparse stops filling a positional ``nargs="*"`` at the first option)."""

    _inner = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inner:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def _intermixed(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.__class__ = _IntermixedParser
    return p


def _common_data(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--backbone", action="append", required=required, metavar="SPEC",
                   help="backbone spec (repeat for several), e.g. random:tiny@0, unisurg:PATH, vjepa2:FILE.pt")
    p.add_argument("--dataset", required=required, help="dataset adapter name (cholec80, m2cai16, synthetic, ...)")
    p.add_argument("--root", required=required, type=Path, help="dataset root folder, as distributed")
    p.add_argument("--split-scheme", default=None,
                   help="split scheme of the adapter (default: its default); JIGSAWS: loso / louo run all folds")
    p.add_argument("--config", default="paper", help=CONFIG_HELP)
    p.add_argument("--lenient", action="store_true",
                   help="load an incomplete dataset (adapter strict=False) and repair faulty annotation entries "
                        "instead of failing (config lenient=true); every repair is printed and kept in results.json")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    _intermixed(p)


def add_parser(subparsers) -> None:
    """Register ``bench``, ``extract``, ``predict`` and ``embed`` on ``subparsers``."""
    p = subparsers.add_parser("bench", help="benchmark frozen backbones by attentive probing (tables, figures)",
                              description="Extract (or reuse) frozen features, train the lr x wd grid of probes, "
                                          "select on validation, report test metrics with bootstrap CIs; reruns "
                                          "into the same --out merge into one table; backbones sharing a test "
                                          "split get paired comparisons (paired.md, paired.json).")
    _common_data(p, required=False)  # checked in run_bench (not needed with --explain)
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder (default ./bench-out)")
    p.add_argument("--protocol", default="unisurg",
                   help="named protocol: unisurg (default, honest), surgmotion, surgrec (unisurg.evaluation.protocols), "
                        "applied on top of --config, under the KEY=VALUE overrides; or zero-shot: classify the test "
                        "split from text prompts with a vision-language backbone (surgvlp:FILE?tokenizer=DIR)")
    p.add_argument("--explain", action="store_true",
                   help="print the protocol's items with their source (paper / authors' code / ours) and exit")
    p.add_argument("--prompts", type=Path, default=None, help="zero-shot: file of prompts, one line per class")
    p.add_argument("--prompt-template", default=None, help="zero-shot: prompt of a class name, e.g. 'This is {}' "
                                                           "(default '{}': the name itself)")
    p.set_defaults(func=run_bench)

    p = subparsers.add_parser("extract", help="cache the frozen features of a dataset for later probing")
    _common_data(p)
    add_engine_arguments(p, "feature shards on GPU (else CPU) actors,")
    p.set_defaults(func=run_extract)

    p = subparsers.add_parser("predict", help="per-second phase predictions of a trained probe on a video")
    p.add_argument("video", type=Path, help="video file (or folder of frames)")
    p.add_argument("--backbone", metavar="SPEC", help="the backbone the probe was trained on (with --probe)")
    p.add_argument("--probe", type=Path,
                   help="probe folder (probe.json + probe.safetensors), or an official V-JEPA 2 / SurgMotion checkpoint "
                        "file {'classifiers': [...]} (.pt/.pth/.tar); with --backbone")
    p.add_argument("--model", type=Path, help="a fine-tuned model folder (run.out/best of `unisurg finetune`), "
                                              "instead of --backbone + --probe")
    p.add_argument("--head", type=int, default=0, help="official checkpoint: which classifier (default 0)")
    p.add_argument("--heads", type=int, default=16, help="official checkpoint: attention heads of the probe (default 16)")
    p.add_argument("--class-names", default=None, help="official checkpoint: comma-separated class names")
    p.add_argument("--protocol", default="surgmotion",
                   help="official checkpoint: the protocol whose clip settings to use (default surgmotion)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="official checkpoint: override a clip setting of the protocol, e.g. --set clip.frames=16")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: next to the video)")
    p.add_argument("--cache-dir", default="~/.cache/unisurg/bench", help="frame-store cache")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_predict)

    p = subparsers.add_parser("embed", help="per-clip features of a video (.npy or .safetensors + JSON timestamps)")
    p.add_argument("video", type=Path, help="video file (or folder of frames)")
    p.add_argument("--backbone", required=True, metavar="SPEC")
    p.add_argument("--out", type=Path, default=None, help="output file .npy or .safetensors (default VIDEO.features.npy)")
    p.add_argument("--stride", type=int, default=1, help="seconds between clips (default 1)")
    p.add_argument("--tokens", action="store_true", help="all patch tokens (float16) instead of their mean")
    p.add_argument("--config", default="paper", help=CONFIG_HELP + " (its clip.* keys set the clip protocol)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    _intermixed(p)
    p.set_defaults(func=run_embed)


def _errors() -> tuple[type[BaseException], ...]:
    return (BackboneSpecError, AnnotationError, DatasetLayoutError, UnknownDatasetError, FeatureCacheError, MediaError,
            ProbeFormatError, ProbeMismatchError, OfficialProbeError, BenchError, ConfigError, StoreError,
            CheckpointError, FileNotFoundError, UnpicklingError, RayUnavailableError)


def _lenient(a) -> list[str]:
    """The overrides, plus ``lenient=true`` under ``--lenient``."""
    return list(a.overrides or []) + (["lenient=true"] if a.lenient else [])


def _guard(name: str, fn) -> int:
    errors = _errors()
    try:
        return int(fn() or 0)
    except errors as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"unisurg {name}: error: {msg}", file=sys.stderr)
        return 2


def run_bench(a) -> int:
    def go():
        if a.explain:
            print(explain(a.protocol))
            return 0
        missing = [f"--{n}" for n in ("backbone", "dataset", "root") if not getattr(a, n)]
        if missing:
            print(f"unisurg bench: error: the following arguments are required: {', '.join(missing)}", file=sys.stderr)
            return 2
        if a.protocol == "zero-shot":
            run_zero_shot(a.backbone, a.dataset, a.root, split_scheme=a.split_scheme, out=a.out, config=a.config,
                          overrides=a.overrides, strict=not a.lenient, prompts_file=a.prompts,
                          template=a.prompt_template, progress=not a.quiet)
            print(f"results: {a.out / RESULTS_NAME}")
            return 0
        if a.prompts is not None or a.prompt_template is not None:
            raise BenchError("--prompts / --prompt-template only apply to --protocol zero-shot")
        check_output_folder(a.out, "--out")
        cfg = protocol_config(a.protocol, a.config, _lenient(a))
        run_benchmark(a.backbone, a.dataset, a.root, split_scheme=a.split_scheme, out=a.out, config=cfg,
                      strict=not a.lenient, progress=not a.quiet)
        print(f"results: {a.out / 'results.json'}; tables: {a.out / 'table.md'} (.csv, .tex); figures: {a.out / 'figures'}")
        return 0

    return _guard("bench", go)


def run_extract(a) -> int:
    def go():
        done = extract_features(a.backbone, a.dataset, a.root, split_scheme=a.split_scheme, config=a.config,
                                overrides=_lenient(a), strict=not a.lenient, progress=not a.quiet, engine=a.engine,
                                ray=ray_options_from(a))
        for name, folders in done.items():
            for split, folder in folders.items():
                print(f"{name}\t{split}\t{folder}")
        return 0

    return _guard("extract", go)


def run_predict(a) -> int:
    def go():
        out = a.out or a.video.parent
        if (a.model is None) == (a.probe is None) or (a.probe is not None and a.backbone is None):
            raise BenchError("predict takes either --model DIR (a fine-tuned model) or --backbone SPEC --probe DIR")
        if a.model is not None:
            res = predict_finetuned(a.video, a.model, out, cache_dir=a.cache_dir, device=a.device,
                                    batch_size=a.batch_size, progress=not a.quiet)
            print(f"{len(res['seconds'])} seconds predicted; " + ", ".join(f"{k}: {v}" for k, v in res["files"].items()))
            return 0
        names = [n.strip() for n in a.class_names.split(",")] if a.class_names else None
        res = predict_video(a.video, a.backbone, a.probe, out, cache_dir=a.cache_dir, device=a.device,
                            batch_size=a.batch_size, progress=not a.quiet, head=a.head, heads=a.heads,
                            class_names=names, protocol=a.protocol, overrides=a.set)
        print(f"{len(res['seconds'])} seconds predicted; " + ", ".join(f"{k}: {v}" for k, v in res["files"].items()))
        return 0

    return _guard("predict", go)


def run_embed(a) -> int:
    def go():
        out = a.out or a.video.with_name(a.video.stem + ".features.npy")
        res = embed_video(a.video, a.backbone, out, config=a.config, overrides=a.overrides, stride_s=a.stride,
                          tokens=a.tokens, progress=not a.quiet)
        print(f"features {res['shape']} -> {res['features']} (timestamps: {res['sidecar']})")
        return 0

    return _guard("embed", go)
