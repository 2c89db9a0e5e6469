"""Annotation faults: an error in strict mode, a recorded repair in lenient mode.

Strict (the default) stops at the first implausible, non-finite, duplicate or truncated entry
with an :class:`AnnotationError` naming the file and line. Lenient (``unisurg bench --lenient``,
config key ``lenient: true``) applies the repair the reader names (drop the entry, mark a second
unlabelled, ...) and records it; the benchmark prints every repair and stores the list in its
results, so nothing is changed silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from unisurg.datasets.base import AnnotationError


@dataclass(frozen=True)
class Repair:
    """One fault found in an annotation file and what lenient mode did about it."""

    file: str
    line: int | None
    problem: str
    repair: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.problem}; repaired: {self.repair}"

    def to_dict(self) -> dict:
        return asdict(self)


class RepairLog:
    """Collects the repairs of one adapter's ``load()`` (lenient) or raises at the first fault (strict)."""

    def __init__(self, lenient: bool = False):
        self.lenient = lenient
        self.entries: list[Repair] = []

    def fault(self, path: Path | str, line: int | None, problem: str, expected: str, repair: str) -> None:
        """Report a fault: strict raises :class:`AnnotationError` (``expected`` says what the format
        needs); lenient records ``repair``, which the caller then applies."""
        if not self.lenient:
            raise AnnotationError(path, line, problem, expected + "; or load with --lenient (lenient=true) to "
                                  f"{repair} and record it")
        self.entries.append(Repair(str(path), line, problem, repair))


def log_or_strict(repairs: RepairLog | None) -> RepairLog:
    """The given log, or a strict one (a reader called without a log raises at the first fault)."""
    return repairs if repairs is not None else RepairLog(lenient=False)
