"""Benchmark leakage check: corpus videos holding footage of a benchmark's test videos.

A foundation model pretrained on a benchmark's test videos reports numbers that mean nothing.
``check_leakage`` hashes every stored frame of the corpus and every frame of the test videos
(read through the benchmark's adapters, ``DATASET:ROOT[:SPLIT_SCHEME]``, and/or given as video
files or frame folders), aligns them (:func:`~unisurg.curate.leakage.find_leakage`: robust to
re-encoding, resizing and time offsets) and writes ``STORE/curation/leakage.json``::

    {"format": "unisurg-leakage-report", "version": 1, "created": "<ISO time>",
     "store": {"root", "manifest_digest", "n_videos", "videos": {"<id>": "<signature>"}},
     "checked": {"benchmarks": [{"spec", "dataset", "root", "split_scheme", "splits", "n_test_videos", "missing"}],
                 "video_files": [...], "n_test_videos", "missing_media": [...],
                 "thresholds": {"max_distance", "min_frames", "min_contrast"}, "hash": {"kind", "fps", "short_side"}},
     "hits": [{"corpus_video", "corpus_dataset", "test_video", "test_media", "matched_frames", "corpus_fraction",
               "test_fraction", "offset", "segments", "other_test_videos"}],
     "leaking_videos": [...], "seconds": ...}

Test video keys are ``DATASET:SCHEME:SPLIT:ID`` for benchmark records and ``file:PATH`` for files.

Pretraining reads this report before its first step: :func:`unisurg.train.leakage_guard.guard_corpus`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence

from tqdm import tqdm

from unisurg.atomic_files import write_json_atomic
from unisurg.curate.corpus_files import (
    CurationError,
    curation_dir,
    manifest_digest,
    now_iso,
    read_json,
    store_records,
    update_exclusions,
    video_signature,
)
from unisurg.curate.leakage import find_leakage
from unisurg.curate.store_hashes import (
    DEFAULT_MIN_CONTRAST,
    FrameHashes,
    hash_images,
    media_cache_dir,
    media_hashes,
    media_short_side,
    store_hashes,
    store_rate,
)
from unisurg.data.decode import VideoDecodeError
from unisurg.datasets import get_adapter

LEAKAGE_NAME = "leakage.json"
LEAKAGE_FORMAT = "unisurg-leakage-report"


class LeakageError(RuntimeError):
    """The corpus holds footage of benchmark test videos. ``record`` is :func:`guard_corpus`'s record."""

    def __init__(self, message: str, record: dict):
        super().__init__(message)
        self.record = record


def leakage_path(store_root: str | Path) -> Path:
    return curation_dir(store_root) / LEAKAGE_NAME


# -- test media ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkSplit:
    """``DATASET:ROOT[:SPLIT_SCHEME]`` of the command line."""

    dataset: str
    root: Path
    split_scheme: str | None
    spec: str


def parse_benchmark(text: str) -> BenchmarkSplit:
    """Parse ``DATASET:ROOT[:SPLIT_SCHEME]``; a last ``:PART`` is the split scheme only if the
    adapter knows such a scheme (so a root may itself contain ``:``)."""

    name, sep, rest = text.partition(":")
    if not sep or not name or not rest:
        raise CurationError(f"--benchmark {text!r}: expected DATASET:ROOT[:SPLIT_SCHEME], e.g. cholec80:/data/cholec80:40_40")
    try:
        adapter = get_adapter(name)
    except KeyError as e:
        raise CurationError(f"--benchmark {text!r}: {e}") from None
    root, scheme = rest, None
    head, sep2, tail = rest.rpartition(":")
    if sep2 and head and tail in adapter.split_schemes:
        root, scheme = head, tail
    return BenchmarkSplit(name, Path(root), scheme, text)


@dataclass
class TestMedia:
    """One test video to hash: a video file (optionally a segment of it), a frame folder, or an
    ordered list of images (image test sets, one sequence per source/sequence)."""

    key: str
    path: Path
    folder_fps: float = 1.0
    segment: tuple[float | None, float | None] | None = None
    images: list[Path] | None = None
    benchmark: str = ""

    def exists(self) -> bool:
        return all(p.exists() for p in self.images) if self.images is not None else self.path.exists()


