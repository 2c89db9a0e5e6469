"""Training checkpoints: atomic, last-N, everything an exact resume needs.

Layout of a run folder::

    OUT/checkpoints/step_00001000/   one checkpoint (a directory, complete or absent)
        weights.safetensors + unisurg.json   encoder, target_encoder, predictor in our model format
                                             (so `init.checkpoint` and `load_encoder` read it directly)
        decoder.safetensors                  SurgRec-MAE decoder
        train_state.pt                       optimizer, step, epoch, sampler position, RNG of every rank, config
        checksums.json                       SHA-256 and size of every file above (verified on resume)
    OUT/checkpoints/latest.json      {"step": 1000, "dir": "step_00001000"}

A checkpoint is written into a hidden temporary directory, every file fsynced, then the
directory is renamed into place and ``latest.json`` replaced (temp + fsync + rename), so a
process killed at any instant leaves either the previous state or the new one, never a torn
file. On resume the newest checkpoint whose files match their checksums is used: a damaged one
(truncated, zeroed, flipped bytes) is named, set aside as ``damaged-step_*`` and the next older
intact one is taken, said loudly (:func:`newest_intact_checkpoint`). ``latest.json`` may only name
a ``step_*`` folder inside ``checkpoints/``. Learning-rate, weight-decay and EMA schedules are functions of the step and the mask
generators are seeded by sample position: the step and the sampler position restore them.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from unisurg.atomic_files import fsync_dir, fsync_file, write_bytes_atomic
from unisurg.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME, save_checkpoint
from unisurg.models.integrity import read_safetensors, verify_checksums, write_checksums
from unisurg.models.mae_decoder import MAEDecoderConfig
from unisurg.models.predictor import VideoPredictor
from unisurg.models.strict_load import CheckpointError, check_finite, load_strict
from unisurg.models.vit import VideoViT

STATE_NAME = "train_state.pt"
DECODER_NAME = "decoder.safetensors"
LATEST_NAME = "latest.json"
LOG_TMP_PREFIX = "log.jsonl.tmp"  # logs.truncate_jsonl rewrites the log through this name
STATE_FORMAT = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")


# -- RNG -----------------------------------------------------------------------------------------

def rng_state() -> dict:
    """This process's RNG states (torch CPU, CUDA if used, numpy global, python) as weights_only-safe values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                                                        "pos": int(pos), "has_gauss": int(has_gauss),
                                                        "gauss": float(gauss)},
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# -- state dicts (DDP / FSDP2 / plain alike) -----------------------------------------------------

def _options(distributed: bool, **kw):
    return StateDictOptions(full_state_dict=True, cpu_offload=distributed, **kw)


