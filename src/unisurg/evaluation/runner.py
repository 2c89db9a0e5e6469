"""``run_benchmark``: dataset -> frame store -> frozen features -> P probes -> selection -> metrics -> reports.

    from unisurg.evaluation.runner import run_benchmark
    results = run_benchmark(["random:tiny@0"], "synthetic", "data/synth", out="bench-out", config="tiny")

Per backbone and fold: features of train/val/test come from the cache (computed once), the
``len(lrs) x len(wds)`` probes train together, the probe with the best validation metric is the
result ("honest"), the one with the best test metric is reported too, labelled paper-style.
Validation is carved from the training videos (``train.val_fraction``, by video/trial/clip name,
stratified by class for clip tasks) when the split scheme has none.
JIGSAWS: ``split_scheme="loso"`` or ``"louo"`` runs every fold and pools the test predictions.

Everything lands in ``out``: ``results.json`` (merged over runs), tables, figures and, per run,
``runs/<dataset>/<backbone>/`` with the chosen probe (``probe.safetensors`` + ``probe.json``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from unisurg.atomic_files import atomic_path, write_atomic, write_json_atomic
from unisurg.backbones.features import (
    Encoder,
    InMemoryFeatures,
    OnlineClips,
    clip_pixels,
    extract_split,
    feature_dir,
    norm_stats,
    protocol_dict,
)
from unisurg.backbones.registry import load_backbone
from unisurg.data.media_store import build_store
from unisurg.data.ray_engine import RayOptions, check_engine
from unisurg.datasets import get_adapter
from unisurg.datasets.samples import SplitData
from unisurg.datasets.splitfiles import carve
from unisurg.device import resolve_device
from unisurg.evaluation.bench_config import BenchConfig, load_bench_config
from unisurg.evaluation.figures import write_figures
from unisurg.evaluation.head_selection import (
    HONEST_LABEL,
    PAPER_LABEL,
    best_index,
    confidence_intervals,
    flat_metrics,
    select_probe,
)
from unisurg.evaluation.official_probe import official_heads
from unisurg.evaluation.paired_report import write_paired
from unisurg.evaluation.probe import ProbeSpec, build_probe
from unisurg.evaluation.probe_training import (
    TrainHistory,
    collect_outputs,
    train_probes,
)
from unisurg.evaluation.protocols import protocol_split_scheme, write_protocol_record
from unisurg.evaluation.report import write_tables
from unisurg.evaluation.snapshots import candidate_grid, snapshot, stack_probes
from unisurg.evaluation.tasks import Task, make_task
from unisurg.typed_config import to_dict

RESULTS_NAME = "results.json"
NO_VALIDATION = "none (train.validation=none: all training items train, no validation split)"
NO_HONEST_LABEL = "none: no validation split, so no probe chosen on validation (see the paper-style table)"

# how the macro averages of a task's metrics are taken (the tables name them; SPEC Sec. 9)
METRIC_CONVENTIONS = {
    "phase": {"gt": "per video, macro over the phases in the ground truth (ours; keys f1, jaccard, precision, recall)",
              "gt_or_pred": "per video, macro over the phases in the ground truth or the predictions, scikit-learn's "
                            "default label set, zero_division=0 (SurgMotion; keys *_gt_or_pred)"},
    "clip": {"gt_or_pred": "macro over the classes in the ground truth or the predictions (scikit-learn's default)"},
}


class BenchError(RuntimeError):
    """A benchmark that cannot run as asked (no test split, empty split, ...); the message says why."""


@dataclass
class EvalFold:
    """One train/val/test partition of a dataset: the only one, or one LOSO/LOUO/cross-validation fold."""

    name: str
    records: dict[str, list]
    val_source: str
    splits: dict[str, SplitData] = field(default_factory=dict)


@dataclass
class PreparedDataset:
    """A dataset read through its adapter, its task and folds built, its media in the frame store."""

    dataset: str
    split_scheme: str
    task: Task
    class_names: tuple[str, ...]
    folds: list[EvalFold]
    store: object | None
    ids: dict[str, str]
    repairs: list = field(default_factory=list)  # Repair entries of a lenient load
    flags: dict = field(default_factory=dict)  # quirks of the dataset's split files (e.g. val_is_test), recorded


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


# -- data -------------------------------------------------------------------------------------


def _record_id(rec) -> str:
    for attr in ("video_id", "trial_id", "clip_id", "sample_id"):
        if hasattr(rec, attr):
            return getattr(rec, attr)
    raise TypeError(f"unknown record type {type(rec).__name__}")


def _with_split(rec, split: str):
    return dataclasses.replace(rec, split=split)


def carve_validation(records: dict[str, list], fraction: float, task_name: str) -> tuple[dict[str, list], str]:
    """A validation split carved from training records when the scheme has none (deterministic, by name)."""

    if records.get("val"):
        return records, "dataset split scheme"
    train = records.get("train", [])
    if fraction <= 0 or len(train) < 2:
        raise BenchError(f"the split scheme has no validation split and train.val_fraction={fraction} with "
                         f"{len(train)} training items cannot carve one; probes are never selected on test")
    group = (lambda r: r.label) if task_name == "clip" else None
    kept, held = carve(train, fraction, key=_record_id, group=group)
    if not held:
        kept, held = train[1:], train[:1]
    if not kept:
        raise BenchError("carving validation left no training item; lower train.val_fraction")
    out = dict(records)
    out["train"] = kept
    out["val"] = [_with_split(r, "val") for r in held]
    return out, f"carved from training: {len(held)} of {len(train)} ({fraction:.0%}, by name)"


def load_folds(dataset: str, root, split_scheme: str | None, strict: bool,
               lenient: bool = False) -> tuple[object, list[tuple[str, dict]]]:
    cls = get_adapter(dataset)
    if split_scheme in ("loso", "louo") and hasattr(cls, "folds"):
        adapter = cls(root, strict=strict, lenient=lenient)
        folds = adapter.folds(split_scheme)
        keys = [s for s in cls.split_schemes if s.startswith(f"{split_scheme}_")]  # loso_1.., louo_B.. (fold order)
        if len(keys) != len(folds):
            keys = [f"{split_scheme}_{i + 1}" for i in range(len(folds))]
        return adapter, [(k, {"train": tr, "val": [], "test": te}) for k, (tr, te) in zip(keys, folds)]
    adapter = cls(root, split_scheme, strict=strict, lenient=lenient)
    return adapter, [(adapter.split_scheme, adapter.load())]


def prepare(dataset: str, root, split_scheme: str | None, cfg: BenchConfig, *, strict: bool = True,
            splits: dict[str, list] | None = None, class_names: tuple[str, ...] | None = None, task_name: str | None = None,
            progress: bool = False, log: Callable[[str], None] = print) -> PreparedDataset:
    """Load the dataset, carve validation if needed, ingest its media, and build every fold's samples."""
    repairs = []
    if splits is None:
        adapter, raw_folds = load_folds(dataset, root, split_scheme, strict, cfg.lenient)
        repairs = list(adapter.repairs.entries) if adapter.repairs is not None else []
        for r in repairs:
            log(f"annotation repair (lenient): {r}")
        flags = dict(getattr(adapter, "flags", {}))
        class_names = tuple(adapter.class_names)
        task_name = adapter.task
        scheme = split_scheme or adapter.split_scheme
    else:
        if class_names is None or task_name is None:
            raise BenchError("prepare(splits=...) needs class_names and task_name")
        raw_folds = [(split_scheme or "custom", splits)]
        scheme = split_scheme or "custom"
        flags = {}
    all_records = [r for _, f in raw_folds for s in ("train", "val", "test") for r in f.get(s, [])]
    if not all_records:
        raise BenchError(f"{dataset}: no record found under {root}")
    task = make_task(task_name, class_names, cfg, all_records)
    folds = []
    for name, recs in raw_folds:
        if not recs.get("test"):
            if len(raw_folds) > 1:
                log(f"note: fold {name} has no test item here; skipped")
                continue
            raise BenchError(f"{dataset} (split scheme {name}): the test split is empty; pick a split scheme with a "
                             f"test split (e.g. the default)")
        if cfg.train.validation == "none":  # SurgMotion: every training video trains; no validation split
            recs, source = dict(recs, val=[]), NO_VALIDATION
        else:
            recs, source = carve_validation(recs, cfg.train.val_fraction, task.name)
        folds.append(EvalFold(name, recs, source))
    if not folds:
        raise BenchError(f"{dataset}: no fold of split scheme {split_scheme} has a test item under {root}")
    store, ids = None, {}
    fps = task.store_fps()
    if fps is not None:
        media = [m for f in folds for s in ("train", "val", "test") for m in task.media(f.records[s])]
        log(f"frame store: {len(set(str(p) for p, _ in media))} videos at {fps:g} fps, short side {cfg.clip.resize_short}")
        store, ids = build_store(media, Path(cfg.cache_dir), dataset, fps=fps, short_side=cfg.clip.resize_short,
                                 quality=cfg.clip.jpeg_quality, workers=cfg.ingest_workers, progress=progress)
    for f in folds:
        for s in ("train", "val", "test"):
            f.splits[s] = task.build_split(s, f.records[s], store, ids)
            if len(f.splits[s]) == 0 and not (s == "val" and f.val_source == NO_VALIDATION):
                raise BenchError(f"{dataset} fold {f.name}: split {s!r} has no labelled sample")
        past = sum(i.get("past_end", 0) for s in f.splits.values() for i in s.group_info)
        if past:
            log(f"note: {past} labelled seconds lie past the end of their decoded video; they use the last frame")
    return PreparedDataset(dataset, scheme, task, class_names, folds, store, ids, repairs, flags)


