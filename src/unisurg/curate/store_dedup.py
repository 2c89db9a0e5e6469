"""Near-duplicate videos and shared segments inside one store (``unisurg curate dedup``).

Datasets that share footage (Cholec80, CholecT50 and M2CAI16 hold some of the same
cholecystectomies) put the same frames in a corpus several times. Every pair of stored videos
whose perceptual-hash sequences align over at least ``min_frames`` frames and ``min_fraction``
of the shorter video (:func:`~unisurg.curate.duplicates.find_near_duplicates`; robust to
re-encoding, resizing and time offsets) is reported with its evidence, marked ``within`` or
``across`` datasets and classed:

* ``same``: both videos are mostly (>= ``full_fraction``) the other one;
* ``contained``: the shorter one is mostly inside the longer one;
* ``partial``: they share segments only.

``STORE/curation/duplicates.json``::

    {"format": "unisurg-duplicates", "version": 1, "created": ..., "store": {...}, "params": {...},
     "n_videos": ..., "pairs": [{"a", "b", "dataset_a", "dataset_b", "scope", "class", "matched_frames",
       "fraction_a", "fraction_b", "containment", "offset_frames", "segments": [{"a_start", "a_end",
       "b_start", "b_end", "frames", "a_start_s", "b_start_s"}]}],
     "groups": [{"videos": [...], "datasets": [...], "frames": [...], "scope": "within" | "across"}]}

``keep_one_per_duplicate_group`` then keeps the longest video of each group of ``same`` /
``contained`` pairs and lists the others in ``STORE/curation/exclude.json`` (source ``dedup``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Literal

from unisurg.atomic_files import write_json_atomic
from unisurg.curate.corpus_files import (
    CurationError,
    curation_dir,
    manifest_digest,
    now_iso,
    read_json,
    store_records,
    update_exclusions,
)
from unisurg.curate.duplicates import (
    find_near_duplicates,
    group_duplicates,
    keep_one_per_group,
)
from unisurg.curate.store_hashes import DEFAULT_MIN_CONTRAST, store_hashes
from unisurg.data.ray_engine import RayOptions

DUPLICATES_NAME = "duplicates.json"
DUPLICATES_FORMAT = "unisurg-duplicates"


def duplicates_path(store_root: str | Path) -> Path:
    return curation_dir(store_root) / DUPLICATES_NAME


def classify_pair(fraction_a: float, fraction_b: float, full_fraction: float) -> str:
    if min(fraction_a, fraction_b) >= full_fraction:
        return "same"
    if max(fraction_a, fraction_b) >= full_fraction:
        return "contained"
    return "partial"


def find_store_duplicates(
    store_root: str | Path,
    *,
    max_distance: int = 8,
    min_fraction: float = 0.5,
    min_frames: int = 5,
    min_contrast: float = DEFAULT_MIN_CONTRAST,
    full_fraction: float = 0.8,
    scope: Literal["all", "within", "across"] = "all",
    candidates: Literal["auto", "all", "bands"] = "auto",
    kind: Literal["dct", "dhash"] = "dct",
    workers: int = 1,
    progress: bool = False,
    out: str | Path | None = None,
    log: Callable[[str], None] = print,
    engine: str = "local",
    ray: RayOptions | None = None,
) -> dict:
    """Find near-duplicate videos of a store, write the report (default
    ``STORE/curation/duplicates.json``) and return it."""
    if scope not in ("all", "within", "across"):
        raise CurationError(f"scope={scope!r}; use 'all', 'within' or 'across'")
    if not 0.0 < min_fraction <= 1.0 or not 0.0 < full_fraction <= 1.0:
        raise CurationError(f"min_fraction={min_fraction} and full_fraction={full_fraction} must be in (0, 1]")
    t0 = time.perf_counter()
    meta, recs = store_records(store_root)
    by_id = {r.id: r for r in recs}
    hashes, stats = store_hashes(store_root, kind=kind, workers=workers, progress=progress, log=log, engine=engine, ray=ray)
    matches = find_near_duplicates(hashes.hashes, max_distance=max_distance, min_fraction=min_fraction, min_frames=min_frames,
                                   valid=hashes.valid(min_contrast), candidates=candidates)
    fps = float(meta.get("fps") or 1.0)
    pairs = []
    for m in matches:
        ra, rb = by_id[m.query], by_id[m.reference]
        where = "within" if ra.dataset == rb.dataset else "across"
        if scope != "all" and where != scope:
            continue
        pairs.append({
            "a": m.query, "b": m.reference, "dataset_a": ra.dataset, "dataset_b": rb.dataset, "scope": where,
            "class": classify_pair(m.query_fraction, m.reference_fraction, full_fraction),
            "matched_frames": m.matched_frames, "fraction_a": round(m.query_fraction, 4), "fraction_b": round(m.reference_fraction, 4),
            "containment": round(m.containment, 4), "offset_frames": m.offset,
            "segments": [{"a_start": s.query_start, "a_end": s.query_end, "b_start": s.reference_start, "b_end": s.reference_end,
                          "frames": s.frames, "a_start_s": round(s.query_start / fps, 3), "b_start_s": round(s.reference_start / fps, 3)}
                         for s in m.segments],
        })
    groups = []
    for g in group_duplicates([(p["a"], p["b"]) for p in pairs]):
        datasets = [by_id[v].dataset for v in g]
        groups.append({"videos": g, "datasets": datasets, "frames": [by_id[v].n_frames for v in g],
                       "scope": "within" if len(set(datasets)) == 1 else "across"})
    report = {
        "format": DUPLICATES_FORMAT, "version": 1, "created": now_iso(),
        "store": {"root": str(Path(store_root).resolve()), "manifest_digest": manifest_digest(store_root), "fps": fps},
        "params": {"max_distance": max_distance, "min_fraction": min_fraction, "min_frames": min_frames, "min_contrast": min_contrast,
                   "full_fraction": full_fraction, "scope": scope, "candidates": candidates, "hash": kind},
        "n_videos": len(recs), "n_frames": hashes.n_frames, "hashing": stats,
        "pairs": pairs, "groups": groups, "seconds": round(time.perf_counter() - t0, 3),
    }
    write_json_atomic(Path(out) if out is not None else duplicates_path(store_root), report)
    return report


def read_duplicates(path: str | Path) -> dict:
    return read_json(Path(path), "duplicate report", DUPLICATES_FORMAT)


def keep_one_per_duplicate_group(store_root: str | Path, report: dict, *, classes: tuple[str, ...] = ("same", "contained")) -> dict:
    """Keep the video with the most stored frames of each group of ``classes`` pairs (ties: the
    smallest id) and write the others to ``exclude.json``; returns ``{dropped id: kept id}``."""
    _, recs = store_records(store_root)
    frames = {r.id: r.n_frames for r in recs}
    chosen = [p for p in report["pairs"] if p["class"] in classes and p["a"] in frames and p["b"] in frames]
    groups = group_duplicates([(p["a"], p["b"]) for p in chosen])
    decision = keep_one_per_group(groups, priority=frames)
    evidence = {}
    for p in chosen:
        evidence.setdefault(p["a"], []).append(p)
        evidence.setdefault(p["b"], []).append(p)
    entries = {}
    for dropped, kept in decision.drop.items():
        best = max(evidence[dropped], key=lambda p: p["containment"])
        entries[dropped] = {"reason": f"near duplicate ({best['class']}) of {kept}", "kept": kept,
                            "containment": best["containment"], "matched_frames": best["matched_frames"]}
    update_exclusions(store_root, "dedup", entries)
    return decision.drop


def format_dedup_summary(report: dict, dropped: dict | None = None) -> str:
    pairs, groups = report["pairs"], report["groups"]
    lines = [f"{report['n_videos']} videos, {report['n_frames']} frames: {len(pairs)} near-duplicate pairs in {len(groups)} groups "
             f"({sum(g['scope'] == 'across' for g in groups)} across datasets)"]
    for g in groups:
        members = ", ".join(f"{v} ({n} frames)" for v, n in zip(g["videos"], g["frames"]))
        lines.append(f"  [{g['scope']}] {members}")
    for p in pairs:
        lines.append(f"    {p['a']} ~ {p['b']}: {p['class']}, {p['matched_frames']} frames aligned "
                     f"({p['fraction_a']:.0%} / {p['fraction_b']:.0%}), {len(p['segments'])} segment(s), offset {p['offset_frames']}")
    if dropped is not None:
        lines.append(f"  keep one per group: {len(dropped)} videos written to the exclusion list")
        lines += [f"    drop {d} (kept {k})" for d, k in sorted(dropped.items())]
    return "\n".join(lines)


__all__ = ["classify_pair", "duplicates_path", "find_store_duplicates", "format_dedup_summary", "keep_one_per_duplicate_group",
           "read_duplicates"]