def gather_student_state(student: nn.Module, optimizer: torch.optim.Optimizer, distributed: bool) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state dicts keyed by parameter names (collective under FSDP).

    With ``distributed``, only rank 0 receives them (on CPU); other ranks get empty dicts.
    """

    return get_state_dict(student, optimizer, options=_options(distributed))


def gather_module_state(module: nn.Module, distributed: bool) -> dict:
    return get_model_state_dict(module, options=_options(distributed))


def load_student_state(student: nn.Module, optimizer: torch.optim.Optimizer | None, model_sd: dict,
                       optim_sd: dict | None) -> None:
    """Strictly load full state dicts into (possibly wrapped / sharded) ``student`` and its optimizer."""

    opts = StateDictOptions(full_state_dict=True, strict=True)
    if optimizer is None or optim_sd is None:
        set_model_state_dict(student, model_sd, options=opts)
    else:
        set_state_dict(student, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd, options=opts)


def load_module_state(module: nn.Module, sd: dict) -> None:
    set_model_state_dict(module, sd, options=StateDictOptions(full_state_dict=True, strict=True))


def _split(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _cpu_module(cls, config, sd: dict, source: str) -> nn.Module:
    """A plain CPU module holding ``sd`` (the unsharded weights), for the model-format writer."""
    with torch.device("meta"):
        m = cls(config)
    return load_strict(m, sd, source=source, assign=True)


# -- save / find / load --------------------------------------------------------------------------

@dataclass
class CheckpointContents:
    """What :func:`write_checkpoint` stores, gathered on rank 0 (model state dicts are full, on CPU)."""

    student: dict  # "encoder.*", "predictor.*" | "decoder.*"
    target: dict | None  # the EMA encoder's state dict
    encoder_config: object
    predictor_config: object | None
    decoder_config: MAEDecoderConfig | None
    train_state: dict


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def write_model_files(folder: Path, contents: CheckpointContents, extra: dict) -> list[Path]:
    """The model part of a checkpoint in ``folder``: our format (encoder, EMA target, predictor) + MAE decoder."""
    src = f"{folder.name}"
    encoder = _cpu_module(VideoViT, contents.encoder_config, _split(contents.student, "encoder."), src + " [encoder]")
    target = None
    if contents.target is not None:
        target = _cpu_module(VideoViT, contents.encoder_config, contents.target, src + " [target_encoder]")
    predictor = None
    if contents.predictor_config is not None:
        predictor = _cpu_module(VideoPredictor, contents.predictor_config, _split(contents.student, "predictor."),
                                src + " [predictor]")
    save_checkpoint(folder, encoder=encoder, target_encoder=target, predictor=predictor, extra=extra)
    files = [folder / WEIGHTS_NAME, folder / CONFIG_NAME]
    if contents.decoder_config is not None:
        dec = {k: v.contiguous() for k, v in _split(contents.student, "decoder.").items()}
        save_file(dec, str(folder / DECODER_NAME),
                  metadata={"format": "pt", "mae_decoder_config": json.dumps(contents.decoder_config.to_dict())})
        files.append(folder / DECODER_NAME)
    return files


def write_dir_atomically(final: Path, fill) -> Path:
    """Create directory ``final`` whole or not at all: ``fill(tmp) -> files`` writes into a hidden sibling,
    every file and the directory are fsynced, then it is renamed into place (replacing an old one)."""
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for f in fill(tmp):
        fsync_file(f)
    fsync_dir(tmp)
    if final.exists():  # e.g. the end-of-run save of a step already saved periodically
        trash = parent / f".old-{final.name}-{os.getpid()}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(parent)
    return final


def write_checkpoint(checkpoints: Path, step: int, contents: CheckpointContents, keep_last: int) -> Path:
    """Write one checkpoint atomically (see module docstring), point ``latest.json`` at it, prune to ``keep_last``."""
    def fill(tmp: Path) -> list[Path]:
        files = write_model_files(tmp, contents, {"step": step, "epoch": contents.train_state.get("epoch")})
        torch.save(contents.train_state, tmp / STATE_NAME)
        files.append(tmp / STATE_NAME)
        return files + [write_checksums(tmp, files)]

    name = step_dir_name(step)
    final = write_dir_atomically(checkpoints / name, fill)
    write_bytes_atomic(checkpoints / LATEST_NAME, json.dumps({"step": step, "dir": name}).encode())
    prune(checkpoints, keep_last, keep=name)
    return final


def export_model(path: Path, contents: CheckpointContents) -> Path:
    """The trained model alone (no optimizer state), atomically, in our checkpoint format."""
    extra = {"step": contents.train_state["step"], "config": contents.train_state["config"]}
    def fill(tmp: Path) -> list[Path]:
        files = write_model_files(tmp, contents, extra)
        return files + [write_checksums(tmp, files)]

    return write_dir_atomically(path, fill)


def list_checkpoints(checkpoints: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (renamed into place, with a train state), oldest first."""
    if not checkpoints.is_dir():
        return []
    out = []
    for p in checkpoints.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_NAME).exists():
            out.append((int(m.group(1)), p))
    return sorted(out)


def prune(checkpoints: Path, keep_last: int, keep: str | None = None) -> None:
    found = list_checkpoints(checkpoints)
    for _, path in found[: max(len(found) - keep_last, 0)]:
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def clean_temporaries(checkpoints: Path) -> None:
    """Remove the leftovers of a write that was killed (hidden ``.tmp-*`` / ``.old-*`` entries); an
    ``.old-NAME`` whose replacement never arrived is put back as ``NAME``."""
    if checkpoints.is_dir():
        for p in checkpoints.iterdir():
            m = re.match(r"^\.old-(.+)-\d+$", p.name)
            if m and p.is_dir() and not (checkpoints / m.group(1)).exists():
                os.replace(p, checkpoints / m.group(1))
        for p in checkpoints.iterdir():
            if p.name.startswith((".tmp-", ".old-", f"{LATEST_NAME}.tmp", LOG_TMP_PREFIX)):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)


