"""Command-line front of the VLM study: ``unisurg vlm`` and ``unisurg vlm-merge``.

    unisurg vlm --model ckpt/Qwen2.5-VL-7B-Instruct --dataset surgrec --root /data/cholec80 --out vlm-out
    unisurg vlm ... --prompts baseline stability_v1 --input frames frames=8 batch_size=16
    unisurg vlm ... --shard 0/4        # on 4 GPUs/processes: --shard 0/4 .. 3/4, then
    unisurg vlm-merge vlm-out [--probe-results bench-out/results.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

from unisurg.evaluation.command import _errors as bench_errors
from unisurg.evaluation.command import _intermixed
from unisurg.vlm.answers import AnswerLogError
from unisurg.vlm.config import load_vlm_config
from unisurg.vlm.families import ModelLoadError
from unisurg.vlm.inputs import VLMDataError
from unisurg.vlm.prompts import PromptError
from unisurg.vlm.runner import StudyError, merge_study, parse_shard, run_study

OVERRIDES_HELP = ("settings key=value (unisurg.vlm.config.VLMConfig), e.g. batch_size=16 frames=8 stride=10 "
                  "max_samples=500 split=val dtype=float32")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("vlm", help="zero-shot vision-language models on a benchmark dataset (SurgRec's VLM study)",
                              description="Ask a local VLM a multiple-choice question per sample under several prompts; "
                                          "keep every raw answer (resumable: rerun the same command), parse them, and "
                                          "report accuracy and prompt sensitivity with tests.")
    p.add_argument("--model", required=True, type=Path, help="transformers checkpoint folder (Qwen2.5-VL, Qwen3-VL, "
                                                               "LLaVA-NeXT, LLaVA-OneVision, InternVL -hf)")
    p.add_argument("--dataset", required=True, help="dataset adapter name (synthetic, surgrec, surgicalactions160, ...)")
    p.add_argument("--root", required=True, type=Path, help="dataset root folder, as distributed")
    p.add_argument("--prompts", nargs="+", default=None, metavar="NAME",
                   help="TEMPLATE[@ORDER] (templates: baseline, stability_v1, para_short, para_question, para_surgeon; "
                        "orders: as, rev, permK); default: all five templates + baseline@rev + baseline@perm1")
    p.add_argument("--input", choices=("middle", "frames", "video"), default=None,
                   help="middle frame (SurgRec, default), several frames, or the clip as video")
    p.add_argument("--shard", default="0/1", help="i/n: this process answers samples i, i+n, ... (default 0/1)")
    p.add_argument("--out", type=Path, default=Path("vlm-out"), help="run folder (default ./vlm-out)")
    p.add_argument("--probe-results", type=Path, default=None, help="a `unisurg bench` results.json to put beside")
    p.add_argument("--lenient", action="store_true", help="load an incomplete dataset (adapter strict=False)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    _intermixed(p)
    p.set_defaults(func=run_vlm)

    p = subparsers.add_parser("vlm-merge", help="merge the shards of a `unisurg vlm` run and write its report")
    p.add_argument("out", type=Path, help="the run folder (--out of unisurg vlm)")
    p.add_argument("--probe-results", type=Path, default=None, help="a `unisurg bench` results.json to put beside")
    p.add_argument("--surgrec-name", default=None, help="dataset folder name of the SurgRec-format output")
    p.set_defaults(func=run_vlm_merge)


def _errors() -> tuple[type[BaseException], ...]:
    return (*bench_errors(), AnswerLogError, ModelLoadError, VLMDataError, PromptError, StudyError, ValueError)


def _guard(name: str, fn) -> int:
    try:
        return int(fn() or 0)
    except _errors() as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"unisurg {name}: error: {msg}", file=sys.stderr)
        return 2


def run_vlm(a) -> int:
    def go():
        base = {}
        if a.prompts:
            base["prompts"] = a.prompts
        if a.input:
            base["input"] = a.input
        if a.probe_results:
            base["probe_results"] = str(a.probe_results)
        cfg = load_vlm_config(a.overrides, base)
        res = run_study(a.model, a.dataset, a.root, a.out, cfg, shard=parse_shard(a.shard), strict=not a.lenient,
                        progress=not a.quiet)
        if res["report"]:
            print(f"report: {res['report']}")
        return 0

    return _guard("vlm", go)


def run_vlm_merge(a) -> int:
    def go():
        print(f"report: {merge_study(a.out, probe_results=a.probe_results, surgrec_name=a.surgrec_name)}")
        return 0

    return _guard("vlm-merge", go)
