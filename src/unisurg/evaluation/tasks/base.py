"""What every benchmark task shares: score blocks, metric columns, the ``Task`` interface, per-second and
dense-map samples."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unisurg.data.pixels import (
    clip_window,
    per_second_indices,
    resize_image,
)
from unisurg.datasets.samples import SampleRef, SplitData

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


def stored_media(store, ids: dict[str, str], media: Path) -> tuple[str, int]:
    vid = ids[str(Path(media).resolve())]
    return vid, store.record(vid).n_frames


class PerSecondTask(Task):
    per_second = True

    def _labelled(self, rec) -> np.ndarray:
        raise NotImplementedError

    def build_split(self, name, records, store, ids):
        c = self.cfg.clip
        refs, targets, groups, info = [], [], [], []
        for g, rec in enumerate(records):
            vid, n = stored_media(store, ids, rec.frames)
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


class DenseMapTask(Task):
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