# -- features ---------------------------------------------------------------------------------


def image_frames(backbone) -> int:
    """Frames a still image is repeated to: one tubelet of a video backbone, one frame for an image backbone."""
    return int(backbone.tubelet_size) if backbone.kind == "video" else 1


def check_protocol(task: Task, backbone, cfg: BenchConfig) -> tuple[int, int, int]:
    """The token grid of one sample; a clip the backbone cannot tokenise is a clear error before any work."""
    T = image_frames(backbone) if task.probe_kind == "dense" else cfg.clip.frames
    try:
        return backbone.grid(T, cfg.clip.res, cfg.clip.res)
    except ValueError as e:
        raise BenchError(f"backbone {backbone.name}: clips of {T} frames at {cfg.clip.res}x{cfg.clip.res} do not fit "
                         f"(tubelet {backbone.tubelet_size}, patch {backbone.patch_size}): {e}. Set clip.frames to a "
                         f"multiple of the tubelet size and clip.res to a multiple of the patch size") from None


def split_features(prep: PreparedDataset, fold: EvalFold, backbone, encoder: Encoder, cfg: BenchConfig, *, progress: bool,
                   log: Callable[[str], None]) -> dict[str, object]:
    """Per split, a dataset of frozen features (cached on disk unless ``features.cache=false``)."""
    grid = check_protocol(prep.task, backbone, cfg)
    per_sample = backbone.embed_dim * {"pooled": 1, "time": grid[0]}.get(cfg.features.mode, int(np.prod(grid)))
    per_sample *= 2 if cfg.features.dtype == "float16" else 4
    pixels = clip_pixels(prep.store, prep.ids, cfg, image_frames(backbone))
    meta = {"backbone": {"spec": backbone.spec, "name": backbone.name, "fingerprint": backbone.fingerprint},
            "protocol": protocol_dict(cfg, prep.task.name), "dataset": prep.dataset, "split_scheme": fold.name}
    out = {}
    for s in ("train", "val", "test"):
        split = fold.splits[s]
        if len(split) == 0:  # no validation split (train.validation=none)
            out[s] = None
            continue
        if s == "train" and cfg.features.online:
            out[s] = OnlineClips(pixels, split, cfg, seed=cfg.train.seed)
        elif cfg.features.cache:
            folder = feature_dir(cfg, prep.dataset, fold.name, backbone.fingerprint, prep.task.name, split)
            if not (folder / "complete.json").exists():
                log(f"  feature cache {s}: {len(split)} samples x {per_sample / 2**20:.2f} MiB = "
                    f"{len(split) * per_sample / 2**30:.2f} GiB in {folder}")
            out[s] = extract_split(encoder, pixels, split, folder, cfg, meta=meta, progress=progress, log=log)
        else:
            out[s] = InMemoryFeatures(encoder, pixels, split, cfg.features.batch_size, cfg.features.workers, progress)
    return out


