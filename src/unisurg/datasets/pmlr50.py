"""PmLR50 (laparoscopic liver resection with Pringle manoeuvre), labels as distributed in pickles::

    ROOT/labels_pkl/{train,val,test}/*.pickle      (also ROOT/labels/...)
    each: {video_id: [{"frame_id": 0, "phase_gt": 2, ...}, ...]}   one entry per 1-fps frame
    ROOT/frames/NN/...

Pickles are read with an allow-list unpickler (builtin containers, numbers, strings, numpy
arrays only).  The split comes from the video number (splits/pmlr50.json), not from which pickle
holds the video, because the release scripts name their folders inconsistently.
"""

from __future__ import annotations

import pickle
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
from unisurg.datasets.plausibility import MAX_VIDEO_SECONDS, integral
from unisurg.datasets.repairs import RepairLog, log_or_strict
from unisurg.datasets.safe_pickle import UnsafePickleError, load_pickle
from unisurg.datasets.splitfiles import load_split_file

N_PHASES = 5
PMLR50_PHASES = tuple(f"phase_{i}" for i in range(N_PHASES))  # the release publishes ids only


def read_pmlr_pickle(path: Path, repairs: RepairLog | None = None) -> dict[str, np.ndarray]:
    """``{video_id: phase per second int64 [n]}`` of one label pickle (entries must be frames 0..n-1).

    A ``phase_gt`` that is not an integer (2.9, NaN) is a fault (``repairs``: strict raises, lenient
    marks the second unlabelled, -1); an unreadable pickle is an :class:`AnnotationError` naming the file."""
    repairs = log_or_strict(repairs)
    try:
        data = load_pickle(path)
    except UnsafePickleError:
        raise  # refused on purpose; the message names the file and the global
    except pickle.UnpicklingError as e:
        raise AnnotationError(path, None, str(e).removeprefix(f"{path}: "), "a label pickle of dicts, lists, "
                              "numbers and strings") from None
    if not isinstance(data, dict):
        raise AnnotationError(path, None, f"top level is {type(data).__name__}", "a dict {video_id: [frame dicts]}")
    out = {}
    for vid, frames in data.items():
        where = f"video {vid!r}"
        if not isinstance(frames, (list, tuple)) or not frames:
            raise AnnotationError(path, None, f"{where} holds {type(frames).__name__}", "a non-empty list of frame dicts")
        if len(frames) > MAX_VIDEO_SECONDS + 1:
            raise AnnotationError(path, None, f"{where} has {len(frames)} frames", "at most a day of 1-fps frames")
        labels = np.empty(len(frames), np.int64)
        for k, fr in enumerate(frames):
            if not isinstance(fr, dict) or "frame_id" not in fr or "phase_gt" not in fr:
                raise AnnotationError(path, None, f"{where} entry {k} is not a dict with frame_id and phase_gt",
                                      "{'frame_id': int, 'phase_gt': int, ...}")
            fid, ph = fr["frame_id"], fr["phase_gt"]
            if integral(fid) != k:
                raise AnnotationError(path, None, f"{where} entry {k} has frame_id {fid!r}", f"frame_id {k} (1 fps, from 0)")
            phase = integral(ph)
            if phase is None:
                repairs.fault(path, None, f"{where} frame {k} has phase_gt {ph!r} (not an integer)",
                              f"an integer phase 0..{N_PHASES - 1}", "mark this second unlabelled (-1)")
                phase = -1
            elif not 0 <= phase < N_PHASES:
                raise AnnotationError(path, None, f"{where} frame {k} has phase_gt {ph!r}", f"0..{N_PHASES - 1}")
            labels[k] = phase
        out[str(vid)] = labels
    return out


@register("pmlr50")
class PmLR50Adapter(DatasetAdapter):
    """PmLR50 workflow recognition: 50 videos, 5 phases at 1 fps; PmNet split (35 / 5 / 10)."""

    task = "phase"
    class_names = PMLR50_PHASES
    default_split_scheme = "pmnet_v1"
    split_schemes = ("pmnet_v1",)

    def _pickles(self) -> list[Path]:
        for d in (self.root / "labels_pkl", self.root / "labels"):
            if d.is_dir():
                found = sorted(p for p in d.rglob("*") if p.suffix in (".pickle", ".pkl"))
                if found:
                    return found
        raise DatasetLayoutError(f"PmLR50Adapter: no .pickle/.pkl files under {self.root}/labels_pkl or {self.root}/labels")

    def load(self) -> dict[str, list[PhaseVideo]]:
        labels: dict[int, np.ndarray] = {}
        source: dict[int, Path] = {}
        self.repairs = RepairLog(self.lenient)
        for p in self._pickles():
            for vid, lab in read_pmlr_pickle(p, self.repairs).items():
                try:
                    n = int(vid)
                except ValueError:
                    raise AnnotationError(p, None, f"video id {vid!r}", "a video number such as '01'") from None
                if n in labels and not np.array_equal(labels[n], lab):
                    raise AnnotationError(p, None, f"video {vid} differs from its copy in {source[n]}", "one labelling per video")
                labels[n], source[n] = lab, p
        scheme = load_split_file("pmlr50.json")["schemes"][self.split_scheme]
        out, missing = empty_splits(), []
        for split, videos in scheme.items():
            for n in videos:
                if n not in labels:
                    missing.append(f"video {n:02d}")
                    continue
                media = self._media(self.root / "frames" / f"{n:02d}")
                out[split].append(PhaseVideo(f"{n:02d}", media, split, labels[n], self.class_names, 1.0))
        self._missing("videos", missing)
        return out
