"""Who is writing to a store: host, process id and process start time, and whether that writer
still runs.

Temporary files and claim rows of a store carry their writer's identity, so that a writer only
ever removes what belongs to a writer known to be dead: a process of this host that no longer
exists (or whose pid was reused: its start time differs). A writer on another host cannot be
checked directly; its claims carry a heartbeat instead (see :mod:`unisurg.data.claims`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache

from unisurg.atomic_files import host_tag


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of Linux ``/proc/PID/stat`` (state first); None without /proc or process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after the last ')'
    return stat[stat.rfind(")") + 2:].split()


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22); None where
    /proc is unavailable or the process does not exist."""
    fields = _proc_stat(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether process ``pid`` of this host runs (and, given ``start_ticks``, is the same process)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    fields = _proc_stat(pid)
    if fields is not None:
        if fields[0] in ("Z", "X"):
            return False  # exited, not yet reaped by its parent
        if start_ticks is not None and len(fields) > 19 and fields[19] != str(start_ticks):
            return False  # pid reused by a newer process
    return True


@dataclass(frozen=True)
class WriterId:
    host: str
    pid: int
    start_ticks: int | None

    @property
    def token(self) -> str:
        """``pid@host``: the tag of this writer's temporary file names."""
        return f"{self.pid}@{self.host}"

    @property
    def key(self) -> str:
        """Unique across pid reuse: the owner column of claim rows."""
        return f"{self.pid}@{self.host}#{self.start_ticks if self.start_ticks is not None else ''}"

    def is_local(self) -> bool:
        return self.host == current_writer().host


@lru_cache(maxsize=None)
def _writer_for(pid: int) -> WriterId:
    return WriterId(host_tag(), pid, process_start_ticks(pid))


def current_writer() -> WriterId:
    """This process (recomputed after a fork: the pid is part of the cache key)."""
    return _writer_for(os.getpid())


# ``NAME.tmp.<pid>@<host>.<random>`` (+ an optional suffix): see :func:`unisurg.atomic_files.temp_name`
_TEMP_RE = re.compile(r"\.tmp\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]+)(?:\.[A-Za-z0-9]+)*$")
_LEGACY_TEMP_RE = re.compile(r"\.tmp(?P<pid>\d+)$")  # older unisurg: ``NAME.tmp<pid>``, this host



def temp_owner_dead(filename: str) -> bool:
    """Whether a temporary file's writer is known to be dead: it belongs to this host and its
    process no longer runs. Files of other hosts, and names that are not temporary, are kept."""
    m = _TEMP_RE.search(filename)
    if m is not None:
        if m["host"] != current_writer().host:
            return False
        pid = int(m["pid"])
    else:
        m = _LEGACY_TEMP_RE.search(filename)
        if m is None:
            return False
        pid = int(m["pid"])
    return pid != os.getpid() and not pid_alive(pid)
