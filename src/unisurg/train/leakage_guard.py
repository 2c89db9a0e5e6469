"""The pretraining leakage guard: reads the report of ``unisurg curate leakage`` before the first step.

It computes nothing: :mod:`unisurg.curate.leakage_check` hashes and aligns the footage and writes
``STORE/curation/leakage.json``; this module compares that report with the videos about to be trained on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from unisurg.curate.corpus_files import (
    CurationError,
    manifest_digest,
    now_iso,
    store_records,
    video_signature,
)
from unisurg.curate.leakage_check import LeakageError, leakage_path, read_leakage_report


def _store_guard(root: Path, train: set[str] | None, log: Callable[[str], None]) -> dict:
    _, recs = store_records(root)
    signatures = {r.id: video_signature(r) for r in recs}
    train_ids = set(signatures) if train is None else {v for v in train if v in signatures}
    rec: dict = {"store": str(root), "training_videos": len(train_ids)}
    report = read_leakage_report(root)
    if report is None:
        rec["status"] = "not_checked"
        log(f"WARNING: {root}: no leakage check for this corpus; run `unisurg curate leakage {root} --benchmark DATASET:ROOT` "
            "before trusting benchmark numbers")
        return rec
    checked_sigs = report["store"].get("videos", {})
    unchecked = sorted(v for v in train_ids if checked_sigs.get(v) != signatures[v])
    hits = [h for h in report["hits"] if h["corpus_video"] in train_ids]
    rec.update({
        "report": str(leakage_path(root)), "checked_at": report["created"],
        "benchmarks": [f"{b['dataset']}:{b['split_scheme']}" for b in report["checked"]["benchmarks"]],
        "video_files": len(report["checked"]["video_files"]), "n_test_videos": report["checked"]["n_test_videos"],
        "missing_media": len(report["checked"]["missing_media"]), "thresholds": report["checked"]["thresholds"],
        "manifest_changed": report["store"]["manifest_digest"] != manifest_digest(root),
        "unchecked_videos": len(unchecked), "unchecked_examples": unchecked[:5],
        "hits": [{"corpus_video": h["corpus_video"], "test_video": h["test_video"], "matched_frames": h["matched_frames"],
                  "test_fraction": h["test_fraction"]} for h in hits],
        "status": "leakage" if hits else ("stale" if unchecked else "clean"),
    })
    if unchecked:
        log(f"WARNING: {root}: the leakage check of {report['created']} is stale: {len(unchecked)} training videos were "
            f"ingested or re-ingested since (e.g. {unchecked[:3]}); rerun `unisurg curate leakage {root} ...`")
    if report["checked"]["missing_media"]:
        log(f"WARNING: {root}: the leakage check skipped {len(report['checked']['missing_media'])} test videos whose media was missing")
    return rec


def guard_corpus(store_roots: str | Path | Sequence[str | Path], *, allow_leakage: bool = False,
                 log: Callable[[str], None] = print,
                 videos: Mapping[str, Iterable[str]] | Iterable[str] | None = None) -> dict:
    """The pretraining leakage guard. Per store, reads ``STORE/curation/leakage.json``:

    * a report lists hits among the videos to train on -> :class:`LeakageError` naming each
      leaking corpus video and the test video it matches, unless ``allow_leakage`` (then a warning);
    * no report -> status ``"not_checked"`` (warning);
    * videos to train on that the report did not check (ingested or re-ingested since) ->
      ``"stale"`` (warning); hits among checked videos still count.

    ``videos``: the video ids the trainer will use, ``{store root: ids}`` (or just ids for one
    store); default every ok video of each store. Use
    :func:`~unisurg.curate.corpus_files.training_videos` so the guard sees what the loader sees.

    Returns the JSON-ready record to write into the run log: ``{"check": "benchmark_leakage",
    "status": "clean" | "stale" | "not_checked" | "leakage" | "leakage_allowed", "allow_leakage",
    "checked_at", "stores": [per-store record], "leaking_videos": [...]}``; per-store ``status`` is
    ``clean``/``stale``/``not_checked``/``leakage``. The same record is attached to the error.
    """
    roots = [Path(store_roots)] if isinstance(store_roots, (str, Path)) else [Path(r) for r in store_roots]
    if not roots:
        raise CurationError("guard_corpus: no store given")
    per_store: dict[str, set[str] | None] = {str(r): None for r in roots}
    if videos is not None:
        if isinstance(videos, Mapping):
            resolved = {str(Path(k).resolve()): set(v) for k, v in videos.items()}
            for r in roots:
                per_store[str(r)] = resolved.get(str(r.resolve()))
        elif len(roots) == 1:
            per_store[str(roots[0])] = set(videos)
        else:
            raise CurationError("guard_corpus: with several stores, give videos as {store root: video ids}")
    stores = [_store_guard(r, per_store[str(r)], log) for r in roots]
    hits = [(s["store"], h) for s in stores for h in s.get("hits", [])]
    statuses = {s["status"] for s in stores}
    status = "leakage" if hits else ("not_checked" if "not_checked" in statuses else ("stale" if "stale" in statuses else "clean"))
    record = {"check": "benchmark_leakage", "status": status, "allow_leakage": bool(allow_leakage), "checked_at": now_iso(),
              "stores": stores, "leaking_videos": sorted({f"{st}:{h['corpus_video']}" for st, h in hits})}
    if hits:
        shown = "\n".join(f"  {h['corpus_video']} (store {st}) overlaps test video {h['test_video']} "
                          f"({h['matched_frames']} frames, {h['test_fraction']:.0%} of the test video)" for st, h in hits[:20])
        more = f"\n  ... and {len(hits) - 20} more" if len(hits) > 20 else ""
        if not allow_leakage:
            raise LeakageError(
                f"the pretraining corpus contains benchmark test footage ({len(hits)} leaking videos):\n{shown}{more}\n"
                "Leave these videos out (`unisurg curate leakage STORE ... --exclude-hits` writes them to "
                "STORE/curation/exclude.json, which pretraining honours), or go on knowingly with allow_leakage "
                "(--allow-leakage): benchmark numbers on those test videos will then be meaningless.", record)
        record["status"] = "leakage_allowed"
        log(f"WARNING: training on benchmark test footage because leakage was explicitly allowed:\n{shown}{more}")
    return record
