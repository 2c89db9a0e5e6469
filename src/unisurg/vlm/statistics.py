"""Accuracy of a prompt's answers, and how much the answers depend on the prompt.

Per prompt (SurgRec's two numbers and more):

* ``accuracy``: correct / all samples (an unparsed answer is wrong), SurgRec's ``accuracy``;
* ``valid_accuracy``: correct / parsed samples, SurgRec's ``valid_accuracy``;
* ``parse_failure_rate``: unparsed / all;
* ``macro_f1``: mean F1 over the classes present in the ground truth, an unparsed answer (or a
  label id that is no class) counting as a miss for its true class (a false negative only).

Confidence intervals: percentile bootstrap over **groups** (the videos of a per-second phase
dataset, the clips of a clip dataset: samples of one video are not independent), ``n`` resamples
drawn with ``numpy.random.default_rng(seed)``.

Sensitivity across prompts (what SurgRec reports as the accuracy change between its two
templates, made testable):

* ``spread``: max - min and standard deviation of the prompts' accuracies;
* per pair of prompts: the accuracy difference with a **paired** bootstrap CI (the same
  resampled groups for both prompts), and the **exact McNemar test** (two-sided binomial test of
  the discordant pairs, b ~ Bin(b + c, 1/2));
  with Holm's step-down adjustment of the McNemar p-values over all pairs (many pairs are tested at once);
* ``flip rate``: the fraction of samples whose parsed answer (unparsed = its own answer) differs
  between two prompts; over all prompts, the fraction not given the same answer by every prompt;
  split into flips under rewording (same option order, other template) and under reordering
  (same template, other option order).
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

UNPARSED = -1  # prediction code of an unparsed answer


def _f1_per_class(y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    tp = np.array([np.sum((y_true == c) & (y_pred == c)) for c in labels], dtype=np.float64)
    n_true = np.array([np.sum(y_true == c) for c in labels], dtype=np.float64)
    n_pred = np.array([np.sum(y_pred == c) for c in labels], dtype=np.float64)
    den = n_true + n_pred
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class F1 = 2TP / (2TP + FP + FN) over the classes in ``y_true`` (module docstring)."""
    labels = np.unique(y_true)
    return float(_f1_per_class(y_true, y_pred, labels).mean())


def prompt_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The four numbers of one prompt; ``y_pred`` uses :data:`UNPARSED` for an unparsed answer."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.size == 0:
        raise ValueError("no sample to score")
    parsed = y_pred != UNPARSED
    correct = y_true == y_pred
    return {
        "accuracy": float(correct.mean()),
        "valid_accuracy": float(correct[parsed].mean()) if parsed.any() else 0.0,
        "parse_failure_rate": float(1.0 - parsed.mean()),
        "macro_f1": macro_f1(y_true, y_pred),
    }


def bootstrap_groups(groups: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """``n`` resamples of sample indices: groups drawn with replacement, each bringing all its samples."""
    groups = np.asarray(groups)
    uniq, inv = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    return [np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))]) for _ in range(n)]


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    return float(np.quantile(values, a)), float(np.quantile(values, 1 - a))


def metrics_with_ci(y_true, y_pred, resamples: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """``{metric: {"value", "ci_low", "ci_high"}}`` for :func:`prompt_metrics`."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    point = prompt_metrics(y_true, y_pred)
    boots = [prompt_metrics(y_true[ix], y_pred[ix]) for ix in resamples]
    out = {}
    for k, v in point.items():
        lo, hi = percentile_ci(np.array([b[k] for b in boots])) if boots else (float("nan"), float("nan"))
        out[k] = {"value": v, "ci_low": lo, "ci_high": hi}
    return out


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test: ``b`` = A right and B wrong, ``c`` = A wrong and B right;
    two-sided p = min(1, 2 P[Bin(b + c, 1/2) <= min(b, c)]) (1 when there is no discordant pair)."""
    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    n = b + c
    if n == 0:
        return {"b": b, "c": c, "p_value": 1.0}
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return {"b": b, "c": c, "p_value": float(min(1.0, 2.0 * tail))}


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979): the i-th smallest of m is multiplied by m - i
    (i from 0), made non-decreasing in that order, capped at 1; returned in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def paired_difference(y_true, pred_a, pred_b, resamples: list[np.ndarray]) -> dict[str, float]:
    """Accuracy of B minus accuracy of A, with the paired bootstrap CI (same resamples for both)."""
    y_true = np.asarray(y_true, np.int64)
    ca, cb = np.asarray(pred_a) == y_true, np.asarray(pred_b) == y_true
    diff = float(cb.mean() - ca.mean())
    boots = np.array([cb[ix].mean() - ca[ix].mean() for ix in resamples])
    lo, hi = percentile_ci(boots) if boots.size else (float("nan"), float("nan"))
    return {"delta_accuracy": diff, "ci_low": lo, "ci_high": hi}


def flip_rate(pred_a, pred_b) -> float:
    """Fraction of samples whose answer differs between two prompts (unparsed is an answer of its own)."""
    return float(np.mean(np.asarray(pred_a) != np.asarray(pred_b)))


def any_flip_rate(preds: np.ndarray) -> float:
    """``preds [P, n]``: fraction of samples not given the same answer by every prompt."""
    preds = np.asarray(preds)
    return float(np.mean(np.any(preds != preds[:1], axis=0)))


def sensitivity(y_true, preds: dict[str, np.ndarray], groups, *, n_boot: int, seed: int,
                templates: dict[str, tuple[str, str]]) -> dict:
    """Spread, pairwise tests and flip rates of several prompts' predictions on the same samples.

    ``templates``: prompt name -> (template, option order), to split flips into rewording and reordering.
    """
    names = list(preds)
    y_true = np.asarray(y_true, np.int64)
    resamples = bootstrap_groups(groups, n_boot, seed)
    accs = np.array([np.mean(preds[p] == y_true) for p in names])
    pairs = []
    for a, b in combinations(names, 2):
        kind = ("rewording" if templates[a][1] == templates[b][1] else
                "reordering" if templates[a][0] == templates[b][0] else "both")
        pairs.append({"a": a, "b": b, "kind": kind, **paired_difference(y_true, preds[a], preds[b], resamples),
                      "mcnemar": mcnemar_exact(preds[a] == y_true, preds[b] == y_true),
                      "flip_rate": flip_rate(preds[a], preds[b])})
    for pair, adj in zip(pairs, holm([p["mcnemar"]["p_value"] for p in pairs])):
        pair["mcnemar"]["p_holm"] = adj
    out = {
        "prompts": names,
        "spread": {"max_minus_min": float(accs.max() - accs.min()), "std": float(accs.std()),
                   "best": names[int(accs.argmax())], "worst": names[int(accs.argmin())]},
        "pairs": pairs,
        "flip_rate_all": any_flip_rate(np.stack([preds[p] for p in names])) if len(names) > 1 else 0.0,
    }
    for kind in ("rewording", "reordering"):
        rates = [p["flip_rate"] for p in pairs if p["kind"] == kind]
        out[f"flip_rate_{kind}"] = float(np.mean(rates)) if rates else None
    return out
