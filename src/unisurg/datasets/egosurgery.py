"""EgoSurgery-Phase (egocentric open surgery), one CSV per video view::

    ROOT/<dir>/<VV>_<view>.csv     Frame,Phase     (dir = annotations/, egosurgery_phase/, phase/ or ROOT)
    ROOT/images/<VV>_<view>/...    extracted frames   or   ROOT/videos/<VV>_<view>.mp4

``Frame`` is the index of the extracted frame, written either as an integer or as the image stem
(``01_1_0124``: the digits after the last underscore).  ``Phase`` is one of the 9 phase names (any
case) or its index.  Rows must be consecutive frames; they are sampled at ``annotation_fps``
(default 0.5 fps: the release has ~15 h of video and ~27k annotated frames), and second ``t``
takes row ``floor(t * annotation_fps)``.  The split is by video number (all views of a video share
it).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from unisurg.datasets.base import (
    AnnotationError,
    DatasetAdapter,
    DatasetLayoutError,
    PhaseVideo,
    empty_splits,
    register,
)
from unisurg.datasets.cholec import VIDEO_EXTS
from unisurg.datasets.splitfiles import load_split_file
from unisurg.datasets.textfile import csv_rows
from unisurg.datasets.timeline import frame_labels_to_seconds

EGOSURGERY_PHASES = (
    "disinfection", "design", "anesthesia", "incision", "dissection",
    "hemostasis", "irrigation", "closure", "dressing",
)
_VIEW_FILE = re.compile(r"^(\d+)(?:_(\d+))?\.csv$")
_FRAME = re.compile(r"^(?:.*_)?(\d+)(?:\.\w+)?$")


def read_egosurgery_csv(path: Path) -> tuple[np.ndarray, int]:
    """``(phase index per annotated frame int64 [n], first frame index)`` of one view CSV."""
    rows = csv_rows(path)
    if not rows:
        raise AnnotationError(path, None, "file is empty", "header 'Frame,Phase'")
    head_no, header = rows[0]
    if [h.strip().lower() for h in header] != ["frame", "phase"]:
        raise AnnotationError(path, head_no, f"header {','.join(header)!r}", "'Frame,Phase'")
    index = {n: i for i, n in enumerate(EGOSURGERY_PHASES)}
    labels, first, prev = [], None, None
    for no, row in rows[1:]:
        if len(row) != 2:
            raise AnnotationError(path, no, f"row has {len(row)} fields", "'<frame>,<phase>'")
        m = _FRAME.match(row[0].strip())
        if not m:
            raise AnnotationError(path, no, f"frame {row[0]!r}", "an integer or an image stem ending in _<digits>")
        frame = int(m.group(1))
        if prev is not None and frame != prev + 1:
            raise AnnotationError(path, no, f"frame {frame} follows {prev}", f"frame {prev + 1} (consecutive extracted frames)")
        first = frame if first is None else first
        prev = frame
        token = row[1].strip()
        if token.lstrip("-").isdigit():
            k = int(token)
            if not 0 <= k < len(EGOSURGERY_PHASES):
                raise AnnotationError(path, no, f"phase {k}", f"0..{len(EGOSURGERY_PHASES) - 1} or a phase name")
        else:
            k = index.get(token.lower())
            if k is None:
                raise AnnotationError(path, no, f"unknown phase {token!r}", "one of " + ", ".join(EGOSURGERY_PHASES))
        labels.append(k)
    if not labels:
        raise AnnotationError(path, head_no, "no rows after the header", "one row per extracted frame")
    return np.asarray(labels, np.int64), int(first)


@register("egosurgery")
class EgoSurgeryAdapter(DatasetAdapter):
    """EgoSurgery-Phase: 9 phases; split train 1 2 3 4 8 9 11 13 14 15 17 20 21 / val 5 19 / test 6 7 10 12 18."""

    task = "phase"
    class_names = EGOSURGERY_PHASES
    default_split_scheme = "official"
    split_schemes = ("official",)

    def __init__(self, root, split_scheme=None, *, strict=True, require_media=False, lenient=False, annotation_fps: float = 0.5):
        super().__init__(root, split_scheme, strict=strict, require_media=require_media, lenient=lenient)
        self.annotation_fps = float(annotation_fps)

    def _csv_dir(self) -> Path:
        for d in (self.root / "annotations", self.root / "egosurgery_phase", self.root / "phase", self.root):
            if d.is_dir() and any(_VIEW_FILE.match(p.name) for p in d.iterdir()):
                return d
        raise DatasetLayoutError(f"EgoSurgeryAdapter: no <video>_<view>.csv files under {self.root}")

    def load(self) -> dict[str, list[PhaseVideo]]:
        scheme = load_split_file("egosurgery.json")["schemes"][self.split_scheme]
        split_of = {n: s for s, vids in scheme.items() for n in vids}
        csv_dir = self._csv_dir()
        out = empty_splits()
        seen = set()
        for path in sorted(csv_dir.iterdir()):
            m = _VIEW_FILE.match(path.name)
            if not m:
                continue
            video = int(m.group(1))
            split = split_of.get(video)
            if split is None:
                raise DatasetLayoutError(f"EgoSurgeryAdapter: {path} belongs to video {video}, which the split file does not list")
            seen.add(video)
            rows, first = read_egosurgery_csv(path)
            labels = frame_labels_to_seconds(np.arange(rows.size), rows, self.annotation_fps)
            vid = path.stem
            media = self._media(self.root / "images" / vid, *(self.root / "videos" / f"{vid}{e}" for e in VIDEO_EXTS))
            out[split].append(PhaseVideo(vid, media, split, labels, self.class_names, self.annotation_fps,
                                         {"video_number": video, "first_frame": first, "annotation_rows": rows}))
        self._missing("videos", [f"video {n}" for n in sorted(split_of) if n not in seen])
        return out
