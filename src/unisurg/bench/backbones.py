"""Backbone registry: every model of the papers' tables, frozen, from a local weight file (SPEC Sec. 5 "Baselines").

    bb = load_backbone("unisurg:runs/tiny/last", device="cuda", dtype=torch.bfloat16)
    tokens = bb.model(clip)          # clip [B, C, T, H, W] normalised with bb.mean/bb.std -> [B, N, bb.embed_dim]
    t, hp, wp = bb.grid(64, 256, 256)

A spec is ``PREFIX:ARGUMENT[#COMPONENT][?key=value&key=value]`` (see :func:`backbone_kinds`):

========================  =====================================================================================
``unisurg:PATH``          our checkpoint (directory or ``.safetensors``/``.json`` pair), target encoder by default;
                          ``unisurg:PATH#encoder`` picks the online encoder
``vjepa2:PATH``           official V-JEPA 2 ``.pt`` (also the UniSurg / SurgMotion / SurgRec-JEPA releases);
                          options ``num_heads``, ``pos_embed`` (auto|rope|sincos), ``#encoder``
``hf-vjepa2:FOLDER``      Hugging Face VJEPA2 ``save_pretrained`` folder, through our encoder
                          (``?impl=transformers`` runs ``transformers.VJEPA2Model`` instead)
``random:PRESET[@SEED]``  randomly initialised encoder of a preset (``random:tiny@0?pos_embed=sincos``)
``videomae:FOLDER``       HF ``VideoMAEModel``; tokens = last hidden state
``dinov3:FOLDER``         HF DINOv3 ViT, frame by frame; patch tokens (CLS / registers dropped)
``hf-image:FOLDER``       any HF image backbone with patch tokens or a feature map, frame by frame
``timm-vit:PATH``         timm-format ViT state dict (EndoViT, SurgeNet-ViT, MAE, ...), frame by frame
``resnet50:PATH``         torchvision-format ResNet-50 state dict (GastroNet, SurgeNet), last-stage feature map
``endomamba:FILE``        EndoMamba release (pretraining ``encoder.`` or fine-tuned layout),
                          :mod:`unisurg.backbones.endomamba`
``surgvlp:FILE``          SurgVLP release (ResNet-50 + BERT), ``?tokenizer=DIR`` for zero-shot,
                          :mod:`unisurg.backbones.surgvlp`
========================  =====================================================================================

A bare path (no prefix) is recognised by its content. Options every kind accepts: ``name`` (display
name), ``img_size``, ``num_frames``, ``mean`` / ``std`` (three comma-separated numbers) or ``norm``
(``imagenet`` | ``endovit`` | ``clip``). Nothing is ever downloaded.

Image models see the clip frame by frame: tokens ``[B, T * Np, D]`` in (t, h, w) order, i.e. all patch
tokens of frame 0 in raster order, then frame 1, ...; ``tubelet_size`` is 1 and ``num_frames`` is 1
(their native clip length: one frame), though any T is accepted.

Video models of the V-JEPA family default to ``img_size=256`` and ``num_frames=64`` (the benchmark
protocol of the UniSurg release) unless the checkpoint records its own (our format: ``extra.img_size``
and ``extra.num_frames``; HF: ``crop_size`` / ``frames_per_clip``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import json
import logging
import re
import typing
import warnings
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
VIDEO_IMG_SIZE = 256  # V-JEPA-family crop of the benchmark protocol (SPEC Sec. 5)
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


# ---------------------------------------------------------------- registry


_REGISTRY: dict[str, tuple[Callable[..., Backbone], str]] = {}


def register_backbone(prefix: str, loader: Callable[..., Backbone], help: str) -> None:  # noqa: A002 - API name
    """Add a spec kind. ``loader(argument, options, *, spec, device, dtype) -> Backbone``.

    ``argument`` is the text after ``prefix:`` (options removed), ``options`` a :class:`SpecOptions` whose
    entries the loader must :meth:`~SpecOptions.take` (leftovers are an error). The loader may build on the
    CPU in float32: :func:`load_backbone` moves, casts and freezes the model afterwards.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_-]+", prefix or ""):
        raise ValueError(f"register_backbone: prefix {prefix!r} must match [a-z][a-z0-9_-]+ (at least 2 characters)")
    if not callable(loader):
        raise TypeError(f"register_backbone: loader for {prefix!r} is not callable")
    old = _REGISTRY.get(prefix)
    if old is not None and _identity(old[0]) != _identity(loader):
        raise ValueError(f"register_backbone: prefix {prefix!r} is already registered ({old[1]})")
    _REGISTRY[prefix] = (loader, help)


