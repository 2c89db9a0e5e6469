"""Benchmark leakage: corpus videos that contain footage of any benchmark test video.

Pure logic over per-frame perceptual hashes (see :mod:`unisurg.curate.phash`). Each corpus
video is aligned against the test videos it may overlap (every pair, or band-collision
candidates for large sets, as in :mod:`unisurg.curate.duplicates`); any order-preserving
alignment of at least ``min_frames`` frames is reported with its evidence. The threshold is in
frames, not a fraction: a pretraining corpus that holds one minute of a test video has leaked,
however long either video is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

import numpy as np

from unisurg.curate.duplicates import (
    VideoMatch,
    candidate_pairs,
    check_hashes,
    match_videos,
)


@dataclass
class LeakageHit:
    """A corpus video that overlaps test footage. ``best`` is the test video with the most
    aligned frames; ``matches`` lists every overlapping test video (most frames first)."""

    corpus_video: str
    best: VideoMatch
    matches: list[VideoMatch] = field(default_factory=list)

    @property
    def test_video(self) -> str:
        return self.best.reference

    @property
    def matched_frames(self) -> int:
        return self.best.matched_frames

    @property
    def corpus_fraction(self) -> float:
        """Share of the corpus video's valid frames aligned to the best test video."""
        return self.best.query_fraction

    @property
    def test_fraction(self) -> float:
        """Share of the best test video's valid frames found in the corpus video."""
        return self.best.reference_fraction

    def as_dict(self) -> dict:
        return {
            "corpus_video": self.corpus_video,
            "test_video": self.test_video,
            "matched_frames": self.matched_frames,
            "corpus_fraction": round(self.corpus_fraction, 4),
            "test_fraction": round(self.test_fraction, 4),
            "offset": self.best.offset,
            "segments": [vars(s) for s in self.best.segments],
            "other_test_videos": [m.reference for m in self.matches[1:]],
        }


def find_leakage(
    corpus: Mapping[str, np.ndarray],
    test: Mapping[str, np.ndarray],
    *,
    max_distance: int = 8,
    min_frames: int = 5,
    corpus_valid: Mapping[str, np.ndarray] | None = None,
    test_valid: Mapping[str, np.ndarray] | None = None,
    candidates: Literal["auto", "all", "bands"] = "auto",
    max_gap: int = 10,
    band_bits: int = 32,
    max_bucket: int = 32,
    min_votes: int = 2,
) -> list[LeakageHit]:
    """Corpus videos overlapping any test video by ``>= min_frames`` aligned frames, most first.

    ``corpus``/``test``: ``{video id: uint64 frame hashes}`` in temporal order; ``*_valid``:
    optional ``{video id: bool mask}`` of informative frames. ``candidates``: ``"all"`` aligns
    every corpus/test pair, ``"bands"`` only pairs sharing exact hash bands, ``"auto"`` picks
    ``"all"`` up to 64 videos in total.
    """
    c_ids, c_hash, c_mask = check_hashes(corpus, corpus_valid, "corpus")
    t_ids, t_hash, t_mask = check_hashes(test, test_valid, "test")
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    groups = np.array([0] * len(c_ids) + [1] * len(t_ids))
    pairs = candidate_pairs(c_hash + t_hash, c_mask + t_mask, candidates, groups=groups, band_bits=band_bits, max_bucket=max_bucket,
                            min_votes=min_votes)
    per_corpus: dict[int, list[VideoMatch]] = {}
    n_c = len(c_ids)
    for a, b in pairs:
        ci, ti = (a, b - n_c) if a < n_c else (b, a - n_c)
        m = match_videos(c_ids[ci], c_hash[ci], t_ids[ti], t_hash[ti], max_distance=max_distance, query_valid=c_mask[ci],
                         reference_valid=t_mask[ti], max_gap=max_gap)
        if m.matched_frames >= min_frames:
            per_corpus.setdefault(ci, []).append(m)
    hits = []
    for ci, ms in per_corpus.items():
        ms.sort(key=lambda m: (-m.matched_frames, m.reference))
        hits.append(LeakageHit(corpus_video=c_ids[ci], best=ms[0], matches=ms))
    hits.sort(key=lambda h: (-h.matched_frames, h.corpus_video))
    return hits


__all__ = ["LeakageHit", "find_leakage"]
