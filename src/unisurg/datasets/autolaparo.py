"""AutoLaparo task 1 (laparoscopic hysterectomy workflow), as distributed::

    ROOT/videos/NN.mp4
    ROOT/labels/label_NN.txt     header line, then '<frame> <phase>' at 1 fps, phases 1..7

Frames are numbered from 1 in the release (the first row is second 0); numbering from 0 is read
the same way.  Phase ``k`` in the file is class ``k - 1``.
"""

from __future__ import annotations

import numpy as np

from unisurg.datasets.base import (
    AnnotationError,
    DatasetAdapter,
    PhaseVideo,
    empty_splits,
    register,
)
from unisurg.datasets.cholec import VIDEO_EXTS
from unisurg.datasets.splitfiles import load_split_file
from unisurg.datasets.textfile import numbered_lines, parse_int

AUTOLAPARO_PHASES = (
    "Preparation",
    "Dividing Ligament and Peritoneum",
    "Dividing Uterine Vessels and Ligament",
    "Transecting the Vagina",
    "Specimen Removal",
    "Suturing",
    "Washing",
)


def read_autolaparo_labels(path) -> np.ndarray:
    """Per-second class indices (0..6) of one ``label_NN.txt``."""
    lines = numbered_lines(path)
    if lines and not lines[0][1].split()[0].lstrip("-").isdigit():
        lines = lines[1:]  # header
    if not lines:
        raise AnnotationError(path, None, "no annotation rows", "'<frame> <phase 1-7>' rows at 1 fps")
    labels = []
    first = None
    for no, line in lines:
        tokens = line.split()
        if len(tokens) != 2:
            raise AnnotationError(path, no, f"row {line.strip()!r} has {len(tokens)} fields", "'<frame> <phase 1-7>'")
        frame = parse_int(path, no, tokens[0], "frame index")
        phase = parse_int(path, no, tokens[1], "phase")
        if first is None:
            if frame not in (0, 1):
                raise AnnotationError(path, no, f"first frame is {frame}", "frame 1 (or 0)")
            first = frame
        expected = first + len(labels)
        if frame != expected:
            raise AnnotationError(path, no, f"frame {frame}", f"frame {expected} (one row per second)")
        if not 1 <= phase <= len(AUTOLAPARO_PHASES):
            raise AnnotationError(path, no, f"phase {phase}", f"a phase id in 1..{len(AUTOLAPARO_PHASES)}")
        labels.append(phase - 1)
    return np.asarray(labels, dtype=np.int64)


@register("autolaparo")
class AutoLaparoAdapter(DatasetAdapter):
    """AutoLaparo workflow recognition: 21 videos, 7 phases, split 1-10 / 11-14 / 15-21."""

    task = "phase"
    class_names = AUTOLAPARO_PHASES
    default_split_scheme = "10_4_7"
    split_schemes = ("10_4_7",)

    def load(self) -> dict[str, list[PhaseVideo]]:
        scheme = load_split_file("autolaparo.json")["schemes"][self.split_scheme]
        label_dir = self.root / "labels" if (self.root / "labels").is_dir() else self.root
        out, missing = empty_splits(), []
        for split in ("train", "val", "test"):
            for n in scheme[split]:
                path = label_dir / f"label_{n:02d}.txt"
                if not path.is_file():
                    missing.append(str(path))
                    continue
                labels = read_autolaparo_labels(path)
                media = self._media(*(self.root / "videos" / f"{n:02d}{e}" for e in VIDEO_EXTS),
                                    self.root / "frames" / f"{n:02d}")
                out[split].append(PhaseVideo(f"{n:02d}", media, split, labels, self.class_names, 1.0))
        self._missing("label files", missing)
        return out
