"""A backbone spec string, the frozen-backbone record it resolves to, and weight fingerprints.

The spec grammar and the kinds are documented in :mod:`unisurg.backbones.registry`.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from unisurg.models.vit import token_grid

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Normalisation statistics by name (EndoViT: Endo700k statistics from its model card; CLIP: OpenAI's).
NAMED_NORMS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "endovit": ((0.3464, 0.2280, 0.2228), (0.2520, 0.2128, 0.2093)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}
VIDEO_IMG_SIZE = 256  # V-JEPA-family crop of the benchmark protocol (docs/benchmark.md)
VIDEO_NUM_FRAMES = 64  # clip length of the phase-recognition protocol
COMMON_OPTIONS = ("name", "img_size", "num_frames", "mean", "std", "norm")
# ViT width -> size letter for display names.
VIT_SIZE_LETTERS = {192: "Ti", 384: "S", 768: "B", 1024: "L", 1280: "H", 1408: "g", 1536: "g", 1664: "G", 4096: "7B"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".tar", ".json", ".msgpack", ".h5")
_MIB = 1 << 20


class BackboneSpecError(ValueError):
    """A backbone spec string that cannot be resolved (unknown kind, bad option, wrong file kind)."""


# ---------------------------------------------------------------- the record


@dataclass
class Backbone:
    """A frozen backbone and everything the benchmark needs to feed it.

    ``model.forward(x)``: ``x`` float ``[B, C, T, H, W]`` normalised with ``mean``/``std`` -> tokens ``[B, N, D]``
    with ``N = T' * Hp * Wp`` in (t, h, w) order, ``(T', Hp, Wp) = grid(T, H, W)``.
    """

    name: str
    spec: str
    model: nn.Module
    embed_dim: int
    num_frames: int
    img_size: int
    patch_size: int
    tubelet_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    kind: str
    fingerprint: str

    def __post_init__(self) -> None:
        if self.kind not in ("video", "image"):
            raise ValueError(f"Backbone.kind={self.kind!r}: expected 'video' or 'image'")

    def grid(self, T: int, H: int, W: int) -> tuple[int, int, int]:
        """Token grid (T', Hp, Wp) for a clip of T frames of H x W pixels (errors name what does not divide)."""
        return token_grid((T, H, W), self.tubelet_size, self.patch_size)


# ---------------------------------------------------------------- spec options


class SpecOptions:
    """The ``?key=value`` options of a spec; loaders :meth:`take` what they understand, the rest is an error."""

    def __init__(self, items: dict[str, str], spec: str):
        self._items = dict(items)
        self._spec = spec
        self.asked: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def take(self, key: str, default=None, *, cast: Callable = str, choices: tuple | None = None):
        """Pop option ``key`` converted with ``cast`` (``str``, ``int``, ``float``, ``bool`` or a function)."""
        self.asked.add(key)
        if key not in self._items:
            return default
        raw = self._items.pop(key)
        try:
            value = parse_option_value(raw, cast)
        except ValueError as e:
            raise BackboneSpecError(f"backbone spec {self._spec!r}: option {key}={raw!r}: {e}") from None
        if choices is not None and value not in choices:
            raise BackboneSpecError(
                f"backbone spec {self._spec!r}: option {key}={raw!r} is not one of {list(choices)}"
            )
        return value

    def take_all(self) -> dict[str, str]:
        """Pop every remaining option (raw strings), for loaders that forward them (e.g. config overrides)."""
        out, self._items = self._items, {}
        self.asked.update(out)
        return out

    def check_all_used(self, prefix: str) -> None:
        if self._items:
            valid = sorted(self.asked | set(COMMON_OPTIONS))
            bad = sorted(self._items)
            hints = []
            for k in bad:
                close = difflib.get_close_matches(k, valid, 1, 0.5)
                hints.append(f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k))
            raise BackboneSpecError(
                f"backbone spec {self._spec!r}: unknown option(s) {', '.join(hints)} for kind '{prefix}'; "
                f"valid options: {', '.join(valid)}"
            )


