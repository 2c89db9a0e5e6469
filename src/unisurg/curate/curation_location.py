"""Where a store's curation results live: ``STORE/curation/``, or, for a store that may not be
written (a read-only mount, a shared corpus of another user), a folder of this user's.

The fallback is ``$UNISURG_CURATION_DIR`` (default ``~/.cache/unisurg/curation``) ``/<store
name>-<hash of the store's absolute path>/``, one per store. Results the store already holds in
``STORE/curation`` (made before it became read-only) are linked into it on first use, so reading
them works; new results are written beside the links (an atomic write replaces a link, never its
target). A note on stderr says once per store where the results go.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

_NOTED: set[str] = set()


def _may_write(folder: Path) -> bool:
    return os.access(folder, os.W_OK | os.X_OK)


def fallback_curation_dir(store_root: Path) -> Path:
    base = Path(os.environ.get("UNISURG_CURATION_DIR") or Path.home() / ".cache" / "unisurg" / "curation")
    absolute = str(store_root.resolve())
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", store_root.resolve().name) or "store"
    return base.expanduser() / f"{name}-{hashlib.sha1(absolute.encode()).hexdigest()[:10]}"


def resolve_curation_dir(store_root: str | Path, name: str) -> Path:
    """``STORE/<name>`` where it may be written (or created), else the per-user fallback."""
    root = Path(store_root)
    own = root / name
    if (own.is_dir() and _may_write(own)) or (not own.exists() and (not root.is_dir() or _may_write(root))):
        return own
    alt = fallback_curation_dir(root)
    alt.mkdir(parents=True, exist_ok=True)
    if own.is_dir():
        for entry in own.iterdir():
            link = alt / entry.name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(entry.resolve())
    if str(alt) not in _NOTED:
        _NOTED.add(str(alt))
        print(f"unisurg: {root} may not be written; curation results go to {alt} "
              "(set UNISURG_CURATION_DIR to choose)", file=sys.stderr)
    return alt
