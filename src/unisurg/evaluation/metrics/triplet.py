"""CholecT50 action-triplet recognition AP (I, V, T, IV, IT, IVT), as the ivtmetrics package.

Semantics of ``ivtmetrics.Recognition`` (CAMMA, Nwoye et al.), re-derived, with one fix:

* **Components** (``Disentangle.extract``): a component class (instrument, verb, target,
  instrument-verb, instrument-target) takes the **max** over the triplets mapping to it, for the
  scores and the 0/1 labels alike. Component classes are the sorted distinct ids of the mapping
  column (6 I, 10 V, 15 T, 26 IV, 59 IT with the CholecT50 map); ``classes`` gives their ids.
* **Video-wise** (``compute_video_AP``, the CholecT50 benchmark): AP of every class in every
  video -> ``AP[v, c]``; per class, the mean over the videos where it is defined; ``mAP`` = mean
  over the classes defined in at least one video. (So it is *not* the mean of per-video mAPs;
  that value is returned as ``per_video_mAP`` for bootstrapping and is labelled as such.)
* **Global** (``compute_global_AP``): all frames concatenated, AP per class, mean over classes.
* ``ignore_null``: drops the null triplets (null verb and null target: ids 94-99, the last six
  rows, ivtmetrics' ``[:-6]``) from the IVT result only; other components are unaffected, as in
  ivtmetrics (CholecTriplet2021 challenge setting).
* **Exclusion (the fix)**: a class is excluded from a video (NaN) when that video has **no
  positive label** for it, decided from the labels. ivtmetrics decides from the AP value instead
  (NaN, or the ``-0.0`` that scikit-learn 1.1-1.5 returns), which breaks on scikit-learn >= 1.6
  where such a class gets AP ``0.0`` and drags the mean down (ivtmetrics issues #3, #11).

AP values are fractions in [0, 1] (papers print them x100).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from unisurg.evaluation.metrics.average_precision import average_precision
from unisurg.evaluation.metrics.inputs import (
    as_binary,
    as_scores,
    check_nonempty,
    check_same_shape,
)
from unisurg.evaluation.metrics.nanstats import nanmean

IVT_COMPONENTS = ("i", "v", "t", "iv", "it", "ivt")
_COLUMN = {"ivt": 0, "i": 1, "v": 2, "t": 3, "iv": 4, "it": 5}
NULL_VERB_ID = 9  # "null_verb" in CholecT50
NULL_TARGET_ID = 14  # "null_target" in CholecT50
_PACKAGED_MAP = "cholect50_maps.txt"


def load_ivt_mapping(path: str | Path | None = None) -> np.ndarray:
    """The ``[100, 6]`` int mapping (columns IVT, I, V, T, IV, IT); packaged copy when ``path`` is None.

    Format (ivtmetrics ``maps.txt``): ``#`` comment lines, then ``ivt,i,v,t,iv,it`` rows.
    """
    if path is None:
        return _packaged_mapping().copy()
    return _parse_mapping(Path(path).read_text(), str(path))


@lru_cache(maxsize=1)
def _packaged_mapping() -> np.ndarray:
    text = resources.files("unisurg.evaluation.metrics").joinpath(_PACKAGED_MAP).read_text()
    return _parse_mapping(text, _PACKAGED_MAP)


def _parse_mapping(text: str, source: str) -> np.ndarray:
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(",")
        if len(parts) != 6:
            raise ValueError(f"{source}:{lineno}: expected 6 comma-separated ids (IVT, I, V, T, IV, IT), "
                             f"got {len(parts)}: {line!r}.")
        try:
            rows.append([int(p) for p in parts])
        except ValueError:
            raise ValueError(f"{source}:{lineno}: non-integer id in {line!r}.") from None
    m = np.array(rows, dtype=np.int64).reshape(-1, 6)
    if m.shape[0] == 0 or not np.array_equal(m[:, 0], np.arange(m.shape[0])):
        raise ValueError(f"{source}: the IVT column must list 0..N-1 in order (one row per triplet).")
    return m


def component_classes(component: str, mapping: np.ndarray | None = None) -> np.ndarray:
    """Sorted distinct class ids of ``component`` in the mapping (the columns of :func:`component_scores`)."""
    m = load_ivt_mapping() if mapping is None else mapping
    return np.unique(m[:, _component_column(component)])


def _component_column(component: str) -> int:
    if component not in _COLUMN:
        raise ValueError(f"component={component!r}: use one of {IVT_COMPONENTS}.")
    return _COLUMN[component]


def component_scores(x, component: str, mapping: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Triplet matrix ``[n, 100]`` -> component matrix ``[n, n_component]`` by max over mapped triplets.

    Works for scores and for 0/1 labels (max = logical OR). Returns ``(values, class_ids)``.
    """
    m = load_ivt_mapping() if mapping is None else mapping
    col = m[:, _component_column(component)]
    a = np.asarray(x)
    if a.ndim != 2 or a.shape[1] != m.shape[0]:
        raise ValueError(f"component_scores: expected [n, {m.shape[0]}] triplet values, got shape {a.shape}.")
    order = np.argsort(col, kind="stable")
    sorted_col = col[order]
    starts = np.flatnonzero(np.r_[True, sorted_col[1:] != sorted_col[:-1]])
    if a.shape[0] == 0:
        return np.zeros((0, starts.size), a.dtype), sorted_col[starts]
    return np.maximum.reduceat(a[:, order], starts, axis=1), sorted_col[starts]