def _record_media(rec, key_prefix: str, frame_folder_fps: float | None, bench: str) -> TestMedia | None:
    """The media of one adapter record (None for a record without media, e.g. a JIGSAWS trial without video)."""
    if hasattr(rec, "frames"):  # PhaseVideo, MultiLabelVideo
        ffps = frame_folder_fps or getattr(rec, "fps_source", None) or 1.0
        return TestMedia(f"{key_prefix}:{rec.video_id}", Path(rec.frames), float(ffps), benchmark=bench)
    if hasattr(rec, "clip_id"):  # ClipSample
        seg = None if rec.start_s is None and rec.end_s is None else (rec.start_s, rec.end_s)
        return TestMedia(f"{key_prefix}:{rec.clip_id}", Path(rec.path), segment=seg, benchmark=bench)
    if hasattr(rec, "trial_id"):  # SkillTrial
        return None if rec.video is None else TestMedia(f"{key_prefix}:{rec.trial_id}", Path(rec.video), benchmark=bench)
    raise CurationError(f"{bench}: records of type {type(rec).__name__} are not supported by the leakage check")


def benchmark_test_media(bench: BenchmarkSplit, *, splits: Sequence[str] = ("test",),
                         frame_folder_fps: float | None = None) -> tuple[list[TestMedia], dict]:
    """The test media of one benchmark split scheme, through its adapter; and a description for the report."""

    try:
        adapter = get_adapter(bench.dataset)(bench.root, bench.split_scheme)
        data = adapter.load()
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise CurationError(f"--benchmark {bench.spec}: {e}") from None
    scheme = adapter.split_scheme
    media: list[TestMedia] = []
    no_media = 0
    for split in splits:
        if split not in data:
            raise CurationError(f"--benchmark {bench.spec}: no split {split!r}; the adapter gives {sorted(data)}")
        prefix = f"{bench.dataset}:{scheme}:{split}"
        images: dict[str, list[Path]] = {}
        for rec in data[split]:
            if hasattr(rec, "image"):  # SegSample, DepthSample: one ordered sequence per source / sequence
                group = getattr(rec, "sequence", "") or getattr(rec, "source_dataset", "") or "images"
                images.setdefault(group, []).append(Path(rec.image))
                continue
            m = _record_media(rec, prefix, frame_folder_fps, f"{bench.dataset}:{scheme}")
            if m is None:
                no_media += 1
            else:
                media.append(m)
        for group, paths in images.items():
            media.append(TestMedia(f"{prefix}:{group}", paths[0].parent, images=paths, benchmark=f"{bench.dataset}:{scheme}"))
    info = {"spec": bench.spec, "dataset": bench.dataset, "root": str(bench.root.resolve()), "split_scheme": scheme,
            "splits": list(splits), "n_test_videos": len(media), "records_without_media": no_media}
    return media, info


def file_test_media(paths: Iterable[str | Path], *, frame_folder_fps: float | None = None) -> list[TestMedia]:
    return [TestMedia(f"file:{Path(p).resolve()}", Path(p), float(frame_folder_fps or 1.0), benchmark="files") for p in paths]


def hash_test_media(media: list[TestMedia], *, fps: float, short_side: int, kind: str = "dct", cache_dir: Path | None = None,
                    progress: bool = False) -> FrameHashes:
    """Hashes of every test medium (one entry per key)."""

    out = FrameHashes(kind=kind)
    for m in tqdm(media, desc="hash test videos", unit="video", disable=not progress):
        if m.images is not None:
            h, c = hash_images(m.images, kind=kind)
        else:
            try:
                h, c = media_hashes(m.path, fps=fps, short_side=short_side, kind=kind, folder_fps=m.folder_fps,
                                    segment=m.segment, cache_dir=cache_dir)
            except (VideoDecodeError, OSError, ValueError) as e:  # name the test video, not just the file
                raise CurationError(f"test video {m.key}: cannot read {m.path}: {e}") from e
        out.hashes[m.key] = h
        out.contrast[m.key] = c
    return out


# -- the check ----------------------------------------------------------------------------------


