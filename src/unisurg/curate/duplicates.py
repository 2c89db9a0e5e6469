"""Near-duplicate videos from per-frame perceptual hashes (pure logic over hash arrays).

Two videos are compared by their **order-preserving alignment**: the largest set of frame pairs
``(i, j)`` with ``hamming(q_i, r_j) <= max_distance``, each frame used at most once and both
indices increasing together (a longest common subsequence with fuzzy equality). This is what
"temporally consistent matching" means here: it is insensitive to a time offset, to dropped or
inserted frames and to long static scenes (which defeat "best match per frame" schemes, where
every frame of a static scene picks the same partner), and a video that merely shares a few
look-alike frames in a different order does not score. It is computed row by row with one
vectorised prefix-max per query frame that has any match; the table is kept as one bit per cell
(the DP's increments are 0 or 1), so backtracking the matched pairs costs ``nq * nr / 8`` bytes.

For many videos, candidate pairs come from exact collisions of hash bands (the 64 bits cut into
``64 / band_bits`` bands; a pair with few differing bits usually keeps one band intact), and
only candidates are aligned. Bands shared by more than ``max_bucket`` videos (title cards,
logos) are ignored, like stop words. Frames marked invalid (e.g. near-uniform frames, see
:func:`unisurg.curate.phash.hash_frames`) never match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, Sequence

import numpy as np

from unisurg.curate.phash import HASH_BITS


@dataclass
class Segment:
    """A run of aligned frames: query frames ``query_start..query_end`` (inclusive) match
    reference frames ``reference_start..reference_end``; ``frames`` pairs are aligned in it."""

    query_start: int
    query_end: int
    reference_start: int
    reference_end: int
    frames: int


@dataclass
class VideoMatch:
    """Evidence that two videos share footage. Fractions are of each video's valid frames;
    ``offset`` is the median ``reference index - query index`` over the aligned pairs."""

    query: str
    reference: str
    matched_frames: int
    query_frames: int
    reference_frames: int
    offset: int
    segments: list[Segment] = field(default_factory=list)

    @property
    def query_fraction(self) -> float:
        return self.matched_frames / max(self.query_frames, 1)

    @property
    def reference_fraction(self) -> float:
        return self.matched_frames / max(self.reference_frames, 1)

    @property
    def containment(self) -> float:
        """Matched fraction of the shorter video (1.0: one video is contained in the other)."""
        return self.matched_frames / max(min(self.query_frames, self.reference_frames), 1)


def check_hashes(videos: Mapping[str, np.ndarray], valid: Mapping[str, np.ndarray] | None, what: str) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Validate ``{video id: uint64 hashes}`` (and optional ``{video id: bool mask}``)."""
    if not isinstance(videos, Mapping):
        raise TypeError(f"{what}: expected a mapping {{video id: uint64 hash array}}, got {type(videos).__name__}")
    ids, hashes, masks = [], [], []
    for vid, h in videos.items():
        h = np.asarray(h)
        if h.ndim != 1 or not (h.dtype == np.uint64 or np.issubdtype(h.dtype, np.integer)):
            raise ValueError(f"{what}: video {vid!r}: hashes must be a 1-D uint64 array, got shape {h.shape} dtype {h.dtype}")
        m = np.ones(len(h), dtype=bool)
        if valid is not None and vid in valid:
            m = np.asarray(valid[vid], dtype=bool)
            if m.shape != h.shape:
                raise ValueError(f"{what}: video {vid!r}: valid mask has shape {m.shape} but there are {len(h)} hashes")
        ids.append(str(vid))
        hashes.append(h.astype(np.uint64))
        masks.append(m)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{what}: video ids collide after conversion to str; make them unique")
    return ids, hashes, masks