def pointed_checkpoint(checkpoints: Path) -> Path | None:
    """The checkpoint ``latest.json`` names, if it is a complete ``step_*`` folder directly inside
    ``checkpoints`` (a pointer leading elsewhere, e.g. ``../../other`` or an absolute path, is ignored)."""
    pointer = checkpoints / LATEST_NAME
    try:
        name = json.loads(pointer.read_text())["dir"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return None
    if not isinstance(name, str) or not _STEP_DIR.match(name):
        return None
    path = checkpoints / name
    if path.is_symlink() or path.resolve().parent != checkpoints.resolve() or not (path / STATE_NAME).exists():
        return None
    return path


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The checkpoint ``latest.json`` names (inside ``checkpoints``), else the newest complete one, else None."""
    found = list_checkpoints(checkpoints)
    pointed = pointed_checkpoint(checkpoints)
    if pointed is not None:
        return pointed
    return found[-1][1] if found else None


def check_checkpoint(path: Path) -> None:
    """Raise :class:`CheckpointError` naming the file if checkpoint ``path`` is damaged: its checksums
    when recorded, else (older checkpoints) a full read."""
    if not verify_checksums(path):
        read_checkpoint(path)


def newest_intact_checkpoint(checkpoints: Path, warn) -> Path | None:
    """The newest checkpoint that passes :func:`check_checkpoint`, ``latest.json``'s first.

    Each damaged one is reported through ``warn(message)`` naming the file and renamed to
    ``damaged-step_*`` (kept for inspection, no longer listed, never pruned). None when there is no
    checkpoint; :class:`CheckpointError` listing every problem when all are damaged.
    """
    candidates = [p for _, p in reversed(list_checkpoints(checkpoints))]
    pointed = pointed_checkpoint(checkpoints)
    if (checkpoints / LATEST_NAME).exists() and pointed is None:
        warn(f"{checkpoints / LATEST_NAME} does not name a complete step_* folder inside {checkpoints}; ignored")
    if pointed is not None:
        candidates = [pointed] + [p for p in candidates if p != pointed]
    problems = []
    for path in candidates:
        try:
            check_checkpoint(path)
        except CheckpointError as e:
            problems.append(str(e))
            aside = path.with_name(f"damaged-{path.name}")
            if aside.exists():
                shutil.rmtree(aside, ignore_errors=True)
            os.replace(path, aside)
            fsync_dir(checkpoints)
            warn(f"DAMAGED CHECKPOINT: {e}\n  moved to {aside}; looking for an older intact checkpoint")
            continue
        if problems:
            warn(f"RESUMING FROM AN OLDER CHECKPOINT: {path} (the newer ones are damaged, see above)")
        return path
    if problems:
        raise CheckpointError(f"{checkpoints}: no intact checkpoint to resume from:\n  " + "\n  ".join(problems))
    return None


def read_checkpoint(path: Path, *, verify: bool = True) -> tuple[dict, dict | None, dict]:
    """``(student state, target state or None, train state)`` of a checkpoint directory, on CPU.

    Files are checked against ``checksums.json`` when present (``verify=False``: already done by
    :func:`newest_intact_checkpoint` in this process); weights holding NaN / inf are refused; every
    error names the file."""
    weights = path / WEIGHTS_NAME
    if not weights.exists() or not (path / STATE_NAME).exists():
        raise CheckpointError(f"{path}: not a complete training checkpoint (needs {WEIGHTS_NAME} and {STATE_NAME})")
    if verify:
        verify_checksums(path)
    tensors, _ = read_safetensors(weights)
    student = {k: v for k, v in tensors.items() if k.startswith(("encoder.", "predictor."))}
    target = _split(tensors, "target_encoder.") or None
    if (path / DECODER_NAME).exists():
        student.update({f"decoder.{k}": v for k, v in read_safetensors(path / DECODER_NAME)[0].items()})
    check_finite(student, source=str(weights))
    check_finite(target or {}, source=f"{weights} [target_encoder]")
    try:
        state = torch.load(path / STATE_NAME, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - named and re-raised
        raise CheckpointError(f"{path / STATE_NAME}: cannot be read ({e})") from e
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path / STATE_NAME}: train state format {got!r}, "
                              f"this version reads {STATE_FORMAT}")
    return student, target, state


def read_decoder(path: Path) -> tuple[MAEDecoderConfig, dict]:
    """The MAE decoder config and weights of a checkpoint directory."""

    file = path / DECODER_NAME
    if not file.exists():
        raise CheckpointError(f"{path}: no {DECODER_NAME} (not a SurgRec-MAE checkpoint); set init.load_decoder=false")
    sd, meta = read_safetensors(file)
    if "mae_decoder_config" not in meta:
        raise CheckpointError(f"{file}: no decoder config in its metadata")
    return MAEDecoderConfig.from_dict(json.loads(meta["mae_decoder_config"]), where=str(file)), sd
