"""OphNet 2024 (ophthalmic surgery) phase recognition from the challenge localisation CSV::

    ROOT/OphNet2024_loca_challenge_phase.csv   video_id,start,end,split,surgery_id,phase_id (seconds)
    ROOT/OphNet2024_surgery.csv                video_id,surgery  (optional; UTF-8 BOM)
    ROOT/videos/<video_id>.mp4

(the CSVs may also sit in ``ROOT/annotation/``).  Per-second labels: second ``t`` takes the phase
of the segment with ``start <= t < end``; overlapping segments (a few tenths of a second at phase
changes in the release) resolve to the later-starting one; seconds inside no segment get the
background class 52.  A video lasts ``ceil(max end)`` seconds for labelling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unisurg.datasets.base import (
    SPLITS,
    AnnotationError,
    DatasetAdapter,
    DatasetLayoutError,
    PhaseVideo,
    empty_splits,
    register,
)
from unisurg.datasets.cholec import VIDEO_EXTS
from unisurg.datasets.plausibility import (
    MAX_VIDEO_SECONDS,
    describe_seconds,
    plausible_seconds,
)
from unisurg.datasets.repairs import RepairLog, log_or_strict
from unisurg.datasets.splitfiles import load_split_file
from unisurg.datasets.textfile import csv_rows, parse_float, parse_int
from unisurg.datasets.timeline import segments_to_seconds

N_PHASES = 52
OPHNET_CLASSES = tuple(f"phase_{i:02d}" for i in range(N_PHASES)) + ("background",)
PHASE_COLUMNS = ("video_id", "start", "end", "split", "surgery_id", "phase_id")


def read_ophnet_segments(path: Path, n_phases: int = N_PHASES, repairs: RepairLog | None = None) -> dict[str, dict]:
    """``{video_id: {"split", "starts", "ends", "phases", "surgery_ids"}}`` from the phase CSV.

    Times beyond a day (e.g. milliseconds written as seconds) and repeated rows are faults
    (``repairs``: strict raises, lenient drops the row and records it)."""
    repairs = log_or_strict(repairs)
    rows = csv_rows(path)
    if not rows:
        raise AnnotationError(path, None, "file is empty", "header " + ",".join(PHASE_COLUMNS))
    head_no, header = rows[0]
    header = [h.strip() for h in header]
    if header != list(PHASE_COLUMNS):
        raise AnnotationError(path, head_no, f"header {','.join(header)!r}", ",".join(PHASE_COLUMNS))
    videos: dict[str, dict] = {}
    seen: dict[tuple, int] = {}
    for no, row in rows[1:]:
        if len(row) != len(PHASE_COLUMNS):
            raise AnnotationError(path, no, f"row has {len(row)} fields", f"{len(PHASE_COLUMNS)} fields")
        vid = row[0].strip()
        start = parse_float(path, no, row[1], "start")
        end = parse_float(path, no, row[2], "end")
        split = row[3].strip()
        surgery = parse_int(path, no, row[4], "surgery_id")
        phase = parse_int(path, no, row[5], "phase_id")
        if not vid:
            raise AnnotationError(path, no, "empty video_id", "a video id such as case_0002")
        if start < 0 or end <= start:
            raise AnnotationError(path, no, f"segment [{start}, {end}]", "0 <= start < end (seconds)")
        if not plausible_seconds(end):
            repairs.fault(path, no, f"segment end {describe_seconds(end)}",
                          f"times in seconds within a day ({MAX_VIDEO_SECONDS} s); milliseconds?", "drop this row")
            continue
        key = (vid, start, end, phase)
        if key in seen:
            repairs.fault(path, no, f"row repeats line {seen[key]} ({vid}, {start}-{end} s, phase {phase})",
                          "each segment once", "drop the repeat")
            continue
        seen[key] = no
        if split not in SPLITS:
            raise AnnotationError(path, no, f"split {split!r}", "train, val or test")
        if not 0 <= phase < n_phases:
            raise AnnotationError(path, no, f"phase_id {phase}", f"a phase id in 0..{n_phases - 1}")
        v = videos.setdefault(vid, {"split": split, "starts": [], "ends": [], "phases": [], "surgery_ids": [], "line": no})
        if v["split"] != split:
            raise AnnotationError(path, no, f"video {vid} in split {split!r}", f"{v['split']!r} as on line {v['line']}")
        v["starts"].append(start)
        v["ends"].append(end)
        v["phases"].append(phase)
        v["surgery_ids"].append(surgery)
    return videos


def read_ophnet_surgeries(path: Path, repairs: RepairLog | None = None) -> dict[str, tuple[int, ...]]:
    """``OphNet2024_surgery.csv``: video -> surgery type ids (a field may list several, ``"62,61"``); a video
    listed twice is a fault (lenient: the first row kept)."""
    repairs = log_or_strict(repairs)
    rows = csv_rows(path)
    if not rows or [h.strip() for h in rows[0][1]] != ["video_id", "surgery"]:
        raise AnnotationError(path, rows[0][0] if rows else None, "bad header", "video_id,surgery")
    out, lines = {}, {}
    for no, row in rows[1:]:
        if len(row) != 2:
            raise AnnotationError(path, no, f"row has {len(row)} fields", "video_id,surgery")
        vid = row[0].strip()
        if vid in out:
            repairs.fault(path, no, f"video {vid} listed again (first on line {lines[vid]})", "each video once",
                          "keep the first row")
            continue
        out[vid], lines[vid] = tuple(parse_int(path, no, s, "surgery id") for s in row[1].split(",")), no
    return out


def _find(root: Path, name: str) -> Path | None:
    for d in (root, root / "annotation", root / "annotations"):
        if (d / name).is_file():
            return d / name
    return None


@register("ophnet")
class OphNetAdapter(DatasetAdapter):
    """OphNet phase recognition: 52 phases + background (class 52), splits from the CSV's split column."""

    task = "phase"
    class_names = OPHNET_CLASSES
    default_split_scheme = "csv"
    split_schemes = ("csv",)
    background = N_PHASES

    def __init__(self, root, split_scheme=None, *, strict=True, require_media=False, lenient=False, annotation_csv: Path | None = None):
        super().__init__(root, split_scheme, strict=strict, require_media=require_media, lenient=lenient)
        self.annotation_csv = Path(annotation_csv) if annotation_csv else _find(self.root, "OphNet2024_loca_challenge_phase.csv")
        if self.annotation_csv is None:
            raise DatasetLayoutError(f"OphNetAdapter: OphNet2024_loca_challenge_phase.csv not found in {self.root} or {self.root}/annotation")

    def load(self) -> dict[str, list[PhaseVideo]]:
        sf = load_split_file("ophnet.json")
        self.repairs = RepairLog(self.lenient)
        videos = read_ophnet_segments(self.annotation_csv, sf["n_phases"], self.repairs)
        surg_path = _find(self.root, "OphNet2024_surgery.csv")
        surgeries = read_ophnet_surgeries(surg_path, self.repairs) if surg_path else {}
        out = empty_splits()
        for vid in sorted(videos):
            v = videos[vid]
            labels = segments_to_seconds(np.array(v["starts"]), np.array(v["ends"]), np.array(v["phases"]), self.background)
            extra = {"segment_surgery_ids": tuple(v["surgery_ids"])}
            if vid in surgeries:
                extra["surgeries"] = surgeries[vid]
            media = self._media(*(self.root / "videos" / f"{vid}{e}" for e in VIDEO_EXTS))
            out[v["split"]].append(PhaseVideo(vid, media, v["split"], labels, self.class_names, None, extra))
        if self.strict:
            counts = {s: len(out[s]) for s in SPLITS}
            if counts != sf["expected_videos"]:
                raise DatasetLayoutError(
                    f"OphNetAdapter: {self.annotation_csv} has {counts} videos per split; the 2024 challenge release "
                    f"has {sf['expected_videos']}. Pass strict=False to accept another version."
                )
        return out
