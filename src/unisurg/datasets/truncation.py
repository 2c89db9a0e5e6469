"""Detecting annotation files cut at a row boundary, where the format gives a second source.

A file cut exactly after a line still parses, so the cut shows only against something else
describing the same video:

* Cholec80: the phase file (one row per 25-fps frame) and the tool file (one row every 25 frames)
  cover the same video. The distributed tool files stop one 1-fps sample short of the phase file
  (``ceil(N / 25) - 1`` rows, sometimes ``ceil(N / 25)``); more tool rows than that means the phase
  file lost its end. (Fewer rows, a cut tool file, is caught by ``tools_per_second``.)
* JIGSAWS: the meta file lists the trials; a trial with a transcription or a video but no meta row,
  or fewer rows than the release holds, means the meta file lost rows.

A phase file without tool file, or a meta file of a folder without transcriptions or videos, has
no second source: a cut there cannot be told from a shorter video.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from unisurg.datasets.repairs import RepairLog


def check_tool_rows_against_phase_file(phase_path: Path, tool_path: Path, n_frames: int, presence: np.ndarray,
                                       stride: int, repairs: RepairLog) -> np.ndarray:
    """The tool rows to use with a phase file of ``n_frames`` frames (see module docstring); rows
    past the phase file's end are a fault (lenient: dropped, the phase file taken as it is)."""
    expected = math.ceil(n_frames / stride)
    if presence.shape[0] <= expected:
        return presence
    last = (presence.shape[0] - 1) * stride
    repairs.fault(phase_path, None,
                  f"ends at frame {n_frames - 1}, but {tool_path.name} has tool rows up to frame {last} "
                  f"({presence.shape[0]} rows, at most {expected} for this phase file): the phase file looks cut",
                  "a phase file covering the frames of its tool file", "drop the tool rows past its end")
    return presence[:expected]


def check_meta_against_trials(meta_path: Path, listed: list[str], found: dict[str, Path], expected: int | None,
                              repairs: RepairLog, *, strict: bool) -> None:
    """JIGSAWS: trials with files (``found``: trial -> a file of it) but no row in the meta file are a
    fault; with ``strict``, fewer rows than the release's ``expected`` count too."""
    absent = sorted(set(found) - set(listed))
    if absent:
        shown = ", ".join(absent[:6]) + (f", ... ({len(absent)} in all)" if len(absent) > 6 else "")
        repairs.fault(meta_path, None, f"no row for trial(s) {shown}, which have files (e.g. {found[absent[0]]}): "
                      "the meta file looks cut", "one row per trial", "leave those trials out")
    if strict and expected is not None and len(listed) < expected:
        repairs.fault(meta_path, None, f"{len(listed)} trial rows; the JIGSAWS release has {expected}: the meta "
                      "file looks cut", f"{expected} rows (or pass strict=False for a subset)",
                      "use the rows present")
