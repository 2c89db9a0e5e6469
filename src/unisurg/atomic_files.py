"""Atomic file writes: a reader (or a crash) never sees a torn file.

The content goes to a temporary name beside the target, is flushed and fsynced, then renamed
over the target (``os.replace`` is atomic on POSIX filesystems).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    write_atomic(path, lambda f: np.save(f, arr))