def token_shape(feats: dict[str, object]) -> tuple[int, ...]:
    for s in ("val", "test", "train"):
        shp = getattr(feats[s], "item_shape", None)
        if shp is not None:
            return tuple(shp)
    raise BenchError("no cached split to read the token shape from")


# -- one backbone -----------------------------------------------------------------------------


def probe_spec(task: Task, backbone, cfg: BenchConfig, tokens_shape: tuple[int, ...]) -> ProbeSpec:
    D = int(tokens_shape[-1])
    if task.probe_kind == "dense":
        if cfg.features.mode != "tokens":
            raise BenchError("dense tasks need all patch tokens: set features.mode=tokens")
        grid = backbone.grid(image_frames(backbone), cfg.clip.res, cfg.clip.res)
        return ProbeSpec("dense", D, task.out_dim, D, hidden=cfg.probe.decoder_hidden,
                         patch_size=int(backbone.patch_size), grid=tuple(int(g) for g in grid))
    width = cfg.probe.width or D
    if cfg.probe.kind == "linear":
        return ProbeSpec("linear", D, task.out_dim, D)
    return ProbeSpec("attentive", D, task.out_dim, width, depth=cfg.probe.depth, heads=cfg.probe.heads,
                     mlp_ratio=cfg.probe.mlp_ratio, eps=cfg.probe.eps, cross_proj=cfg.probe.cross_proj,
                     init=cfg.probe.init)


