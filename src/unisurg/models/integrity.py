"""Integrity of weight files: SHA-256 records beside checkpoints, reads whose errors name the file,
and refusal of non-finite weights.

A checkpoint folder holds ``checksums.json``::

    {"algorithm": "sha256", "files": {"weights.safetensors": {"sha256": "...", "bytes": 123}, ...}}

written after the other files, inside the same atomic directory rename. :func:`verify_checksums`
compares size, then digest: a truncated or zeroed file, or one flipped byte, is a
:class:`CheckpointError` naming the file, instead of a resume that silently diverges. Folders
written before checksums existed have no record and are read as before (the caller decides).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import safe_open

from unisurg.models.strict_load import CheckpointError, check_finite, nonfinite_tensors  # noqa: F401 - re-exported

CHECKSUMS_NAME = "checksums.json"
CHECKSUM_ALGORITHM = "sha256"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (constant memory for multi-GB weights)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def checksum_record(folder: Path, files: list[Path]) -> dict:
    """The ``checksums.json`` content for ``files`` (all inside ``folder``)."""
    entries = {}
    for f in files:
        f = Path(f)
        entries[f.relative_to(folder).as_posix()] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    return {"algorithm": CHECKSUM_ALGORITHM, "files": entries}


def write_checksums(folder: Path, files: list[Path]) -> Path:
    """Write ``folder/checksums.json`` for ``files``; returns its path (the caller fsyncs and renames)."""
    path = Path(folder) / CHECKSUMS_NAME
    path.write_text(json.dumps(checksum_record(Path(folder), files), indent=1, sort_keys=True) + "\n")
    return path


def verify_checksums(folder: Path) -> bool:
    """Check every file recorded in ``folder/checksums.json``: ``True`` when all match, ``False`` when
    the folder has no record (written before checksums existed). A mismatch raises :class:`CheckpointError`
    naming the file, its size and what was recorded."""
    folder = Path(folder)
    record_path = folder / CHECKSUMS_NAME
    if not record_path.exists():
        return False
    try:
        record = json.loads(record_path.read_text())
        files = record["files"]
        if record.get("algorithm") != CHECKSUM_ALGORITHM or not isinstance(files, dict):
            raise ValueError(f"algorithm {record.get('algorithm')!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{record_path}: damaged checksum record ({e})") from None
    for name, entry in sorted(files.items()):
        f = folder / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing (listed in {record_path})")
        size = f.stat().st_size
        if size != entry.get("bytes"):
            raise CheckpointError(f"{f}: {size} bytes, {entry.get('bytes')} were written (truncated or damaged)")
        if sha256_file(f) != entry.get("sha256"):
            raise CheckpointError(f"{f}: SHA-256 differs from the one recorded in {record_path} "
                                  "(the file was damaged after it was written)")
    return True


def read_safetensors(path: Path, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors whose key starts with prefix (prefix removed), metadata)`` of a safetensors file;
    an empty, truncated or otherwise unreadable file is a :class:`CheckpointError` naming it."""

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: re-raised naming the file
        size = path.stat().st_size if path.exists() else 0
        raise CheckpointError(f"{path}: not a readable safetensors file ({size} bytes; {type(e).__name__}: {e}); "
                              "it is empty, truncated or damaged") from None
    return tensors, meta


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The metadata header of a safetensors file (errors name the file, as in :func:`read_safetensors`)."""

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - re-raised naming the file
        size = Path(path).stat().st_size if Path(path).exists() else 0
        raise CheckpointError(f"{path}: not a readable safetensors file ({size} bytes; {type(e).__name__}: {e}); "
                              "it is empty, truncated or damaged") from None


def torch_load_weights(path: Path):
    """``torch.load(weights_only=True)``, memory-mapped when the file allows; errors name the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - legacy (non-zip) files cannot be mmapped: retry without
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise CheckpointError(
            f"{path}: cannot be read with torch.load(weights_only=True): {e}. Only tensors and plain containers are "
            "accepted; re-save the state dicts alone if the file holds pickled objects"
        ) from e
