"""Depth estimation (C3VD): a dense decoder, masked L1; RMSE, AbsRel, SqRel and delta < 1.1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unisurg.datasets import read_depth_mm
from unisurg.evaluation import task_losses as losses
from unisurg.evaluation.metrics import (
    depth_metrics,
)
from unisurg.evaluation.tasks.base import (
    DenseMapTask,
    MetricColumn,
)


class DepthTask(DenseMapTask):
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
