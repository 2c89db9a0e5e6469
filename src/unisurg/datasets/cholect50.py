"""CholecT50 / CholecT45 action-triplet recognition.

CholecT50 as distributed (CAMMA-public/cholect50 docs/README-Format.md)::

    ROOT/videos/VIDxx/000000.png ...     frames at 1 fps
    ROOT/labels/VIDxx.json               {"categories": {...}, "annotations": {"0": [[15 values], ...], ...}}

Each annotation instance is ``[triplet, tool, score, x, y, w, h, verb, target, score, x, y, w, h,
phase]``, ``-1`` = absent.  CholecT45 is also distributed as text tables::

    ROOT/data/VIDxx/...                  frames
    ROOT/triplet/VIDxx.txt               frame,100 binary columns
    ROOT/dict/triplet.txt                id:instrument,verb,target   (one per line)

Component labels (I, V, T, IV, IT) are derived from the triplet labels as the max over the
triplets that map to each component, the convention of ivtmetrics; IV = I*10 + V, IT = I*15 + T.
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
    MultiLabelVideo,
    empty_splits,
    register,
)
from unisurg.datasets.plausibility import MAX_VIDEO_SECONDS, describe_seconds, integral
from unisurg.datasets.repairs import RepairLog, log_or_strict
from unisurg.datasets.splitfiles import load_split_file
from unisurg.datasets.textfile import csv_rows, numbered_lines, parse_int, read_text

N_INSTRUMENT, N_VERB, N_TARGET, N_TRIPLET = 6, 10, 15, 100
INSTANCE_LEN = 15
COL_TRIPLET, COL_TOOL, COL_VERB, COL_TARGET, COL_PHASE = 0, 1, 7, 8, 14


def triplet_component_map(triplet_names, instrument_names, verb_names, target_names) -> np.ndarray:
    """``int64 [n_triplets, 5]``: columns I, V, T, IV, IT of every triplet.

    Triplet names are ``"instrument,verb,target"`` (the CholecT50 category strings); IV and IT are
    the pair ids ``I * n_verbs + V`` and ``I * n_targets + T`` used by ivtmetrics' maps.txt.
    """
    i_of = {n: k for k, n in enumerate(instrument_names)}
    v_of = {n: k for k, n in enumerate(verb_names)}
    t_of = {n: k for k, n in enumerate(target_names)}
    out = np.empty((len(triplet_names), 5), dtype=np.int64)
    for k, name in enumerate(triplet_names):
        parts = [p.strip() for p in name.split(",")]
        if len(parts) != 3 or parts[0] not in i_of or parts[1] not in v_of or parts[2] not in t_of:
            raise ValueError(f"triplet {k} {name!r} is not 'instrument,verb,target' with known component names")
        i, v, t = i_of[parts[0]], v_of[parts[1]], t_of[parts[2]]
        out[k] = (i, v, t, i * len(verb_names) + v, i * len(target_names) + t)
    return out


def components_from_triplets(ivt: np.ndarray, cmap: np.ndarray, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Component multi-hot labels as the max over the triplets mapping to each component class."""
    out = {}
    for col, key in enumerate(("i", "v", "t", "iv", "it")):
        comp = np.zeros((ivt.shape[0], sizes[key]), dtype=np.uint8)
        for trip in range(ivt.shape[1]):
            np.maximum(comp[:, cmap[trip, col]], ivt[:, trip], out=comp[:, cmap[trip, col]])
        out[key] = comp
    return out


def _key_line(text: str, key: str, after: int = 0) -> int | None:
    """1-based line of the first ``"key"`` at or after character ``after`` (for error messages)."""
    pos = text.find(f'"{key}"', after)
    return None if pos < 0 else text.count("\n", 0, pos) + 1


def _category_dict(path: Path, categories, name: str) -> tuple[str, ...]:
    """Names of one category kind, ordered by id, from a dict or a list of dicts."""
    table = None
    if isinstance(categories, dict):
        table = categories.get(name)
    elif isinstance(categories, list):
        for entry in categories:
            if isinstance(entry, dict) and name in entry:
                table = entry[name]
    if not isinstance(table, dict) or not table:
        raise AnnotationError(path, None, f"categories has no {name!r} table", f"categories.{name}: {{id: name}}")
    try:
        ids = sorted(int(k) for k in table)
    except ValueError:
        raise AnnotationError(path, None, f"categories.{name} has non-integer ids", "integer ids") from None
    if ids != list(range(len(ids))):
        raise AnnotationError(path, None, f"categories.{name} ids are {ids[:5]}...", f"ids 0..{len(ids) - 1}")
    return tuple(str(table[str(i)] if str(i) in table else table[i]) for i in ids)