def null_triplets(mapping: np.ndarray | None = None) -> np.ndarray:
    """Ids of the null triplets (null verb and null target): 94-99 with the CholecT50 map."""
    m = load_ivt_mapping() if mapping is None else mapping
    return np.flatnonzero((m[:, 2] == NULL_VERB_ID) & (m[:, 3] == NULL_TARGET_ID))


def triplet_ap(videos: Sequence[tuple], component: str = "ivt", mode: str = "video", ignore_null: bool = False,
               mapping: np.ndarray | None = None) -> dict:
    """AP of one component over a list of ``(targets [n_v, 100] in {0,1}, scores [n_v, 100])`` videos.

    ``mode``: ``"video"`` (ivtmetrics ``compute_video_AP``, the benchmark number) or ``"global"``.
    Returns ``{"AP": [C] (NaN = no positive anywhere it was measured), "mAP", "classes": [C] ids,
    "component", "mode"}``, plus for ``mode="video"`` ``"per_video_AP": [V, C]`` (NaN = class has no
    positive in that video) and ``"per_video_mAP": [V]`` (mean over a video's defined classes;
    NaN for a video with none).
    """
    check_nonempty(videos, "videos")
    if mode not in ("video", "global"):
        raise ValueError(f"mode={mode!r}: use 'video' (ivtmetrics compute_video_AP) or 'global'.")
    m = load_ivt_mapping() if mapping is None else mapping
    comp_targets, comp_scores = [], []
    classes = component_classes(component, m)
    for i, pair in enumerate(videos):
        if len(pair) != 2:
            raise ValueError(f"videos[{i}]: expected a (targets, scores) pair, got {len(pair)} items.")
        t = as_binary(pair[0], f"videos[{i}].targets", 2)
        s = as_scores(pair[1], f"videos[{i}].scores", 2)
        check_same_shape(t, s, "targets", "scores", f"video {i}")
        if t.shape[1] != m.shape[0]:
            raise ValueError(f"videos[{i}]: expected {m.shape[0]} triplet columns, got {t.shape[1]}.")
        comp_targets.append(component_scores(t, component, m)[0])
        comp_scores.append(component_scores(s, component, m)[0])
    keep = np.ones(classes.size, dtype=bool)
    if ignore_null and component == "ivt":
        keep[null_triplets(m)] = False
    out: dict = {"component": component, "mode": mode, "classes": classes[keep]}
    if mode == "global":
        ap = average_precision(np.concatenate(comp_targets), np.concatenate(comp_scores))[keep]
    else:
        per_video = np.stack([average_precision(t, s) for t, s in zip(comp_targets, comp_scores)])[:, keep]
        ap = nanmean(per_video, axis=0)
        out["per_video_AP"] = per_video
        out["per_video_mAP"] = nanmean(per_video, axis=1)
    out["AP"] = ap
    out["mAP"] = float(nanmean(ap))
    return out


def triplet_metrics(videos: Sequence[tuple], mode: str = "video", ignore_null: bool = False,
                    components: Sequence[str] = IVT_COMPONENTS, mapping: np.ndarray | None = None) -> dict:
    """``{component: triplet_ap(...)}`` for each of ``components`` plus ``"mAP": {component: float}``."""
    out = {c: triplet_ap(videos, c, mode, ignore_null, mapping) for c in components}
    out["mAP"] = {c: out[c]["mAP"] for c in components}
    return out