def check_leakage(
    store_root: str | Path,
    *,
    benchmarks: Sequence[str | BenchmarkSplit] = (),
    videos: Sequence[str | Path] = (),
    splits: Sequence[str] = ("test",),
    max_distance: int = 8,
    min_frames: int = 5,
    min_contrast: float = DEFAULT_MIN_CONTRAST,
    kind: Literal["dct", "dhash"] = "dct",
    frame_folder_fps: float | None = None,
    skip_missing: bool = False,
    workers: int = 1,
    out: str | Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Check the store against the test videos of ``benchmarks`` and/or ``videos``; write the
    report (default ``STORE/curation/leakage.json``, see module doc) and return it."""
    if not benchmarks and not videos:
        raise CurationError("nothing to check against: give --benchmark DATASET:ROOT[:SCHEME] and/or --videos FILE...")
    t0 = time.perf_counter()
    fps, store_short = store_rate(store_root)
    short = media_short_side(store_short)
    media: list[TestMedia] = []
    bench_info = []
    for b in benchmarks:
        b = parse_benchmark(b) if isinstance(b, str) else b
        m, info = benchmark_test_media(b, splits=splits, frame_folder_fps=frame_folder_fps)
        media += m
        bench_info.append(info)
    media += file_test_media(videos, frame_folder_fps=frame_folder_fps)
    missing = [m for m in media if not m.exists()]
    if missing and not skip_missing:
        shown = ", ".join(f"{m.key} ({m.path})" for m in missing[:5]) + (f" ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise CurationError(f"test media not found: {shown}. Put the videos where the dataset layout expects them, "
                            "or pass --skip-missing to check the others (the report lists what was skipped)")
    missing_keys = {m.key for m in missing}
    for info in bench_info:
        info["missing"] = sum(1 for m in missing if m.benchmark == f"{info['dataset']}:{info['split_scheme']}")
    present = [m for m in media if m.key not in missing_keys]
    if not present:
        raise CurationError("none of the test media exists; nothing was checked")
    corpus, hash_stats = store_hashes(store_root, kind=kind, workers=workers, progress=progress, log=log)
    test = hash_test_media(present, fps=fps, short_side=short, kind=kind, cache_dir=media_cache_dir(store_root), progress=progress)
    hits = find_leakage(corpus.hashes, test.hashes, max_distance=max_distance, min_frames=min_frames,
                        corpus_valid=corpus.valid(min_contrast), test_valid=test.valid(min_contrast))
    _, recs = store_records(store_root)
    by_id = {r.id: r for r in recs}
    path_of = {m.key: str(m.path) for m in present}
    hit_rows = []
    for h in hits:
        row = h.as_dict()
        row["corpus_dataset"] = by_id[h.corpus_video].dataset
        row["test_media"] = path_of[h.test_video]
        row["matched_seconds"] = round(h.matched_frames / fps, 3)
        hit_rows.append(row)
    report = {
        "format": LEAKAGE_FORMAT, "version": 1, "created": now_iso(),
        "store": {"root": str(Path(store_root).resolve()), "manifest_digest": manifest_digest(store_root), "n_videos": len(recs),
                  "videos": {r.id: video_signature(r) for r in recs}},
        "checked": {"benchmarks": bench_info, "video_files": [str(Path(v).resolve()) for v in videos],
                    "n_test_videos": len(present), "missing_media": sorted(missing_keys),
                    "thresholds": {"max_distance": max_distance, "min_frames": min_frames, "min_contrast": min_contrast},
                    "hash": {"kind": kind, "fps": fps, "short_side": short}, "corpus_frames": corpus.n_frames,
                    "test_frames": test.n_frames, "hashing": hash_stats},
        "hits": hit_rows,
        "leaking_videos": sorted({h.corpus_video for h in hits}),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    write_json_atomic(Path(out) if out is not None else leakage_path(store_root), report)
    return report


def exclude_leaking_videos(store_root: str | Path, report: dict) -> Path:
    """Write the report's leaking videos to ``exclude.json`` (source ``leakage``; replaces earlier leakage entries)."""
    entries = {h["corpus_video"]: {"reason": f"overlaps benchmark test video {h['test_video']}", "test_video": h["test_video"],
                                   "matched_frames": h["matched_frames"]} for h in report["hits"]}
    return update_exclusions(store_root, "leakage", entries)


def format_leakage_summary(report: dict) -> str:
    c = report["checked"]
    names = ", ".join(f"{b['dataset']}:{b['split_scheme']} ({b['n_test_videos']})" for b in c["benchmarks"])
    if c["video_files"]:
        names += (", " if names else "") + f"{len(c['video_files'])} video files"
    lines = [f"checked {report['store']['n_videos']} corpus videos against {c['n_test_videos']} test videos [{names}]: "
             f"{len(report['leaking_videos'])} leaking corpus videos"]
    if c["missing_media"]:
        lines.append(f"  skipped {len(c['missing_media'])} test videos whose media is missing")
    for h in report["hits"]:
        lines.append(f"  LEAK {h['corpus_video']} <- {h['test_video']}: {h['matched_frames']} frames "
                     f"({h['corpus_fraction']:.0%} of the corpus video, {h['test_fraction']:.0%} of the test video)")
    return "\n".join(lines)


def read_leakage_report(store_root: str | Path) -> dict | None:
    path = leakage_path(store_root)
    return read_json(path, "leakage report", LEAKAGE_FORMAT) if path.exists() else None


__all__ = [
    "BenchmarkSplit",
    "LeakageError",
    "TestMedia",
    "benchmark_test_media",
    "check_leakage",
    "exclude_leaking_videos",
    "file_test_media",
    "format_leakage_summary",
    "hash_test_media",
    "leakage_path",
    "parse_benchmark",
    "read_leakage_report",
]
