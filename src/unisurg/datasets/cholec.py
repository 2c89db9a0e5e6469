"""Cholecystectomy phase datasets in the CAMMA/TUM text format: Cholec80, M2CAI16-Workflow, and
the synthetic world written by ``unisurg synth`` (which uses the Cholec80 layout).

Cholec80 as distributed::

    ROOT/videos/videoNN.mp4
    ROOT/phase_annotations/videoNN-phase.txt   Frame<TAB>Phase, one row per frame at 25 fps
    ROOT/tool_annotations/videoNN-tool.txt     Frame<TAB>7 tools, one row every 25 frames

(the annotation files may also sit directly in ROOT).  M2CAI16-Workflow::

    ROOT/train_dataset/workflow_video_NN.{mp4,txt}        27 videos
    ROOT/test_dataset/test_workflow_video_NN.{mp4,txt}    14 videos
"""

from __future__ import annotations

import json
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
from unisurg.datasets.framephase import (
    names_to_indices,
    read_frame_phase_file,
    read_tool_file,
    tools_per_second,
)
from unisurg.datasets.plausibility import MAX_VIDEO_SECONDS, describe_seconds
from unisurg.datasets.repairs import RepairLog
from unisurg.datasets.splitfiles import fraction_split, load_split_file
from unisurg.datasets.textfile import numbered_lines
from unisurg.datasets.timeline import frame_labels_to_seconds
from unisurg.datasets.truncation import check_tool_rows_against_phase_file

CHOLEC80_PHASES = (
    "Preparation",
    "CalotTriangleDissection",
    "ClippingCutting",
    "GallbladderDissection",
    "GallbladderPackaging",
    "CleaningCoagulation",
    "GallbladderRetraction",
)
CHOLEC80_TOOLS = ("Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag")
M2CAI16_PHASES = (
    "TrocarPlacement",
    "Preparation",
    "CalotTriangleDissection",
    "ClippingCutting",
    "GallbladderDissection",
    "GallbladderPackaging",
    "CleaningCoagulation",
    "GallbladderRetraction",
)

_PHASE_FILE = re.compile(r"^video(\d+)-phase\.txt$")
VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".mpg", ".webm")


def read_phase_names_file(path: Path) -> tuple[str, ...]:
    """``phase_names.txt``: one phase name per line, in label order."""
    names = tuple(line.strip() for _, line in numbered_lines(path))
    if len(set(names)) != len(names):
        raise AnnotationError(path, None, "duplicate phase names", "each name once")
    return names


def drop_implausible_frames(path: Path, frames, names: list[str], line_nos: list[int], fps: float, repairs: RepairLog):
    """Rows of a sparse ``frame phase`` file up to a day of video (a frame index with extra digits as
    the last row would otherwise make a label vector of days); later rows are a fault (lenient: dropped)."""
    keep = frames <= MAX_VIDEO_SECONDS * fps
    if keep.all():
        return frames, names, line_nos
    k = int(np.argmin(keep))
    repairs.fault(path, line_nos[k], f"frame {frames[k]} lies {describe_seconds(frames[k] / fps)} into the video at "
                  f"{fps:g} fps", "frames within a day of video", "drop the rows from here on")
    return frames[:k], names[:k], line_nos[:k]