def align(
    query: np.ndarray,
    reference: np.ndarray,
    *,
    max_distance: int = 8,
    query_valid: np.ndarray | None = None,
    reference_valid: np.ndarray | None = None,
    block_elements: int = 1 << 22,
) -> tuple[np.ndarray, np.ndarray]:
    """Order-preserving one-to-one alignment of two hash sequences (see module doc).

    Returns the aligned frame indices ``(qi, rj)``, both strictly increasing; ``len(qi)`` is the
    maximum possible number of aligned pairs with ``hamming <= max_distance``.
    """
    q = np.asarray(query, dtype=np.uint64)
    r = np.asarray(reference, dtype=np.uint64)
    nq, nr = len(q), len(r)
    qv = np.ones(nq, bool) if query_valid is None else np.asarray(query_valid, bool)
    rv = np.ones(nr, bool) if reference_valid is None else np.asarray(reference_valid, bool)
    empty = np.zeros(0, dtype=np.int64)
    if nq == 0 or nr == 0:
        return empty, empty.copy()
    # Forward pass. D[i, j]: best alignment of q[:i] with r[:j]; row i stored as packed increments.
    prev = np.zeros(nr + 1, dtype=np.int32)
    rows: list[np.ndarray | None] = [None] * (nq + 1)  # None: same as the row above
    zero_row = np.packbits(np.zeros(nr, dtype=bool))
    rows[0] = zero_row
    last_packed = zero_row
    block_rows = max(1, block_elements // nr)  # bounds the block_rows x nr XOR/compare temporaries
    for s in range(0, nq, block_rows):
        e = min(s + block_rows, nq)
        match = (np.bitwise_count(q[s:e, None] ^ r[None, :]) <= max_distance) & qv[s:e, None] & rv[None, :]
        has = match.any(axis=1)
        for k in range(e - s):
            i = s + k + 1
            if not has[k]:
                rows[i] = last_packed
                continue
            cand = prev.copy()
            np.maximum(cand[1:], prev[:-1] + match[k], out=cand[1:])
            np.maximum.accumulate(cand, out=cand)
            prev = cand
            last_packed = np.packbits(np.diff(cand) > 0)
            rows[i] = last_packed
    total = int(prev[-1])
    if total == 0:
        return empty, empty.copy()

    def row_values(i: int) -> np.ndarray:
        inc = np.unpackbits(rows[i], count=nr).astype(np.int32)
        return np.concatenate([[0], np.cumsum(inc)])

    # Backtrack from (nq, nr), preferring the diagonal when a match explains the value.
    qi, rj = [], []
    i, j = nq, nr
    cur, up = row_values(i), row_values(i - 1)
    while i > 0 and j > 0 and cur[j] > 0:
        is_match = qv[i - 1] and rv[j - 1] and int(np.bitwise_count(q[i - 1] ^ r[j - 1])) <= max_distance
        if is_match and up[j - 1] + 1 == cur[j]:
            qi.append(i - 1)
            rj.append(j - 1)
            i, j = i - 1, j - 1
        elif up[j] == cur[j]:
            i -= 1
        else:
            j -= 1
            continue
        if i > 0:
            cur, up = up, row_values(i - 1)
    assert len(qi) == total, "alignment backtrack lost pairs"
    return np.array(qi[::-1], dtype=np.int64), np.array(rj[::-1], dtype=np.int64)


def segments_of(qi: np.ndarray, rj: np.ndarray, max_gap: int = 10) -> list[Segment]:
    """Cut aligned pairs into runs where neither index jumps by more than ``max_gap`` frames."""
    if len(qi) == 0:
        return []
    breaks = np.flatnonzero((np.diff(qi) > max_gap) | (np.diff(rj) > max_gap)) + 1
    bounds = np.concatenate([[0], breaks, [len(qi)]])
    return [Segment(int(qi[a]), int(qi[b - 1]), int(rj[a]), int(rj[b - 1]), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:])]


def match_videos(
    query_id: str,
    query: np.ndarray,
    reference_id: str,
    reference: np.ndarray,
    *,
    max_distance: int = 8,
    query_valid: np.ndarray | None = None,
    reference_valid: np.ndarray | None = None,
    max_gap: int = 10,
) -> VideoMatch:
    """Align two videos' hash sequences and summarise the evidence as a :class:`VideoMatch`."""
    qv = np.ones(len(query), bool) if query_valid is None else np.asarray(query_valid, bool)
    rv = np.ones(len(reference), bool) if reference_valid is None else np.asarray(reference_valid, bool)
    qi, rj = align(query, reference, max_distance=max_distance, query_valid=qv, reference_valid=rv)
    offset = int(np.median(rj - qi)) if len(qi) else 0
    return VideoMatch(query_id, reference_id, len(qi), int(qv.sum()), int(rv.sum()), offset, segments_of(qi, rj, max_gap))


