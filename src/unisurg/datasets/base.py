"""Record types, the adapter base class and the dataset registry.

Every benchmark dataset is read by one adapter class::

    adapter = get_adapter("cholec80")(root, split_scheme="32_8_40")
    splits = adapter.load()          # {"train": [PhaseVideo, ...], "val": [...], "test": [...]}

An adapter reads the dataset exactly as its authors distribute it; a malformed annotation is an
:class:`AnnotationError` naming the file, the line and what was expected.  The records below are
plain frozen dataclasses so that feature extraction and probing can consume them without knowing
which dataset they came from.

Conventions shared by all records
---------------------------------
* ``split`` is one of ``"train"``, ``"val"``, ``"test"``.
* Phase labels are one integer per second of video (1 fps): entry ``t`` is the label of the frame
  on screen at time ``t`` seconds, i.e. source frame ``floor(t * fps_source)``.
* A label of ``-1`` means "no label for this second" (consumers must skip it).
* Paths point where the media is expected; they are not required to exist unless the adapter is
  built with ``require_media=True``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

SPLITS = ("train", "val", "test")


class AnnotationError(ValueError):
    """A dataset file does not have the format its authors distribute.

    The message always names the file, the line (when the format has lines) and what was expected.
    """

    def __init__(self, path: Path | str, line: int | None, problem: str, expected: str | None = None):
        where = f"{path}:{line}" if line is not None else f"{path}"
        msg = f"{where}: {problem}"
        if expected:
            msg += f" (expected {expected})"
        super().__init__(msg)
        self.path = Path(path)
        self.line = line


class UnknownDatasetError(KeyError):
    """``get_adapter`` was given a name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class DatasetLayoutError(FileNotFoundError):
    """Files the dataset should contain are missing or the folder layout is not the distributed one."""


# --------------------------------------------------------------------------------------------
# Record types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PhaseVideo:
    """One video for phase/step recognition.

    Attributes:
        video_id: dataset-unique id (e.g. ``"video41"``).
        frames: a video file OR a folder of frames (1 fps images for datasets distributed that way).
        split: ``"train"``, ``"val"`` or ``"test"``.
        labels: ``int64 [n_seconds]``, one class index per second (1 fps); ``-1`` = unlabelled.
        class_names: names of the class indices, ``len(class_names)`` classes.
        fps_source: frame rate of the source annotation (25 for Cholec80); None when unknown.
        extra: dataset-specific arrays, e.g. ``extra["tools"]`` ``int8 [n_seconds, 7]`` for Cholec80.
    """

    video_id: str
    frames: Path
    split: str
    labels: np.ndarray
    class_names: tuple[str, ...]
    fps_source: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_seconds(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True, eq=False)
