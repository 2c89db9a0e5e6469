"""Benchmark tasks: how records become samples and targets, the probe's loss, and the metrics.

One class per task (docs/benchmark.md):

==============  =====================  ============================  ===============================
task            records                probe / loss                  metrics (units of the bootstrap)
==============  =====================  ============================  ===============================
phase           PhaseVideo             attentive, weighted CE        Acc, F1, Jaccard (+P, R, edit), videos
triplet         MultiLabelVideo        attentive, BCE                AP-I/V/T/IV/IT/IVT video-wise, videos
clip            ClipSample             attentive, weighted CE        Acc, macro F1, clips
skill           SkillTrial             attentive, L1 / MSE           MAE, Spearman (pooled), trials
segmentation    SegSample              dense decoder, BCE + Dice     Dice, MAE per test set, images
depth           DepthSample            dense decoder, masked L1      RMSE, AbsRel, SqRel, d<1.1, images
==============  =====================  ============================  ===============================

``score`` returns :class:`ScoreBlock` s: aggregate metrics plus the per-unit values that
:func:`unisurg.evaluation.head_selection.confidence_intervals` resamples.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unisurg.data.pixels import (
    clip_window,
    per_second_indices,
    resize_image,
    spread_indices,
    strided_indices,
)
from unisurg.datasets import read_depth_mm, read_mask
from unisurg.datasets.samples import SampleRef, SplitData
from unisurg.evaluation import task_losses as losses
from unisurg.evaluation.metrics import (
    average_precision,
    classification_metrics,
    depth_metrics,
    mae,
    phase_metrics,
    segmentation_metrics,
    spearman,
    triplet_metrics,
)

PER_PHASE_NAMES = ("precision", "recall", "f1", "jaccard")  # metrics whose macro average depends on the label set


@dataclass
class ScoreBlock:
    """Metrics of one evaluation unit set (``prefix`` names a test subset, e.g. ``"Kvasir"``).

    Either ``matrix`` (``[U, M]`` per-unit values whose mean over units is the metric) or
    ``units`` + ``statistic`` (``statistic(list of units) -> [M]``) define the bootstrap.
    """

    prefix: str
    metrics: dict[str, float]
    names: list[str]
    matrix: np.ndarray | None = None
    units: list | None = None
    statistic: Callable[[list], np.ndarray] | None = None
    rows: list[dict] = field(default_factory=list)

    def key(self, metric: str) -> str:
        return f"{self.prefix}:{metric}" if self.prefix else metric


@dataclass(frozen=True)
class MetricColumn:
    key: str  # metric key (without subset prefix)
    label: str  # column label in the tables
    percent: bool  # print x100 (fractions)
    higher_is_better: bool


class Task:
    """Base class; see the module docstring for the six tasks."""

    name = ""
    probe_kind = "attentive"
    columns: tuple[MetricColumn, ...] = ()
    selection_metric = ""
    per_second = False

    def __init__(self, class_names: tuple[str, ...], cfg):
        self.class_names = tuple(class_names)
        self.cfg = cfg
        self.state: dict[str, Any] = {}  # fitted on the training split (class weights, target stats)

    # -- data -----------------------------------------------------------------------------------
    def store_fps(self) -> float | None:
        return self.cfg.clip.fps if self.per_second else self.cfg.clip.clip_fps

    def media(self, records: list) -> list[tuple[Path, float | None]]:
        ffps = self.cfg.clip.frame_folder_fps
        return [(Path(r.frames), ffps or getattr(r, "fps_source", None) or 1.0) for r in records]

    def build_split(self, name: str, records: list, store, ids: dict[str, str]) -> SplitData:
        raise NotImplementedError

    @property
    def out_dim(self) -> int:
        return len(self.class_names)

    def fit(self, train: SplitData) -> None:
        """Statistics of the training targets the loss needs."""

    # -- training -------------------------------------------------------------------------------
    def target(self, split: SplitData, i: int) -> torch.Tensor:
        return torch.as_tensor(split.targets[i])

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- evaluation -----------------------------------------------------------------------------
    def collect(self, out: torch.Tensor, split: SplitData, idx: np.ndarray) -> np.ndarray:
        """Per-probe outputs to keep, ``[P, B, ...]`` numpy (probabilities, or per-image metric values)."""
        raise NotImplementedError

    def score(self, split: SplitData, collected: np.ndarray) -> list[ScoreBlock]:
        raise NotImplementedError

    def paper_select_key(self) -> tuple[str, bool]:
        """(metric key the authors' release keeps the best head by, on test; higher is better):
        ``report.paper_selection_metric``, or the task's ``paper_selection_metric`` (macro-F1 where
        the release uses it), else the honest selection key."""
        key = self.cfg.report.paper_selection_metric
        if key == "auto":
            key = getattr(self, "paper_selection_metric", "") or self.select_key()[0]
        return key, key.split(":")[-1] not in {"mae", "rmse", "abs_rel", "sq_rel"}

    def select_key(self) -> tuple[str, bool]:
        """(metric key used to select a probe, higher is better)."""
        key = self.cfg.train.selection_metric
        if key == "auto":
            key = self.selection_metric
        lower = {"mae", "rmse", "abs_rel", "sq_rel"}
        return key, key.split(":")[-1] not in lower

    def state_json(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.state.items()}


# ---------------------------------------------------------------------------------------------
# per-second tasks (phase, multi-label)
# ---------------------------------------------------------------------------------------------


def _store_frames(store, ids: dict[str, str], media: Path) -> tuple[str, int]:
    vid = ids[str(Path(media).resolve())]
    return vid, store.record(vid).n_frames


class _PerSecond(Task):
    per_second = True

    def _labelled(self, rec) -> np.ndarray:
        raise NotImplementedError

    def build_split(self, name, records, store, ids):
        c = self.cfg.clip
        refs, targets, groups, info = [], [], [], []
        for g, rec in enumerate(records):
            vid, n = _store_frames(store, ids, rec.frames)
            media = str(Path(rec.frames).resolve())
            seconds = self._labelled(rec)
            if c.start == "skip":  # no clip reaching before the first frame: those seconds are not scored
                seconds = np.array([t for t in seconds if clip_window(int(t), c.frames, c.fps, c.anchor)[0] >= 0],
                                   dtype=np.int64)
            for t in seconds:
                refs.append(SampleRef(f"{rec.video_id}@{t}", g, media,
                                      per_second_indices(int(t), n, c.frames, c.fps, c.anchor, c.start, c.positions)))
            targets.append(rec.labels[seconds])
            groups.append(rec.video_id)
            info.append({"seconds": seconds, "n_seconds": rec.n_seconds, "stored_frames": n,
                         "past_end": int(np.sum(seconds * c.fps >= n))})
        tg = np.concatenate(targets) if targets else np.zeros((0,), np.int64)
        return SplitData(name, refs, tg, groups, info)


class PhaseTask(_PerSecond):
    """Phase / step recognition: one prediction per labelled second."""

    name = "phase"
    # macro averages under both label sets (unisurg.evaluation.metrics.phase): "gt" = ground-truth phases (ours),
    # "gt_or_pred" = scikit-learn's default label set (SurgMotion's); the column labels name the convention
    columns = (MetricColumn("accuracy", "Acc", True, True), MetricColumn("f1", "F1 (gt)", True, True),
               MetricColumn("jaccard", "Jaccard (gt)", True, True),
               MetricColumn("f1_gt_or_pred", "F1 (gt_or_pred)", True, True),
               MetricColumn("jaccard_gt_or_pred", "Jaccard (gt_or_pred)", True, True))
    selection_metric = "accuracy"
    paper_selection_metric = "f1_gt_or_pred"  # SurgMotion keeps the head with the best Macro_F1 on test
    metric_names = ("accuracy", "precision", "recall", "f1", "jaccard", "edit")
    sklearn_metric_names = ("precision_gt_or_pred", "recall_gt_or_pred", "f1_gt_or_pred", "jaccard_gt_or_pred")

    def _labelled(self, rec):
        return np.flatnonzero(rec.labels >= 0)

    def fit(self, train):
        K = self.out_dim
        w = losses.class_balanced_weights(train.targets, K) if self.cfg.train.class_weighting else np.ones(K)
        self.state["class_weights"] = w

    def loss(self, out, target):
        if target.dim() == 2:  # soft targets (label smoothing / mixup): -sum t log softmax, mean over the batch
            return losses.multi_soft_cross_entropy(out, target.to(out.device))
        w = self.state.get("class_weights")
        wt = None
        if w is not None:  # on the device once, not copied at every step
            cached = getattr(self, "_weights_on", None)
            if cached is None or cached[0] is not w or cached[1].device != out.device:
                self._weights_on = (w, torch.as_tensor(w, dtype=torch.float32, device=out.device))
            wt = self._weights_on[1]
        return losses.multi_cross_entropy(out, target.to(out.device).long(), wt)

    def collect(self, out, split, idx):
        return torch.softmax(out.float(), dim=-1).cpu().numpy()

    def video_predictions(self, split: SplitData, probs: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per video ``(y_true, y_pred)`` over its labelled seconds."""
        gidx = split.group_index()
        pred = probs.argmax(-1)
        return [(split.targets[gidx == g], pred[gidx == g]) for g in range(len(split.groups))]

    def score(self, split, collected):
        videos = self.video_predictions(split, collected)
        keep = [i for i, (yt, _) in enumerate(videos) if yt.size]
        rel = self.cfg.report.relaxed
        res = phase_metrics([videos[i] for i in keep], self.out_dim)
        sk = phase_metrics([videos[i] for i in keep], self.out_dim, labels="gt_or_pred")
        for r, r2 in zip(res["per_video"], sk["per_video"]):
            r.update({f"{m}_gt_or_pred": r2[m] for m in PER_PHASE_NAMES})
        names = list(self.metric_names) + list(self.sklearn_metric_names)
        means = dict(res["mean"]) | {f"{m}_gt_or_pred": sk["mean"][m] for m in PER_PHASE_NAMES}
        matrix = np.array([[r[m] for m in names] for r in res["per_video"]], dtype=np.float64)
        rows = [{"video": split.groups[i], **{m: r[m] for m in names}, "n_seconds": r["n_frames"]}
                for i, r in zip(keep, res["per_video"])]
        blocks = [ScoreBlock("", means, names, matrix=matrix, rows=rows)]
        if rel != "none":
            rr = phase_metrics([videos[i] for i in keep], self.out_dim, relaxed=rel)
            rm = np.array([[r[m] for m in ("accuracy", "f1", "jaccard")] for r in rr["per_video"]])
            blocks.append(ScoreBlock("relaxed", {m: rr["mean"][m] for m in ("accuracy", "f1", "jaccard")},
                                     ["accuracy", "f1", "jaccard"], matrix=rm))
        return blocks


