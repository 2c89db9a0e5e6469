"""Atomic file writes, the one implementation every writer of the package uses.

The content goes to a temporary name beside the target, is flushed and fsynced, then renamed over
the target (``os.replace`` is atomic on POSIX filesystems) and the directory is fsynced, so a reader,
or a crash at any moment, sees the old file or the new one, never a torn one. On an error the
temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np


def temp_name(path: Path) -> Path:
    """The temporary name of ``path`` for one write: hidden, unique to the writing process and to the
    attempt (a random suffix: on storage shared by several nodes, or when a retried task overlaps a
    stalled one, two writers of the same target never share a temporary file)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}-{secrets.token_hex(4)}")


def fsync_dir(path: Path) -> None:
    """Make a rename or file creation inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path for a writer that wants a file name (``safetensors.save_file``, ``np.savez``).

    When the block ends without an error the file is fsynced and renamed over ``path``; otherwise it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a binary file that becomes ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj, *, indent: int | None = 1, default: Callable = str) -> Path:
    """``obj`` as JSON (one trailing newline); values JSON cannot hold go through ``default``."""
    write_text_atomic(path, json.dumps(obj, indent=indent, default=default) + "\n")
    return Path(path)


def save_npy_atomic(path: str | Path, arr: np.ndarray) -> None:
    write_atomic(path, lambda f: np.save(f, arr))
