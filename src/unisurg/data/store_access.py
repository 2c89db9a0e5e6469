"""Whether a store folder may be written (read-only mounts, snapshots, folders of another user)."""

from __future__ import annotations

import os
from pathlib import Path

from unisurg.data.manifest import MANIFEST_NAME


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def store_writable(root: str | Path) -> bool:
    """True when ``root`` (or, for a store not yet created, its nearest existing parent) and its
    manifest may be written. ``os.access`` reports read-only mounts as well as permissions."""
    root = Path(root)
    folder = root if root.exists() else _nearest_existing(root)
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    manifest = root / MANIFEST_NAME
    return not manifest.exists() or os.access(manifest, os.W_OK)
