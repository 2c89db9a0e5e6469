"""Reading distributed text annotation files line by line, keeping line numbers for errors.

The files come from many tools: UTF-8 with or without BOM (OphNet), CRLF line ends (OphNet),
a missing final newline (JIGSAWS Suturing), trailing spaces (JIGSAWS transcriptions).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from unisurg.datasets.base import AnnotationError


def read_text(path: Path) -> str:
    """Whole file as text: UTF-8, a leading BOM dropped, CRLF/CR turned into LF."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise AnnotationError(path, line, f"not valid UTF-8 text ({e.reason})", "a UTF-8 text file") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def numbered_lines(path: Path, *, skip_blank: bool = True) -> list[tuple[int, str]]:
    """``[(line_number, line_without_newline), ...]``, 1-based; blank lines dropped by default."""
    out = []
    for i, line in enumerate(read_text(path).split("\n"), start=1):
        if skip_blank and not line.strip():
            continue
        out.append((i, line))
    return out


def csv_rows(path: Path, *, delimiter: str = ",") -> list[tuple[int, list[str]]]:
    """CSV rows with their starting line numbers (quoted fields may hold commas, e.g. ``"62,61"``)."""
    reader = csv.reader(io.StringIO(read_text(path)), delimiter=delimiter)
    rows = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        rows.append((reader.line_num, row))
    return rows


def parse_int(path: Path, line: int, token: str, what: str) -> int:
    try:
        return int(token.strip())
    except ValueError:
        raise AnnotationError(path, line, f"{what} is {token!r}", f"an integer {what}") from None


def parse_float(path: Path, line: int, token: str, what: str) -> float:
    try:
        value = float(token.strip())
    except ValueError:
        raise AnnotationError(path, line, f"{what} is {token!r}", f"a number for {what}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise AnnotationError(path, line, f"{what} is {token!r}", f"a finite number for {what}")
    return value
