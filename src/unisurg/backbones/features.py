"""Frozen features: every sample's tokens computed once by the backbone, cached on disk, reused.

Cache layout (one folder per backbone x protocol x dataset x split scheme x split)::

    CACHE/features/<dataset>/<split scheme>/<backbone fingerprint[:16]>-<protocol digest[:16]>/<split>/
        meta.json                 backbone, protocol, sample count, shard size
        shard_00000.npy ...       float16 [n_shard, N, D] tokens (or [n_shard, D] pooled)
        complete.json             written last, with the SHA-256 and size of every shard

The protocol digest covers everything that changes the features: the clip protocol (frames, res,
fps, anchor, short side, normalisation, ...), the feature mode and dtype, the task and the exact
sample list (keys and frame indices). Each shard is written to a temporary name and renamed, so a
killed extraction leaves only whole shards, and a rerun computes only the missing ones.
Reading uses memory maps: a training batch touches only its samples' bytes. A shard is trusted
only against complete.json: sizes are checked when the cache is opened, the SHA-256 of a shard
when this process first maps it; a damaged shard is removed with complete.json (so a rerun
recomputes that shard alone) and named in a :class:`DamagedCacheError`. A cache written without
checksums (older unisurg) is recomputed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from unisurg.atomic_files import save_npy_atomic, write_json_atomic
from unisurg.backbones.registry import load_backbone
from unisurg.data.augment import train_augment
from unisurg.data.pixels import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    center_crop,
    crop_at,
    read_frames,
    resize_image,
    squash,
    to_model_input,
)
from unisurg.data.ray_engine import RayOptions, check_engine, ray_actor_map
from unisurg.datasets import read_image
from unisurg.datasets.samples import SampleRef, SplitData
from unisurg.device import resolve_device
from unisurg.models.integrity import sha256_file

CACHE_VERSION = 1
PIXEL_FIELDS = ("frames", "res", "fps", "anchor", "short_side", "clip_fps", "frame_folder_fps", "norm", "jpeg_quality",
                "field_of_view")  # sampling / views change the sample keys and indices  # positions / start change the sample indices, which key the cache already


class FeatureCacheError(RuntimeError):
    pass


class DamagedCacheError(FeatureCacheError):
    """A cached shard does not match its recorded size / SHA-256 (or has no record); it was removed."""


def shard_path(folder: Path, k: int) -> Path:
    return Path(folder) / f"shard_{k:05d}.npy"


def shard_checksums(folder: Path, n_shards: int) -> dict[str, dict]:
    """``{shard file name: {"sha256", "bytes"}}`` of a finished cache folder (stored in complete.json)."""
    out = {}
    for k in range(n_shards):
        p = shard_path(folder, k)
        out[p.name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def discard_shards(folder: Path, names: list[str]) -> None:
    """Remove ``complete.json`` and the named shards: the next extraction recomputes those shards alone."""
    (Path(folder) / "complete.json").unlink(missing_ok=True)
    for name in names:
        (Path(folder) / name).unlink(missing_ok=True)


def _json_digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def protocol_dict(cfg, task_name: str) -> dict:
    """The settings that determine the cached features (see module docstring)."""
    clip = {k: getattr(cfg.clip, k) for k in PIXEL_FIELDS}
    clip["resize_short"] = cfg.clip.resize_short
    return {"version": CACHE_VERSION, "clip": clip, "mode": cfg.features.mode, "dtype": cfg.features.dtype,
            "task": task_name}


def feature_dir(cfg, dataset: str, split_scheme: str, fingerprint: str, task_name: str, split: SplitData) -> Path:
    proto = protocol_dict(cfg, task_name)
    digest = _json_digest({"protocol": proto, "samples": split.keys_digest()})
    root = Path(cfg.cache_dir).expanduser() / "features" / dataset / (split_scheme or "default")
    return root / f"{fingerprint[:16]}-{digest[:16]}" / split.name


def norm_stats(cfg, backbone) -> tuple[tuple, tuple]:
    if cfg.clip.norm == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(backbone.mean), tuple(backbone.std)


# -- pixels -----------------------------------------------------------------------------------


class ClipPixels:
    """Reads the pixels of samples: clips from the frame store, still images from their files.

    ``image_frames``: how many times a still image is repeated along time (a video backbone's
    tubelet size; 1 for an image backbone).
    """

    def __init__(self, store, ids: dict[str, str], res: int, image_frames: int = 1, squash_to: int | None = None):
        self.store, self.ids, self.res, self.image_frames = store, ids, res, image_frames
        self.squash_to = squash_to  # clip.field_of_view=squash: frames resized to squash_to x squash_to first

    def _frames(self, media: str, indices: np.ndarray) -> np.ndarray:
        frames = read_frames(self.store, self.ids[media], indices)
        return frames if self.squash_to is None else squash(frames, self.squash_to)

    def _image(self, ref: SampleRef) -> np.ndarray:
        img = resize_image(read_image(ref.media), self.res)
        return np.repeat(img[None], self.image_frames, axis=0)

    def group(self, refs: list[SampleRef]) -> np.ndarray:
        """``uint8 [b, T, res, res, 3]`` of a batch of samples; consecutive samples of one video are
        decoded with one contiguous read of the frames they span (neighbouring seconds share frames)."""
        out, i = [], 0
        while i < len(refs):
            j = i + 1
            while j < len(refs) and refs[j].media == refs[i].media:
                j += 1
            run = refs[i:j]
            if run[0].indices is None:
                out.extend(self._image(r) for r in run)
            else:
                allidx = np.concatenate([r.indices for r in run])
                lo, hi = int(allidx.min()), int(allidx.max())
                block = self._frames(run[0].media, np.arange(lo, hi + 1))
                if all(r.crop == 0.5 for r in run):
                    block = center_crop(block, self.res)
                    out.extend(block[r.indices - lo] for r in run)
                else:  # spatial test views
                    out.extend(crop_at(block[r.indices - lo], self.res, r.crop) for r in run)
            i = j
        return np.stack(out)

    def one(self, ref: SampleRef, augment: Callable | None = None) -> np.ndarray:
        """``uint8 [T, res, res, 3]`` of one sample, through ``augment(frames [T, H, W, 3]) -> [T, res, res, 3]``."""
        if ref.indices is None:
            img = read_image(ref.media)
            frames = np.repeat(img[None], self.image_frames, axis=0)
            return augment(frames) if augment else np.repeat(resize_image(img, self.res)[None], self.image_frames, 0)
        frames = self._frames(ref.media, ref.indices)
        return augment(frames) if augment else np.ascontiguousarray(crop_at(frames, self.res, ref.crop))


class _Groups(Dataset):
    def __init__(self, pixels: ClipPixels, refs: list[SampleRef], groups: list[np.ndarray]):
        self.pixels, self.refs, self.groups = pixels, refs, groups

    def __len__(self):
        return len(self.groups)

    def __getitem__(self, g):
        return torch.from_numpy(self.pixels.group([self.refs[i] for i in self.groups[g]]))


def batch_groups(refs: list[SampleRef], start: int, stop: int, batch_size: int) -> list[np.ndarray]:
    """Samples ``start..stop-1`` cut into consecutive batches of ``batch_size`` (the sample order keeps the
    seconds of a video together, so a batch reads a short span of frames)."""
    return [np.arange(i, min(i + batch_size, stop)) for i in range(start, stop, batch_size)]


# -- the backbone forward ---------------------------------------------------------------------


def frozen_tokens(backbone, clips: torch.Tensor, device: torch.device, dtype: torch.dtype, mean, std,
                  amp: bool) -> torch.Tensor:
    """uint8 clips ``[B, T, H, W, 3]`` (or augmented, see ``to_model_input``) -> float32 tokens
    ``[B, N, D]`` of the frozen backbone; normalisation happens on the device."""
    x = to_model_input(clips.to(device, non_blocking=True), mean, std, dtype)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        tokens = backbone.model(x)
    if isinstance(tokens, (list, tuple)):
        tokens = tokens[-1]
    if tokens.dim() != 3:
        raise FeatureCacheError(f"backbone {backbone.name} returned shape {tuple(tokens.shape)}; expected [B, N, D]")
    return tokens.float()


class Encoder:
    """uint8 clips -> frozen features on the device (normalise, forward, optional mean pooling)."""

    def __init__(self, backbone, cfg, device: torch.device, mean: tuple | None = None, std: tuple | None = None):
        self.backbone, self.device = backbone, device
        self.mean, self.std = norm_stats(cfg, backbone)
        if mean is not None:  # the statistics a saved probe was trained with
            self.mean, self.std = mean, std
        self.mode = cfg.features.mode
        self.amp = cfg.train.amp and device.type == "cuda"
        p = next(iter(backbone.model.parameters()), None)
        self.dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        self.forwards = 0

    @torch.no_grad()
    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 clips ``[B, T, H, W, 3]`` (or augmented ``float16 [B, T, H, W, 4]``, see ``to_model_input``)."""
        tokens = frozen_tokens(self.backbone, clips, self.device, self.dtype, self.mean, self.std, self.amp)
        self.forwards += 1
        if self.mode == "pooled":
            return tokens.mean(dim=1)
        if self.mode == "time":  # token order is (t, h, w): mean over each time step's patches
            steps = clips.shape[1] // self.backbone.tubelet_size
            if tokens.shape[1] % steps:
                raise FeatureCacheError(f"features.mode=time: {tokens.shape[1]} tokens do not split into {steps} time steps")
            return tokens.view(tokens.shape[0], steps, -1, tokens.shape[2]).mean(dim=2)
        return tokens


