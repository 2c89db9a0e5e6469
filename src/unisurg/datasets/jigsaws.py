"""JIGSAWS skill assessment (GRS regression) with LOSO and LOUO folds, as distributed::

    ROOT/<Task>/meta_file_<Task>.txt                 trial<TAB><TAB>skill<TAB>GRS<TAB><TAB>6 OSATS scores
    ROOT/<Task>/transcriptions/<Task>_<S><NNN>.txt   '<start> <end> G<k> ' per gesture, 30 fps
    ROOT/<Task>/video/<Task>_<S><NNN>_capture1.avi

The meta files separate columns by tabs with empty columns (double tabs); the Suturing file has no
final newline.  GRS is the sum of the six sub-scores; a row where it is not is an error.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from unisurg.datasets.base import (
    AnnotationError,
    DatasetAdapter,
    DatasetLayoutError,
    SkillTrial,
    register,
)
from unisurg.datasets.repairs import RepairLog
from unisurg.datasets.splitfiles import load_split_file
from unisurg.datasets.textfile import numbered_lines, parse_int
from unisurg.datasets.truncation import check_meta_against_trials

_TRIAL = re.compile(r"^(?P<task>[A-Za-z_]+)_(?P<surgeon>[A-Z])(?P<number>\d{3})$")
_GESTURE = re.compile(r"^G\d+$")
SKILL_LEVELS = ("N", "I", "E")
N_OSATS = 6
GESTURE_FPS = 30.0


def parse_trial_id(trial: str) -> tuple[str, str, int]:
    """``"Knot_Tying_B001"`` -> ``("Knot_Tying", "B", 1)``."""
    m = _TRIAL.match(trial)
    if not m:
        raise ValueError(f"trial id {trial!r} is not <Task>_<surgeon letter><3-digit number>")
    return m.group("task"), m.group("surgeon"), int(m.group("number"))


def read_meta_file(path: Path, *, check_grs: bool = True) -> list[dict]:
    """Rows of ``meta_file_<Task>.txt``: ``{"trial", "skill_level", "grs", "osats", "line"}``.

    Empty tab-separated columns are ignored; each row must then hold exactly: trial id, skill level
    (N/I/E), GRS, and 6 OSATS sub-scores.
    """
    rows = []
    for no, line in numbered_lines(path):
        fields = [f.strip() for f in line.split("\t") if f.strip()]
        if len(fields) != 3 + N_OSATS:
            raise AnnotationError(path, no, f"row has {len(fields)} non-empty fields",
                                  "trial, skill level N/I/E, GRS and 6 OSATS scores (tab separated)")
        trial, skill, grs_text, *osats_text = fields
        try:
            parse_trial_id(trial)
        except ValueError as e:
            raise AnnotationError(path, no, str(e), "<Task>_<surgeon><NNN>") from None
        if skill not in SKILL_LEVELS:
            raise AnnotationError(path, no, f"skill level {skill!r}", "N, I or E")
        grs = parse_int(path, no, grs_text, "GRS")
        osats = tuple(parse_int(path, no, t, "OSATS score") for t in osats_text)
        if any(not 1 <= s <= 5 for s in osats):
            raise AnnotationError(path, no, f"OSATS scores {osats}", "scores in 1..5")
        if check_grs and grs != sum(osats):
            raise AnnotationError(path, no, f"GRS {grs} but the OSATS scores sum to {sum(osats)}", "GRS = sum of the 6 scores")
        rows.append({"trial": trial, "skill_level": skill, "grs": float(grs), "osats": osats, "line": no})
    seen = {}
    for r in rows:
        if r["trial"] in seen:
            raise AnnotationError(path, r["line"], f"trial {r['trial']} repeated", f"one row per trial (first on line {seen[r['trial']]})")
        seen[r["trial"]] = r["line"]
    return rows


def read_transcription(path: Path) -> tuple[tuple[int, int, str], ...]:
    """Gesture segments ``((start, end, "Gk"), ...)`` of a transcription file (frames at 30 fps)."""
    out = []
    prev_end = -1
    for no, line in numbered_lines(path):
        tokens = line.split()
        if len(tokens) != 3 or not _GESTURE.match(tokens[2]):
            raise AnnotationError(path, no, f"row {line.strip()!r}", "'<start frame> <end frame> G<k>'")
        start = parse_int(path, no, tokens[0], "start frame")
        end = parse_int(path, no, tokens[1], "end frame")
        if end < start or start <= prev_end:
            raise AnnotationError(path, no, f"segment {start}-{end} after one ending at {prev_end}",
                                  "non-overlapping segments in time order with start <= end")
        out.append((start, end, tokens[2]))
        prev_end = end
    return tuple(out)


@register("jigsaws")
class JIGSAWSAdapter(DatasetAdapter):
    """JIGSAWS GRS regression for one task (default Suturing).

    Split schemes select one fold: ``loso_1``..``loso_5`` (test = supertrial k) and ``louo_B``..
    ``louo_I`` (test = surgeon). ``load()`` returns ``{"train", "val": [], "test"}`` of that fold;
    :meth:`folds` returns all folds of ``"loso"`` or ``"louo"``.
    """

    task = "skill"
    class_names = ()
    _sf = load_split_file("jigsaws.json")
    default_split_scheme = "loso_1"
    split_schemes = tuple(f"loso_{k}" for k in _sf["loso_trials"]) + tuple(f"louo_{s}" for s in _sf["louo_surgeons"])

    def __init__(self, root, split_scheme=None, *, strict=True, require_media=False, lenient=False, task: str = "Suturing"):
        super().__init__(root, split_scheme, strict=strict, require_media=require_media, lenient=lenient)
        if task not in self._sf["tasks"]:
            raise ValueError(f"JIGSAWSAdapter: task {task!r}; valid tasks: {', '.join(self._sf['tasks'])}")
        self.jigsaws_task = task

    def trials(self) -> list[SkillTrial]:
        """All trials of the task (split ``""``), in meta-file order."""
        task_dir = self.root / self.jigsaws_task
        meta = task_dir / f"meta_file_{self.jigsaws_task}.txt"
        if not meta.is_file():
            raise DatasetLayoutError(f"JIGSAWSAdapter: {meta} not found")
        out = []
        self.repairs = RepairLog(self.lenient)
        rows = read_meta_file(meta, check_grs=self.strict)
        check_meta_against_trials(meta, [r["trial"] for r in rows], _trial_files(task_dir),
                                  self._sf.get("expected_trials", {}).get(self.jigsaws_task), self.repairs,
                                  strict=self.strict)
        for row in rows:
            task, surgeon, number = parse_trial_id(row["trial"])
            if task != self.jigsaws_task:
                raise AnnotationError(meta, row["line"], f"trial {row['trial']} of task {task}", f"trials of {self.jigsaws_task}")
            tr = task_dir / "transcriptions" / f"{row['trial']}.txt"
            gestures = read_transcription(tr) if tr.is_file() else ()
            video = task_dir / "video" / f"{row['trial']}_capture1.avi"
            if self.require_media and not video.is_file():
                raise DatasetLayoutError(f"JIGSAWSAdapter: {video} not found")
            out.append(SkillTrial(row["trial"], video if video.is_file() else None, "", row["grs"], row["skill_level"],
                                  row["osats"], task, surgeon, number, gestures))
        return out

    @staticmethod
    def _fold(trials: list[SkillTrial], scheme: str, key: str) -> tuple[list[SkillTrial], list[SkillTrial]]:
        def held_out(t: SkillTrial) -> bool:
            return (str(t.trial_number) == key) if scheme == "loso" else (t.surgeon == key)

        train = [_with_split(t, "train") for t in trials if not held_out(t)]
        test = [_with_split(t, "test") for t in trials if held_out(t)]
        return train, test

    def folds(self, scheme: str) -> list[tuple[list[SkillTrial], list[SkillTrial]]]:
        """All ``(train, test)`` folds of ``"loso"`` (5, by trial number) or ``"louo"`` (8, by surgeon)."""
        if scheme == "loso":
            keys = [str(k) for k in self._sf["loso_trials"]]
        elif scheme == "louo":
            keys = list(self._sf["louo_surgeons"])
        else:
            raise ValueError(f"JIGSAWSAdapter.folds: scheme {scheme!r}; valid: 'loso', 'louo'")
        trials = self.trials()
        return [self._fold(trials, scheme, k) for k in keys]

    def load(self) -> dict[str, list[SkillTrial]]:
        scheme, key = self.split_scheme.split("_", 1)
        train, test = self._fold(self.trials(), scheme, key)
        if self.strict and not test:
            raise DatasetLayoutError(f"JIGSAWSAdapter: fold {self.split_scheme} has no test trials under {self.root}")
        return {"train": train, "val": [], "test": test}


def _trial_files(task_dir: Path) -> dict[str, Path]:
    """``{trial id: one of its files}`` from ``transcriptions/<trial>.txt`` and ``video/<trial>_capture*.avi``."""
    found: dict[str, Path] = {}
    for p in sorted((task_dir / "transcriptions").glob("*.txt")):
        found.setdefault(p.stem, p)
    for p in sorted((task_dir / "video").glob("*_capture*.avi")):
        found.setdefault(p.stem.rsplit("_capture", 1)[0], p)
    return {t: p for t, p in found.items() if _TRIAL.match(t)}


def _with_split(t: SkillTrial, split: str) -> SkillTrial:
    return replace(t, split=split)