def _missing_ranges(present: set[int], n: int, limit: int = 5) -> str:
    """``"3-9, 12"``: the first ``limit`` runs of ids in 0..n-1 absent from ``present``."""
    runs, start = [], None
    for f in range(n + 1):
        absent = f < n and f not in present
        if absent and start is None:
            start = f
        elif not absent and start is not None:
            runs.append(f"{start}" if f - 1 == start else f"{start}-{f - 1}")
            start = None
    return ", ".join(runs[:limit]) + (f", ... ({len(runs)} gaps)" if len(runs) > limit else "")


def _frame_keys(path: Path, text: str, ann: dict, num_frames, repairs: RepairLog) -> tuple[dict, int]:
    """``({frame: (key, instances)}, n_frames)`` of the annotations object, after the plausibility checks:
    integer keys 0..n-1 at 1 fps, each once, within a day, none missing."""
    ann_at = text.find('"annotations"')
    frames = {}
    for key, instances in ann.items():
        line = _key_line(text, key, ann_at)
        try:
            f = int(key)
        except ValueError:
            raise AnnotationError(path, line, f"frame key {key!r}", "integer frame ids") from None
        if f < 0:
            raise AnnotationError(path, line, f"frame key {key!r}", "frame ids >= 0")
        if f > MAX_VIDEO_SECONDS:
            repairs.fault(path, line, f"frame key {key!r} lies {describe_seconds(f)} into a 1-fps video",
                          f"frame ids of a 1-fps video (at most {MAX_VIDEO_SECONDS}, one day)", "drop this frame")
            continue
        frames[f] = (key, instances)
    n = (max(frames) + 1) if frames else 0
    if num_frames is not None:
        count = integral(num_frames)
        if count is None or not 0 <= count <= MAX_VIDEO_SECONDS + 1:
            repairs.fault(path, _key_line(text, "num_frames"), f"num_frames is {num_frames!r}",
                          "a frame count within a day at 1 fps", "ignore num_frames")
        elif count < n:
            repairs.fault(path, _key_line(text, "num_frames"), f"num_frames is {count} but frame {n - 1} is annotated",
                          f"num_frames >= {n}", "ignore num_frames")
        else:
            n = count
    if len(frames) < n:
        repairs.fault(path, None, f"{n - len(frames)} of {n} frame keys missing (frames {_missing_ranges(set(frames), n)})",
                      "one key per 1-fps frame from 0 (a frame without triplet holds an instance of -1 ids)",
                      "leave the missing frames unlabelled (not scored, as the official loader skips them)")
    return frames, n


def _no_duplicate_keys(path: Path, text: str, repairs: RepairLog):
    """A ``json.loads`` ``object_pairs_hook`` reporting a key given twice in one object (``json`` keeps the
    last silently); lenient keeps the first."""
    def hook(pairs):
        out = {}
        for k, v in pairs:
            if k in out:  # the later of the two: the last '"k":' of the text (exact for the annotations object)
                last = [m.start() for m in re.finditer(rf'"{re.escape(k)}"\s*:', text)]
                line = text.count("\n", 0, last[-1]) + 1 if last else None
                repairs.fault(path, line, f"key {k!r} appears twice in one object",
                              "each key once", "keep its first value")
                continue
            out[k] = v
        return out

    return hook


