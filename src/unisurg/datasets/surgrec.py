"""Reader of the SurgRec release's split CSVs (Siiichenggg/SurgRec-open-source ``splits/``; one trimmed
clip per line)::

    SPLIT_DIR/{train,val,test}.csv     '__DATA_ROOT__/<relative path to clip> <label id>'
                                       '"__DATA_ROOT__/<path with spaces>" <label id>'  (kvasir-capsule)
    SPLIT_DIR/label_map.json | label_mapping.json   (optional: {"index_to_label": {...}, ...} or a flat
                                                     {name: id}, cataract-1k-phase)

``__DATA_ROOT__`` is replaced by the adapter root. Class names, in order of preference: the label map
(one name per label id used); the folder level of the clip paths that is constant within each label
and distinct between labels (PitVis, SAR-RARP50, hyper-kvasir, kvasir-capsule, cat-21, cataract-101,
Colonoscopic-web, LapGyn, SurgicalActions160); the file-name words shared by every clip of a label
(MultiBypass140 "..._phase_001_preparation_000332-034298", JIGSAWS "..._G1", LDPolyVideo
"..._no_polyps"); names known from the source dataset (AutoLaparo: ids 0-6 = the phases 1-7 of its
``label_XX.txt``; the CSVs use 0-6, never 7); else ``class_<k>`` with a warning.

Quirks of the release are reported, not silently fixed: in 9 folders (cat-21, cholec80, hyper-kvasir,
JIGSAWS, kvasir-capsule, LapGyn, LDPolyVideo, M2CAI16, SAR-RARP50) val.csv and test.csv list the same
clips (``val_is_test``, a warning, and ``flags`` in the run's record: choosing on val is choosing on
test); M2CAI16 has a class "Phase" whose clips were cut from the annotation files' header row
(``drop_labels=(6,)`` removes them).

Split schemes: ``as_distributed`` (default) and ``video_val``: test as distributed, validation
carved from the training clips **by video** (20%, by name) where the file names identify the source
video (:func:`video_of`; cholec80, M2CAI16, cat-21, cataract-101, cataract-1k, LapGyn, SAR-RARP50,
PitVis, JIGSAWS trials, hyper-kvasir, kvasir-capsule, MultiBypass140, AutoLaparo). AIxSuture,
Colonoscopic-web, LDPolyVideo and SurgicalActions160 file names do not identify a source video
(``video_val`` is refused there, naming the folder).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path, PurePosixPath

from unisurg.datasets.autolaparo import AUTOLAPARO_PHASES
from unisurg.datasets.base import (
    SPLITS,
    AnnotationError,
    ClipSample,
    DatasetAdapter,
    DatasetLayoutError,
    empty_splits,
    register,
)
from unisurg.datasets.splitfiles import carve
from unisurg.datasets.textfile import numbered_lines, parse_int, read_text

DATA_ROOT_TOKEN = "__DATA_ROOT__"
HEADER_WORDS = {"phase", "frame", "label", "step"}


def split_line(line: str) -> list[str]:
    """``[path, label]`` of one CSV line; a path in double quotes may contain spaces (kvasir-capsule)."""
    line = line.strip()
    if line.startswith('"'):
        end = line.find('"', 1)
        if end < 0:
            return [line]
        return [line[1:end]] + line[end + 1:].split()
    return line.rsplit(None, 1)


def read_surgrec_csv(path: Path) -> list[tuple[str, int, int]]:
    """``[(relative clip path, label, line number)]`` of one split CSV."""
    out, seen = [], {}
    for no, line in numbered_lines(path):
        parts = split_line(line)
        if len(parts) != 2 or not parts[0].startswith(DATA_ROOT_TOKEN + "/"):
            raise AnnotationError(path, no, f"line {line.strip()!r}", f"'{DATA_ROOT_TOKEN}/<relative path> <label id>'")
        rel = parts[0][len(DATA_ROOT_TOKEN) + 1:]
        label = parse_int(path, no, parts[1], "label id")
        if label < 0:
            raise AnnotationError(path, no, f"label {label}", "a label id >= 0")
        if rel in seen:
            raise AnnotationError(path, no, f"clip {rel} listed twice", f"each clip once (first on line {seen[rel]})")
        seen[rel] = no
        out.append((rel, label, no))
    return out


def read_label_map(path: Path) -> dict[int, str]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise AnnotationError(path, e.lineno, f"invalid JSON: {e.msg}", "a label map JSON") from None
    table = data.get("index_to_label") if isinstance(data, dict) else None
    if table is None and isinstance(data, dict) and data and all(isinstance(v, int) for v in data.values()):
        flat: dict[int, str] = {}  # flat {name: id} (cataract-1k-phase); the first name of an id wins
        for name, k in data.items():
            flat.setdefault(int(k), str(name))
        return flat
    if not isinstance(table, dict):
        raise AnnotationError(path, None, "no 'index_to_label' object",
                              "{'index_to_label': {'0': name, ...}} or a flat {name: id}")
    try:
        return {int(k): str(v) for k, v in table.items()}
    except ValueError:
        raise AnnotationError(path, None, "non-integer keys in index_to_label", "integer label ids") from None


# names known from the source dataset for folders whose split files carry none (module docstring)
KNOWN_CLASS_NAMES: dict[str, tuple[str, ...]] = {"AutoLaparo": AUTOLAPARO_PHASES}

# file-name patterns that identify the source video of a clip (first group); tried in order, one must fit all
VIDEO_PATTERNS = (
    re.compile(r"^(cholec80_\d+)_"),
    re.compile(r"^(.*_video_\d+)_"),  # M2CAI16 (train/test prefix kept)
    re.compile(r"^(video_\d+)_"),  # PitVis, SAR-RARP50
    re.compile(r"^(case_\d+)_"),  # cat-21, cataract-101, cataract-1k, LapGyn
    re.compile(r"^(label_\d+)_"),  # AutoLaparo
    re.compile(r"^([A-Za-z]+\d+)_phase_"),  # MultiBypass140
    re.compile(r"^([A-Za-z_]+_[A-I]\d{3})_capture"),  # JIGSAWS trial
    re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})_"),  # hyper-kvasir
    re.compile(r"^([0-9a-f]{16})_"),  # kvasir-capsule
)


def video_of(rel_paths: list[str]) -> dict[str, str] | None:
    """``{clip path: source video id}`` from the file names, or None when no pattern fits every clip."""
    stems = {r: PurePosixPath(r).stem for r in rel_paths}
    for pat in VIDEO_PATTERNS:
        ids = {r: (m.group(1) if (m := pat.match(stem)) else None) for r, stem in stems.items()}
        if all(ids.values()):
            return ids
    return None


def names_from_folders(by_label: dict[int, list[str]]) -> dict[int, str] | None:
    """The deepest folder level of the clip paths constant within each label and distinct between labels."""
    parts = {k: [PurePosixPath(p).parts[:-1] for p in ps] for k, ps in by_label.items()}
    depth = min(len(pp) for ps in parts.values() for pp in ps) if parts else 0
    for level in range(depth - 1, -1, -1):
        names = {}
        for k, ps in parts.items():
            values = {pp[level] for pp in ps}
            if len(values) != 1:
                break
            names[k] = values.pop()
        else:
            if len(set(names.values())) == len(names):
                return names
    return None


def names_from_file_words(by_label: dict[int, list[str]]) -> dict[int, str] | None:
    """The file-name words (split at ``_ - space``) shared by every clip of a label, pure numbers dropped, and
    the words shared by every label dropped too when the names stay distinct and non-empty."""
    def words(p):
        return [w for w in re.split(r"[_\-\s]+", PurePosixPath(p).stem) if w and not w.replace(".", "").isdigit()]

    shared = {k: set.intersection(*(set(words(p)) for p in ps)) for k, ps in by_label.items()}
    common = set.intersection(*shared.values()) if shared else set()
    for drop in (common, set()):
        names = {k: "_".join(w for w in words(ps[0]) if w in shared[k] - drop) for k, ps in by_label.items()}
        if all(names.values()) and len(set(names.values())) == len(names):
            return names
    return None


@register("surgrec")
class SurgRecSplitAdapter(DatasetAdapter):
    """Clips listed by a SurgRec split folder (cholec80, AutoLaparo, M2CAI16-Workflow, SurgicalActions160...).

    Args:
        root: the data root substituted for ``__DATA_ROOT__``.
        split_dir: folder holding train.csv / val.csv / test.csv (default ``root/"splits"``).
        class_names: override the class names (length must cover every label id).
        drop_labels: label ids whose clips are left out (e.g. M2CAI16's header-artifact class 6).
    """

    task = "clip"
    class_names = ()
    default_split_scheme = "as_distributed"
    split_schemes = ("as_distributed", "video_val")
    folder = ""  # the SurgRec split folder of a per-dataset adapter (surgrec-<folder>)
    val_fraction = 0.2  # video_val: share of training videos carved for validation

    def __init__(self, root, split_scheme=None, *, strict=True, require_media=False, lenient=False,
                 split_dir: Path | str | None = None, class_names: tuple[str, ...] | None = None,
                 drop_labels: tuple[int, ...] = ()):
        super().__init__(root, split_scheme, strict=strict, require_media=require_media, lenient=lenient)
        default = self.root / "splits" / self.folder if self.folder else self.root / "splits"
        self.split_dir = Path(split_dir) if split_dir is not None else default
        if not self.split_dir.is_dir():
            raise DatasetLayoutError(f"SurgRecSplitAdapter: split folder {self.split_dir} not found (expected "
                                     "train.csv / val.csv / test.csv of the SurgRec release's splits/<dataset>)")
        self._override = tuple(class_names) if class_names is not None else None
        self.drop_labels = frozenset(drop_labels)
        self.val_is_test = False
        self.flags: dict = {}  # quirks of the split files, copied into the run's record

    def load(self) -> dict[str, list[ClipSample]]:
        rows = {}
        for split in SPLITS:
            path = self.split_dir / f"{split}.csv"
            if path.is_file():
                rows[split] = read_surgrec_csv(path)
            elif split != "val" or self.strict:
                raise DatasetLayoutError(f"SurgRecSplitAdapter: {path} not found")
        used = sorted({lab for r in rows.values() for _, lab, _ in r})
        n = used[-1] + 1 if used else 0
        by_label: dict[int, list[str]] = {}
        for r in rows.values():
            for rel, lab, _ in r:
                by_label.setdefault(lab, []).append(rel)
        self.class_names = self._names(n, used, by_label)
        artifacts = [k for k, name in enumerate(self.class_names) if name.lower() in HEADER_WORDS and k not in self.drop_labels]
        if artifacts:
            warnings.warn(f"{self.split_dir}: label(s) {artifacts} are named {[self.class_names[k] for k in artifacts]}, "
                          "an annotation-file header read as a class; pass drop_labels to leave those clips out",
                          stacklevel=2)
        if "val" in rows and "test" in rows and {r[:2] for r in rows["val"]} == {r[:2] for r in rows["test"]}:
            self.val_is_test = True
            self.flags["val_is_test"] = (f"{self.split_dir.name}: val.csv and test.csv list the same clips; a "
                                         "choice on val is a choice on test")
            if self.split_scheme == "as_distributed":
                warnings.warn(f"{self.split_dir}: val.csv and test.csv list the same clips; choosing on val is choosing "
                              "on test (split scheme video_val re-splits validation from training by video)",
                              stacklevel=2)
        if self.split_scheme == "video_val":
            rows = self._video_val(rows)
        out, missing = empty_splits(), []
        for split, items in rows.items():
            for rel, label, _ in items:
                if label in self.drop_labels:
                    continue
                path = self.root / rel
                if self.require_media and not path.exists():
                    missing.append(str(path))
                out[split].append(ClipSample(str(Path(rel).with_suffix("")), path, split, label))
        if missing:
            raise DatasetLayoutError(f"SurgRecSplitAdapter: {len(missing)} clips not found, e.g. {missing[0]}")
        return out

    def _video_val(self, rows: dict) -> dict:
        """Test as distributed; validation = ``val_fraction`` of the training videos (by name), their clips."""

        train = rows.get("train", [])
        vids = video_of([rel for rel, _, _ in train])
        if vids is None:
            raise DatasetLayoutError(f"{self.split_dir}: the clip file names do not identify their source video, so "
                                     "split scheme video_val cannot re-split by video; use as_distributed (and note "
                                     "whether val == test there)")
        kept, held = carve(sorted(set(vids.values())), self.val_fraction, key=lambda v: v)
        held = set(held)
        test_vids = video_of([rel for rel, _, _ in rows.get("test", [])]) or {}
        overlap = sorted(set(test_vids.values()) & set(vids.values()))
        if self.flags.pop("val_is_test", None):  # re-split: validation is no longer the test set
            self.val_is_test = False
            self.flags["distributed_val_is_test"] = "val.csv == test.csv as distributed; replaced by video_val"
        self.flags["video_val"] = (f"validation = {len(held)} of {len(set(vids.values()))} training videos "
                                   f"({self.val_fraction:.0%}, by name); test as distributed")
        if overlap:
            self.flags["train_test_video_overlap"] = f"{len(overlap)} videos in both train and test, e.g. {overlap[0]}"
        return {"train": [r for r in train if vids[r[0]] not in held],
                "val": [r for r in train if vids[r[0]] in held], "test": rows.get("test", [])}

    def _names(self, n: int, used: list[int], by_label: dict[int, list[str]] | None = None) -> tuple[str, ...]:
        if self._override is not None:
            if len(self._override) < n:
                raise ValueError(f"SurgRecSplitAdapter: {len(self._override)} class names for label ids up to {n - 1}")
            return self._override
        fallback = tuple(f"class_{k}" for k in range(n))
        for name in ("label_map.json", "label_mapping.json"):
            path = self.split_dir / name
            if path.is_file():
                table = read_label_map(path)
                if all(k in table for k in range(n)) and used == list(range(n)):
                    self.flags["class_names"] = f"from {name}"
                    return tuple(table[k] for k in range(n))
                warnings.warn(f"{path}: {len(table)} names for label ids {used[0]}..{used[-1]} used by the CSVs; "
                              "the map does not match, classes are named class_<k>", stacklevel=3)
                return fallback
        if by_label and used == list(range(n)):
            for how, fn in (("folder names", names_from_folders), ("file-name words", names_from_file_words)):
                names = fn(by_label)
                if names is not None:
                    self.flags["class_names"] = f"from the clip paths ({how})"
                    return tuple(names[k] for k in range(n))
        known = KNOWN_CLASS_NAMES.get(self.split_dir.name)
        if known is not None and len(known) == n:
            self.flags["class_names"] = "known names of the source dataset"
            return known
        warnings.warn(f"{self.split_dir}: no label map and no class name in the clip paths; classes are named "
                      "class_<k>", stacklevel=3)
        return fallback


# the SurgRec benchmark's 16 split folders and PitVis (folder names as in the release; AlxSuture = AIxSuture)
SURGREC_FOLDERS = ("AlxSuture", "AutoLaparo", "cat-21", "cataract-101", "cataract-1k-phase", "cholec80",
                   "Colonoscopic-web", "hyper-kvasir", "JIGSAWS", "kvasir-capsule", "LapGyn_dataset", "LDPolyVideo",
                   "M2CAI16-Workflow", "MultiBypass140", "SAR-RARP50", "SurgicalActions160", "PitVis")


def _folder_adapter(folder: str) -> type[SurgRecSplitAdapter]:
    """``surgrec-<folder>``: the clips of one SurgRec split folder, read from ``ROOT/splits/<folder>/``."""
    cls = type(f"SurgRec_{re.sub(r'[^A-Za-z0-9]', '_', folder)}", (SurgRecSplitAdapter,),
               {"folder": folder, "__doc__": f"SurgRec split folder {folder}: ROOT/splits/{folder}/*.csv, media under "
                                             "ROOT (the __DATA_ROOT__ of the release)."})
    return register(f"surgrec-{folder.lower()}")(cls)


for _folder in SURGREC_FOLDERS:
    _folder_adapter(_folder)
