"""Reading the versioned split files shipped in ``unisurg/datasets/splits/`` and deterministic carving.

Split files are package data (JSON, each with ``version`` and ``origin``); see the README there.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Hashable, Sequence, TypeVar

T = TypeVar("T")


@lru_cache(maxsize=None)
def _read(name: str) -> str:
    return resources.files("unisurg.datasets").joinpath("splits", name).read_text(encoding="utf-8")


def load_split_file(name: str) -> dict[str, Any]:
    """Parsed ``unisurg/datasets/splits/<name>`` (``name`` includes ``.json``)."""
    try:
        data = json.loads(_read(name))
    except FileNotFoundError:
        raise FileNotFoundError(f"split file {name!r} is not shipped in unisurg/datasets/splits") from None
    for key in ("dataset", "version", "origin"):
        if key not in data:
            raise ValueError(f"split file {name}: missing required key {key!r}")
    return data


def round_half_up(x: float) -> int:
    """Nearest integer, halves rounded up (Python's round() rounds halves to even)."""
    return int(math.floor(x + 0.5))


def fraction_split(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Counts ``(train, val, test)`` for ``n`` videos: rounded fractions, at least one video in
    each split whose fraction is positive when ``n`` allows it, the remainder to train."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative numbers, got {fractions}")
    total = float(sum(fractions))
    f_train, f_val, f_test = (f / total for f in fractions)
    n_val = round_half_up(f_val * n)
    n_test = round_half_up(f_test * n)
    if n >= 3:
        n_val = max(n_val, 1 if f_val > 0 else 0)
        n_test = max(n_test, 1 if f_test > 0 else 0)
    n_val = min(n_val, n)
    n_test = min(n_test, n - n_val)
    return n - n_val - n_test, n_val, n_test


def stable_rank_key(text: str) -> str:
    """Order-independent, platform-independent sort key: SHA-1 of the UTF-8 text."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def carve(items: Sequence[T], fraction: float, key: Callable[[T], str], group: Callable[[T], Hashable] | None = None):
    """Split ``items`` into ``(kept, carved)`` with ``round(fraction * n)`` carved per group.

    Within each group (e.g. a class, to keep the carve stratified) items are ranked by
    :func:`stable_rank_key` of ``key(item)`` and the first ones are carved, so the result depends
    only on the item names, never on listing order or a random seed.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    groups: dict[Hashable, list[T]] = {}
    for it in items:
        groups.setdefault(group(it) if group else None, []).append(it)
    carved_ids: set[int] = set()
    for members in groups.values():
        ranked = sorted(members, key=lambda it: stable_rank_key(key(it)))
        n = round_half_up(fraction * len(ranked))
        carved_ids.update(id(it) for it in ranked[:n])
    kept = [it for it in items if id(it) not in carved_ids]
    carved = [it for it in items if id(it) in carved_ids]
    return kept, carved