@register("cholec80")
class Cholec80Adapter(DatasetAdapter):
    """Cholec80 phase recognition (7 phases, 25 fps annotations, tools in ``extra["tools"]``).

    Split schemes: ``"32_8_40"`` (default: train 1-32, val 33-40, test 41-80), ``"40_40"``, and
    ``"by_fraction"`` (every ``videoNN-phase.txt`` found, ordered by NN, cut into train/val/test by
    ``fractions``; used for the synthetic world).

    Phase names: ``phase_names`` if given, else ``ROOT/phase_names.txt`` if present, else the 7
    Cholec80 phases.  Labels per second take frames 0, 25, 50, ... of the phase file.
    """

    task = "phase"
    class_names = CHOLEC80_PHASES
    default_split_scheme = "32_8_40"
    split_schemes = ("32_8_40", "40_40", "by_fraction")
    split_file = "cholec80.json"

    def __init__(self, root, split_scheme=None, *, strict=True, require_media=False, lenient=False,
                 annotation_fps: float | None = None, tool_stride: int | None = None,
                 fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), phase_names: tuple[str, ...] | None = None):
        super().__init__(root, split_scheme, strict=strict, require_media=require_media, lenient=lenient)
        defaults = self._default_rates()
        self.annotation_fps = float(annotation_fps if annotation_fps is not None else defaults[0])
        self.tool_stride = int(tool_stride if tool_stride is not None else defaults[1])
        self.fractions = tuple(fractions)
        names_file = self.root / "phase_names.txt"
        if phase_names is not None:
            self.class_names = tuple(phase_names)
        elif names_file.is_file():
            self.class_names = read_phase_names_file(names_file)
        self._names_fixed = phase_names is not None or names_file.is_file()

    def _default_rates(self) -> tuple[float, int]:
        """``(annotation fps, tool row stride in frames)``: Cholec80 annotates at 25 fps, tools every 25 frames."""
        return 25.0, 25

    # layout -----------------------------------------------------------------------------------

    def _phase_dir(self) -> Path:
        for d in (self.root / "phase_annotations", self.root):
            if d.is_dir() and any(_PHASE_FILE.match(p.name) for p in d.iterdir()):
                return d
        raise DatasetLayoutError(
            f"{type(self).__name__}: no videoNN-phase.txt under {self.root}/phase_annotations or {self.root}"
        )

    def _tool_file(self, stem: str) -> Path | None:
        for d in (self.root / "tool_annotations", self.root):
            p = d / f"{stem}-tool.txt"
            if p.is_file():
                return p
        return None

    def _assignments(self, phase_dir: Path) -> list[tuple[str, str, Path]]:
        """``[(split, video stem, phase file)]`` for the selected scheme."""
        if self.split_scheme == "by_fraction":
            found = sorted(
                ((int(m.group(1)), p) for p in phase_dir.iterdir() if (m := _PHASE_FILE.match(p.name))),
                key=lambda x: x[0],
            )
            n_tr, n_va, _ = fraction_split(len(found), self.fractions)
            out = []
            for k, (_, p) in enumerate(found):
                split = "train" if k < n_tr else ("val" if k < n_tr + n_va else "test")
                out.append((split, p.name[: -len("-phase.txt")], p))
            return out
        scheme = load_split_file(self.split_file)["schemes"][self.split_scheme]
        out, missing = [], []
        for split in ("train", "val", "test"):
            for n in scheme[split]:
                stem = f"video{n:02d}"
                p = phase_dir / f"{stem}-phase.txt"
                if p.is_file():
                    out.append((split, stem, p))
                else:
                    missing.append(str(p))
        self._missing("phase annotation files", missing)
        return out

    # names ------------------------------------------------------------------------------------

    def _resolve_class_names(self, files: list[Path]) -> None:
        """Hook for the synthetic world, whose phase names come from its files."""

    # loading ----------------------------------------------------------------------------------

    def load(self) -> dict[str, list[PhaseVideo]]:
        phase_dir = self._phase_dir()
        assignments = self._assignments(phase_dir)
        self._resolve_class_names([p for _, _, p in assignments])
        hint = "" if self._names_fixed else f" (list other names in {self.root / 'phase_names.txt'})"
        out = empty_splits()
        self.repairs = RepairLog(self.lenient)
        for split, stem, path in assignments:
            frames, names, line_nos = read_frame_phase_file(path, consecutive=True)
            idx = names_to_indices(path, names, line_nos, self.class_names, hint)
            labels = frame_labels_to_seconds(frames, idx, self.annotation_fps)
            extra = {"n_source_frames": int(frames[-1]) + 1}
            tool_path = self._tool_file(stem)
            if tool_path is not None:
                _, presence, tool_names = read_tool_file(tool_path, self.tool_stride)
                presence = check_tool_rows_against_phase_file(path, tool_path, int(frames[-1]) + 1, presence,
                                                              self.tool_stride, self.repairs)
                extra["tools"] = tools_per_second(tool_path, presence, self.tool_stride, self.annotation_fps, labels.shape[0],
                                                  self.repairs)
                extra["tool_names"] = tool_names
            media = self._media(
                *(self.root / "videos" / f"{stem}{e}" for e in VIDEO_EXTS),
                self.root / "frames" / stem,
                *(self.root / f"{stem}{e}" for e in VIDEO_EXTS),
            )
            out[split].append(PhaseVideo(stem, media, split, labels, tuple(self.class_names), self.annotation_fps, extra))
        return out


