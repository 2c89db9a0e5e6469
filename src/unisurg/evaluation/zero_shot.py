"""Zero-shot classification with a vision-language backbone: ``unisurg bench --protocol zero-shot``.

SurgVLP is the one baseline of the papers' tables that classifies without training (the authors'
``tests/zero_shot.py``): class names -> one text prompt per class -> text embeddings; every test sample -> an image
embedding; ``softmax(100 * cos(image, prompt))`` -> the task's own metrics (with bootstrap CIs), on the test split of
every fold (pooled for cross-validation schemes). Nothing is trained, so train/val only serve the shared frame store.

What a sample's image embedding is (the authors classify single frames):

* per-second tasks (phase / step): the frame at the labelled second (the clip's last frame for ``clip.anchor=online``,
  its centre for ``offline``);
* clip tasks (actions, ...): the mean of the unit-normalised embeddings of the clip's ``clip.frames`` frames
  (our reading; the authors only evaluate frames).

Prompts: ``--prompts FILE`` (one line per class, in the dataset's class order, e.g. the authors'
``tests/class_prompt.txt`` for Cholec80) or ``--prompt-template`` applied to the class names (default ``"{}"``).
Results: ``OUT/zero-shot.json`` (merged over runs) and ``OUT/zero-shot.md``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from unisurg.atomic_files import write_json_atomic
from unisurg.backbones.features import ClipPixels, batch_groups, norm_stats
from unisurg.backbones.registry import load_backbone
from unisurg.data.pixels import to_model_input
from unisurg.datasets.samples import SplitData
from unisurg.device import resolve_device
from unisurg.evaluation.bench_config import BenchConfig, load_bench_config
from unisurg.evaluation.head_selection import confidence_intervals, flat_metrics
from unisurg.evaluation.runner import BenchError, concat_splits, prepare
from unisurg.models.surgvlp import zero_shot_logits

RESULTS_NAME = "zero-shot.json"
TABLE_NAME = "zero-shot.md"
DEFAULT_TEMPLATE = "{}"
SUPPORTED_TASKS = ("phase", "clip")  # single-label classification


def class_prompts(class_names: tuple[str, ...], template: str | None = None,
                  prompts_file: str | Path | None = None) -> list[str]:
    """One prompt per class: the lines of ``prompts_file`` (blank lines ignored, one per class, in class order) or
    ``template.format(name)``."""
    if prompts_file is not None:
        path = Path(prompts_file)
        if not path.is_file():
            raise BenchError(f"--prompts {path}: no such file")
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if len(lines) != len(class_names):
            raise BenchError(f"--prompts {path}: {len(lines)} prompts for {len(class_names)} classes "
                             f"({', '.join(class_names)}); write one line per class, in this order")
        return lines
    template = DEFAULT_TEMPLATE if template is None else template
    if "{}" not in template:
        raise BenchError(f"--prompt-template {template!r} must contain '{{}}' where the class name goes")
    return [template.replace("{}", name) for name in class_names]


def find_vision_language(model: torch.nn.Module):
    """The sub-module of a backbone that embeds both images and text (``encode_image`` / ``encode_text``)."""
    for m in model.modules():
        if callable(getattr(m, "encode_image", None)) and callable(getattr(m, "encode_text", None)):
            return m
    return None


def labelled_frames(split: SplitData, anchor: str) -> SplitData:
    """Per-second samples reduced to the frame of their labelled second (see the module docstring)."""
    refs = []
    for r in split.refs:
        if r.indices is None:
            refs.append(r)
            continue
        pos = len(r.indices) - 1 if anchor == "online" else len(r.indices) // 2
        refs.append(dataclasses.replace(r, indices=np.asarray(r.indices[pos: pos + 1])))
    return dataclasses.replace(split, refs=refs)


@torch.no_grad()
def image_embeddings(vlp, pixels: ClipPixels, split: SplitData, batch_size: int, device: torch.device, mean, std,
                     progress: bool = False) -> torch.Tensor:
    """``[n, D]`` unit image embeddings of a split's samples (clip: mean of its frames' unit embeddings)."""
    out = []
    groups = batch_groups(split.refs, 0, len(split.refs), batch_size)
    it = groups
    if progress:
        it = tqdm(groups, desc="zero-shot", unit="batch")
    for g in it:
        clips = torch.from_numpy(pixels.group([split.refs[i] for i in g])).to(device)
        x = to_model_input(clips, mean, std)  # [b, 3, T, H, W]
        b, c, t, h, w = x.shape
        emb = F.normalize(vlp.encode_image(x.transpose(1, 2).reshape(b * t, c, h, w)).float(), dim=-1)
        out.append(F.normalize(emb.view(b, t, -1).mean(dim=1), dim=-1))
    return torch.cat(out)


def load_results(out: Path) -> dict:
    path = out / RESULTS_NAME
    if path.exists():
        return json.loads(path.read_text())
    return {"format": "unisurg-zero-shot-results", "version": 1, "runs": {}}


def write_table(results: dict, out: Path) -> None:
    """``zero-shot.md``: one row per run, value [95% CI] of every metric."""
    lines = ["| run | task | n | metrics |", "|---|---|---|---|"]
    for key, run in sorted(results["runs"].items()):
        cells = ", ".join(f"{m} {v['value'] * 100:.1f} [{v['ci_low'] * 100:.1f}, {v['ci_high'] * 100:.1f}]"
                          for m, v in run["metrics"].items() if ":" not in m)
        lines.append(f"| {key} | {run['task']} | {run['n_test']} | {cells} |")
    (out / TABLE_NAME).write_text("\n".join(lines) + "\n")


def run_zero_shot(backbones: list, dataset: str, root=None, *, split_scheme: str | None = None, out=None,
                  config: BenchConfig | str | dict | None = None, overrides: list[str] | None = None,
                  strict: bool = True, prompts_file: str | Path | None = None, template: str | None = None,
                  splits: dict | None = None, class_names=None, task_name: str | None = None,
                  progress: bool = False, log: Callable[[str], None] = print) -> dict:
    """Zero-shot classification of ``dataset``'s test split by each vision-language backbone (spec or Backbone)."""

    cfg = config if isinstance(config, BenchConfig) else load_bench_config(config, overrides)
    device = resolve_device(cfg.device)
    prep = prepare(dataset, root, split_scheme, cfg, strict=strict, splits=splits, class_names=class_names,
                   task_name=task_name, progress=progress, log=log)
    task = prep.task
    if task.name not in SUPPORTED_TASKS:
        raise BenchError(f"zero-shot classification supports the single-label tasks {SUPPORTED_TASKS}; "
                         f"{dataset} is a {task.name!r} task")
    prompts = class_prompts(prep.class_names, template, prompts_file)
    test = concat_splits([f.splits["test"] for f in prep.folds], "test")
    if task.per_second:
        test = labelled_frames(test, cfg.clip.anchor)
    out_dir = Path(out) if out is not None else None
    results = load_results(out_dir) if out_dir is not None else {"runs": {}}
    for spec in backbones:
        bb = load_backbone(spec, device=device) if isinstance(spec, str) else spec
        vlp = find_vision_language(bb.model)
        if vlp is None:
            raise BenchError(f"backbone {bb.name} has no text tower; zero-shot classification needs a vision-language "
                             "backbone such as surgvlp:FILE?tokenizer=DIR")
        vlp.eval()
        mean, std = norm_stats(cfg, bb)
        with torch.no_grad():
            text = vlp.encode_text(prompts).float()
        pixels = ClipPixels(prep.store, prep.ids, cfg.clip.res, image_frames=1)
        img = image_embeddings(vlp, pixels, test, cfg.features.batch_size, device, mean, std, progress)
        probs = torch.softmax(zero_shot_logits(img, text), dim=-1).cpu().numpy()
        blocks = task.score(test, probs)
        run = {
            "backbone": {"spec": bb.spec, "name": bb.name, "fingerprint": bb.fingerprint},
            "dataset": dataset, "split_scheme": prep.split_scheme, "task": task.name, "n_test": len(test.refs),
            "classes": list(prep.class_names), "prompts": prompts,
            "protocol": {"res": cfg.clip.res, "frames": 1 if task.per_second else cfg.clip.frames,
                         "anchor": cfg.clip.anchor, "mean": list(mean), "std": list(std)},
            "metrics": confidence_intervals(blocks, cfg.report.bootstrap_n, cfg.report.bootstrap_seed),
            "point": flat_metrics(blocks),
        }
        results["runs"][f"{dataset}/{bb.name}"] = run
        log(f"[{dataset}] zero-shot {bb.name}: " + ", ".join(f"{k} = {v:.4f}" for k, v in run["point"].items()
                                                              if ":" not in k))
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out_dir / RESULTS_NAME, results)
            write_table(results, out_dir)
    return results