def concat_splits(parts: list[SplitData], name: str) -> SplitData:
    """Test splits of several folds as one (pooled predictions of cross-validation)."""
    if len(parts) == 1:
        return parts[0]
    refs, groups, info, targets, offset = [], [], [], [], 0
    for sp in parts:
        refs.extend(dataclasses.replace(r, group=r.group + offset) for r in sp.refs)
        groups.extend(sp.groups)
        info.extend(sp.group_info)
        targets.append(sp.targets)
        offset += len(sp.groups)
    tg = np.concatenate(targets) if isinstance(targets[0], np.ndarray) else [t for tt in targets for t in tt]
    return SplitData(name, refs, tg, groups, info)


@dataclass
class FoldResult:
    fold: EvalFold
    probe: torch.nn.Module
    spec: ProbeSpec
    val_metrics: list[dict[str, float]]
    test_out: np.ndarray  # [P, n, ...]
    selected: int
    task_state: dict
    history: dict
    test_feats: object


def run_fold(prep: PreparedDataset, fold: EvalFold, backbone, cfg: BenchConfig, device: torch.device, *, progress: bool,
             log: Callable[[str], None], timings: dict) -> FoldResult:
    task = prep.task
    encoder = Encoder(backbone, cfg, device)
    t0 = time.perf_counter()
    feats = split_features(prep, fold, backbone, encoder, cfg, progress=progress, log=log)
    timings["features_s"] = timings.get("features_s", 0.0) + time.perf_counter() - t0
    task.fit(fold.splits["train"])
    shape = token_shape(feats)
    if cfg.probe.official:  # evaluate the heads of an official checkpoint: no training
        probe = official_heads(cfg.probe.official, cfg.probe.heads, len(cfg.train.grid()), int(shape[-1]), task.out_dim)
        spec = probe.spec
        hist = TrainHistory(loss=[[float("nan")] * probe.n_probes])
        log(f"  {probe.n_probes} heads of the official checkpoint {cfg.probe.official} (not trained here)")
    else:
        spec = probe_spec(task, backbone, cfg, shape)
        probe = build_probe(spec, len(cfg.train.grid()), seed=cfg.train.seed)
    if spec.kind == "attentive":
        probe.checkpoint = cfg.probe.checkpoint
    probe.to(device)
    t0 = time.perf_counter()
    if not cfg.probe.official:
        snaps: list = []
        hist = train_probes(probe, feats["train"], task, fold.splits["train"], cfg, device,
                            encoder=encoder if cfg.features.online else None, progress=progress, log=log,
                            on_epoch=(lambda e: snaps.append(snapshot(probe))) if cfg.train.epoch_snapshots else None)
        if snaps:  # every epoch's probes are candidates, epoch-major
            probe = stack_probes(snaps).to(device)
            hist.loss.append([v for epoch_loss in hist.loss for v in epoch_loss])  # last row: per candidate
    timings["train_s"] = timings.get("train_s", 0.0) + hist.seconds
    timings["backbone_forwards"] = timings.get("backbone_forwards", 0) + encoder.forwards  # extraction + online training
    t0 = time.perf_counter()
    test_out = collect_outputs(probe, feats["test"], task, fold.splits["test"], cfg, device, progress=progress)
    if feats["val"] is None:  # no validation: the probe kept is the one the authors keep, chosen on test
        val_metrics = [{} for _ in range(probe.n_probes)]
        pkey, phigher = task.paper_select_key()
        sel = best_index([flat_metrics(task.score(fold.splits["test"], test_out[p])).get(pkey, float("nan"))
                          for p in range(probe.n_probes)], phigher)
    else:
        val_out = collect_outputs(probe, feats["val"], task, fold.splits["val"], cfg, device, progress=progress)
        val_metrics = [flat_metrics(task.score(fold.splits["val"], val_out[p])) for p in range(probe.n_probes)]
        key, higher = task.select_key()
        sel = select_probe(val_metrics, key, higher)
    timings["eval_s"] = timings.get("eval_s", 0.0) + time.perf_counter() - t0
    return FoldResult(fold, probe, spec, val_metrics, test_out, sel, task.state_json(),
                      {"loss": hist.loss, "steps": hist.steps}, feats["test"])


