"""PitVis-2023 (endoscopic pituitary surgery), step recognition, as distributed::

    ROOT/video_NN.mp4
    ROOT/annotations_NN.csv    int_video,int_time,int_step,int_instrument1,int_instrument2  (1 fps)

``int_time`` is the second (contiguous from 0), ``int_step`` is -1 (out of patient / not started /
ended) or a step 1..14.  Class 0 is that background state, class ``k`` is step ``k``.  Frames
extracted by the challenge helper (``NN/00000.png``...) are JPEG bytes under ``.png`` names; read
them with :func:`unisurg.data.image_files.read_image`, which decodes by content.
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
from unisurg.datasets.splitfiles import load_split_file
from unisurg.datasets.textfile import csv_rows, parse_int

PITVIS_STEPS = (
    "background",
    "nasal_corridor_creation",
    "anterior_sphenoidotomy",
    "septum_displacement",
    "sphenoid_sinus_clearance",
    "sellotomy",
    "durotomy",
    "tumour_excision",
    "haemostasis",
    "synthetic_graft_placement",
    "fat_graft_placement",
    "gasket_seal_construct",
    "dural_sealant",
    "nasal_packing",
    "debris_clearance",
)
REQUIRED_COLUMNS = ("int_video", "int_time", "int_step")


def read_pitvis_annotations(path, video_number: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(step class per second int64 [n], {"instrument1", "instrument2"} int64 [n] when present)``."""
    rows = csv_rows(path)
    if not rows:
        raise AnnotationError(path, None, "file is empty", "header 'int_video,int_time,int_step,...'")
    head_no, header = rows[0]
    header = [h.strip() for h in header]
    col = {name: header.index(name) for name in header if name}
    for name in REQUIRED_COLUMNS:
        if name not in col:
            raise AnnotationError(path, head_no, f"header {','.join(header)!r} lacks {name!r}", "columns int_video,int_time,int_step,...")
    extra_cols = [c for c in ("int_instrument1", "int_instrument2") if c in col]
    steps, extras = [], {c: [] for c in extra_cols}
    for no, row in rows[1:]:
        if len(row) != len(header):
            raise AnnotationError(path, no, f"row has {len(row)} fields", f"{len(header)} fields like the header")
        video = parse_int(path, no, row[col["int_video"]], "int_video")
        if video_number is not None and video != video_number:
            raise AnnotationError(path, no, f"int_video {video}", f"{video_number} (the number in the file name)")
        t = parse_int(path, no, row[col["int_time"]], "int_time")
        if t != len(steps):
            raise AnnotationError(path, no, f"int_time {t}", f"{len(steps)} (one row per second from 0)")
        step = parse_int(path, no, row[col["int_step"]], "int_step")
        if step != -1 and not 1 <= step <= len(PITVIS_STEPS) - 1:
            raise AnnotationError(path, no, f"int_step {step}", f"-1 or a step in 1..{len(PITVIS_STEPS) - 1}")
        steps.append(0 if step == -1 else step)
        for c in extra_cols:
            extras[c].append(parse_int(path, no, row[col[c]], c))
    if not steps:
        raise AnnotationError(path, head_no, "no rows after the header", "one row per second")
    return np.asarray(steps, np.int64), {c[len("int_"):]: np.asarray(v, np.int64) for c, v in extras.items()}


@register("pitvis")
class PitVisAdapter(DatasetAdapter):
    """PitVis step recognition: 14 steps + background, 1 fps; our fixed split (see splits/pitvis.json)."""

    task = "phase"
    class_names = PITVIS_STEPS
    default_split_scheme = "fixed_v1"
    split_schemes = ("fixed_v1",)

    def load(self) -> dict[str, list[PhaseVideo]]:
        sf = load_split_file("pitvis.json")
        may_be_absent = set(sf.get("may_be_absent", []))
        out, missing = empty_splits(), []
        for split, videos in sf["schemes"][self.split_scheme].items():
            for n in videos:
                path = self.root / f"annotations_{n:02d}.csv"
                if not path.is_file():
                    if n not in may_be_absent:
                        missing.append(str(path))
                    continue
                labels, extra = read_pitvis_annotations(path, n)
                media = self._media(self.root / f"video_{n:02d}.mp4", self.root / f"{n:02d}", self.root / f"video_{n:02d}")
                out[split].append(PhaseVideo(f"video_{n:02d}", media, split, labels, self.class_names, 1.0, extra))
        self._missing("annotation files", missing)
        return out
