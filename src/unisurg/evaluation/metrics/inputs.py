"""Validation of metric inputs: every error names the argument, the item and how to fix it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def as_labels(x, name: str, n_classes: int | None = None) -> np.ndarray:
    """A 1-D vector of non-negative integer class ids (``int64``), checked against ``n_classes``."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D vector of class ids, got shape {a.shape}; "
                         "pass one label per frame/sample.")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not (np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a))):
            raise ValueError(f"{name}: class ids must be integers, got dtype {a.dtype}; "
                             "map class names to ids (and argmax probabilities) first.")
    a = a.astype(np.int64)
    if a.size and a.min() < 0:
        bad = int(np.flatnonzero(a < 0)[0])
        raise ValueError(f"{name}: negative class id {a[bad]} at index {bad}; "
                         "drop unlabelled frames (e.g. -1) before scoring.")
    if n_classes is not None and a.size and a.max() >= n_classes:
        bad = int(np.flatnonzero(a >= n_classes)[0])
        raise ValueError(f"{name}: class id {a[bad]} at index {bad} is out of range for "
                         f"n_classes={n_classes}; check the label map or n_classes.")
    return a


def as_scores(x, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """A finite float64 array with the given number of dimensions."""
    a = np.asarray(x, dtype=np.float64)
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if a.ndim not in ndims:
        raise ValueError(f"{name}: expected {' or '.join(map(str, ndims))}-D scores, got shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))[0].tolist()
        raise ValueError(f"{name}: non-finite score at index {bad}; fix NaN/inf outputs before scoring.")
    return a


def as_binary(x, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """A 0/1 (or bool) array returned as ``bool``; any other value is an error."""
    a = np.asarray(x)
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if a.ndim not in ndims:
        raise ValueError(f"{name}: expected {' or '.join(map(str, ndims))}-D binary labels, got shape {a.shape}.")
    if a.dtype != bool:
        ok = (a == 0) | (a == 1)
        if not np.all(ok):
            bad = np.argwhere(~ok)[0].tolist()
            raise ValueError(f"{name}: labels must be 0/1, found {a[tuple(bad)]!r} at index {bad}; "
                             "binarise first (e.g. JPEG masks: mask >= 128; CholecT50 -1 entries: absent -> 0).")
        a = a.astype(bool)
    return a


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str, where: str = "") -> None:
    if a.shape != b.shape:
        loc = f" ({where})" if where else ""
        raise ValueError(f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}{loc}; "
                         "they must describe the same frames/samples.")


def check_nonempty(items: Sequence, name: str) -> None:
    if len(items) == 0:
        raise ValueError(f"{name}: got no items; pass at least one video/sample.")
