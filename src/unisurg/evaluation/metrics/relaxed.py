"""Relaxed-boundary phase metrics of the Cholec80 / M2CAI-2016 workflow challenges.

A port of the MATLAB evaluation distributed with the M2CAI-2016 challenge and reused by
SV-RCNet, TMRNet, TeCNO, Trans-SVNet (``Evaluate.m`` / ``Evaluate_m2cai.m`` + ``Main.m``),
re-derived from its behaviour; interpretation chosen where the script is ambiguous is stated.

Per video, ``diff = pred - gt`` (phase ids in the canonical order below). For each ground-truth
segment (maximal run) of phase ``c`` with ``t = min(window, len(segment))``:

* *late transition*: in the first ``t`` frames of the segment, a ``diff`` in ``late(c)`` is
  forgiven (the model still predicts the previous phase);
* *early transition*: in the last ``t`` frames, a ``diff`` in ``early(c)`` is forgiven (the model
  already predicts the next phase).

Rules (0-based ids; ``late / early``):

* Cholec80 (7 phases): default ``{-1} / {+1}``; GallbladderDissection (3) and
  GallbladderPackaging (4) ``{-1} / {+1, +2}``; CleaningCoagulation (5) and
  GallbladderRetraction (6) ``{-1, -2} / {+1, +2}`` (the last phases may swap order).
* M2CAI-2016 (8 phases, TrocarPlacement first): the same rules shifted by one (4, 5 and 6, 7).

**MATLAB indexing quirk** (``early_window="matlab"``, the default, reproduces published numbers):
the script writes ``curDiff(curDiff(end-t+1:end)==1) = 0``; a logical mask shorter than the
array indexes from its *start*, so frame ``k`` of the first ``t`` frames is zeroed when frame
``len-t+k`` is an early-transition error, and the late frame itself stays an error.
``early_window="end"`` forgives the late frames themselves (what the comment intends).

Per phase ``c`` present in the video's ground truth (NaN otherwise), with ``ok`` = frames whose
updated diff is 0 and ``U`` = frames where ``pred == c`` or ``gt == c``:
``jaccard = |ok & U| / |U|``, ``precision = |ok & U| / #(pred == c)``,
``recall = |ok & U| / #(gt == c)``; values above 1 are clipped to 1 (``Main.m`` clips at 100:
forgiven frames of other phases inside ``U`` can push them over), ``0/0`` stays NaN (a phase
never predicted and with no forgiven frame has no precision and is skipped by ``nanmean``).
``accuracy = mean(ok)``. F1 (not in the script) = ``2PR/(P+R)`` from the clipped P and R, 0 for a
phase never predicted (its precision stays NaN, as in the script, but its recall is 0).
Window: 10 s; at 1 fps ``window=10`` frames (``10 * fps`` in the script).
"""

from __future__ import annotations

import numpy as np

from unisurg.evaluation.metrics.inputs import as_labels

CHOLEC80_PHASES = ("Preparation", "CalotTriangleDissection", "ClippingCutting", "GallbladderDissection",
                   "GallbladderPackaging", "CleaningCoagulation", "GallbladderRetraction")
M2CAI16_PHASES = ("TrocarPlacement",) + CHOLEC80_PHASES

_DEFAULT_RULE = ((-1,), (1,))
# protocol -> (n_phases, {phase: (late-forgiven diffs, early-forgiven diffs)})
RELAXED_RULES: dict[str, tuple[int, dict[int, tuple[tuple[int, ...], tuple[int, ...]]]]] = {
    "cholec80": (7, {3: ((-1,), (1, 2)), 4: ((-1,), (1, 2)), 5: ((-1, -2), (1, 2)), 6: ((-1, -2), (1, 2))}),
    "m2cai16": (8, {4: ((-1,), (1, 2)), 5: ((-1,), (1, 2)), 6: ((-1, -2), (1, 2)), 7: ((-1, -2), (1, 2))}),
}


def _protocol(name: str) -> tuple[int, dict]:
    if name not in RELAXED_RULES:
        raise ValueError(f"relaxed={name!r} is not a known protocol; use one of {sorted(RELAXED_RULES)} or None.")
    return RELAXED_RULES[name]


def _pair(y_true, y_pred, n_phases: int) -> tuple[np.ndarray, np.ndarray]:
    yt = as_labels(y_true, "y_true", n_phases)
    yp = as_labels(y_pred, "y_pred", n_phases)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true has {yt.size} frames but y_pred {yp.size}; one prediction per frame.")
    return yt, yp


def relaxed_correct(y_true, y_pred, protocol: str, window: int = 10,
                    early_window: str = "matlab") -> np.ndarray:
    """Boolean ``[n]``: frame counts as correct under the relaxed boundary (``updatedDiff == 0``)."""
    n_phases, rules = _protocol(protocol)
    y_true, y_pred = _pair(y_true, y_pred, n_phases)
    if early_window not in ("matlab", "end"):
        raise ValueError(f"early_window={early_window!r}: use 'matlab' (published numbers) or 'end'.")
    if window < 0:
        raise ValueError(f"window={window}: must be >= 0 frames (10 s x fps).")
    diff = y_pred - y_true
    updated = diff.copy()
    starts = np.flatnonzero(np.r_[True, y_true[1:] != y_true[:-1]]) if y_true.size else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], y_true.size]
    for s, e in zip(starts, ends):
        late, early = rules.get(int(y_true[s]), _DEFAULT_RULE)
        cur = diff[s:e].copy()
        t = min(window, e - s)
        if t == 0:
            continue
        head = cur[:t]  # view
        head[np.isin(head, late)] = 0
        early_mask = np.isin(cur[cur.size - t:], early)  # evaluated after the late rule, as the script
        if early_window == "matlab":
            head[early_mask] = 0
        else:
            cur[cur.size - t:][early_mask] = 0
        updated[s:e] = cur
    return updated == 0


def relaxed_phase_scores(y_true, y_pred, protocol: str, window: int = 10,
                         early_window: str = "matlab") -> dict[str, np.ndarray | float]:
    """Per-phase relaxed ``precision/recall/jaccard/f1`` (``[K]``, NaN where absent from GT) and ``accuracy``."""
    n_phases, _ = _protocol(protocol)
    y_true, y_pred = _pair(y_true, y_pred, n_phases)
    ok = relaxed_correct(y_true, y_pred, protocol, window, early_window)
    classes = np.arange(n_phases)[:, None]
    is_gt = y_true[None] == classes
    is_pred = y_pred[None] == classes
    union = is_gt | is_pred
    tp = (union & ok[None]).sum(axis=1).astype(np.float64)
    n_gt = is_gt.sum(axis=1).astype(np.float64)
    n_pred = is_pred.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        jaccard = tp / union.sum(axis=1)
        precision = np.minimum(tp / n_pred, 1.0)  # inf -> 1, nan stays nan (np.minimum propagates nan)
        recall = np.minimum(tp / n_gt, 1.0)
        jaccard = np.minimum(jaccard, 1.0)
        # P is NaN only when the phase is never predicted and no frame is forgiven, so R = 0: F1 = 0.
        p0 = np.nan_to_num(precision, nan=0.0)
        f1 = np.where(p0 + recall > 0, 2 * p0 * recall / (p0 + recall), 0.0)
    absent = n_gt == 0
    for a in (precision, recall, jaccard, f1):
        a[absent] = np.nan
    return {"precision": precision, "recall": recall, "jaccard": jaccard, "f1": f1,
            "accuracy": float(ok.mean()) if ok.size else float("nan")}