def read_cholect50_json(path: Path, repairs: RepairLog | None = None):
    """Parse one ``labels/VIDxx.json``.

    Returns ``(ivt uint8 [n, 100], raw dict of per-column presence, phase int64 [n], categories, labelled)``
    where ``categories`` maps ``triplet/instrument/verb/target/phase`` to name tuples and ``labelled``
    (``bool [n]``) marks the frames that have a key (all of them unless a lenient load repaired gaps). Duplicate keys,
    non-finite or non-integer ids, implausible or missing frame keys are faults (``repairs``: strict
    raises, lenient records the repair).
    """
    repairs = log_or_strict(repairs)
    text = read_text(path)
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys(path, text, repairs))
    except json.JSONDecodeError as e:
        raise AnnotationError(path, e.lineno, f"invalid JSON: {e.msg}", "a CholecT50 label JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), dict):
        raise AnnotationError(path, None, "no 'annotations' object", "{'annotations': {frame id: [instances]}}")
    cats = {k: _category_dict(path, data.get("categories"), k) for k in ("triplet", "instrument", "verb", "target")}
    try:
        cats["phase"] = _category_dict(path, data.get("categories"), "phase")
    except AnnotationError:
        cats["phase"] = ()
    sizes = {"triplet": len(cats["triplet"]), "instrument": len(cats["instrument"]),
             "verb": len(cats["verb"]), "target": len(cats["target"])}
    ann = data["annotations"]
    ann_at = text.find('"annotations"')
    frames, n = _frame_keys(path, text, ann, data.get("num_frames"), repairs)
    ivt = np.zeros((n, sizes["triplet"]), dtype=np.uint8)
    raw = {"instrument": np.zeros((n, sizes["instrument"]), np.uint8),
           "verb": np.zeros((n, sizes["verb"]), np.uint8),
           "target": np.zeros((n, sizes["target"]), np.uint8)}
    phase = np.full(n, -1, dtype=np.int64)
    n_phase = len(cats["phase"]) or 1 << 30
    for f, (key, instances) in frames.items():
        line = None
        if not isinstance(instances, list):
            line = _key_line(text, key, ann_at)
            raise AnnotationError(path, line, f"annotations[{key!r}] is not a list", "a list of 15-value instances")
        for j, inst in enumerate(instances):
            if isinstance(inst, list) and len(inst) == INSTANCE_LEN and not _ids_integral(inst):
                repairs.fault(path, _key_line(text, key, ann_at),
                              f"annotations[{key!r}][{j}] has ids {[inst[c] for c in _ID_COLUMNS]!r} (NaN, infinite "
                              "or fractional)", "integer ids, -1 for absent", "drop this instance")
                continue
            if not isinstance(inst, list) or len(inst) != INSTANCE_LEN:
                raise AnnotationError(path, _key_line(text, key, ann_at),
                                      f"annotations[{key!r}][{j}] has {len(inst) if isinstance(inst, list) else 'no'} values",
                                      "15 values [triplet, tool, score, x, y, w, h, verb, target, score, x, y, w, h, phase]")
            for col, kind, limit in ((COL_TRIPLET, "triplet", sizes["triplet"]), (COL_TOOL, "instrument", sizes["instrument"]),
                                     (COL_VERB, "verb", sizes["verb"]), (COL_TARGET, "target", sizes["target"]),
                                     (COL_PHASE, "phase", n_phase)):
                v = integral(inst[col])
                if v is None or not -1 <= v < limit:
                    raise AnnotationError(path, _key_line(text, key, ann_at),
                                          f"annotations[{key!r}][{j}] {kind} id is {inst[col]!r}",
                                          f"-1 or an id in 0..{limit - 1}")
                if v < 0:
                    continue
                if kind == "triplet":
                    ivt[f, v] = 1
                elif kind == "phase":
                    if phase[f] not in (-1, v):
                        raise AnnotationError(path, _key_line(text, key, ann_at),
                                              f"frame {key} has phases {phase[f]} and {v}", "one phase per frame")
                    phase[f] = v
                else:
                    raw[kind][f, v] = 1
    labelled = np.zeros(n, dtype=bool)
    labelled[list(frames)] = True
    return ivt, raw, phase, cats, labelled


_ID_COLUMNS = (COL_TRIPLET, COL_TOOL, COL_VERB, COL_TARGET, COL_PHASE)


def _ids_integral(inst: list) -> bool:
    """Every id column of an instance an integer (NaN, Infinity, 2.5, strings are not; the range is
    checked afterwards)."""
    return all(integral(inst[col]) is not None for col in _ID_COLUMNS)


def read_t45_table(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """CholecT45 ``triplet/VIDxx.txt``: rows ``frame,b_0,...,b_{n-1}`` -> ``(frames, uint8 [n, n_classes])``."""
    frames, rows = [], []
    for no, row in csv_rows(path):
        if len(row) != n_classes + 1:
            raise AnnotationError(path, no, f"row has {len(row)} fields", f"frame + {n_classes} binary columns")
        frame = parse_int(path, no, row[0], "frame index")
        vals = [parse_int(path, no, c, "label") for c in row[1:]]
        if any(v not in (0, 1) for v in vals):
            raise AnnotationError(path, no, "label values outside {0, 1}", "binary labels")
        if frames and frame <= frames[-1]:
            raise AnnotationError(path, no, f"frame {frame} after {frames[-1]}", "increasing frame indices")
        frames.append(frame)
        rows.append(vals)
    return np.asarray(frames, np.int64), np.asarray(rows, np.uint8).reshape(-1, n_classes)


def read_t45_dict(path: Path) -> tuple[str, ...]:
    """CholecT45 ``dict/<kind>.txt``: lines ``id:name`` (ids 0..n-1 in order)."""
    names = []
    for no, line in numbered_lines(path):
        if ":" not in line:
            raise AnnotationError(path, no, f"line {line.strip()!r}", "'<id>:<name>'")
        k, name = line.split(":", 1)
        if parse_int(path, no, k, "id") != len(names):
            raise AnnotationError(path, no, f"id {k.strip()}", f"id {len(names)} (ids in order)")
        names.append(name.strip())
    return tuple(names)


class _TripletAdapter(DatasetAdapter):
    task = "triplet"
    class_names: tuple[str, ...] = ()  # read from the label files' categories
    variant = "cholect50"

    def _videos_by_split(self) -> dict[str, list[int]]:
        sf = load_split_file("cholect50.json")
        if self.split_scheme.startswith("crossval_fold"):
            folds = sf[f"crossval_folds_{self.variant}"]
            k = self.split_scheme[len("crossval_fold"):]
            train = [v for j in sorted(folds, key=int) if j != k for v in folds[j]]
            n_val = sf["crossval_val_videos"]
            return {"train": train[:-n_val], "val": train[-n_val:], "test": list(folds[k])}
        return {s: list(v) for s, v in sf["schemes"][self.split_scheme].items()}

    def load(self) -> dict[str, list[MultiLabelVideo]]:
        json_dir = self.root / "labels"
        t45_dir = self.root / "triplet"
        if not json_dir.is_dir() and not t45_dir.is_dir():
            raise DatasetLayoutError(f"{type(self).__name__}: neither {json_dir} (JSON labels) nor {t45_dir} (CholecT45 tables) exists")
        use_json = json_dir.is_dir()
        self.repairs = RepairLog(self.lenient)
        t45_names = None
        if not use_json:
            t45_names = {k: read_t45_dict(self.root / "dict" / f"{k}.txt") for k in ("triplet", "instrument", "verb", "target")}
        out, missing = empty_splits(), []
        reference = None
        for split, videos in self._videos_by_split().items():
            for n in videos:
                vid = f"VID{n:02d}"
                path = (json_dir / f"{vid}.json") if use_json else (t45_dir / f"{vid}.txt")
                if not path.is_file():
                    missing.append(str(path))
                    continue
                if use_json:
                    ivt, raw, phase, cats, labelled = read_cholect50_json(path, self.repairs)
                    frames_dir = self._media(self.root / "videos" / vid)
                else:
                    cats = dict(t45_names, phase=())
                    frames, ivt = read_t45_table(path, len(cats["triplet"]))
                    if frames.size and not np.array_equal(frames, np.arange(frames.size)):
                        raise AnnotationError(path, None, "frame indices are not 0..n-1", "one row per 1-fps frame from 0")
                    raw, phase = {}, None
                    frames_dir = self._media(self.root / "data" / vid)
                if reference is None:
                    reference = cats
                    self.class_names = cats["triplet"]
                    self._cmap = triplet_component_map(cats["triplet"], cats["instrument"], cats["verb"], cats["target"])
                    self._sizes = {"i": len(cats["instrument"]), "v": len(cats["verb"]), "t": len(cats["target"]),
                                   "iv": len(cats["instrument"]) * len(cats["verb"]),
                                   "it": len(cats["instrument"]) * len(cats["target"])}
                elif any(cats[k] != reference[k] for k in ("triplet", "instrument", "verb", "target")):
                    raise AnnotationError(path, None, "categories differ from the first video's", "the same categories in every label file")
                comps = components_from_triplets(ivt, self._cmap, self._sizes)
                names = {"i": reference["instrument"], "v": reference["verb"], "t": reference["target"],
                         "iv": tuple(f"{a},{b}" for a in reference["instrument"] for b in reference["verb"]),
                         "it": tuple(f"{a},{b}" for a in reference["instrument"] for b in reference["target"])}
                extra = {f"{k}_column": v for k, v in raw.items()}
                if use_json and not labelled.all():
                    extra["labelled"] = labelled  # seconds without annotation: not trained on, not scored
                if cats.get("phase"):
                    extra["phase_names"] = cats["phase"]
                out[split].append(MultiLabelVideo(vid, frames_dir, split, ivt, self.class_names, comps, names, phase, 1.0, extra))
        self._missing("label files", missing)
        return out


@register("cholect50")
class CholecT50Adapter(_TripletAdapter):
    """CholecT50 triplets: official 5-fold cross-validation (``crossval_fold1``..``5``, default fold 1),
    the CholecTriplet ``challenge`` split and the Rendezvous-paper split ``rendezvous``."""

    default_split_scheme = "crossval_fold1"
    split_schemes = tuple(f"crossval_fold{k}" for k in range(1, 6)) + ("challenge", "rendezvous")
    variant = "cholect50"


@register("cholect45")
class CholecT45Adapter(_TripletAdapter):
    """CholecT45 triplets: the CholecT50 folds minus the last video of each fold (JSON or text layout)."""

    default_split_scheme = "crossval_fold1"
    split_schemes = tuple(f"crossval_fold{k}" for k in range(1, 6))
    variant = "cholect45"

