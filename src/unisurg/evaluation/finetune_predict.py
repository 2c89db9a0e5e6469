"""Run an exported fine-tuned model (``run.out/best`` of ``unisurg finetune``) on a new video.

    from unisurg.evaluation.finetune_predict import predict_finetuned
    res = predict_finetuned("case.mp4", "ft-out/best", out="case-pred")

The model folder describes itself (``model.json``: task, label names, clip protocol, normalisation,
backbone and head); no backbone spec or probe is needed. The backbone is rebuilt from ``backbone/`` (our
encoder format) when the export has it, else from the spec recorded at training time (whose file gives
the architecture; every weight then comes from ``weights.safetensors``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from unisurg.backbones.features import ClipPixels, batch_groups
from unisurg.backbones.registry import load_backbone
from unisurg.data.pixels import to_model_input
from unisurg.device import resolve_device
from unisurg.evaluation.bench_config import ClipConfig
from unisurg.evaluation.finetune_export import MODEL_FORMAT, MODEL_JSON, WEIGHTS
from unisurg.evaluation.finetune_model import FinetuneModel, head_from_json
from unisurg.evaluation.predict import (
    PER_SECOND_TASKS,
    ProbeFormatError,
    ProbeMismatchError,
    _store_video,
    per_second_refs,
    write_prediction_files,
)
from unisurg.models.strict_load import load_strict
from unisurg.typed_config import load_config


def load_finetuned(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[FinetuneModel, dict]:
    """The exported model (eval mode, on ``device``) and its ``model.json``."""
    d = Path(model_dir)
    meta_path, weights = d / MODEL_JSON, d / WEIGHTS
    if not meta_path.is_file() or not weights.is_file():
        raise ProbeFormatError(f"{d}: expected {MODEL_JSON} and {WEIGHTS} (the best/ folder written by "
                               "`unisurg finetune` in its run.out)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ProbeFormatError(f"{meta_path}: not valid JSON ({e})") from None
    if meta.get("format") != MODEL_FORMAT:
        raise ProbeFormatError(f"{meta_path}: not a fine-tuned unisurg model (format={meta.get('format')!r})")
    spec = f"unisurg:{d / 'backbone'}" if (d / "backbone").is_dir() else meta["backbone"]["spec"]
    bb = load_backbone(spec)
    model = FinetuneModel(bb.model, head_from_json(meta["head"]))
    load_strict(model, load_file(str(weights)), source=str(weights))
    return model.to(resolve_device(device) if isinstance(device, str) else device).eval(), meta


def predict_finetuned(video: str | Path, model_dir: str | Path, out: str | Path | None = None, *,
                      cache_dir: str = "~/.cache/unisurg/bench", device: str = "auto", batch_size: int = 8,
                      progress: bool = False) -> dict:
    """Per-second predictions of a fine-tuned phase / multi-label model on ``video`` with the clip protocol it
    was trained with; files as :func:`unisurg.evaluation.predict.predict_video` (CSV, JSON, ribbon)."""
    video = Path(video)
    if not video.exists():
        raise FileNotFoundError(f"{video}: no such video file or frame folder")
    dev = resolve_device(device)
    model, meta = load_finetuned(model_dir, dev)
    if meta["task"] not in PER_SECOND_TASKS:
        raise ProbeMismatchError(f"model {model_dir} is a {meta['task']!r} model; predict runs per-second tasks "
                                 f"({', '.join(PER_SECOND_TASKS)})")
    clip = load_config(ClipConfig, meta["clip"])
    store, ids, key, n = _store_video(video, clip, cache_dir)
    refs, seconds = per_second_refs(key, n, clip)
    pixels = ClipPixels(store, ids, clip.res, 1)
    mean, std = tuple(meta["norm"]["mean"]), tuple(meta["norm"]["std"])
    multilabel = meta["task"] == "triplet"
    probs = []
    with torch.no_grad():
        for g in tqdm(batch_groups(refs, 0, len(refs), batch_size), disable=not progress, desc="clips"):
            clips = torch.from_numpy(pixels.group([refs[i] for i in g])).to(dev)
            logits = model(to_model_input(clips, mean, std, torch.float32)).float()
            probs.append((torch.sigmoid(logits) if multilabel else torch.softmax(logits, -1)).cpu().numpy())
    probs = np.concatenate(probs)
    names = list(meta["class_names"])
    labels = probs.argmax(-1)
    name = f"{meta['backbone']['name']} (fine-tuned on {meta['dataset']})"
    result = {"video": str(video), "model": str(model_dir), "model_name": name, "task": meta["task"],
              "fps": clip.fps, "class_names": names, "seconds": seconds.tolist(), "labels": labels.tolist(),
              "label_names": [names[i] for i in labels], "probabilities": probs.round(6).tolist(), "files": {}}
    if out is not None:
        write_prediction_files(video, Path(out), result, seconds, probs, multilabel, name)
    return result
