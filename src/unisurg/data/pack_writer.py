"""Write a frame pack (format: :mod:`unisurg.data.store`) one frame at a time.

The JPEG bytes go to a temporary data file as they come, so memory holds only the frame offsets
(8 bytes a frame) whatever the video's length. On commit the pack is assembled in a second
temporary file (header, offsets, then the data copied with ``copy_file_range``: a reflink or an
in-kernel copy), fsynced, renamed over the target and the folder fsynced: a reader never sees a
torn pack. Both temporary names carry the writer's host and pid
(:func:`unisurg.atomic_files.temp_name`), so a concurrent ingest's cleanup never takes
them for leftovers. On any failure both are removed and :class:`StoreWriteError` names the pack.
"""

from __future__ import annotations

import errno
import os
import struct
from array import array
from pathlib import Path

import numpy as np

from unisurg.atomic_files import atomic_path, temp_name
from unisurg.data.store_errors import StoreWriteError, describe_write_error

MAGIC = b"UJPK0001"
PACK_HEADER = struct.Struct("<8sIIII")  # magic, n frames, height, width, reserved




def _copy_range(src, dst, length: int) -> None:
    """Copy ``length`` bytes from the start of ``src`` to the current end of ``dst``."""
    src.seek(0)
    remaining = length
    if hasattr(os, "copy_file_range"):
        try:
            while remaining > 0:
                n = os.copy_file_range(src.fileno(), dst.fileno(), remaining)
                if n == 0:
                    break
                remaining -= n
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # fall back to read/write
                raise
        src.seek(length - remaining)
        dst.seek(0, os.SEEK_END)
    while remaining > 0:
        chunk = src.read(min(remaining, 1 << 20))
        if not chunk:
            raise OSError(f"data file ended {remaining} bytes early")
        dst.write(chunk)
        remaining -= len(chunk)


class PackWriter:
    """``with PackWriter(path) as w: w.add(jpeg) ...; w.commit(height, width)``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.data_tmp = temp_name(self.path, "data")
        self.sizes = array("q")
        self._f = None
        self._guard(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.data_tmp, "wb")

    def _guard(self, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            self.abort()
            raise StoreWriteError(describe_write_error(self.path, e, "write the frame pack")) from e

    def add(self, jpeg: bytes) -> None:
        self._guard(self._f.write, jpeg)
        self.sizes.append(len(jpeg))

    def __len__(self) -> int:
        return len(self.sizes)

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` frames (the bytes after them are not copied into the pack)."""
        del self.sizes[n:]

    def commit(self, height: int, width: int) -> None:
        self._guard(self._commit, height, width)

    def _commit(self, height: int, width: int) -> None:
        self._f.flush()
        offsets = np.zeros(len(self.sizes) + 1, dtype="<i8")
        np.cumsum(np.frombuffer(self.sizes, dtype=np.int64), out=offsets[1:])
        with open(self.data_tmp, "rb") as src, atomic_path(self.path) as pack_tmp, open(pack_tmp, "wb") as out:
            out.write(PACK_HEADER.pack(MAGIC, len(self.sizes), height, width, 0))
            out.write(offsets.tobytes())
            out.flush()
            _copy_range(src, out, int(offsets[-1]))
        self._f.close()
        self._f = None
        self.data_tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        """Remove the temporary files (best effort: never raises)."""
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None
        try:
            self.data_tmp.unlink(missing_ok=True)  # atomic_path removed the pack's own temporary file
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None or self._f is not None:
            self.abort()  # an exception, or leaving without commit


def write_pack_streaming(path: Path, jpegs, height: int, width: int) -> int:
    """Write the JPEG frames of an iterable into a pack at ``path``; returns the frame count."""
    with PackWriter(path) as w:
        for j in jpegs:
            w.add(j)
        w.commit(height, width)
        return len(w)

