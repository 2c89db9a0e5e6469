"""Clip classification sets: SurgicalActions160, AVOS, PolypDiag.

SurgicalActions160 (16 classes x 10 clips, no official split)::

    ROOT/CC_<class name>/CC_KK.mp4      (or the clips CC_KK.mp4 directly in ROOT)

AVOS and PolypDiag (splits distributed with the data)::

    ROOT/videos/<name>.mp4
    ROOT/splits/train.txt, ROOT/splits/val.txt      lines '<name>.mp4,<label>'
"""

from __future__ import annotations

import re
from pathlib import Path

from unisurg.datasets.base import (
    AnnotationError,
    ClipSample,
    DatasetAdapter,
    DatasetLayoutError,
    empty_splits,
    register,
)
from unisurg.datasets.cholec import VIDEO_EXTS
from unisurg.datasets.splitfiles import carve, load_split_file
from unisurg.datasets.textfile import numbered_lines, parse_int

SURGICALACTIONS160_CLASSES = (
    "abdominal_access", "injection", "cutting", "blunt_dissection", "dissection_thermal", "irrigation",
    "coagulation", "suction", "needle_positioning", "needle_puncture", "knot_pushing", "knotting",
    "thread_cut", "sling_in", "endobag_in", "endobag_out",
)
_SA_CLIP = re.compile(r"^(\d{2})_(\d{2})$")


@register("surgicalactions160")
class SurgicalActions160Adapter(DatasetAdapter):
    """SurgicalActions160: 16 action classes, 10 clips each; our fixed split ``fixed_v1``
    (clips 01-06 train, 07-08 val, 09-10 test in every class)."""

    task = "clip"
    class_names = SURGICALACTIONS160_CLASSES
    default_split_scheme = "fixed_v1"
    split_schemes = ("fixed_v1",)

    def load(self) -> dict[str, list[ClipSample]]:
        sf = load_split_file("surgicalactions160.json")
        split_of = {k: s for s, ks in sf["schemes"][self.split_scheme].items() for k in ks}
        clips = {}
        for p in sorted(self.root.rglob("*")):
            m = _SA_CLIP.match(p.stem)
            if not (p.is_file() and p.suffix.lower() in VIDEO_EXTS and m):
                continue
            cls, k = int(m.group(1)), int(m.group(2))
            if not 1 <= cls <= len(self.class_names) or k not in split_of:
                raise DatasetLayoutError(f"SurgicalActions160Adapter: {p} is not CC_KK with class 01-16 and clip 01-10")
            if (cls, k) in clips:
                raise DatasetLayoutError(f"SurgicalActions160Adapter: clip {p.stem} found twice: {clips[(cls, k)]} and {p}")
            clips[(cls, k)] = p
        if not clips:
            raise DatasetLayoutError(f"SurgicalActions160Adapter: no CC_KK video clips under {self.root}")
        out = empty_splits()
        for (cls, k), p in sorted(clips.items()):
            split = split_of[k]
            out[split].append(ClipSample(p.stem, p, split, cls - 1))
        expected = [f"{c:02d}_{k:02d}" for c in range(1, sf["n_classes"] + 1) for k in range(1, sf["clips_per_class"] + 1)]
        self._missing("clips", [e for e in expected if (int(e[:2]), int(e[3:])) not in clips])
        return out


def read_split_list(path: Path, labels: range | None) -> list[tuple[str, int, int]]:
    """``<name>,<label>`` lines -> ``[(name, label, line_number)]``."""
    out = []
    for no, line in numbered_lines(path):
        parts = line.strip().split(",")
        if len(parts) != 2 or not parts[0].strip():
            raise AnnotationError(path, no, f"line {line.strip()!r}", "'<video file>,<label>'")
        label = parse_int(path, no, parts[1], "label")
        if label < 0 or (labels is not None and label not in labels):
            allowed = f"{labels.start}..{labels.stop - 1}" if labels is not None else ">= 0"
            raise AnnotationError(path, no, f"label {label}", f"a label in {allowed}")
        out.append((parts[0].strip(), label, no))
    return out


class _SplitListAdapter(DatasetAdapter):
    """AVOS / PolypDiag: ``splits/train.txt`` and ``splits/val.txt`` as distributed.

    ``carved_val_v1`` (default) reports on the distributed val list as ``"test"`` and holds out 15%
    of each class of train.txt as ``"val"``; ``as_distributed`` keeps train/val as named.
    """

    task = "clip"
    default_split_scheme = "carved_val_v1"
    split_schemes = ("carved_val_v1", "as_distributed")

    def _label_range(self) -> range | None:
        return range(len(self.class_names)) if self.class_names else None

    def load(self) -> dict[str, list[ClipSample]]:
        lists = {}
        for name in ("train", "val"):
            path = self.root / "splits" / f"{name}.txt"
            if not path.is_file():
                raise DatasetLayoutError(f"{type(self).__name__}: {path} not found (expected splits/train.txt and splits/val.txt)")
            lists[name] = read_split_list(path, self._label_range())
        if not self.class_names:
            n = 1 + max(lab for rows in lists.values() for _, lab, _ in rows)
            self.class_names = tuple(f"class_{i}" for i in range(n))
        samples = {}
        missing = []
        for name, rows in lists.items():
            samples[name] = []
            for file, label, _ in rows:
                path = self.root / "videos" / file
                if not path.exists():
                    missing.append(str(path))
                samples[name].append(ClipSample(Path(file).stem, path, name, label))
        if self.require_media and missing:
            raise DatasetLayoutError(f"{type(self).__name__}: {len(missing)} listed videos not found, e.g. {missing[0]}")
        overlap = {s.clip_id for s in samples["train"]} & {s.clip_id for s in samples["val"]}
        if overlap:
            raise DatasetLayoutError(f"{type(self).__name__}: clips in both train.txt and val.txt: {sorted(overlap)[:5]}")
        out = empty_splits()
        if self.split_scheme == "as_distributed":
            out["train"], out["val"] = samples["train"], samples["val"]
            return out
        frac = load_split_file("clip_sets.json")["carved_val_fraction"]
        kept, held = carve(samples["train"], frac, key=lambda s: s.clip_id, group=lambda s: s.label)
        out["train"] = kept
        out["val"] = [ClipSample(s.clip_id, s.path, "val", s.label) for s in held]
        out["test"] = [ClipSample(s.clip_id, s.path, "test", s.label) for s in samples["val"]]
        return out


@register("polypdiag")
class PolypDiagAdapter(_SplitListAdapter):
    """PolypDiag video diagnosis (0 normal, 1 abnormal)."""

    class_names = ("normal", "abnormal")


@register("avos")
class AVOSAdapter(_SplitListAdapter):
    """AVOS open-surgery action clips; class names ``class_<k>`` (the list files carry ids only)."""

    class_names = ()
