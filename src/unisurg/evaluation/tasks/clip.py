"""Clip classification (SurgicalActions160, AVOS, PolypDiag, SurgRec folders): Acc and macro-F1 per clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unisurg.data.pixels import (
    spread_indices,
    strided_indices,
)
from unisurg.datasets.samples import SampleRef, SplitData
from unisurg.evaluation.metrics import (
    classification_metrics,
)
from unisurg.evaluation.tasks.base import (
    MetricColumn,
    ScoreBlock,
    Task,
    stored_media,
)
from unisurg.evaluation.tasks.phase import PhaseTask


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
            vid, n = stored_media(store, ids, rec.path)
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