# -- the cache --------------------------------------------------------------------------------


class FeatureSet(Dataset):
    """Read side of a cached split: ``fs[i]`` -> ``float32`` tensor ``[N, D]`` (or ``[D]``)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not (self.folder / "complete.json").exists():
            raise FeatureCacheError(f"{self.folder}: feature cache incomplete; rerun `unisurg extract` to finish it")
        self.meta = json.loads(meta_path.read_text())
        self.n, self.shard_size = int(self.meta["n"]), int(self.meta["shard_size"])
        self._shards: dict[int, np.ndarray] = {}
        self._verified: set[int] = set()
        self.checksums = self._read_checksums()
        first = self._shard(0)
        self.item_shape = tuple(first.shape[1:])

    def _read_checksums(self) -> dict[str, dict]:
        """The shard records of complete.json, every shard's size checked (see module docstring)."""
        n_shards = (self.n + self.shard_size - 1) // self.shard_size
        names = [shard_path(self.folder, k).name for k in range(n_shards)]
        try:
            record = json.loads((self.folder / "complete.json").read_text()).get("shards")
        except (OSError, ValueError, AttributeError):
            record = None
        if not isinstance(record, dict) or sorted(record) != sorted(names):
            discard_shards(self.folder, names)
            raise DamagedCacheError(f"{self.folder}: feature cache without shard checksums (older unisurg or a "
                                    "damaged complete.json); removed, the next run recomputes it")
        bad = []
        for name in names:
            p = self.folder / name
            size = p.stat().st_size if p.exists() else None
            if size != record[name].get("bytes"):
                bad.append(f"{name} ({size} bytes, {record[name].get('bytes')} written)")
        if bad:
            discard_shards(self.folder, [b.split(" ")[0] for b in bad])
            raise DamagedCacheError(f"{self.folder}: damaged feature shard(s) {', '.join(bad)}; removed, the next run "
                                    "recomputes them")
        return record

    def _verify(self, k: int) -> None:
        """Check shard ``k``'s SHA-256 once per process (damaged: removed, :class:`DamagedCacheError`)."""
        if k in self._verified:
            return
        path = shard_path(self.folder, k)
        if sha256_file(path) != self.checksums[path.name]["sha256"]:
            discard_shards(self.folder, [path.name])
            raise DamagedCacheError(f"{path}: SHA-256 differs from the one recorded in complete.json (damaged "
                                    "after it was written); removed, rerun to recompute it")
        self._verified.add(k)

    def verify_all(self) -> None:
        """Check every shard's SHA-256 now (one read of the cache), e.g. before reusing it."""
        for k in range((self.n + self.shard_size - 1) // self.shard_size):
            self._verify(k)

    def _shard(self, k: int) -> np.ndarray:
        arr = self._shards.get(k)
        if arr is None:
            path = shard_path(self.folder, k)
            self._verify(k)
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise FeatureCacheError(f"{path}: cannot be read ({e})") from None
            self._shards[k] = arr
        return arr

    def __len__(self):
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        k, j = divmod(int(i), self.shard_size)
        return torch.from_numpy(np.array(self._shard(k)[j], dtype=np.float32))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_shards"] = {}
        return state


def _shard_ok(path: Path, n_expected: int) -> bool:
    try:
        return np.load(path, mmap_mode="r").shape[0] == n_expected
    except (OSError, ValueError):
        return False


class ShardExtractor:
    """``self(k)``: the features of shard ``k`` of a split, written to ``shard_k.npy`` atomically;
    returns the forwards it took. What a Ray actor of ``extract --engine ray`` holds."""

    def __init__(self, encoder: Encoder, pixels: ClipPixels, split: SplitData, folder: Path, cfg):
        self.encoder, self.pixels, self.split, self.folder, self.cfg = encoder, pixels, split, Path(folder), cfg
        self.np_dtype = np.float16 if cfg.features.dtype == "float16" else np.float32

    def __call__(self, k: int) -> int:
        S, n = self.cfg.features.shard_size, len(self.split)
        groups = batch_groups(self.split.refs, k * S, min((k + 1) * S, n), self.cfg.features.batch_size)
        loader = DataLoader(_Groups(self.pixels, self.split.refs, groups), batch_size=None, shuffle=False,
                            num_workers=self.cfg.features.workers, pin_memory=self.encoder.device.type == "cuda")
        before = self.encoder.forwards
        feats = [self.encoder(clips).cpu().numpy().astype(self.np_dtype) for clips in loader]
        save_npy_atomic(self.folder / f"shard_{k:05d}.npy", np.concatenate(feats))
        return self.encoder.forwards - before


def _shard_extractor_on_worker(backbone, cfg, pixels: ClipPixels, split: SplitData, folder: str, mean, std) -> ShardExtractor:
    """Built inside a Ray actor: the backbone loaded there by its spec (bfloat16 on the actor's GPU, as ``extract``)."""
    device = resolve_device(cfg.device)
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, device=device, dtype=torch.bfloat16 if device.type == "cuda" else None)
    else:
        backbone.model.to(device).eval()
    return ShardExtractor(Encoder(backbone, cfg, device, mean, std), pixels, split, Path(folder), cfg)