class MultiLabelVideo:
    """One video with multi-label targets per second (CholecT50 triplets).

    Attributes:
        labels: ``uint8 [n_seconds, n_classes]`` in {0, 1} (the triplets, IVT).
        class_names: the triplet names (``"grasper,dissect,cystic_plate"``).
        components: ``{"i", "v", "t", "iv", "it"} -> uint8 [n_seconds, n_component_classes]``,
            each the max over the triplets that map to it (the ivtmetrics convention).
        component_names: class names of each component.
        phase: ``int64 [n_seconds]`` phase per second, ``-1`` where unknown; None if not annotated.
    """

    video_id: str
    frames: Path
    split: str
    labels: np.ndarray
    class_names: tuple[str, ...]
    components: dict[str, np.ndarray] = field(default_factory=dict)
    component_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    phase: np.ndarray | None = None
    fps_source: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_seconds(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class ClipSample:
    """One short clip with a single class label (action / diagnosis recognition).

    ``start_s``/``end_s`` delimit the clip inside ``path`` when the clip is a segment of a longer
    video; both are None when the whole file is the clip.
    """

    clip_id: str
    path: Path
    split: str
    label: int
    start_s: float | None = None
    end_s: float | None = None


@dataclass(frozen=True)
class SkillTrial:
    """One JIGSAWS trial.

    Attributes:
        trial_id: e.g. ``"Suturing_B001"``.
        video: the left-camera video (``capture1``) when present, else None.
        split: the split of the fold selected by the adapter's split scheme.
        grs: global rating score, the regression target (sum of the 6 OSATS sub-scores).
        skill_level: self-proclaimed ``"N"``, ``"I"`` or ``"E"``.
        osats: the 6 modified-OSATS sub-scores in file order.
        surgeon: surgeon letter ``B``..``I`` (LOUO fold key).
        trial_number: 1..5, the supertrial (LOSO fold key).
        gestures: ``((start_frame, end_frame, "G1"), ...)`` at 30 fps, empty if no transcription.
    """

    trial_id: str
    video: Path | None
    split: str
    grs: float
    skill_level: str
    osats: tuple[int, ...]
    task: str = ""
    surgeon: str = ""
    trial_number: int = 0
    gestures: tuple[tuple[int, int, str], ...] = ()


@dataclass(frozen=True)
class SegSample:
    """One image with a binary segmentation mask (polyp sets)."""

    sample_id: str
    image: Path
    mask: Path
    split: str
    source_dataset: str


@dataclass(frozen=True)
class DepthSample:
    """One image with a metric depth map (C3VD: 16-bit TIFF, 0..65535 <-> 0..100 mm)."""

    sample_id: str
    image: Path
    depth: Path
    split: str
    sequence: str = ""


# --------------------------------------------------------------------------------------------
# Adapter base class
# --------------------------------------------------------------------------------------------


class DatasetAdapter:
    """Base of all adapters.

    Subclasses set the class attributes and implement :meth:`load`.  ``class_names`` is the
    canonical class list when it is fixed by the dataset; adapters whose classes come from the
    files (CholecT50 triplets, the synthetic world) refresh ``self.class_names`` during ``load``.

    Args:
        root: dataset root folder, laid out as distributed.
        split_scheme: one of ``split_schemes``; ``None`` picks ``default_split_scheme``.
        strict: require the dataset to be complete (every video of the split file present,
            distributed counts matched).  ``strict=False`` loads what is present.
        require_media: also require the video/frames/image files to exist.
        lenient: repair implausible, non-finite, duplicate or truncated annotation entries instead of
            raising, each repair recorded in ``self.repairs`` (a :class:`~unisurg.datasets.repairs.RepairLog`
            made by ``load()``); adapters without such checks ignore it.
    """

    name: ClassVar[str] = ""
    task: ClassVar[str] = ""
    class_names: tuple[str, ...] = ()
    default_split_scheme: ClassVar[str] = ""
    split_schemes: ClassVar[tuple[str, ...]] = ()
    repairs = None  # RepairLog of the last load() of adapters that check annotation plausibility

    def __init__(
        self,
        root: Path | str,
        split_scheme: str | None = None,
        *,
        strict: bool = True,
        require_media: bool = False,
        lenient: bool = False,
    ):
        self.root = Path(root)
        scheme = self.default_split_scheme if split_scheme is None else split_scheme
        if scheme not in self.split_schemes:
            raise ValueError(
                f"{type(self).__name__}: unknown split scheme {scheme!r}; valid schemes: "
                f"{', '.join(self.split_schemes)}{_suggestion(scheme, self.split_schemes)}"
            )
        self.split_scheme = scheme
        self.strict = strict
        self.require_media = require_media
        self.lenient = lenient
        if not self.root.is_dir():
            raise DatasetLayoutError(f"{type(self).__name__}: dataset root {self.root} is not a folder")

    def load(self) -> dict[str, list]:
        raise NotImplementedError

    # helpers for subclasses ------------------------------------------------------------------

    def _media(self, *candidates: Path) -> Path:
        """First existing candidate; otherwise the first one (or an error when media is required)."""
        for c in candidates:
            if c.exists():
                return c
        if self.require_media:
            raise DatasetLayoutError(
                "media not found; looked for " + ", ".join(str(c) for c in candidates)
            )
        return candidates[0]

    def _missing(self, what: str, paths: list[str]) -> None:
        """Report items of the split file that are absent from the root."""
        if paths and self.strict:
            shown = ", ".join(paths[:8]) + (f" ... ({len(paths)} in all)" if len(paths) > 8 else "")
            raise DatasetLayoutError(
                f"{type(self).__name__}: {what} listed by split scheme {self.split_scheme!r} "
                f"not found under {self.root}: {shown}. Pass strict=False to load only what is present."
            )


def empty_splits() -> dict[str, list]:
    return {s: [] for s in SPLITS}


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

def _suggestion(name: str, valid) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f". Did you mean {close[0]!r}?" if close else ""


DATASETS: dict[str, type[DatasetAdapter]] = {}


def register(name: str):
    """Class decorator adding an adapter to :data:`DATASETS` under ``name``."""

    def deco(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
        if name in DATASETS:
            raise ValueError(f"dataset name {name!r} registered twice")
        cls.name = name
        DATASETS[name] = cls
        return cls

    return deco
