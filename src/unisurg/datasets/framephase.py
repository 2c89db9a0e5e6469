"""Parsers for ``frame<TAB>phase`` annotation files (Cholec80, M2CAI16, the synthetic world) and
the Cholec80 tool-presence table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from unisurg.datasets.base import AnnotationError
from unisurg.datasets.repairs import RepairLog, log_or_strict
from unisurg.datasets.textfile import numbered_lines, parse_int


def _is_int(token: str) -> bool:
    try:
        int(token)
        return True
    except ValueError:
        return False


def read_frame_phase_file(path: Path, *, consecutive: bool) -> tuple[np.ndarray, list[str], list[int]]:
    """Rows of a ``Frame<TAB>Phase`` file: ``(frames, phase_names, line_numbers)``.

    An optional first line ``Frame<TAB>Phase`` is the header.  Frames must start at 0 and either
    increase by exactly 1 (``consecutive=True``, Cholec80: one row per video frame) or strictly
    increase (sparser annotations).
    """
    lines = numbered_lines(path)
    if not lines:
        raise AnnotationError(path, None, "file is empty", "a header 'Frame<TAB>Phase' and one row per frame")
    first_no, first = lines[0]
    tokens = first.split()
    if tokens and not _is_int(tokens[0]):
        if [t.lower() for t in tokens] != ["frame", "phase"]:
            raise AnnotationError(path, first_no, f"header is {first.strip()!r}", "'Frame<TAB>Phase'")
        lines = lines[1:]
    if not lines:
        raise AnnotationError(path, first_no, "no annotation rows after the header", "one row per frame")
    frames, names, line_nos = [], [], []
    prev = -1
    for no, line in lines:
        tokens = line.split()
        if len(tokens) != 2:
            raise AnnotationError(path, no, f"row {line.strip()!r} has {len(tokens)} fields", "'<frame><TAB><phase name>'")
        frame = parse_int(path, no, tokens[0], "frame index")
        if prev < 0 and frame != 0:
            raise AnnotationError(path, no, f"first frame is {frame}", "frame 0")
        if consecutive and prev >= 0 and frame != prev + 1:
            raise AnnotationError(path, no, f"frame {frame} follows frame {prev}", f"frame {prev + 1} (one row per frame)")
        if not consecutive and frame <= prev:
            raise AnnotationError(path, no, f"frame {frame} follows frame {prev}", "strictly increasing frame indices")
        frames.append(frame)
        names.append(tokens[1])
        line_nos.append(no)
        prev = frame
    return np.asarray(frames, dtype=np.int64), names, line_nos


def names_to_indices(path: Path, names: Sequence[str], line_nos: Sequence[int], class_names: Sequence[str], hint: str = "") -> np.ndarray:
    """Map phase names to class indices; an unknown name is an error naming its line."""
    index = {n: i for i, n in enumerate(class_names)}
    out = np.empty(len(names), dtype=np.int64)
    for k, (name, no) in enumerate(zip(names, line_nos)):
        i = index.get(name)
        if i is None:
            raise AnnotationError(path, no, f"unknown phase {name!r}", "one of " + ", ".join(class_names) + hint)
        out[k] = i
    return out


def read_tool_file(path: Path, stride: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Cholec80 tool table: header ``Frame<TAB><tool 1>...<TAB><tool K>``, then one 0/1 row every
    ``stride`` frames (frames 0, 25, 50, ... for Cholec80).

    Returns ``(row frames int64 [n_rows], presence int8 [n_rows, K], tool_names)``.
    """
    lines = numbered_lines(path)
    if not lines:
        raise AnnotationError(path, None, "file is empty", "a header 'Frame<TAB>tool names...' and 0/1 rows")
    head_no, head = lines[0]
    header = head.split()
    if len(header) < 2 or header[0].lower() != "frame":
        raise AnnotationError(path, head_no, f"header is {head.strip()!r}", "'Frame<TAB><tool 1><TAB>...'")
    tools = tuple(header[1:])
    frames, rows = [], []
    for r, (no, line) in enumerate(lines[1:]):
        tokens = line.split()
        if len(tokens) != len(header):
            raise AnnotationError(path, no, f"row has {len(tokens)} fields", f"{len(header)} fields like the header")
        frame = parse_int(path, no, tokens[0], "frame index")
        if frame != r * stride:
            raise AnnotationError(path, no, f"frame {frame} in row {r}", f"frame {r * stride} (one row every {stride} frames)")
        values = [parse_int(path, no, t, "tool presence") for t in tokens[1:]]
        if any(v not in (0, 1) for v in values):
            raise AnnotationError(path, no, f"tool presence values {values}", "0 or 1")
        frames.append(frame)
        rows.append(values)
    return np.asarray(frames, np.int64), np.asarray(rows, dtype=np.int8).reshape(-1, len(tools)), tools


def tools_per_second(path: Path, presence: np.ndarray, stride: int, fps: float, n_seconds: int,
                     repairs: RepairLog | None = None) -> np.ndarray:
    """Tool presence per second, ``int8 [n_seconds, K]``: second ``t`` takes the row covering frame
    ``floor(t * fps)`` (row ``r`` covers frames ``[r * stride, (r + 1) * stride)``).

    The distributed Cholec80 tool files stop one 1-fps sample short of the phase file, so the last
    second is covered by no row; it is set to ``-1`` (unknown).  More than one uncovered second is
    a fault (``repairs``: strict raises, lenient leaves those seconds unknown too).
    """
    on_screen = np.floor(np.arange(n_seconds) * fps + 1e-9).astype(np.int64)
    row = on_screen // stride
    uncovered = row >= presence.shape[0]
    if uncovered.sum() > 1:
        log_or_strict(repairs).fault(
            path, None, f"{presence.shape[0]} tool rows leave {int(uncovered.sum())} of {n_seconds} seconds unannotated "
            "(the tool file looks cut)",
            "rows up to the end of the phase file (the Cholec80 files omit at most the last second)",
            "mark the uncovered seconds' tools unknown (-1)",
        )
    out = np.full((n_seconds, presence.shape[1]), -1, dtype=np.int8)
    out[~uncovered] = presence[row[~uncovered]]
    return out
