"""Use a frozen backbone (and a trained probe) on a new video.

* :func:`predict_video`: per-second phase probabilities and labels (CSV + JSON) and a ribbon PNG,
  with the clip protocol the probe was trained with (from its ``probe.json``);
* :func:`embed_video`: per-clip features (``.npy`` or ``.safetensors``) plus a JSON sidecar with
  each clip's timestamps.

The video is decoded once into the frame store of the cache (like the benchmark's videos) and read
in batches of consecutive clips, so memory stays bounded on long videos. A probe whose backbone
fingerprint differs from the backbone given is refused (:class:`ProbeMismatchError`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from unisurg.backbones.features import ClipPixels, Encoder, batch_groups, clip_pixels
from unisurg.backbones.registry import load_backbone
from unisurg.data.media_store import build_store
from unisurg.data.pixels import per_second_indices
from unisurg.datasets.samples import SampleRef
from unisurg.device import resolve_device
from unisurg.evaluation.bench_config import BenchConfig, ClipConfig, load_bench_config
from unisurg.evaluation.figures import plot_ribbons
from unisurg.evaluation.official_probe import (
    is_official_checkpoint,
    load_official_probes,
    official_probe_meta,
)
from unisurg.evaluation.probe import ProbeSpec, build_probe
from unisurg.evaluation.protocols import protocol_config
from unisurg.models.integrity import check_finite, read_safetensors
from unisurg.typed_config import load_config, to_dict

PER_SECOND_TASKS = ("phase", "triplet")


class ProbeMismatchError(ValueError):
    """The probe was trained on another backbone (fingerprints differ) or for another task."""


class ProbeFormatError(ValueError):
    """A probe folder without a readable ``probe.json`` / ``probe.safetensors``."""


def load_probe(probe_dir: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """The saved 1-probe module and its ``probe.json``."""

    d = Path(probe_dir)
    meta_path, weights = d / "probe.json", d / "probe.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise ProbeFormatError(f"{d}: expected probe.json and probe.safetensors (the run folder written by "
                               "`unisurg bench`, e.g. OUT/runs/<dataset>/<backbone>/)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ProbeFormatError(f"{meta_path}: not valid JSON ({e})") from None
    if meta.get("format") != "unisurg-probe":
        raise ProbeFormatError(f"{meta_path}: not a unisurg probe (format={meta.get('format')!r})")
    spec = ProbeSpec.from_json(meta["probe"])
    probe = build_probe(spec, 1)
    state, _ = read_safetensors(weights)  # a truncated / empty file: CheckpointError naming it
    check_finite(state, source=str(weights))
    missing = set(probe.state_dict()) ^ set(state)
    if missing:
        raise ProbeFormatError(f"{weights}: tensors do not match the probe in probe.json (differ: {sorted(missing)[:5]})")
    probe.load_state_dict(state)
    return probe.to(device).eval(), meta


def check_backbone(meta: dict, backbone, probe_dir) -> None:
    want = meta["backbone"]
    if want["fingerprint"] != backbone.fingerprint:
        raise ProbeMismatchError(
            f"probe {probe_dir} was trained on backbone {want['name']!r} (spec {want['spec']!r}, fingerprint "
            f"{want['fingerprint'][:16]}...) but --backbone {backbone.spec!r} has fingerprint "
            f"{backbone.fingerprint[:16]}...: its features would be meaningless to this probe. Pass the backbone "
            "the probe was trained with, or train a probe for this backbone with `unisurg bench`.")


def _store_video(video: Path, clip: ClipConfig, cache_dir: str, workers: int = 1):
    store, ids = build_store([(video, clip.frame_folder_fps or 1.0)], Path(cache_dir), "user-videos", fps=clip.fps,
                             short_side=clip.resize_short, quality=clip.jpeg_quality, workers=workers)
    key = str(Path(video).resolve())
    return store, ids, key, store.record(ids[key]).n_frames


def per_second_refs(media: str, n_frames: int, clip: ClipConfig, stride_s: int = 1) -> tuple[list[SampleRef], np.ndarray]:
    """One clip per ``stride_s`` seconds of a video of ``n_frames`` stored frames; returns (refs, seconds)."""
    n_seconds = int(math.floor((n_frames - 1) / clip.fps)) + 1
    seconds = np.arange(0, n_seconds, max(1, int(stride_s)))
    refs = [SampleRef(f"t{t}", 0, media, per_second_indices(int(t), n_frames, clip.frames, clip.fps, clip.anchor,
                                                            "first" if clip.start == "skip" else clip.start,
                                                            clip.positions))
            for t in seconds]
    return refs, seconds


def _stream(encoder: Encoder, pixels: ClipPixels, refs: list[SampleRef], batch_size: int,
            fn: Callable[[torch.Tensor], np.ndarray], progress: bool) -> np.ndarray:

    out = []
    for g in tqdm(batch_groups(refs, 0, len(refs), batch_size), disable=not progress, desc="clips"):
        clips = torch.from_numpy(pixels.group([refs[i] for i in g]))
        out.append(fn(encoder(clips)))
    return np.concatenate(out)


def load_official_for_predict(path: str | Path, device, head: int, heads: int, class_names, protocol: str,
                              overrides: list[str] | None = None):
    """An official checkpoint's head ``head`` and a ``probe.json``-like record (clip protocol of ``protocol``
    with ``overrides``, e.g. ``clip.frames=16``)."""
    probe = load_official_probes(path, heads=heads, indices=[head])
    clip = to_dict(protocol_config(protocol, overrides=overrides).clip)
    return probe.to(device).eval(), official_probe_meta(probe, clip, class_names, path, head)


def predict_video(video: str | Path, backbone, probe_dir: str | Path, out: str | Path | None = None, *,
                  cache_dir: str = "~/.cache/unisurg/bench", device: str = "auto", batch_size: int = 8,
                  progress: bool = False, head: int = 0, heads: int = 16, class_names: list[str] | None = None,
                  protocol: str = "surgmotion", overrides: list[str] | None = None) -> dict:
    """Per-second predictions of a trained probe on ``video``; writes CSV, JSON and a ribbon PNG to ``out``.

    ``backbone``: a spec string or a loaded Backbone; its fingerprint must equal the probe's.
    ``probe_dir``: a unisurg probe folder, or an official V-JEPA 2 / SurgMotion checkpoint file
    (``{"classifiers": [...]}``; :mod:`unisurg.evaluation.official_probe`): then ``head`` picks the
    classifier, ``heads`` is its number of attention heads, ``class_names`` name its outputs and the
    clip protocol is ``protocol``'s with ``overrides`` (no fingerprint to check: the user vouches for
    the backbone).
    Returns ``{"seconds", "labels", "label_names", "probabilities", "class_names", "files"}``.
    """

    video = Path(video)
    if not video.exists():
        raise FileNotFoundError(f"{video}: no such video file or frame folder")
    dev = resolve_device(device)
    official = is_official_checkpoint(probe_dir)
    if official:
        probe, meta = load_official_for_predict(probe_dir, dev, head, heads, class_names, protocol, overrides)
    else:
        probe, meta = load_probe(probe_dir, dev)
    if meta["task"] not in PER_SECOND_TASKS:
        raise ProbeMismatchError(f"probe {probe_dir} is a {meta['task']!r} probe; predict runs per-second probes "
                                 f"({', '.join(PER_SECOND_TASKS)})")
    bb = load_backbone(backbone, device=dev, dtype=torch.bfloat16 if dev.type == "cuda" else None) \
        if isinstance(backbone, str) else backbone
    if not official:
        check_backbone(meta, bb, probe_dir)
    clip = load_config(ClipConfig, meta["clip"])
    cfg = load_bench_config("paper", [f"cache_dir={cache_dir}", f"features.mode={meta['features_mode']}"])
    cfg.clip = clip
    store, ids, key, n = _store_video(video, clip, cfg.cache_dir)
    refs, seconds = per_second_refs(key, n, clip)
    encoder = Encoder(bb, cfg, dev, mean=tuple(meta["norm"]["mean"]), std=tuple(meta["norm"]["std"]))
    pixels = clip_pixels(store, ids, cfg, 1)
    multilabel = meta["task"] == "triplet"

    @torch.no_grad()
    def head(tokens):
        logits = probe(tokens)[0].float()
        return (torch.sigmoid(logits) if multilabel else torch.softmax(logits, -1)).cpu().numpy()

    probs = _stream(encoder, pixels, refs, batch_size, head, progress)
    names = list(meta["class_names"])
    labels = probs.argmax(-1)
    result = {"video": str(video), "backbone": {"spec": bb.spec, "name": bb.name, "fingerprint": bb.fingerprint},
              "probe": str(probe_dir), "task": meta["task"], "fps": clip.fps, "class_names": names,
              "seconds": seconds.tolist(), "labels": labels.tolist(), "label_names": [names[i] for i in labels],
              "probabilities": probs.round(6).tolist(), "files": {}}
    if out is not None:
        write_prediction_files(video, Path(out), result, seconds, probs, multilabel, bb.name)
    return result


def write_prediction_files(video: Path, out: Path, result: dict, seconds: np.ndarray, probs: np.ndarray,
                           multilabel: bool, model_name: str) -> None:
    """``<stem>_phases.csv`` (per second: label and every class probability), ``<stem>_phases.json``
    (``result``, with ``files`` filled in) and, for single-label tasks, ``<stem>_ribbon.png``."""
    out.mkdir(parents=True, exist_ok=True)
    names, labels = result["class_names"], probs.argmax(-1)
    stem = video.stem if video.is_file() else video.name
    csv_path, json_path, png_path = out / f"{stem}_phases.csv", out / f"{stem}_phases.json", out / f"{stem}_ribbon.png"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["second", "label", "label_name"] + [f"p_{n}" for n in names])
        for t, lab, p in zip(seconds, labels, probs):
            w.writerow([int(t), int(lab), names[lab]] + [f"{v:.6f}" for v in p])
    result["files"] = {"csv": str(csv_path), "json": str(json_path)}
    if not multilabel:
        full = np.full(int(seconds.max()) + 1, -1, np.int64)
        full[seconds] = labels
        plot_ribbons(png_path, f"{stem}: {model_name}", None, [("Prediction", full)], names)
        result["files"]["ribbon"] = str(png_path)
    json_path.write_text(json.dumps(result, indent=1))


def embed_video(video: str | Path, backbone, out: str | Path, *, config: BenchConfig | str | None = None,
                overrides: list[str] | None = None, stride_s: int = 1, tokens: bool = False,
                progress: bool = False) -> dict:
    """Features of one clip every ``stride_s`` seconds (clip protocol of ``config``: T frames ending at /
    centred on the second) to ``out`` (``.npy`` or ``.safetensors``) and ``out + ".json"`` (timestamps).

    ``tokens=False`` (default): mean-pooled ``float32 [n_clips, D]``; ``tokens=True``: all patch tokens
    ``float16 [n_clips, N, D]``.
    """

    video, out = Path(video), Path(out)
    if not video.exists():
        raise FileNotFoundError(f"{video}: no such video file or frame folder")
    if out.suffix not in (".npy", ".safetensors"):
        raise ValueError(f"{out}: the output file must end in .npy or .safetensors")
    cfg = config if isinstance(config, BenchConfig) else load_bench_config(config, overrides)
    cfg.features.mode = "tokens" if tokens else "pooled"
    dev = resolve_device(cfg.device)
    bb = load_backbone(backbone, device=dev, dtype=torch.bfloat16 if dev.type == "cuda" else None) \
        if isinstance(backbone, str) else backbone
    store, ids, key, n = _store_video(video, cfg.clip, cfg.cache_dir, cfg.ingest_workers)
    refs, seconds = per_second_refs(key, n, cfg.clip, stride_s)
    encoder = Encoder(bb, cfg, dev)
    pixels = clip_pixels(store, ids, cfg, 1)
    dtype = np.float16 if tokens else np.float32
    feats = _stream(encoder, pixels, refs, cfg.features.batch_size, lambda t: t.cpu().numpy().astype(dtype), progress)
    c = cfg.clip
    clip_start = [float(r.indices.min() / c.fps) for r in refs]
    clip_end = [float(r.indices.max() / c.fps) for r in refs]
    side = {"video": str(video), "backbone": {"spec": bb.spec, "name": bb.name, "fingerprint": bb.fingerprint},
            "features": "tokens" if tokens else "mean-pooled tokens", "shape": list(feats.shape),
            "dtype": str(np.dtype(dtype)), "clip": to_dict(c),
            "timestamps": {"second": seconds.tolist(), "clip_start_s": clip_start, "clip_end_s": clip_end},
            "note": f"clip i = {c.frames} frames at {c.fps:g} fps {'ending at' if c.anchor == 'online' else 'centred on'} "
                    "second[i]; frames before the start repeat the first frame"}
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, feats)
    else:
        save_file({"features": torch.from_numpy(np.ascontiguousarray(feats)),
                   "seconds": torch.from_numpy(seconds.astype(np.int64))}, str(out),
                  metadata={"backbone": bb.spec, "fingerprint": bb.fingerprint})
    sidecar = out.with_name(out.name + ".json")
    sidecar.write_text(json.dumps(side, indent=1))
    return {"features": str(out), "sidecar": str(sidecar), "shape": list(feats.shape)}
