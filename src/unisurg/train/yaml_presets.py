"""Named pretraining configurations, shipped as YAML files in ``unisurg/configs/``.

A preset may start from another with ``base: NAME`` (resolved recursively, nested mappings
merged). Users copy a file, change it, and pass its path to ``unisurg pretrain --config``.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib import resources
from pathlib import Path

from unisurg.typed_config import ConfigError, _deep_merge, read_yaml

PRESET_DIR = "configs"  # package data of unisurg (pyproject: configs/*.yaml)


def _read_raw() -> dict[str, dict]:
    raw = {}
    for entry in resources.files("unisurg").joinpath(PRESET_DIR).iterdir():
        if entry.name.endswith(".yaml"):
            name = entry.name[: -len(".yaml")]
            raw[name] = read_yaml(Path(str(entry)))
    return raw


def _resolve(name: str, raw: dict[str, dict], chain: tuple[str, ...] = ()) -> dict:
    if name in chain:
        raise ConfigError(f"preset base cycle: {' -> '.join(chain + (name,))}")
    data = dict(raw[name])
    base = data.pop("base", None)
    if base is None:
        return data
    if base not in raw:
        raise ConfigError(f"preset {name}: base '{base}' is not a preset ({', '.join(sorted(raw))})")
    return _deep_merge(_resolve(base, raw, chain + (name,)), data)


@lru_cache(maxsize=1)
def _cached() -> dict[str, dict]:
    raw = _read_raw()
    return {name: _resolve(name, raw) for name in raw}


def pretrain_presets() -> dict[str, dict]:
    """``{name: fully resolved config dict}`` of every shipped preset (fresh copies)."""

    return copy.deepcopy(_cached())