def extract_split(encoder: Encoder, pixels: ClipPixels, split: SplitData, folder: Path, cfg, *,
                  meta: dict, progress: bool = False, log: Callable[[str], None] = print, engine: str = "local",
                  ray: RayOptions | None = None, backbone_spec: str | None = None) -> FeatureSet:
    """Compute (or reuse) the cached features of ``split`` in ``folder``; returns the read side.

    ``engine="ray"``: the missing shards are computed by Ray actors (one per GPU, else per CPU),
    each loading the backbone once (by ``backbone_spec`` if given, else a copy of the encoder's);
    this process writes meta.json and complete.json, actors only their shards."""
    check_engine(engine)
    folder = Path(folder)
    if (folder / "complete.json").exists():
        try:
            fs = FeatureSet(folder)
            fs.verify_all()
        except DamagedCacheError as e:  # the damaged shards were removed: computed again below
            log(f"  {e}")
            fs = None
        if fs is not None and fs.n == len(split):
            return fs
        if fs is not None:
            raise FeatureCacheError(f"{folder}: cache holds {fs.n} samples, the split has {len(split)}; delete the folder")
    if len(split) == 0:
        raise FeatureCacheError(f"split {split.name!r} has no sample to extract")
    folder.mkdir(parents=True, exist_ok=True)
    for tmp in folder.glob("*.tmp*"):
        tmp.unlink(missing_ok=True)
    S = cfg.features.shard_size
    n_shards = (len(split) + S - 1) // S
    write_json_atomic(folder / "meta.json", {**meta, "n": len(split), "shard_size": S, "n_shards": n_shards,
                                              "split": split.name, "created": time.time()})
    np_dtype = np.float16 if cfg.features.dtype == "float16" else np.float32
    todo = [k for k in range(n_shards)
            if not _shard_ok(folder / f"shard_{k:05d}.npy", min(S, len(split) - k * S))]
    if todo:
        log(f"  extracting {split.name}: {len(split)} samples, {len(todo)}/{n_shards} shards to compute")
    if engine == "ray" and todo:
        factory = functools.partial(_shard_extractor_on_worker, backbone_spec or encoder.backbone, cfg, pixels, split, str(folder),
                                    encoder.mean, encoder.std)
        for _, n in tqdm(ray_actor_map(factory, todo, ray or RayOptions()), total=len(todo), desc=f"extract {split.name}",
                         unit="shard", disable=not progress):
            encoder.forwards += n
        todo = []
    groups, owner = [], []
    for k in todo:
        gs = batch_groups(split.refs, k * S, min((k + 1) * S, len(split)), cfg.features.batch_size)
        groups.extend(gs)
        owner.extend([k] * len(gs))
    if groups:
        loader = DataLoader(_Groups(pixels, split.refs, groups), batch_size=None, shuffle=False,
                            num_workers=cfg.features.workers, pin_memory=encoder.device.type == "cuda")
        pending: dict[int, list[np.ndarray]] = {}
        remaining = {k: sum(1 for o in owner if o == k) for k in todo}

        for g, clips in enumerate(tqdm(loader, total=len(groups), desc=f"extract {split.name}", disable=not progress)):
            feats = encoder(clips).cpu().numpy().astype(np_dtype)
            k = owner[g]
            pending.setdefault(k, []).append(feats)
            remaining[k] -= 1
            if remaining[k] == 0:
                save_npy_atomic(folder / f"shard_{k:05d}.npy", np.concatenate(pending.pop(k)))
    write_json_atomic(folder / "complete.json", {"n": len(split), "finished": time.time(),
                                                 "shards": shard_checksums(folder, n_shards)})
    return FeatureSet(folder)