def parse_option_value(raw: str, cast):
    """Convert one option string: bool accepts true/false/1/0/yes/no; a 'triple' is three comma-separated floats."""
    if cast is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true/false")
    if cast is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError("expected an integer") from None
    if cast is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError("expected a number") from None
    return cast(raw)


def triple(raw: str) -> tuple[float, float, float]:
    """'0.485,0.456,0.406' -> (0.485, 0.456, 0.406)."""
    parts = [p for p in raw.replace(" ", "").split(",") if p]
    if len(parts) != 3:
        raise ValueError("expected three comma-separated numbers")
    return tuple(float(p) for p in parts)  # type: ignore[return-value]


@dataclass(frozen=True)
class ParsedSpec:
    prefix: str | None  # None: a bare path
    argument: str
    options: dict[str, str]


_PREFIX_RE = re.compile(r"^([a-z][a-z0-9_-]+):(?!//)(.*)$", re.S)
_OPTIONS_RE = re.compile(r"\?([A-Za-z_][\w.]*=[^&?#]*(?:&[A-Za-z_][\w.]*=[^&?#]*)*)$")
_FRAGMENT_RE = re.compile(r"#([A-Za-z_]+)$")


def parse_spec(spec: str) -> ParsedSpec:
    """Split ``PREFIX:ARGUMENT[#COMPONENT][?k=v&...]``; ``#name`` becomes option ``which=name``."""
    if not isinstance(spec, str) or not spec.strip():
        raise BackboneSpecError(f"empty backbone spec {spec!r}; expected PREFIX:ARGUMENT, e.g. 'random:tiny@0'")
    rest = spec.strip()
    options: dict[str, str] = {}
    fragment = None
    for _ in range(2):  # options and fragment, in either order, at the end
        if m := _OPTIONS_RE.search(rest):
            for item in m.group(1).split("&"):
                key, value = item.split("=", 1)
                if key in options:
                    raise BackboneSpecError(f"backbone spec {spec!r}: option {key!r} given twice")
                options[key] = value
            rest = rest[: m.start()]
        elif fragment is None and (m := _FRAGMENT_RE.search(rest)):
            fragment = m.group(1)
            rest = rest[: m.start()]
    if fragment is not None:
        if "which" in options:
            raise BackboneSpecError(f"backbone spec {spec!r}: give the component once ('#{fragment}' or '?which=')")
        options["which"] = fragment
    m = _PREFIX_RE.match(rest)
    if m and not Path(rest).exists():
        return ParsedSpec(m.group(1), m.group(2), options)
    return ParsedSpec(None, rest, options)


# ---------------------------------------------------------------- fingerprints


def _file_digest(h, path: Path) -> None:
    st = path.stat()
    h.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    with open(path, "rb") as f:
        h.update(f.read(_MIB))
        if st.st_size > _MIB:
            f.seek(max(st.st_size - _MIB, _MIB))
            h.update(f.read(_MIB))


def fingerprint_path(*paths: str | Path, extra: str = "") -> str:
    """Cache-key hash of weight files: per file its name, size, mtime and sha256 of the first and last MiB
    (plus ``extra``, e.g. which component of the file is used).

    A directory contributes its weight and config files (``.safetensors``, ``.bin``, ``.pt``, ``.json``, ...)."""
    h = hashlib.sha256(extra.encode())
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(q for q in p.iterdir() if q.is_file() and q.suffix in _WEIGHT_SUFFIXES
                            and not q.name.startswith("."))
        elif p.exists():
            files.append(p)
    if not files:
        raise FileNotFoundError(f"fingerprint: no weight files at {[str(p) for p in paths]}")
    for f in files:
        _file_digest(h, f)
    return h.hexdigest()[:32]


def fingerprint_state_dict(state_dict: dict[str, torch.Tensor], extra: str = "") -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict (plus ``extra``, e.g. a config)."""
    h = hashlib.sha256(extra.encode())
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu").contiguous()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]

def vit_size_name(width: int) -> str:
    """'ViT-L' for width 1024; 'ViT-D{w}' for widths outside the usual sizes."""
    return f"ViT-{VIT_SIZE_LETTERS.get(width, f'D{width}')}"
