"""Typed configuration: dataclasses validated on load, with dotted command-line overrides.

Unlike raw YAML read with ``.get(key, default)``, every key is checked against the dataclass
fields: a typo is an error naming the dotted path and the nearest valid key, and every value
is coerced to (or rejected as not being) the field's declared type.

    cfg = load_config(PretrainConfig, "tiny", ["optim.lr=1e-3", "data.frames=64"])
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from unisurg.strict_yaml import safe_load_strict

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration that does not fit its schema (unknown key, wrong type, bad value)."""


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else f" Valid keys: {', '.join(sorted(valid))}."


def _coerce(value: Any, tp: Any, path: str, root: dict | None = None) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path, root)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{path}: {value!r} fits none of {tp}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{path}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping for section {tp.__name__}, got {value!r}")
        return _build(tp, value, path, root)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range
            number = math.inf
        if not math.isfinite(number):  # nan / inf pass every "< 0" check and poison a run later
            raise ConfigError(f"{path}: {value!r} is not a finite number")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    if tp is Path:
        return Path(value)
    raise ConfigError(f"{path}: unsupported field type {tp}")


def _build(cls: type[T], data: dict, path: str = "", root: dict | None = None) -> T:
    root = data if root is None else root
    resolve = getattr(cls, "resolve_raw", None)  # a section that fills its raw mapping from others (or presets)
    if callable(resolve):
        try:
            data = resolve(data, root)
        except ValueError as e:
            raise ConfigError(f"{path or cls.__name__}: {e}") from None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else key
        if key not in fields:
            raise ConfigError(f"unknown config key '{full}'." + _suggest(key, list(fields)))
        kwargs[key] = _coerce(value, hints[key], full, root)
    for name in fields.keys() - kwargs.keys():  # absent sections that derive their defaults are built too
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and callable(getattr(tp, "resolve_raw", None)):
            kwargs[name] = _build(tp, {}, f"{path}.{name}" if path else name, root)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:  # a required field without value; a check in __post_init__
        raise ConfigError(f"{path or cls.__name__}: {e}") from None
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except (ValueError, AssertionError) as e:
            raise ConfigError(f"{path or cls.__name__}: {e}") from None
    return obj


def check_output_folder(path: str | Path, key: str) -> None:
    """Refuse an output folder ``path`` (config key or option ``key``) that exists as something else
    than a folder, or lies below a file (it could never be created)."""
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists() or q.is_symlink():
            if not q.is_dir():
                where = "is" if q == p else f"lies below {q}, which is"
                raise ConfigError(f"{key}={p} {where} a file, not a folder; choose another output folder")
            return


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (JSON/YAML-safe) of a config dataclass."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, Path):
            v = str(v)
        out[f.name] = v
    return out


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-3"`` -> (["optim", "lr"], 0.001); values are parsed as YAML scalars."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = safe_load_strict(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{item}': value is not valid YAML ({e})") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    out = dict(data)
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for k in keys[:-1]:
            child = node.get(k)
            node[k] = dict(child) if isinstance(child, dict) else {}
            node = node[k]
        node[keys[-1]] = value
    return out


def read_yaml(path: Path) -> dict:
    try:
        data = safe_load_strict(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def load_config(cls: type[T], source: str | Path | dict | None = None,
                overrides: list[str] | None = None, presets: dict[str, dict] | None = None) -> T:
    """Build ``cls`` from a preset name, a YAML file or a dict, then dotted overrides.

    A YAML file may name ``base: PRESET`` to start from a preset and change a few keys.
    """
    presets = presets or {}
    if source is None:
        data: dict = {}
    elif isinstance(source, dict):
        data = dict(source)
    elif str(source) in presets:
        data = dict(presets[str(source)])
    else:
        path = Path(source)
        if not path.exists():
            names = ", ".join(sorted(presets)) or "(none)"
            raise ConfigError(f"config '{source}' is neither a preset ({names}) nor an existing YAML file")
        data = read_yaml(path)
    base = data.pop("base", None)
    if base is not None:
        if base not in presets:
            raise ConfigError(f"base: '{base}' is not a preset." + _suggest(str(base), list(presets)))
        data = _deep_merge(presets[base], data)
    data = apply_overrides(data, overrides or [])
    return _build(cls, data)


def replace(cfg: T, **changes: Any) -> T:
    return dataclasses.replace(cfg, **changes)


def _resolve_preset(name: str, raw: dict[str, dict], chain: tuple[str, ...] = ()) -> dict:
    if name in chain:
        raise ConfigError(f"preset base cycle: {' -> '.join(chain + (name,))}")
    data = dict(raw[name])
    base = data.pop("base", None)
    if base is None:
        return data
    if base not in raw:
        raise ConfigError(f"preset {name}: base '{base}' is not a preset ({', '.join(sorted(raw))})")
    return _deep_merge(_resolve_preset(base, raw, chain + (name,)), data)


@functools.lru_cache(maxsize=None)
def _presets_of(kind: str) -> dict[str, dict]:
    folder = resources.files("unisurg").joinpath("configs", kind)
    raw = {e.name[: -len(".yaml")]: read_yaml(Path(str(e))) for e in folder.iterdir() if e.name.endswith(".yaml")}
    return {name: _resolve_preset(name, raw) for name in raw}


def yaml_presets(kind: str) -> dict[str, dict]:
    """The named configurations shipped as YAML in ``unisurg/configs/<kind>/`` (``pretrain``, ``bench``, ...),
    ``{name: resolved dict}``. A preset may start from another with ``base: NAME`` (nested mappings merged);
    users copy a file, change it, and pass its path to the command's ``--config``."""
    return copy.deepcopy(_presets_of(kind))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(saved: dict, current: dict, may_change=frozenset(), ignore_prefixes: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between two config dicts (what a resume must refuse), except the keys
    in ``may_change`` and those under ``ignore_prefixes``."""
    a, b = _flatten(saved), _flatten(current)
    keys = sorted((set(a) | set(b)) - set(may_change))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys
            if not k.startswith(ignore_prefixes) and a.get(k) != b.get(k)]