class InMemoryFeatures(Dataset):
    """Features of a split computed now and kept in memory (``features.cache=false``, ``predict``)."""

    def __init__(self, encoder: Encoder, pixels: ClipPixels, split: SplitData, batch_size: int, workers: int = 0,
                 progress: bool = False):
        groups = batch_groups(split.refs, 0, len(split), batch_size)
        loader = DataLoader(_Groups(pixels, split.refs, groups), batch_size=None, num_workers=workers)

        self.data = torch.cat([encoder(c).cpu() for c in tqdm(loader, total=len(groups), disable=not progress,
                                                                desc=f"features {split.name}")])
        self.item_shape = tuple(self.data.shape[1:])

    def __len__(self):
        return self.data.shape[0]

    def __getitem__(self, i):
        return self.data[i]


class OnlineClips(Dataset):
    """Training pixels with augmentation, for ``features.online=true``: the backbone runs in the
    training loop (``Encoder`` on each batch), so every epoch sees new augmentations.

    Randomness comes from ``(seed, epoch, index)``: independent of the number of workers.
    ``clip.augment``: ``rrc`` = random-resized crop (one box per clip, ``clip.rrc_scale``/``rrc_ratio``),
    ``uint8 [T, res, res, 3]``; ``paper`` = the authors' RandAugment + random-resized crop + random erasing
    (:mod:`unisurg.data.augment`), ``float16 [T, res, res, 4]`` finished by ``to_model_input`` on the device.
    """

    def __init__(self, pixels: ClipPixels, split: SplitData, cfg, seed: int = 0):
        self.pixels, self.split, self.cfg, self.seed, self.epoch = pixels, split, cfg, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        c = self.cfg.clip
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        return torch.from_numpy(self.pixels.one(self.split.refs[i], train_augment(c, rng)))


def clip_pixels(store, ids: dict[str, str], cfg, image_frames: int = 1) -> ClipPixels:
    """:class:`ClipPixels` with the clip protocol of ``cfg`` (crop size, field of view)."""
    squash_to = cfg.clip.resize_short if cfg.clip.field_of_view == "squash" else None
    return ClipPixels(store, ids, cfg.clip.res, image_frames, squash_to=squash_to)
