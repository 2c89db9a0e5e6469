"""Generic reader of the SurgRec release's split CSVs (one trimmed clip per line)::

    SPLIT_DIR/{train,val,test}.csv     '__DATA_ROOT__/<relative path to clip> <label id>'
    SPLIT_DIR/label_map.json | label_mapping.json   (optional, {"index_to_label": {...}})

``__DATA_ROOT__`` is replaced by the adapter root.  Class names come from the label map when it
has exactly one name per label id used, else ``class_<k>`` (with a warning).  Two quirks of the
release are reported, not silently fixed: cholec80 and M2CAI16 list the same clips in val.csv and
test.csv, and M2CAI16 has a class "Phase" whose clips were cut from the annotation files' header
row; ``drop_labels=(6,)`` removes them (the other label ids are kept as distributed).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from unisurg.datasets.base import (
    SPLITS,
    AnnotationError,
    ClipSample,
    DatasetAdapter,
    DatasetLayoutError,
    empty_splits,
    register,
)
from unisurg.datasets.textfile import numbered_lines, parse_int, read_text

DATA_ROOT_TOKEN = "__DATA_ROOT__"
HEADER_WORDS = {"phase", "frame", "label", "step"}


def read_surgrec_csv(path: Path) -> list[tuple[str, int, int]]:
    """``[(relative clip path, label, line number)]`` of one split CSV."""
    out, seen = [], {}
    for no, line in numbered_lines(path):
        parts = line.strip().rsplit(None, 1)
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
    if not isinstance(table, dict):
        raise AnnotationError(path, None, "no 'index_to_label' object", "{'index_to_label': {'0': name, ...}}")
    try:
        return {int(k): str(v) for k, v in table.items()}
    except ValueError:
        raise AnnotationError(path, None, "non-integer keys in index_to_label", "integer label ids") from None


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
    split_schemes = ("as_distributed",)

    def __init__(self, root, split_scheme=None, *, strict=True, require_media=False, lenient=False,
                 split_dir: Path | str | None = None, class_names: tuple[str, ...] | None = None,
                 drop_labels: tuple[int, ...] = ()):
        super().__init__(root, split_scheme, strict=strict, require_media=require_media, lenient=lenient)
        self.split_dir = Path(split_dir) if split_dir is not None else self.root / "splits"
        if not self.split_dir.is_dir():
            raise DatasetLayoutError(f"SurgRecSplitAdapter: split folder {self.split_dir} not found")
        self._override = tuple(class_names) if class_names is not None else None
        self.drop_labels = frozenset(drop_labels)
        self.val_is_test = False

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
        self.class_names = self._names(n, used)
        artifacts = [k for k, name in enumerate(self.class_names) if name.lower() in HEADER_WORDS and k not in self.drop_labels]
        if artifacts:
            warnings.warn(f"{self.split_dir}: label(s) {artifacts} are named {[self.class_names[k] for k in artifacts]}, "
                          "an annotation-file header read as a class; pass drop_labels to leave those clips out",
                          stacklevel=2)
        if "val" in rows and "test" in rows and [r[:2] for r in rows["val"]] == [r[:2] for r in rows["test"]]:
            self.val_is_test = True
            warnings.warn(f"{self.split_dir}: val.csv and test.csv list the same clips; choosing on val is choosing on test",
                          stacklevel=2)
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

    def _names(self, n: int, used: list[int]) -> tuple[str, ...]:
        if self._override is not None:
            if len(self._override) < n:
                raise ValueError(f"SurgRecSplitAdapter: {len(self._override)} class names for label ids up to {n - 1}")
            return self._override
        fallback = tuple(f"class_{k}" for k in range(n))
        for name in ("label_map.json", "label_mapping.json"):
            path = self.split_dir / name
            if path.is_file():
                table = read_label_map(path)
                if sorted(table) == list(range(n)) and used == list(range(n)):
                    return tuple(table[k] for k in range(n))
                warnings.warn(f"{path}: {len(table)} names for label ids {used[0]}..{used[-1]} used by the CSVs; "
                              "the map does not match, classes are named class_<k>", stacklevel=3)
                return fallback
        return fallback