def band_candidates(
    hashes: Sequence[np.ndarray],
    valid: Sequence[np.ndarray],
    *,
    band_bits: int = 32,
    max_bucket: int = 32,
    min_votes: int = 2,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Video pairs ``[P, 2]`` (``a < b``) sharing at least ``min_votes`` distinct exact hash bands.

    A vote is one (band, value) present in both videos. ``groups``: if given (one int per video),
    only pairs from different groups are returned (e.g. corpus vs test set).
    """
    if HASH_BITS % band_bits:
        raise ValueError(f"band_bits={band_bits} must divide {HASH_BITS}")
    n_videos = len(hashes)
    if n_videos < 2:
        return np.zeros((0, 2), dtype=np.int64)
    vid = np.concatenate([np.full(int(m.sum()), v, dtype=np.int64) for v, m in enumerate(valid)])
    h = np.concatenate([np.asarray(x, dtype=np.uint64)[np.asarray(m, bool)] for x, m in zip(hashes, valid)])
    mask = np.uint64((1 << band_bits) - 1)
    votes = []
    for b in range(HASH_BITS // band_bits):
        key = (h >> np.uint64(b * band_bits)) & mask
        pairs = np.unique(np.stack([key.astype(np.int64) if band_bits < 64 else key.view(np.int64), vid], axis=1), axis=0)
        keys, vids = pairs[:, 0], pairs[:, 1]
        start = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        size = np.diff(np.concatenate([start, [len(keys)]]))
        ok = (size > 1) & (size <= max_bucket)
        bucket_of = np.repeat(np.arange(len(start)), size)
        usable = ok[bucket_of]
        for d in range(1, int(size[ok].max(initial=1))):
            a = np.arange(len(keys) - d)
            same = usable[a] & (bucket_of[a] == bucket_of[a + d])
            votes.append(vids[a[same]] * n_videos + vids[a[same] + d])
    if not votes:
        return np.zeros((0, 2), dtype=np.int64)
    code, count = np.unique(np.concatenate(votes), return_counts=True)
    code = code[count >= min_votes]
    out = np.stack([code // n_videos, code % n_videos], axis=1)
    if groups is not None:
        g = np.asarray(groups)
        out = out[g[out[:, 0]] != g[out[:, 1]]]
    return out


def _all_pairs(n: int, groups: np.ndarray | None) -> np.ndarray:
    a, b = np.triu_indices(n, k=1)
    out = np.stack([a, b], axis=1).astype(np.int64)
    if groups is not None:
        out = out[groups[out[:, 0]] != groups[out[:, 1]]]
    return out


def candidate_pairs(hashes, valid, candidates: str, groups=None, **band_kwargs) -> np.ndarray:
    """Pairs to align: ``"all"`` (exhaustive), ``"bands"`` (:func:`band_candidates`) or ``"auto"``
    (exhaustive up to 64 videos, bands beyond)."""
    if candidates not in ("auto", "all", "bands"):
        raise ValueError(f"candidates={candidates!r}; use 'auto', 'all' or 'bands'")
    if candidates == "all" or (candidates == "auto" and len(hashes) <= 64):
        return _all_pairs(len(hashes), None if groups is None else np.asarray(groups))
    return band_candidates(hashes, valid, groups=groups, **band_kwargs)


def find_near_duplicates(
    videos: Mapping[str, np.ndarray],
    *,
    max_distance: int = 8,
    min_fraction: float = 0.5,
    min_frames: int = 5,
    valid: Mapping[str, np.ndarray] | None = None,
    candidates: Literal["auto", "all", "bands"] = "auto",
    max_gap: int = 10,
    band_bits: int = 32,
    max_bucket: int = 32,
    min_votes: int = 2,
) -> list[VideoMatch]:
    """Pairs of videos that share footage: at least ``min_frames`` aligned frames covering at
    least ``min_fraction`` of the shorter video's valid frames (:attr:`VideoMatch.containment`).
    Sorted by decreasing matched frames."""
    ids, hashes, masks = check_hashes(videos, valid, "find_near_duplicates")
    pairs = candidate_pairs(hashes, masks, candidates, band_bits=band_bits, max_bucket=max_bucket, min_votes=min_votes)
    found = []
    for a, b in pairs:
        m = match_videos(ids[a], hashes[a], ids[b], hashes[b], max_distance=max_distance, query_valid=masks[a], reference_valid=masks[b],
                         max_gap=max_gap)
        if m.matched_frames >= min_frames and m.containment >= min_fraction:
            found.append(m)
    found.sort(key=lambda m: (-m.matched_frames, m.query, m.reference))
    return found


def group_duplicates(pairs: Sequence[VideoMatch] | Sequence[tuple[str, str]]) -> list[list[str]]:
    """Connected components (union-find) of the duplicate relation; groups of >= 2 ids, each
    sorted, groups ordered by their first id."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for p in pairs:
        a, b = (p.query, p.reference) if isinstance(p, VideoMatch) else p
        ra, rb = find(str(a)), find(str(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comps: dict[str, list[str]] = {}
    for x in list(parent):
        comps.setdefault(find(x), []).append(x)
    return sorted((sorted(c) for c in comps.values() if len(c) > 1), key=lambda c: c[0])


@dataclass
class KeepDecision:
    """``keep``: one representative per group; ``drop``: every other member -> its representative."""

    keep: list[str]
    drop: dict[str, str]


def keep_one_per_group(groups: Sequence[Sequence[str]], priority: Mapping[str, float] | Callable[[str], float] | None = None) -> KeepDecision:
    """Keep the member with the highest ``priority`` (e.g. frame count, source quality) in each
    group, ties broken by the smallest id; without ``priority``, the smallest id."""
    if priority is None:
        score = lambda v: 0.0  # noqa: E731
    elif callable(priority):
        score = priority
    else:
        missing = [v for g in groups for v in g if v not in priority]
        if missing:
            raise KeyError(f"priority has no entry for video(s) {missing[:5]}; give every grouped video a score")
        score = priority.__getitem__
    keep, drop = [], {}
    for g in groups:
        best = min(g, key=lambda v: (-float(score(v)), v))
        keep.append(best)
        drop.update({v: best for v in g if v != best})
    return KeepDecision(keep=keep, drop=drop)


__all__ = [
    "KeepDecision",
    "Segment",
    "VideoMatch",
    "align",
    "band_candidates",
    "check_hashes",
    "find_near_duplicates",
    "group_duplicates",
    "keep_one_per_group",
    "match_videos",
    "segments_of",
]
