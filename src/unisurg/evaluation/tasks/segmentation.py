"""Polyp segmentation: a dense decoder on patch tokens, BCE + Dice; Dice and MAE per test set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unisurg.datasets import read_mask
from unisurg.evaluation import task_losses as losses
from unisurg.evaluation.metrics import (
    segmentation_metrics,
)
from unisurg.evaluation.tasks.base import (
    DenseMapTask,
    MetricColumn,
)


class SegmentationTask(DenseMapTask):
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
