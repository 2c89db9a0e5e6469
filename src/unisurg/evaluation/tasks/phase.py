"""Phase (workflow) recognition: one clip per labelled second, weighted cross-entropy; Acc, F1, Jaccard per video."""

from __future__ import annotations

import numpy as np
import torch

from unisurg.datasets.samples import SplitData
from unisurg.evaluation import task_losses as losses
from unisurg.evaluation.metrics import (
    phase_metrics,
)
from unisurg.evaluation.tasks.base import (
    PER_PHASE_NAMES,
    MetricColumn,
    PerSecondTask,
    ScoreBlock,
)


class PhaseTask(PerSecondTask):
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