def _metrics_with_ci(blocks, cfg: BenchConfig) -> dict:
    return confidence_intervals(blocks, cfg.report.bootstrap_n, cfg.report.bootstrap_seed, cfg.report.bootstrap)


def _rows(blocks) -> list[dict]:
    return [r for b in blocks for r in b.rows]


def probe_json(prep: PreparedDataset, fr: FoldResult, backbone, cfg: BenchConfig, lr: float, wd: float) -> dict:
    return {
        "format": "unisurg-probe", "version": 1, "task": prep.task.name, "dataset": prep.dataset,
        "split_scheme": fr.fold.name, "class_names": list(prep.class_names), "probe": fr.spec.to_json(),
        "lr": lr, "wd": wd, "probe_index": fr.selected,
        "selection": {"metric": prep.task.select_key()[0], "on": "val", "val_source": fr.fold.val_source}
        if fr.fold.val_source != NO_VALIDATION else
        {"metric": prep.task.paper_select_key()[0], "on": "test", "val_source": NO_VALIDATION},
        "backbone": {"spec": backbone.spec, "name": backbone.name, "fingerprint": backbone.fingerprint,
                     "embed_dim": backbone.embed_dim, "kind": backbone.kind, "patch_size": backbone.patch_size,
                     "tubelet_size": backbone.tubelet_size},
        "clip": to_dict(cfg.clip), "features_mode": cfg.features.mode,
        "norm": dict(zip(("mean", "std"), (list(x) for x in _norm(cfg, backbone)))),
        "task_state": fr.task_state,
    }


def _norm(cfg, backbone):
    return norm_stats(cfg, backbone)


