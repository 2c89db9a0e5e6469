"""Triplet recognition (CholecT50/45): multi-label per second, BCE; ivtmetrics' video-wise AP of I, V, T, IV, IT, IVT."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from unisurg.evaluation import task_losses as losses
from unisurg.evaluation.metrics import (
    average_precision,
    triplet_metrics,
)
from unisurg.evaluation.tasks.base import (
    MetricColumn,
    PerSecondTask,
    ScoreBlock,
)


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


class TripletTask(PerSecondTask):
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