def triplet_mapping(class_names, component_names: dict) -> np.ndarray | None:
    """``[C, 6]`` ids (IVT, I, V, T, IV, IT) from triplet names ``"i,v,t"`` and the component names;
    None when the names are not triplets (then plain multi-label mAP is reported)."""
    need = ("i", "v", "t", "iv", "it")
    if not component_names or any(k not in component_names for k in need):
        return None
    idx = {k: {n: j for j, n in enumerate(component_names[k])} for k in need}
    rows = []
    for k, name in enumerate(class_names):
        parts = name.split(",")
        if len(parts) != 3:
            return None
        i, v, t = parts
        try:
            rows.append([k, idx["i"][i], idx["v"][v], idx["t"][t], idx["iv"][f"{i},{v}"], idx["it"][f"{i},{t}"]])
        except KeyError:
            return None
    return np.array(rows, dtype=np.int64)


class TripletTask(_PerSecond):
    """Multi-label recognition per second (CholecT50 triplets; components by max over triplets)."""

    name = "triplet"
    columns = tuple(MetricColumn(f"ap_{c}", f"AP-{c.upper()}", True, True) for c in ("i", "v", "t", "iv", "it", "ivt"))
    selection_metric = "ap_ivt"

    def __init__(self, class_names, cfg, component_names: dict | None = None):
        super().__init__(class_names, cfg)
        self.mapping = triplet_mapping(self.class_names, component_names or {})
        if self.mapping is None:
            self.columns = (MetricColumn("map", "mAP", True, True),)
            self.selection_metric = "map"

    def _labelled(self, rec):
        mask = rec.extra.get("labelled")  # frames a lenient load found without annotation are left out
        return np.arange(rec.n_seconds) if mask is None else np.flatnonzero(mask)

    def fit(self, train):
        pass

    def loss(self, out, target):
        return losses.multi_bce(out, target.to(out.device))

    def collect(self, out, split, idx):
        return torch.sigmoid(out.float()).cpu().numpy()

    def score(self, split, collected):
        gidx = split.group_index()
        videos = [(split.targets[gidx == g], collected[gidx == g]) for g in range(len(split.groups))]
        videos = [v for v in videos if v[0].shape[0]]
        if self.mapping is not None:
            comps = ("i", "v", "t", "iv", "it", "ivt")
            res = triplet_metrics(videos, mode="video", mapping=self.mapping)
            pv = {c: res[c]["per_video_AP"] for c in comps}
            names = [f"ap_{c}" for c in comps]
            metrics = {f"ap_{c}": res[c]["mAP"] for c in comps}
        else:
            pv = {"map": np.stack([np.atleast_1d(average_precision(t, s)) for t, s in videos])}
            names, metrics = ["map"], {}
            metrics["map"] = _videowise_map(pv["map"], np.arange(len(videos)))

        def statistic(items):
            ix = np.asarray(items)
            return np.array([_videowise_map(pv["map" if n == "map" else n.removeprefix("ap_")], ix) for n in names])

        kept = [split.groups[g] for g in range(len(split.groups)) if (gidx == g).any()]
        rows = []
        for i, vid in enumerate(kept):
            row = {"video": vid}
            for n in names:
                a = pv["map" if n == "map" else n.removeprefix("ap_")][i]
                row[n] = float(np.nanmean(a)) if np.isfinite(a).any() else None
            rows.append(row)
        return [ScoreBlock("", metrics, names, units=list(range(len(videos))), statistic=statistic, rows=rows)]