def save_probe(folder: Path, probe_one: torch.nn.Module, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in probe_one.state_dict().items()}
    with atomic_path(folder / "probe.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "unisurg-probe"})
    write_json_atomic(folder / "probe.json", meta)




def _figure_payload(prep: PreparedDataset, task: Task, test: SplitData, out_sel: np.ndarray, fr_list: list[FoldResult],
                    sel_per_fold: list[int], cfg: BenchConfig, device) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Arrays the figures need: per test video ground truth and prediction (phase), or a few maps (dense),
    and the items they show (``{"id", "image", "target"}`` for dense tasks)."""
    arrays: dict[str, np.ndarray] = {}
    items: list[dict] = []
    if task.name == "phase":
        gidx = test.group_index()
        pred = out_sel.argmax(-1)
        for g, vid in enumerate(test.groups):
            info = test.group_info[g]
            full_pred = np.full(info["n_seconds"], -1, np.int64)
            full_pred[info["seconds"]] = pred[gidx == g]
            full_gt = np.full(info["n_seconds"], -1, np.int64)
            full_gt[info["seconds"]] = test.targets[gidx == g]
            arrays[f"gt/{vid}"] = full_gt
            arrays[f"pred/{vid}"] = full_pred
    elif task.probe_kind == "dense":
        fr = fr_list[0]
        one = fr.probe.select(sel_per_fold[0]).to(device).eval()
        n = min(cfg.report.max_figures, len(test))
        with torch.no_grad():
            for i in range(n):
                x = fr.test_feats[i][None].to(device)
                out = one(x)[0, 0]  # [C, h, w]
                gt = task._read_target(test.targets[i])
                arrays[f"pred/{test.groups[i]}"] = task.predict_map(out, gt.shape).astype(np.float32)
                items.append({"id": test.groups[i], "image": test.refs[i].media, "target": str(test.targets[i]),
                              "subset": test.group_info[i].get("subset", "")})
    return arrays, items


def run_backbone(prep: PreparedDataset, backbone, cfg: BenchConfig, device: torch.device, out: Path | None, *,
                 label: str | None = None, progress: bool = False, log: Callable[[str], None] = print) -> dict:
    task = prep.task
    grid, cand_epochs = candidate_grid(cfg)
    timings: dict = {}
    frs = [run_fold(prep, f, backbone, cfg, device, progress=progress, log=log, timings=timings) for f in prep.folds]
    test = concat_splits([fr.fold.splits["test"] for fr in frs], "test")
    key, higher = task.select_key()
    # honest: each fold's val-chosen probe, test predictions pooled over folds
    honest_out = np.concatenate([fr.test_out[fr.selected] for fr in frs], axis=0)
    honest_blocks = task.score(test, honest_out)
    # every probe on the (pooled) test split; paper-style = the best of them on test
    P = len(grid)
    test_by_probe = [task.score(test, np.concatenate([fr.test_out[p] for fr in frs], axis=0)) for p in range(P)]
    test_metrics = [flat_metrics(b) for b in test_by_probe]
    paper_key, paper_higher = task.paper_select_key()
    if paper_key not in test_metrics[0]:
        raise BenchError(f"report.paper_selection_metric={paper_key!r} is not among the metrics "
                         f"{sorted(test_metrics[0])}")
    paper_values = [m[paper_key] for m in test_metrics]
    if cfg.report.bootstrap == "surgmotion":  # the release ranks heads by the bootstrap mean it prints
        paper_values = [_metrics_with_ci(b, cfg)[paper_key]["value"] for b in test_by_probe]
    paper_idx = best_index(paper_values, paper_higher)
    probes = []
    for p, (lr, wd) in enumerate(grid):
        probes.append({"index": p, "lr": lr, "wd": wd, **({"epoch": cand_epochs[p]} if cand_epochs else {}),
                       "val": [fr.val_metrics[p] for fr in frs] if len(frs) > 1 else frs[0].val_metrics[p],
                       "test": test_metrics[p], "train_loss_last_epoch": [fr.history["loss"][-1][p] for fr in frs]})
    sel = [fr.selected for fr in frs]
    no_val = any(fr.fold.val_source == NO_VALIDATION for fr in frs)
    run = {
        "dataset": prep.dataset, "split_scheme": prep.split_scheme, "task": task.name,
        "class_names": list(prep.class_names),
        "backbone": {"spec": backbone.spec, "name": backbone.name, "label": label or backbone.name,
                     "fingerprint": backbone.fingerprint, "embed_dim": backbone.embed_dim, "kind": backbone.kind},
        "folds": [{"name": fr.fold.name, "val_source": fr.fold.val_source, "selected": fr.selected,
                   "lr": grid[fr.selected][0], "wd": grid[fr.selected][1],
                   "n_samples": {s: len(fr.fold.splits[s]) for s in ("train", "val", "test")},
                   "n_units": {s: len(fr.fold.splits[s].groups) for s in ("train", "val", "test")}} for fr in frs],
        "selection_metric": key, "higher_is_better": higher,
        "honest": {"label": HONEST_LABEL, "probe_index": sel if len(sel) > 1 else sel[0],
                   "metrics": _metrics_with_ci(honest_blocks, cfg), "per_unit": _rows(honest_blocks)}
        if not no_val else {"label": NO_HONEST_LABEL, "probe_index": None, "metrics": {}, "per_unit": []},
        "metric_conventions": METRIC_CONVENTIONS.get(task.name, {}), "bootstrap": cfg.report.bootstrap,
        "dataset_flags": prep.flags,
        "paper_style": {"label": PAPER_LABEL, "selection_metric": paper_key, "selected_on": "test",
                        "probe_index": paper_idx, "lr": grid[paper_idx][0], "wd": grid[paper_idx][1],
                        **({"epoch": cand_epochs[paper_idx]} if cand_epochs else {}),
                        "metrics": _metrics_with_ci(test_by_probe[paper_idx], cfg),
                        "per_unit": _rows(test_by_probe[paper_idx])},
        "probes": probes,
        "columns": [dataclasses.asdict(c) for c in task.columns],
        "config": to_dict(cfg), "timings": timings, "created": time.time(),
        "annotation_repairs": [r.to_dict() for r in prep.repairs],
    }
    if out is not None:
        run_dir = out / "runs" / slug(prep.dataset) / slug(label or backbone.name)
        for fr in frs:
            folder = run_dir if len(frs) == 1 else run_dir / f"fold_{slug(fr.fold.name)}"
            lr, wd = grid[fr.selected]
            save_probe(folder, fr.probe.select(fr.selected), probe_json(prep, fr, backbone, cfg, lr, wd))
        arrays, items = _figure_payload(prep, task, test, honest_out, frs, sel, cfg, device)
        run["figure_items"] = items
        if arrays:
            write_atomic(run_dir / "predictions.npz", lambda f: np.savez_compressed(f, **arrays))
        run["run_dir"] = str(run_dir.relative_to(out))
        write_json_atomic(run_dir / "run.json", run)
    return run


# -- entry point ------------------------------------------------------------------------------


def load_results(out: Path) -> dict:
    path = out / RESULTS_NAME
    if not path.exists():
        return {"format": "unisurg-bench-results", "version": 1, "runs": {}}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BenchError(f"{path}: not valid JSON ({e}); move it away to start a new results file") from None
    if data.get("format") != "unisurg-bench-results":
        raise BenchError(f"{path}: not a unisurg benchmark results file")
    return data


def backbone_label(results: dict, backbone) -> str:
    """The backbone's row label: its name; its name plus fingerprint when another backbone already has the name.
    A backbone seen before (same name and fingerprint) keeps its label, so a rerun replaces its runs."""
    runs = [r["backbone"] for r in results["runs"].values()]
    for b in runs:
        if b["name"] == backbone.name and b["fingerprint"] == backbone.fingerprint:
            return b.get("label", b["name"])
    if any(b.get("label", b["name"]) == backbone.name for b in runs):
        return f"{backbone.name} [{backbone.fingerprint[:8]}]"
    return backbone.name


def run_benchmark(backbones: list, dataset: str, root=None, *, split_scheme: str | None = None, out=None,
                  config: BenchConfig | str | dict | None = None, overrides: list[str] | None = None,
                  strict: bool = True, splits: dict | None = None, class_names=None, task_name: str | None = None,
                  progress: bool = False, log: Callable[[str], None] = print) -> dict:
    """Benchmark each backbone (spec string or loaded :class:`~unisurg.backbones.registry.Backbone`) on ``dataset``.

    Returns the merged results dict (also written to ``out/results.json`` with tables and figures
    when ``out`` is given). ``splits`` (+ ``class_names``, ``task_name``) bypass the adapter with
    ready records.
    """
    cfg = config if isinstance(config, BenchConfig) else load_bench_config(config, overrides)
    if isinstance(config, BenchConfig) and overrides:
        raise BenchError("pass overrides with a config name/dict/file, not with a BenchConfig object")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.train.seed)
    split_scheme = split_scheme or protocol_split_scheme(cfg.protocol, dataset)
    prep = prepare(dataset, root, split_scheme, cfg, strict=strict, splits=splits, class_names=class_names,
                   task_name=task_name, progress=progress, log=log)
    out_dir = Path(out) if out is not None else None
    results = load_results(out_dir) if out_dir is not None else {"format": "unisurg-bench-results", "version": 1, "runs": {}}

    for spec in backbones:
        bb = load_backbone(spec, device=device, dtype=torch.bfloat16 if device.type == "cuda" else None) \
            if isinstance(spec, str) else spec
        log(f"[{dataset}] backbone {bb.name} ({bb.spec}), task {prep.task.name}, {len(cfg.train.grid())} probes")
        label = backbone_label(results, bb)
        run = run_backbone(prep, bb, cfg, device, out_dir, label=label, progress=progress, log=log)
        results["runs"][f"{dataset}/{label}"] = run
        h = run["honest"]["metrics"].get(run["selection_metric"], {})
        log(f"  {HONEST_LABEL}: {run['selection_metric']} = {h.get('value', float('nan')):.4f}")
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out_dir / RESULTS_NAME, results)

            write_tables(results, out_dir)
            write_paired(results, out_dir)  # backbones sharing a test split: paired.json / paired.md
    if out_dir is not None:
        write_protocol_record(cfg, out_dir)
    if out_dir is not None and cfg.report.figures:
        write_figures(results, out_dir, dataset, max_items=cfg.report.max_figures)
    return results


def extract_features(backbones: list, dataset: str, root=None, *, split_scheme: str | None = None,
                     config: BenchConfig | str | dict | None = None, overrides: list[str] | None = None,
                     strict: bool = True, progress: bool = False, log: Callable[[str], None] = print,
                     engine: str = "local", ray: RayOptions | None = None) -> dict[str, dict]:
    """Compute (or find) the cached frozen features of every split of ``dataset`` for each backbone.

    ``engine="ray"``: shards computed by Ray actors (:func:`~unisurg.backbones.features.extract_split`);
    this process then loads each backbone on the CPU only for its fingerprint and protocol checks.

    Returns ``{backbone label: {"<fold>/<split>": cache folder}}``; ``unisurg bench`` later reuses them.
    """
    cfg = config if isinstance(config, BenchConfig) else load_bench_config(config, overrides)
    if not cfg.features.cache:
        raise BenchError("extract writes the feature cache; features.cache=false makes it pointless")
    check_engine(engine)
    device = resolve_device(cfg.device) if engine == "local" else torch.device("cpu")
    prep = prepare(dataset, root, split_scheme, cfg, strict=strict, progress=progress, log=log)

    out = {}
    for spec in backbones:
        bb = load_backbone(spec, device=device, dtype=torch.bfloat16 if device.type == "cuda" else None) \
            if isinstance(spec, str) else spec
        check_protocol(prep.task, bb, cfg)
        encoder = Encoder(bb, cfg, device)
        pixels = clip_pixels(prep.store, prep.ids, cfg, image_frames(bb))
        folders = {}
        for fold in prep.folds:
            meta = {"backbone": {"spec": bb.spec, "name": bb.name, "fingerprint": bb.fingerprint},
                    "protocol": protocol_dict(cfg, prep.task.name), "dataset": prep.dataset, "split_scheme": fold.name}
            for s in ("train", "val", "test"):
                folder = feature_dir(cfg, prep.dataset, fold.name, bb.fingerprint, prep.task.name, fold.splits[s])
                extract_split(encoder, pixels, fold.splits[s], folder, cfg, meta=meta, progress=progress, log=log, engine=engine,
                              ray=ray, backbone_spec=spec if isinstance(spec, str) else None)
                folders[f"{fold.name}/{s}"] = str(folder)
        log(f"{bb.name}: features of {len(folders)} splits in the cache ({encoder.forwards} backbone forwards now)")
        out[bb.name] = folders
    return out