@register("synthetic")
class SyntheticAdapter(Cholec80Adapter):
    """The synthetic surgical world of ``unisurg synth`` (Cholec80 layout, any number of videos).

    Default split ``"by_fraction"`` (60/20/20 by video number).  Frame rate and tool stride come
    from ``ROOT/synth.json`` when present (else 25 and 25, the Cholec80 values).  Phase names: ``phase_names`` or
    ``ROOT/phase_names.txt`` (one per line, in label order) when present; otherwise the Cholec80
    phases if every name found is one of them, else the sorted set of names found in the files.
    """

    default_split_scheme = "by_fraction"

    def _default_rates(self) -> tuple[float, int]:
        """From ``ROOT/synth.json`` (written by ``unisurg synth``: params.fps, params.tool_stride) when present."""
        meta = self.root / "synth.json"
        if not meta.is_file():
            return super()._default_rates()
        try:
            params = json.loads(meta.read_text(encoding="utf-8"))["params"]
            return float(params["fps"]), int(params.get("tool_stride", 25))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise AnnotationError(meta, None, f"unreadable synth.json ({e})", "{'params': {'fps': ..., 'tool_stride': ...}}") from None

    def _resolve_class_names(self, files: list[Path]) -> None:
        if self._names_fixed:
            return
        found: set[str] = set()
        for p in files:
            _, names, _ = read_frame_phase_file(p, consecutive=True)
            found.update(names)
        if not found <= set(CHOLEC80_PHASES):
            self.class_names = tuple(sorted(found))


@register("m2cai16")
class M2CAI16Adapter(DatasetAdapter):
    """M2CAI16-Workflow phase recognition (8 phases, ``frame phase`` rows at 25 fps).

    Split schemes: ``"23_4_14"`` (default: training videos 24-27 held out as validation) and
    ``"27_14"`` (as distributed).  Video ids are the distributed stems, ``workflow_video_NN`` and
    ``test_workflow_video_NN``.
    """

    task = "phase"
    class_names = M2CAI16_PHASES
    default_split_scheme = "23_4_14"
    split_schemes = ("23_4_14", "27_14")
    annotation_fps = 25.0

    def load(self) -> dict[str, list[PhaseVideo]]:
        scheme = load_split_file("m2cai16.json")["schemes"][self.split_scheme]
        out = empty_splits()
        missing = []
        self.repairs = RepairLog(self.lenient)
        for split in ("train", "val", "test"):
            folder, prefix = ("test_dataset", "test_workflow_video") if split == "test" else ("train_dataset", "workflow_video")
            for n in scheme[split]:
                stem = f"{prefix}_{n:02d}"
                path = self.root / folder / f"{stem}.txt"
                if not path.is_file():
                    missing.append(str(path))
                    continue
                frames, names, line_nos = read_frame_phase_file(path, consecutive=False)
                frames, names, line_nos = drop_implausible_frames(path, frames, names, line_nos, self.annotation_fps,
                                                                  self.repairs)
                idx = names_to_indices(path, names, line_nos, self.class_names)
                labels = frame_labels_to_seconds(frames, idx, self.annotation_fps)
                media = self._media(*(self.root / folder / f"{stem}{e}" for e in VIDEO_EXTS))
                out[split].append(PhaseVideo(stem, media, split, labels, self.class_names, self.annotation_fps,
                                             {"n_source_frames": int(frames[-1]) + 1}))
        self._missing("annotation files", missing)
        return out