def _videowise_map(per_video_ap: np.ndarray, videos: np.ndarray) -> float:
    """ivtmetrics video-wise mAP of a (re)sample of videos: per class mean over the videos where it is
    defined, then mean over the classes defined anywhere."""
    with np.errstate(all="ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            per_class = np.nanmean(per_video_ap[videos], axis=0)
            return float(np.nanmean(per_class))


# ---------------------------------------------------------------------------------------------
# clip-level tasks (action classification, skill regression)
# ---------------------------------------------------------------------------------------------


def _clip_range(n_frames: int, fps: float, start_s: float | None, end_s: float | None, where: str) -> tuple[int, int]:
    lo = 0 if start_s is None else int(np.floor(start_s * fps + 1e-9))
    hi = n_frames if end_s is None else int(np.ceil(end_s * fps - 1e-9))
    lo, hi = min(max(lo, 0), n_frames - 1), min(max(hi, lo + 1), n_frames)
    if hi <= lo:
        raise ValueError(f"{where}: clip {start_s}..{end_s} s has no stored frame")
    return lo, hi


class ClipTask(Task):
    """Clip classification (SurgicalActions160, AVOS, PolypDiag): one clip, one label."""

    name = "clip"
    columns = (MetricColumn("accuracy", "Acc", True, True), MetricColumn("macro_f1", "F1-score", True, True))
    selection_metric = "accuracy"
    paper_selection_metric = "macro_f1"  # SurgMotion's action probing keeps the head with the best Macro_F1

    def media(self, records):
        return [(Path(r.path), None) for r in records]

    def build_split(self, name, records, store, ids):
        c = self.cfg.clip
        refs, targets, groups = [], [], []
        for g, rec in enumerate(records):
            vid, n = _store_frames(store, ids, rec.path)
            lo, hi = _clip_range(n, c.clip_fps, rec.start_s, rec.end_s, str(rec.path))
            test = name == "test"
            if c.sampling == "stride":
                windows = strided_indices(lo, hi, c.frames, c.sampling_rate, c.test_temporal_views if test else 1)
            else:
                windows = [spread_indices(lo, hi, c.frames)]
            crops = np.linspace(0.0, 1.0, c.test_spatial_views).tolist() if test and c.test_spatial_views > 1 else [0.5]
            for i, idx in enumerate(windows):
                for j, pos in enumerate(crops):
                    key = rec.clip_id if len(windows) * len(crops) == 1 else f"{rec.clip_id}#t{i}s{j}"
                    refs.append(SampleRef(key, g, str(Path(rec.path).resolve()), idx, crop=float(pos)))
                    targets.append(rec.label)
            groups.append(rec.clip_id)
        return SplitData(name, refs, np.asarray(targets, dtype=np.int64), groups, [{} for _ in groups])

    fit = PhaseTask.fit
    loss = PhaseTask.loss
    collect = PhaseTask.collect

    def score(self, split, collected):
        targets = split.targets
        if len(split.refs) != len(split.groups):  # test views: softmax averaged over each clip's views
            gidx = split.group_index()
            probs = np.zeros((len(split.groups), collected.shape[-1]), np.float64)
            np.add.at(probs, gidx, collected)
            collected = probs / np.bincount(gidx, minlength=len(split.groups))[:, None]
            first = np.unique(gidx, return_index=True)[1]
            targets = split.targets[first]
        pred = collected.argmax(-1)
        units = list(zip(targets.tolist(), pred.tolist()))

        def statistic(items):
            yt, yp = np.array([a for a, _ in items]), np.array([b for _, b in items])
            m = classification_metrics(yt, yp)
            return np.array([m["accuracy"], m["macro_f1"]])

        acc, f1 = statistic(units)
        rows = [{"clip": split.groups[i], "label": int(y), "pred": int(p)} for i, (y, p) in enumerate(units)]
        return [ScoreBlock("", {"accuracy": float(acc), "macro_f1": float(f1)}, ["accuracy", "macro_f1"],
                           units=units, statistic=statistic, rows=rows)]


class SkillTask(Task):
    """Skill assessment (JIGSAWS GRS): regression from T frames spread over the trial video.

    Targets are standardised with the training mean/std (so one lr grid fits every target scale);
    predictions are mapped back to GRS points before scoring.
    """

    name = "skill"
    columns = (MetricColumn("mae", "MAE", False, False), MetricColumn("spearman", "Spearman", False, True))
    selection_metric = "mae"

    @property
    def out_dim(self):
        return 1

    def media(self, records):
        missing = [r.trial_id for r in records if r.video is None]
        if missing:
            raise FileNotFoundError(f"skill trials without a video (capture1): {', '.join(missing[:5])}; "
                                    "put <Task>/video/<trial>_capture1.avi in the dataset root")
        return [(Path(r.video), None) for r in records]

    def build_split(self, name, records, store, ids):
        refs, targets, groups = [], [], []
        for g, rec in enumerate(records):
            vid, n = _store_frames(store, ids, rec.video)
            refs.append(SampleRef(rec.trial_id, g, str(Path(rec.video).resolve()), spread_indices(0, n, self.cfg.clip.frames)))
            targets.append(rec.grs)
            groups.append(rec.trial_id)
        return SplitData(name, refs, np.asarray(targets, dtype=np.float64), groups, [{} for _ in groups])

    def fit(self, train):
        y = np.asarray(train.targets, dtype=np.float64)
        self.state["target_mean"] = float(y.mean())
        self.state["target_std"] = float(y.std()) if y.std() > 0 else 1.0

    def target(self, split, i):
        return torch.tensor((split.targets[i] - self.state["target_mean"]) / self.state["target_std"], dtype=torch.float32)

    def loss(self, out, target):
        return losses.multi_regression(out, target.to(out.device), self.cfg.train.regression_loss)

    def collect(self, out, split, idx):
        return (out.float()[..., 0] * self.state["target_std"] + self.state["target_mean"]).cpu().numpy()

    def score(self, split, collected):
        units = list(zip(np.asarray(split.targets, dtype=np.float64).tolist(), collected.tolist()))

        def statistic(items):
            yt, yp = np.array([a for a, _ in items]), np.array([b for _, b in items])
            return np.array([mae(yt, yp), spearman(yt, yp) if yt.size > 1 else np.nan])

        m, s = statistic(units)
        rows = [{"trial": split.groups[i], "grs": y, "pred": p} for i, (y, p) in enumerate(units)]
        return [ScoreBlock("", {"mae": float(m), "spearman": float(s)}, ["mae", "spearman"], units=units,
                           statistic=statistic, rows=rows)]


# ---------------------------------------------------------------------------------------------
# dense tasks (segmentation, depth) on still images
# ---------------------------------------------------------------------------------------------


class _Dense(Task):
    probe_kind = "dense"

    def store_fps(self):
        return None

    def media(self, records):
        return []

    def _target_path(self, rec) -> Path:
        raise NotImplementedError

    def _read_target(self, path: Path) -> np.ndarray:
        raise NotImplementedError

    def build_split(self, name, records, store, ids):
        refs, targets, groups, info = [], [], [], []
        for g, rec in enumerate(records):
            refs.append(SampleRef(rec.sample_id, g, str(Path(rec.image).resolve()), None))
            targets.append(self._target_path(rec))
            groups.append(rec.sample_id)
            info.append({"subset": getattr(rec, "source_dataset", "") or ""})
        return SplitData(name, refs, targets, groups, info)

    def _resized_target(self, split: SplitData, i: int) -> np.ndarray:
        t = self._read_target(split.targets[i]).astype(np.float32)
        return resize_image(t[..., None], self.cfg.clip.res, mode="nearest")[..., 0]

    def target(self, split, i):
        return torch.from_numpy(self._resized_target(split, i))

    def score(self, split, collected):
        subsets = sorted({inf["subset"] for inf in split.group_info}) if split.group_info else [""]
        names = [c.key for c in self.columns] + list(getattr(self, "extra_metrics", ()))
        blocks = []
        for sub in subsets:
            sel = [i for i, inf in enumerate(split.group_info) if inf["subset"] == sub]
            mat = collected[sel].astype(np.float64)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                metrics = {n: float(np.nanmean(mat[:, j])) for j, n in enumerate(names)}
            rows = [{"image": split.groups[i], **{n: float(mat[k, j]) for j, n in enumerate(names)}} for k, i in enumerate(sel)]
            blocks.append(ScoreBlock(sub if len(subsets) > 1 else "", metrics, names, matrix=mat, rows=rows))
        if len(subsets) > 1:  # pooled over all images too: what selection on a mixed val split uses
            mat = collected.astype(np.float64)
            with np.errstate(all="ignore"):
                blocks.append(ScoreBlock("", {n: float(np.nanmean(mat[:, j])) for j, n in enumerate(names)}, names,
                                         matrix=mat))
        return blocks


class SegmentationTask(_Dense):
    """Binary (polyp) segmentation: decoder logits -> sigmoid probability; Dice and MAE per image."""

    name = "segmentation"
    columns = (MetricColumn("dice", "Dice", False, True), MetricColumn("mae", "MAE", False, False))
    selection_metric = "dice"

    @property
    def out_dim(self):
        return 1

    def _target_path(self, rec):
        return Path(rec.mask)

    def _read_target(self, path):
        return read_mask(path).astype(np.uint8)

    def loss(self, out, target):
        if out.shape[-2:] != target.shape[-2:]:
            out = F.interpolate(out.flatten(0, 1), size=target.shape[-2:], mode="bilinear").unflatten(0, out.shape[:2])
        return losses.multi_segmentation(out, target.to(out.device))

    def collect(self, out, split, idx):
        prob = torch.sigmoid(out.float())
        P, B = prob.shape[:2]
        res = np.zeros((P, B, 2), np.float32)
        for b, i in enumerate(idx):
            gt = self._read_target(split.targets[i])
            maps = F.interpolate(prob[:, b], size=gt.shape, mode="bilinear", align_corners=False)[:, 0].cpu().numpy()
            for p in range(P):
                m = segmentation_metrics(maps[p], gt)
                res[p, b] = (m["dice"], m["mae"])
        return res

    def predict_map(self, out: torch.Tensor, shape) -> np.ndarray:
        """Probability map ``[H, W]`` of one sample's logits ``[1, h, w]`` at ``shape``."""
        return torch.sigmoid(F.interpolate(out[None].float(), size=shape, mode="bilinear", align_corners=False))[0, 0].cpu().numpy()


class DepthTask(_Dense):
    """Monocular depth (C3VD, millimetres): ``max_depth * sigmoid(logit)``; masked L1 on valid pixels."""

    name = "depth"
    columns = (MetricColumn("rmse", "RMSE", False, False), MetricColumn("abs_rel", "AbsRel", False, False),
               MetricColumn("sq_rel", "SqRel", False, False), MetricColumn("delta", "δ<1.1", False, True))
    selection_metric = "rmse"

    @property
    def out_dim(self):
        return 1

    def _target_path(self, rec):
        return Path(rec.depth)

    def _read_target(self, path):
        return read_depth_mm(path)

    def loss(self, out, target):
        if out.shape[-2:] != target.shape[-2:]:
            out = F.interpolate(out.flatten(0, 1), size=target.shape[-2:], mode="bilinear").unflatten(0, out.shape[:2])
        return losses.multi_depth_l1(out, target.to(out.device), self.cfg.train.depth_max_mm)

    def collect(self, out, split, idx):
        depth = losses.depth_from_logits(out, self.cfg.train.depth_max_mm)
        P, B = depth.shape[:2]
        res = np.full((P, B, 4), np.nan, np.float32)
        for b, i in enumerate(idx):
            gt = self._read_target(split.targets[i])
            maps = F.interpolate(depth[:, b], size=gt.shape, mode="bilinear", align_corners=False)[:, 0].cpu().numpy()
            for p in range(P):
                m = depth_metrics(maps[p], gt)
                res[p, b] = (m["rmse"], m["abs_rel"], m["sq_rel"], m["delta"])
        return res

    def predict_map(self, out: torch.Tensor, shape) -> np.ndarray:
        d = losses.depth_from_logits(out[None], self.cfg.train.depth_max_mm)
        return F.interpolate(d, size=shape, mode="bilinear", align_corners=False)[0, 0].cpu().numpy()


TASKS = {"phase": PhaseTask, "triplet": TripletTask, "clip": ClipTask, "skill": SkillTask,
         "segmentation": SegmentationTask, "depth": DepthTask}


def make_task(adapter_task: str, class_names, cfg, records: list | None = None) -> Task:
    """The task of an adapter (``adapter.task``); ``records`` supply component names of triplet data."""
    if adapter_task not in TASKS:
        raise ValueError(f"no benchmark task for adapter task {adapter_task!r}; known: {', '.join(TASKS)}")
    if adapter_task == "triplet":
        comp = getattr(records[0], "component_names", {}) if records else {}
        return TripletTask(class_names, cfg, comp)
    return TASKS[adapter_task](class_names, cfg)
