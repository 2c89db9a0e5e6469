"""The append-only answer log of a VLM run: one JSON line per (sample, prompt).

A line is written (flushed and fsynced) as soon as its batch is generated, so a killed run loses
at most the batch in flight; a torn last line (the process died mid-write) is ignored on reading.
Shard ``i`` of ``n`` writes ``answers.shard-<i>-of-<n>.jsonl``, an unsharded run ``answers.jsonl``;
every ``answers*.jsonl`` of a folder belongs to the same run (:mod:`unisurg.vlm.runner` checks
``run.json``) and is read as one table keyed by (sample, prompt).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path


class AnswerLogError(ValueError):
    """Answer files that contradict each other (the message names the files and the key)."""


def answer_file(out: Path, shard: tuple[int, int]) -> Path:
    i, n = shard
    return Path(out) / ("answers.jsonl" if n == 1 else f"answers.shard-{i}-of-{n}.jsonl")


def read_answer_file(path: Path) -> list[dict]:
    """Records of one file; a torn final line is dropped, a bad line elsewhere is an error."""
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    out = []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if no == len(lines):  # the last line, without its newline: a write cut short
                warnings.warn(f"{path}:{no}: incomplete last line ignored (interrupted write); it is regenerated",
                              stacklevel=2)
                continue
            raise AnswerLogError(f"{path}:{no}: not a JSON record; the answer log is damaged") from None
        out.append(rec)
    return out


def read_answers(out: Path) -> dict[tuple[str, str], dict]:
    """All answers of a run folder keyed by (sample, prompt); the same key with two different answers is an error."""
    table: dict[tuple[str, str], dict] = {}
    where: dict[tuple[str, str], str] = {}
    for path in sorted(Path(out).glob("answers*.jsonl")):
        for rec in read_answer_file(path):
            key = (rec["sample"], rec["prompt"])
            old = table.get(key)
            if old is not None and old["answer"] != rec["answer"]:
                raise AnswerLogError(f"sample {key[0]!r}, prompt {key[1]!r}: answered {old['answer']!r} in {where[key]} "
                                     f"but {rec['answer']!r} in {path.name}; remove the stale file")
            table.setdefault(key, rec)
            where.setdefault(key, path.name)
    return table


class AnswerLog:
    """Appends records to one answer file (``with AnswerLog(path) as log: log.append(records)``)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        self._f = open(self.path, "ab")

    def _repair_tail(self) -> None:
        """Cut a torn last line, so that the next record starts on a line of its own."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def append(self, records: list[dict]) -> None:
        self._f.write(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
