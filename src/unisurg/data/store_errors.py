"""Errors of the frame store (reading and writing), and how an OS error is explained to the user."""

from __future__ import annotations

import errno
from pathlib import Path


class StoreError(RuntimeError):
    """A store that cannot be read or written as asked; the message names the path and the fix."""


class StoreWriteError(StoreError):
    """Writing into a store failed for a reason outside the video (disk full, I/O error, read-only
    filesystem): the whole ingest stops, since every further video would fail the same way."""


_HINTS = {
    errno.ENOSPC: "no space left on the device; free space (or --out on another disk) and rerun: finished "
                  "videos are kept and skipped",
    errno.EDQUOT: "disk quota exceeded; free space or raise the quota and rerun: finished videos are kept",
    errno.EROFS: "the filesystem is read-only; ingest into a writable --out folder",
    errno.EIO: "input/output error (a failing disk or a lost network mount?); check the device and rerun",
    errno.EACCES: "permission denied; ingest into a folder you may write",
    errno.EPERM: "operation not permitted; ingest into a folder you may write",
}


def describe_write_error(path: str | Path, e: OSError, what: str = "write") -> str:
    """``PATH: cannot <what>: <reason> (<ERRNO>); <what to do>``."""
    code = errno.errorcode.get(e.errno, "") if e.errno is not None else ""
    reason = e.strerror or str(e)
    hint = _HINTS.get(e.errno, "check the device and rerun")
    return f"{path}: cannot {what}: {reason}{f' ({code})' if code else ''}; {hint}"
