"""Skill assessment (JIGSAWS GRS): regression of one score per trial; MAE and Spearman over LOSO/LOUO folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from unisurg.data.pixels import (
    spread_indices,
)
from unisurg.datasets.samples import SampleRef, SplitData
from unisurg.evaluation import task_losses as losses
from unisurg.evaluation.metrics import (
    mae,
    spearman,
)
from unisurg.evaluation.tasks.base import (
    MetricColumn,
    ScoreBlock,
    Task,
    stored_media,
)


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
            vid, n = stored_media(store, ids, rec.video)
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