def _identity(loader) -> tuple:
    """Same loader across module reloads: its import path (lazy target or module + qualified name)."""
    return getattr(loader, "_lazy_target", None) or (getattr(loader, "__module__", None),
                                                      getattr(loader, "__qualname__", id(loader)))


def backbone_kinds() -> dict[str, str]:
    """prefix -> one-line help, for ``--help`` texts and error messages."""
    return {k: h for k, (_, h) in sorted(_REGISTRY.items())}


def _unknown_prefix(prefix: str, spec: str) -> BackboneSpecError:
    kinds = sorted(_REGISTRY)
    close = difflib.get_close_matches(prefix, kinds, n=1, cutoff=0.3)
    hint = f" Did you mean '{close[0]}:'?" if close else ""
    return BackboneSpecError(
        f"unknown backbone kind '{prefix}' in spec {spec!r}.{hint} Valid kinds: "
        + "; ".join(f"{k} ({h})" for k, h in backbone_kinds().items())
    )


def load_backbone(spec: str, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Backbone:
    """Build the frozen backbone named by ``spec`` (see the module docstring) on ``device`` in ``dtype``."""
    parsed = parse_spec(spec)
    spec = spec.strip()
    prefix = parsed.prefix
    if prefix is None:
        prefix = detect_kind(Path(parsed.argument), spec)
    elif prefix not in _REGISTRY:
        raise _unknown_prefix(prefix, spec)
    loader = _REGISTRY[prefix][0]
    opts = SpecOptions(parsed.options, spec)
    common = {
        "name": opts.take("name"),
        "img_size": opts.take("img_size", cast=int),
        "num_frames": opts.take("num_frames", cast=int),
        "mean": opts.take("mean", cast=triple),
        "std": opts.take("std", cast=triple),
        "norm": opts.take("norm", choices=tuple(NAMED_NORMS)),
    }
    bb = loader(parsed.argument, opts, spec=spec, device=device, dtype=dtype)
    opts.check_all_used(prefix)
    if not isinstance(bb, Backbone):
        raise TypeError(f"backbone loader for '{prefix}' returned {type(bb).__name__}, expected Backbone")
    changes: dict = {"spec": spec}
    if common["norm"] is not None:
        changes["mean"], changes["std"] = NAMED_NORMS[common["norm"]]
    for key in ("name", "img_size", "num_frames", "mean", "std"):
        if common[key] is not None:
            changes[key] = common[key]
    bb = dataclasses.replace(bb, **changes)
    model = bb.model.to(device=device, dtype=dtype) if dtype is not None else bb.model.to(device=device)
    model.requires_grad_(False).eval()
    bb.model = model
    return bb


# ---------------------------------------------------------------- bare paths


def detect_kind(path: Path, spec: str) -> str:
    """The spec kind of a bare path, from what lies there."""
    from unisurg.models.checkpoint import CONFIG_NAME

    if not path.exists() and not (path.suffix == ".json" and path.with_suffix(".safetensors").exists()):
        raise FileNotFoundError(
            f"backbone spec {spec!r}: no such file or directory: {path} (and it has no 'kind:' prefix; "
            f"valid kinds: {', '.join(sorted(_REGISTRY))})"
        )
    if path.is_dir():
        if (path / CONFIG_NAME).exists():
            return "unisurg"
        if (path / "config.json").exists():
            try:
                model_type = json.loads((path / "config.json").read_text()).get("model_type", "")
            except (OSError, json.JSONDecodeError) as e:
                raise BackboneSpecError(f"{path / 'config.json'}: cannot read it ({e})") from e
            if model_type == "vjepa2":
                return "hf-vjepa2"
            if model_type == "videomae":
                return "videomae"
            if model_type.startswith("dinov3"):
                return "dinov3"
            return "hf-image"
        raise BackboneSpecError(
            f"backbone spec {spec!r}: directory {path} holds neither our checkpoint ({CONFIG_NAME}) nor a Hugging Face "
            "model (config.json); give a 'kind:' prefix"
        )
    from unisurg.models.checkpoint import detect_format

    fmt = detect_format(path)
    if fmt == "unisurg":
        return "unisurg"
    from unisurg.bench.backbones_image import read_weights, select_state_dict, sniff_image_state_dict
    from unisurg.models import interop_hf, interop_vjepa2
    from unisurg.models.strict_load import CheckpointError

    obj = read_weights(path)
    if isinstance(obj, dict):
        # first: a SurgVLP file also passes the HF and ResNet checks below (its BERT / ResNet keys)
        for anchor, kind in (("backbone_img.global_embedder.weight", "surgvlp"),
                             ("layers.0.mixer.in_proj.weight", "endomamba")):
            try:
                select_state_dict(obj, anchor, source=str(path))
                return kind
            except CheckpointError:
                pass
        comps = {c: obj[c] for c in interop_vjepa2.COMPONENTS if isinstance(obj.get(c), dict)}
        if comps or interop_hf.is_hf_state_dict(obj):
            return "vjepa2"
        if interop_vjepa2.is_official_state_dict(obj):
            w = interop_vjepa2.strip_prefixes(obj).get("patch_embed.proj.weight")
            if w is not None and w.dim() == 5:
                return "vjepa2"
        kind = sniff_image_state_dict(obj)
        if kind is not None:
            return kind
    raise BackboneSpecError(
        f"backbone spec {spec!r}: cannot tell what model {path} holds (not our format, not a V-JEPA checkpoint, no "
        "timm ViT 'patch_embed.proj.weight' nor torchvision ResNet 'layer1.0.conv1.weight'); give a 'kind:' prefix: "
        + ", ".join(sorted(_REGISTRY))
    )


# ---------------------------------------------------------------- our encoder family


def vit_size_name(width: int) -> str:
    """'ViT-L' for width 1024; 'ViT-D{w}' for widths outside the usual sizes."""
    return f"ViT-{VIT_SIZE_LETTERS.get(width, f'D{width}')}"


def _require(path: Path, spec: str) -> Path:
    if not path.exists() and not (path.suffix == ".json" and path.with_suffix(".safetensors").exists()):
        raise FileNotFoundError(f"backbone spec {spec!r}: weights not found: {path}")
    return path


def _video_backbone(encoder, *, name: str, spec: str, fingerprint: str, img_size: int, num_frames: int) -> Backbone:
    c = encoder.config
    return Backbone(
        name=name, spec=spec, model=encoder, embed_dim=c.embed_dim, num_frames=num_frames, img_size=img_size,
        patch_size=c.patch_size, tubelet_size=c.tubelet_size, mean=IMAGENET_MEAN, std=IMAGENET_STD, kind="video",
        fingerprint=fingerprint,
    )


def _ours_files(path: Path) -> list[Path]:
    """Weights + JSON of our format: ``DIR/weights.safetensors`` + ``DIR/unisurg.json``, or a ``NAME.*`` pair."""
    from unisurg.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME

    if path.suffix in (".safetensors", ".json"):
        pair = [path.with_suffix(".safetensors"), path.with_suffix(".json")]
    else:
        pair = [path / WEIGHTS_NAME, path / CONFIG_NAME]
    return [p for p in pair if p.exists()]


def load_unisurg(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """Our checkpoint through :func:`unisurg.models.load_encoder` (target encoder unless ``#encoder``)."""
    from unisurg.models.checkpoint import detect_format, load_encoder, read_config

    path = _require(Path(arg), spec)
    explicit = "which" in opts
    which = opts.take("which", "target_encoder", choices=("target_encoder", "encoder"))
    fmt = detect_format(path)
    if fmt != "unisurg":
        other = {"hf": "hf-vjepa2", "torch": "vjepa2", "safetensors": "vjepa2"}[fmt]
        raise BackboneSpecError(f"backbone spec {spec!r}: {path} is not in our checkpoint format; use '{other}:{arg}'")
    config = read_config(path)
    components = config.get("components", {})
    if not explicit and which not in components and "encoder" in components:
        which = "encoder"  # a save_encoder() file: its only encoder is the one meant
    encoder = load_encoder(path, which=which)
    extra = config.get("extra") or {}
    label = encoder.config.name
    if label in ("custom", ""):
        label = vit_size_name(encoder.config.embed_dim)
    both = {"encoder", "target_encoder"} <= set(components)
    suffix = " (online)" if both and encoder.load_info["component"] == "encoder" else ""
    return _video_backbone(
        encoder, name=f"UniSurg-{label}{suffix}", spec=spec,
        fingerprint=fingerprint_path(*_ours_files(path), extra=encoder.load_info["component"]),
        img_size=int(extra.get("img_size", VIDEO_IMG_SIZE)), num_frames=int(extra.get("num_frames", VIDEO_NUM_FRAMES)),
    )


def load_vjepa2(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """Official V-JEPA 2 ``torch.save`` file (or a bare HF VJEPA2 state dict file) via ``load_encoder``."""
    from unisurg.models.checkpoint import detect_format, load_encoder

    path = _require(Path(arg), spec)
    fmt = detect_format(path)
    if fmt in ("unisurg", "hf"):
        other = "unisurg" if fmt == "unisurg" else "hf-vjepa2"
        raise BackboneSpecError(f"backbone spec {spec!r}: {path} is not an official V-JEPA 2 file; use '{other}:{arg}'")
    explicit = "which" in opts
    which = opts.take("which", "target_encoder", choices=("target_encoder", "encoder"))
    num_heads = opts.take("num_heads", cast=int)
    pos_embed = opts.take("pos_embed", "auto", choices=("auto", "rope", "sincos"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder = load_encoder(path, which=which, num_heads=num_heads, pos_embed=pos_embed)
    for w in caught:
        if not explicit and "instead" in str(w.message):  # a release file with only 'encoder' (e.g. SurgRec-JEPA)
            log.info("%s", w.message)
        else:
            warnings.warn(w.message, w.category, stacklevel=3)
    for note in encoder.load_info.get("notes", []):
        log.info("%s: %s", path, note)
    return _video_backbone(
        encoder, name=f"V-JEPA 2 {vit_size_name(encoder.config.embed_dim)}", spec=spec,
        fingerprint=fingerprint_path(path, extra=encoder.load_info["component"]),
        img_size=VIDEO_IMG_SIZE, num_frames=VIDEO_NUM_FRAMES,
    )


def load_hf_vjepa2(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """HF VJEPA2 ``save_pretrained`` folder; our encoder by default, ``?impl=transformers`` for the library's."""
    from unisurg.models.checkpoint import load_encoder

    path = _require(Path(arg), spec)
    impl = opts.take("impl", "ours", choices=("ours", "transformers"))
    if impl == "transformers":
        from unisurg.bench.backbones_hf import load_hf_vjepa2_transformers

        return load_hf_vjepa2_transformers(path, opts, spec=spec)
    if not (path.is_dir() and (path / "config.json").exists()):
        raise BackboneSpecError(f"backbone spec {spec!r}: {path} is not a HF folder with config.json")
    cfg = json.loads((path / "config.json").read_text())
    encoder = load_encoder(path)
    return _video_backbone(
        encoder, name=f"V-JEPA 2 {vit_size_name(encoder.config.embed_dim)} (HF)", spec=spec,
        fingerprint=fingerprint_path(path), img_size=int(cfg.get("crop_size", VIDEO_IMG_SIZE)),
        num_frames=int(cfg.get("frames_per_clip", VIDEO_NUM_FRAMES)),
    )


def _config_overrides(raw: dict[str, str], spec: str) -> dict:
    """``?key=value`` strings -> typed :class:`EncoderConfig` overrides (unknown keys name the nearest field)."""
    from unisurg.models.vit import EncoderConfig

    hints = typing.get_type_hints(EncoderConfig)
    out = {}
    for key, value in raw.items():
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints) + list(COMMON_OPTIONS), 1, 0.5)
            raise BackboneSpecError(
                f"backbone spec {spec!r}: {key!r} is neither an option nor an encoder config field"
                + (f"; did you mean {close[0]!r}?" if close else f"; fields: {', '.join(hints)}")
            )
        tp = hints[key]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        base = args[0] if args else tp
        if value.lower() == "none" and type(None) in typing.get_args(tp):
            out[key] = None
            continue
        try:
            out[key] = parse_option_value(value, base if base in (int, float, bool) else str)
        except ValueError as e:
            raise BackboneSpecError(f"backbone spec {spec!r}: {key}={value!r}: {e}") from None
    return out


def load_random(arg: str, opts: SpecOptions, *, spec: str, device=None, dtype=None) -> Backbone:
    """``PRESET[@SEED]``: a preset encoder initialised from ``torch.manual_seed(SEED)`` (default 0) on the CPU.

    The global RNG state is restored afterwards; remaining options override :class:`EncoderConfig` fields.
    """
    from unisurg.models.presets import PRESETS, build_encoder

    preset, _, seed_text = arg.partition("@")
    if preset not in PRESETS:
        close = difflib.get_close_matches(preset, list(PRESETS), 1, 0.3)
        raise BackboneSpecError(
            f"backbone spec {spec!r}: unknown preset {preset!r}"
            + (f"; did you mean {close[0]!r}?" if close else "") + f" Presets: {', '.join(PRESETS)}"
        )
    try:
        seed = int(seed_text) if seed_text else 0
    except ValueError:
        raise BackboneSpecError(f"backbone spec {spec!r}: seed {seed_text!r} after '@' is not an integer") from None
    overrides = _config_overrides(opts.take_all(), spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            encoder = build_encoder(preset, **overrides)
        except (TypeError, ValueError) as e:
            raise BackboneSpecError(f"backbone spec {spec!r}: {e}") from e
    encoder.eval()
    config_text = json.dumps(encoder.config.to_dict(), sort_keys=True)
    return _video_backbone(
        encoder, name=f"random-init {preset}", spec=spec,
        fingerprint=fingerprint_state_dict(encoder.state_dict(), extra=config_text),
        img_size=VIDEO_IMG_SIZE, num_frames=VIDEO_NUM_FRAMES,
    )


# ---------------------------------------------------------------- built-in kinds


def _lazy(module: str, function: str) -> Callable[..., Backbone]:
    """A loader imported on first use (keeps ``transformers`` out of ``import unisurg``)."""

    def loader(*args, **kwargs):
        return getattr(importlib.import_module(module), function)(*args, **kwargs)

    loader._lazy_target = (module, function)  # type: ignore[attr-defined]
    return loader


register_backbone("unisurg", load_unisurg,
                  "our checkpoint dir or .safetensors pair; target encoder, '#encoder' for the online one")
register_backbone("vjepa2", load_vjepa2,
                  "official V-JEPA 2 / UniSurg / SurgMotion / SurgRec-JEPA .pt file; ?num_heads= ?pos_embed=")
register_backbone("hf-vjepa2", load_hf_vjepa2, "Hugging Face VJEPA2 folder; ?impl=transformers to run the library's")
register_backbone("random", load_random,
                  "random-init preset, PRESET[@SEED][?field=value...], e.g. random:tiny@0 (untrained baseline)")
register_backbone("videomae", _lazy("unisurg.bench.backbones_hf", "load_videomae"),
                  "Hugging Face VideoMAE folder (fixed clip size of its config)")
register_backbone("dinov3", _lazy("unisurg.bench.backbones_hf", "load_dinov3"),
                  "Hugging Face DINOv3 folder, frame by frame, patch tokens")
register_backbone("hf-image", _lazy("unisurg.bench.backbones_hf", "load_hf_image"),
                  "any Hugging Face image backbone folder, frame by frame")
register_backbone("timm-vit", _lazy("unisurg.bench.backbones_image", "load_timm_vit"),
                  "timm-format ViT state dict (EndoViT, SurgeNet-ViT), frame by frame; ?arch=vit_base_patch16_224")
register_backbone("resnet50", _lazy("unisurg.bench.backbones_image", "load_resnet50"),
                  "torchvision-format ResNet-50 state dict (GastroNet, SurgeNet), frame by frame, last stage")
register_backbone("endomamba", _lazy("unisurg.backbones.endomamba", "load_endomamba"),
                  "EndoMamba release (.pth, pretraining 'encoder.' or fine-tuned layout), 16 frames, 224 px")
register_backbone("surgvlp", _lazy("unisurg.backbones.surgvlp", "load_surgvlp"),
                  "SurgVLP release .pth (ResNet-50 + BERT), frame by frame; ?tokenizer=DIR for zero-shot")
