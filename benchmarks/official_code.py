"""Where the benchmarks find the official V-JEPA 2 code (a checkout kept outside this project).

``--vjepa2-path`` (or the environment variable ``VJEPA2_PATH``) names a checkout of
facebookresearch/vjepa2; nothing of it is copied into this project. Its modules import ``timm``
(needs torchvision, which does not import with the CPU torch) and ``einops``; stand-ins for the two
names used (``timm.models.layers.drop_path`` and an unused ``einops.rearrange``) go in a folder
given by ``--vjepa2-shims`` (default ``<path>/_shims``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_official_args(ap: argparse.ArgumentParser, required: bool) -> None:
    env = os.environ.get("VJEPA2_PATH")
    ap.add_argument("--vjepa2-path", type=Path, default=Path(env) if env else None,
                    required=required and not env, help="checkout of facebookresearch/vjepa2 (or $VJEPA2_PATH)")
    ap.add_argument("--vjepa2-shims", type=Path, default=None, help="folder with timm / einops stand-ins")


def put_official_on_path(path: Path, shims: Path | None) -> None:
    """Prepend the checkout (and the stand-ins folder, default ``<path>/_shims``) to ``sys.path``."""
    path = path.resolve()
    if not (path / "src" / "models").is_dir():
        raise SystemExit(f"--vjepa2-path {path}: not a facebookresearch/vjepa2 checkout (no src/models)")
    shims = (shims or path / "_shims").resolve()
    for p in (shims if shims.exists() else None, path):
        if p is not None and str(p) not in sys.path:
            sys.path.insert(0, str(p))
