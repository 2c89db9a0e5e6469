"""Embeddings of a frame store's clips (or frames) with any registered backbone, in resumable shards.

This is the first step of SurgRec's "balanced sampling via hierarchical clustering" (docs/curation.md;
Vo et al. 2024, Sec. 4: the clustering runs on self-supervised embeddings of the data).
One vector per sample: the backbone's output tokens averaged (the usual pooled feature of a
frozen ViT).

Samples (the *protocol*, recorded in the index):

* ``unit="clip"``: exactly the clips the pretraining loader cuts (``ClipDataset`` with the same
  ``frames``/``stride``/``short_video``), so a selection made from them maps one-to-one onto
  training samples ``(video id, start frame)``;
* ``unit="frame"``: every ``frame_step``-th stored frame, fed to the backbone as a still clip of
  ``tubelet_size`` copies (a video ViT needs at least one tubelet; image backbones see it once).

Pixels: stored frames resized so the short side is ``res`` (default: the backbone's
``img_size``), centre crop ``res x res``, normalised with the backbone's mean/std on the device.

Layout (``STORE/curation/embeddings/<backbone fingerprint>/<protocol>/``)::

    index.json        backbone, protocol, videos (id, frames, signature, first row, rows), shard ranges
    samples.npy       int64 [N, 2]: (video number in index.json, start frame) of row i
    shard_00000.npy   float16/float32 [rows, D], rows in samples.npy order

Resumable and incremental: shards are written atomically (temporary name, fsync, rename) and a
rerun recomputes only those missing; videos ingested since the last run are appended as new rows
(new shards), so earlier rows and shards never move. A video re-ingested with other frames makes
the index stale: that is an error (``force=True`` recomputes everything).
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from unisurg.atomic_files import save_npy_atomic, write_json_atomic
from unisurg.backbones.features import FeatureCacheError, frozen_tokens
from unisurg.backbones.registry import load_backbone
from unisurg.curate.corpus_files import (
    CurationError,
    curation_dir,
    read_json,
    video_signature,
)
from unisurg.data.clips import (
    ClipDataset,
    ClipSpec,
    clip_frame_indices,
    resize_short_side,
)
from unisurg.data.pixels import center_crop, read_frames
from unisurg.data.ray_engine import RayOptions, check_engine, ray_actor_map
from unisurg.data.store import FrameStore, StoreError
from unisurg.device import resolve_device

EMBED_FORMAT = "unisurg-embeddings"
INDEX_NAME = "index.json"
SAMPLES_NAME = "samples.npy"


@dataclass(frozen=True)
class EmbedProtocol:
    """Which samples are embedded and how they are turned into pixels (see module doc).
    ``stride``/``res`` ``None``: ``frames`` / the backbone's ``img_size``."""

    unit: Literal["clip", "frame"] = "clip"
    frames: int = 16
    stride: int | None = None
    short_video: Literal["pad_last", "stretch", "drop"] = "pad_last"
    frame_step: int = 1
    res: int | None = None
    dtype: Literal["float16", "float32"] = "float16"

    def resolved(self, backbone) -> "EmbedProtocol":
        """Defaults filled in from the backbone, and checked against it."""
        if self.unit not in ("clip", "frame"):
            raise CurationError(f"unit={self.unit!r}; use 'clip' or 'frame'")
        if self.dtype not in ("float16", "float32"):
            raise CurationError(f"dtype={self.dtype!r}; use 'float16' or 'float32'")
        if self.short_video not in ("pad_last", "stretch", "drop"):
            raise CurationError(f"short_video={self.short_video!r}; use 'pad_last', 'stretch' or 'drop'")
        res = int(self.res or backbone.img_size)
        if res < 1 or res % backbone.patch_size:
            raise CurationError(f"res={res} must be a positive multiple of the backbone's patch size {backbone.patch_size} (--res)")
        if self.unit == "clip":
            stride = int(self.stride or self.frames)
            if self.frames < 1 or stride < 1:
                raise CurationError(f"frames={self.frames} and stride={stride} must be >= 1 (--frames, --stride)")
            if self.frames % backbone.tubelet_size:
                raise CurationError(f"frames={self.frames} is not a multiple of the backbone's tubelet size "
                                    f"{backbone.tubelet_size} (--frames)")
            return EmbedProtocol("clip", self.frames, stride, self.short_video, 1, res, self.dtype)
        if self.frame_step < 1:
            raise CurationError(f"frame_step={self.frame_step} must be >= 1 (--frame-step)")
        return EmbedProtocol("frame", int(backbone.tubelet_size), None, "pad_last", self.frame_step, res, self.dtype)

    def folder_name(self, mean, std) -> str:
        """Readable tag plus a digest of everything that changes the vectors (normalisation included)."""
        digest = hashlib.sha256(json.dumps([asdict(self), list(mean), list(std)], sort_keys=True).encode()).hexdigest()[:8]
        if self.unit == "clip":
            tag = f"clip-T{self.frames}-s{self.stride}-r{self.res}" + ("" if self.short_video == "pad_last" else f"-{self.short_video}")
        else:
            tag = f"frame-k{self.frame_step}-r{self.res}"
        return f"{tag}-{self.dtype}-{digest}"


def plan_samples(store: FrameStore, protocol: EmbedProtocol) -> dict[str, np.ndarray]:
    """``{video id: start frames}`` of every ok video, in the store's order. Clips are enumerated by
    ``ClipDataset`` itself so they are exactly the training samples of the same clip settings."""
    if protocol.unit == "frame":
        return {r.id: np.arange(0, r.n_frames, protocol.frame_step, dtype=np.int64) for r in store.records}
    spec = ClipSpec(frames=protocol.frames, stride=protocol.stride, short_video=protocol.short_video)
    try:
        ds = ClipDataset(store, spec)
    except StoreError:
        return {r.id: np.zeros(0, dtype=np.int64) for r in store.records}
    out = {r.id: [] for r in ds.videos}
    for vi, start in ds.samples.tolist():
        out[ds.videos[vi].id].append(start)
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


# -- the on-disk index ------------------------------------------------------------------------




def _npy_rows(path: Path) -> int | None:
    """Row count of a ``.npy`` file from its header, or None when it is missing or unreadable."""
    try:
        return int(np.load(path, mmap_mode="r").shape[0])
    except (OSError, ValueError):
        return None


class EmbeddingIndex:
    """An embedding folder (see module doc): read it, extend it, write its shards.

    ``videos``: list of ``{"id", "dataset", "n_frames", "signature", "first", "count"}`` (rows
    ``first .. first+count-1`` belong to the video); ``samples``: ``int64 [N, 2]`` (video number,
    start frame); ``shards``: ``[{"start", "stop"}]`` row ranges, shard k in ``shard_{k:05d}.npy``.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        doc = read_json(self.folder / INDEX_NAME, "embedding index", EMBED_FORMAT)
        self.meta = doc
        self.videos: list[dict] = doc["videos"]
        self.shards: list[dict] = doc["shards"]
        n = int(doc["n"])
        samples_path = self.folder / SAMPLES_NAME
        if not samples_path.is_file():
            raise CurationError(f"{samples_path}: missing; the embedding folder is damaged, delete {self.folder} and rerun `unisurg curate embed`")
        samples = np.load(samples_path)
        if samples.ndim != 2 or samples.shape[1] != 2 or len(samples) < n:
            raise CurationError(f"{samples_path}: holds {samples.shape}, index.json needs [{n}, 2]; delete {self.folder} and re-embed")
        self.samples = samples[:n]  # written before index.json: may be ahead after a crash

    # read side -----------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def protocol(self) -> dict:
        return self.meta["protocol"]

    @property
    def backbone(self) -> dict:
        return self.meta["backbone"]

    @property
    def dim(self) -> int:
        return int(self.meta["backbone"]["embed_dim"])

    def shard_path(self, k: int) -> Path:
        return self.folder / f"shard_{k:05d}.npy"

    def missing_shards(self) -> list[int]:
        return [k for k, s in enumerate(self.shards) if _npy_rows(self.shard_path(k)) != s["stop"] - s["start"]]

    def check_complete(self) -> None:
        missing = self.missing_shards()
        if missing:
            raise CurationError(f"{self.folder}: {len(missing)} of {len(self.shards)} embedding shards are missing "
                                f"(first: {self.shard_path(missing[0]).name}); rerun `unisurg curate embed` to finish them")

    def rows(self) -> list[Path]:
        """The shard files in row order (what :func:`~unisurg.curate.hierarchy.hierarchical_kmeans` reads, memory-mapped)."""
        self.check_complete()
        return [self.shard_path(k) for k in range(len(self.shards)) if self.shards[k]["stop"] > self.shards[k]["start"]]

    def load(self) -> np.ndarray:
        """All rows as one float32 array (small corpora and tests)."""
        return np.concatenate([np.load(p).astype(np.float32) for p in self.rows()]) if self.n else np.zeros((0, self.dim), np.float32)

    def video_ids(self) -> list[str]:
        return [v["id"] for v in self.videos]

    def sample_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """``(video id of each row, start frame of each row)``."""
        ids = np.asarray(self.video_ids(), dtype=object)
        return ids[self.samples[:, 0]], self.samples[:, 1].copy()

    # write side ----------------------------------------------------------------------------
    @staticmethod
    def write(folder: Path, meta: dict, videos: list[dict], samples: np.ndarray, shards: list[dict]) -> "EmbeddingIndex":
        """Write ``samples.npy`` then ``index.json`` (both atomic) and return the reopened index."""
        folder.mkdir(parents=True, exist_ok=True)
        samples = np.ascontiguousarray(samples, dtype=np.int64).reshape(-1, 2)
        save_npy_atomic(folder / SAMPLES_NAME, samples)
        doc = {**meta, "format": EMBED_FORMAT, "version": 1, "n": len(samples), "videos": videos, "shards": shards}
        write_json_atomic(folder / INDEX_NAME, doc, indent=None)
        return EmbeddingIndex(folder)

    @staticmethod
    def create(folder: str | Path, meta: dict, starts: dict[str, np.ndarray], *, video_meta: dict[str, dict] | None = None,
               shard_size: int = 4096) -> "EmbeddingIndex":
        """A new index for ``{video id: start frames}`` (in that order); ``meta`` must hold
        ``backbone`` (with ``embed_dim``) and ``protocol``. Shards are planned, not computed."""
        return EmbeddingIndex._extend(Path(folder), meta, [], np.zeros((0, 2), np.int64), [], starts, video_meta or {}, shard_size)

    def append(self, starts: dict[str, np.ndarray], *, video_meta: dict[str, dict] | None = None, shard_size: int = 4096) -> "EmbeddingIndex":
        """Append new videos' rows as new shards (existing rows and shards do not move)."""
        known = set(self.video_ids())
        clash = [v for v in starts if v in known]
        if clash:
            raise CurationError(f"{self.folder}: videos {clash[:3]} are already embedded")
        meta = {k: v for k, v in self.meta.items() if k not in ("videos", "shards", "n", "format", "version")}
        return EmbeddingIndex._extend(self.folder, meta, list(self.videos), self.samples, list(self.shards), starts,
                                      video_meta or {}, shard_size)

    @staticmethod
    def _extend(folder, meta, videos, samples, shards, starts, video_meta, shard_size) -> "EmbeddingIndex":
        if shard_size < 1:
            raise CurationError(f"shard_size={shard_size} must be >= 1")
        rows = [samples]
        first = len(samples)
        for vid, s in starts.items():
            s = np.asarray(s, dtype=np.int64)
            videos.append({"id": vid, **video_meta.get(vid, {}), "first": first, "count": len(s)})
            rows.append(np.stack([np.full(len(s), len(videos) - 1, np.int64), s], axis=1))
            first += len(s)
        total = first
        start = shards[-1]["stop"] if shards else 0
        for a in range(start, total, shard_size):
            shards.append({"start": a, "stop": min(a + shard_size, total)})
        return EmbeddingIndex.write(folder, meta, videos, np.concatenate(rows), shards)

    def write_shard(self, k: int, array: np.ndarray) -> Path:
        s = self.shards[k]
        if array.ndim != 2 or array.shape[0] != s["stop"] - s["start"]:
            raise ValueError(f"shard {k} needs {s['stop'] - s['start']} rows, got array of shape {array.shape}")
        path = self.shard_path(k)
        save_npy_atomic(path, array)
        return path


# -- pixels and forwards ----------------------------------------------------------------------


class _SamplePixels(Dataset):
    """Row ``i`` of a shard -> uint8 ``[T, res, res, 3]`` (resized short side, centre crop)."""

    def __init__(self, store: FrameStore, index: EmbeddingIndex, rows: np.ndarray, protocol: EmbedProtocol):
        self.store, self.rows, self.p = store, rows, protocol
        self.ids = index.video_ids()
        self.n_frames = [int(v["n_frames"]) for v in index.videos]
        self.samples = index.samples

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        v, start = (int(x) for x in self.samples[self.rows[i]])
        if self.p.unit == "clip":
            idx = clip_frame_indices(self.n_frames[v], start, self.p.frames, self.p.short_video)
        else:
            idx = np.full(self.p.frames, start, dtype=np.int64)
        frames = torch.from_numpy(read_frames(self.store, self.ids[v], idx))
        if min(frames.shape[1:3]) != self.p.res:
            frames = resize_short_side(frames, self.p.res)
        return center_crop(frames, self.p.res).contiguous()


class ClipEmbedder:
    """uint8 clips ``[B, T, H, W, 3]`` -> mean-pooled backbone tokens ``[B, D]`` on the device."""

    def __init__(self, backbone, device: torch.device):
        self.backbone, self.device = backbone, device
        p = next(iter(backbone.model.parameters()), None)
        self.dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        self.amp = device.type == "cuda" and self.dtype == torch.float32
        self.forwards = 0

    @torch.inference_mode()
    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        try:
            tokens = frozen_tokens(self.backbone, clips, self.device, self.dtype, self.backbone.mean,
                                   self.backbone.std, self.amp)
        except FeatureCacheError as e:
            raise CurationError(str(e)) from None
        self.forwards += 1
        return tokens.mean(dim=1)


class ShardEmbedder:
    """Computes and writes whole shards of an embedding folder: ``self(k)`` embeds shard ``k``,
    writes ``shard_k.npy`` atomically and returns the forwards it took. The local engine holds
    one; under ``--engine ray`` each actor holds one (one model load per actor)."""

    def __init__(self, backbone, store_root: str | Path, folder: str | Path, protocol: "EmbedProtocol", batch_size: int,
                 workers: int, device: torch.device):
        self.store, self.index, self.protocol = FrameStore(store_root), EmbeddingIndex(folder), protocol
        self.batch_size, self.workers, self.device, self.name = batch_size, workers, device, backbone.name
        self.embedder = ClipEmbedder(backbone, device)
        self.np_dtype = np.float16 if protocol.dtype == "float16" else np.float32

    def __call__(self, k: int) -> int:
        s = self.index.shards[k]
        rows = np.arange(s["start"], s["stop"])
        loader = DataLoader(_SamplePixels(self.store, self.index, rows, self.protocol), batch_size=self.batch_size, shuffle=False,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda")
        before = self.embedder.forwards
        parts = [self.embedder(clips) for clips in loader]
        feats = torch.cat(parts).cpu().numpy().astype(self.np_dtype)  # one device->host copy per shard
        if not np.isfinite(feats).all():
            raise CurationError(f"backbone {self.name} produced non-finite embeddings in shard {k} "
                                f"(rows {s['start']}..{s['stop'] - 1}); try dtype float32 or check the weights")
        self.index.write_shard(k, feats)
        return self.embedder.forwards - before


def _shard_embedder_on_worker(backbone, store_root: str, folder: str, protocol: "EmbedProtocol", batch_size: int,
                              workers: int, device: str | None) -> ShardEmbedder:
    """Built inside a Ray actor: loads a backbone given by its spec there (on the actor's GPU, if it has one)."""
    dev = resolve_device(device)
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, device=dev)
    else:
        backbone.model.to(dev).eval()
    return ShardEmbedder(backbone, store_root, folder, protocol, batch_size, workers, dev)


@dataclass
class EmbedResult:
    index: EmbeddingIndex
    shards_computed: int
    shards_reused: int
    videos_added: int
    forwards: int
    seconds: float

    def summary(self) -> str:
        return (f"{self.index.n} embeddings of {len(self.index.videos)} videos in {len(self.index.shards)} shards "
                f"({self.shards_computed} computed, {self.shards_reused} reused, {self.videos_added} new videos) "
                f"in {self.seconds:.1f}s -> {self.index.folder}")


def embeddings_root(store_root: str | Path) -> Path:
    return curation_dir(store_root) / "embeddings"


def embedding_folder(store_root: str | Path, backbone, protocol: EmbedProtocol) -> Path:
    """Where the embeddings of ``backbone`` under ``protocol`` (resolved) live."""
    return embeddings_root(store_root) / backbone.fingerprint / protocol.folder_name(backbone.mean, backbone.std)


def find_embeddings(store_root: str | Path) -> list[Path]:
    """Every embedding folder of a store (those holding an index.json), newest first."""
    root = embeddings_root(store_root)
    found = [p.parent for p in root.glob(f"*/*/{INDEX_NAME}")] if root.is_dir() else []
    return sorted(found, key=lambda p: (p / INDEX_NAME).stat().st_mtime, reverse=True)


def _video_meta(store: FrameStore) -> dict[str, dict]:
    return {r.id: {"dataset": r.dataset, "n_frames": r.n_frames, "signature": video_signature(r)} for r in store.records}


def _sync_index(folder: Path, store: FrameStore, meta: dict, protocol: EmbedProtocol, shard_size: int, force: bool,
                log: Callable[[str], None]) -> tuple[EmbeddingIndex, int]:
    """Open (checking it still fits the store) or create the index, appending new videos."""
    if force and folder.exists():
        shutil.rmtree(folder)
    vmeta = _video_meta(store)
    if not (folder / INDEX_NAME).exists():
        for tmp in folder.glob("*.tmp*") if folder.exists() else []:
            tmp.unlink(missing_ok=True)
        starts = plan_samples(store, protocol)
        return EmbeddingIndex.create(folder, meta, starts, video_meta=vmeta, shard_size=shard_size), len(starts)
    index = EmbeddingIndex(folder)
    for key in ("backbone", "protocol"):
        if json.dumps(index.meta.get(key), sort_keys=True) != json.dumps(meta[key], sort_keys=True):
            raise CurationError(f"{folder / INDEX_NAME}: written for {key} {index.meta.get(key)}, now {meta[key]}; "
                                "delete the folder or rerun with --force")
    for tmp in folder.glob("*.tmp*"):
        tmp.unlink(missing_ok=True)
    changed, gone = [], []
    for v in index.videos:
        now = vmeta.get(v["id"])
        if now is None:
            gone.append(v["id"])
        elif now["signature"] != v.get("signature"):
            changed.append(v["id"])
    if changed:
        raise CurationError(f"{folder}: {len(changed)} videos were re-ingested with other frames since they were embedded "
                            f"(e.g. {changed[:3]}); rerun `unisurg curate embed` with --force to recompute all")
    if gone:
        log(f"note: {len(gone)} embedded videos are no longer ok in the store (e.g. {gone[:3]}); their rows are kept")
    known = set(index.video_ids())
    new = [r.id for r in store.records if r.id not in known]
    if new:
        starts = plan_samples(store, protocol)
        index = index.append({v: starts[v] for v in new}, video_meta=vmeta, shard_size=shard_size)
    return index, len(new)


def embed_store(
    store_root: str | Path,
    backbone: Any,
    *,
    protocol: EmbedProtocol = EmbedProtocol(),
    batch_size: int = 32,
    shard_size: int = 4096,
    workers: int = 0,
    device: str | torch.device | None = None,
    force: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = print,
    engine: str = "local",
    ray: RayOptions | None = None,
) -> EmbedResult:
    """Embed every sample of the store (see module doc) with ``backbone`` (a spec string for
    :func:`~unisurg.backbones.registry.load_backbone`, or a loaded ``Backbone``); resumable.

    ``engine="ray"``: the missing shards are embedded by Ray actors (one per GPU of the cluster,
    else one per CPU), each loading the backbone once (by its spec, or a copy of the object);
    ``device`` is then the actors' device (default: their GPU if they have one). The driver
    writes the index; actors write only their shards (:mod:`unisurg.data.ray_engine`)."""
    t0 = time.perf_counter()
    check_engine(engine)
    spec = backbone
    device_name = device
    device = resolve_device(device) if engine == "local" else torch.device("cpu")  # ray: the driver only reads metadata
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, device=device)
    else:
        backbone.model.to(device).eval()
    if batch_size < 1:
        raise CurationError(f"batch_size={batch_size} must be >= 1 (--batch-size)")
    store = FrameStore(store_root)
    protocol = protocol.resolved(backbone)
    folder = embedding_folder(store_root, backbone, protocol)
    meta = {
        "backbone": {"spec": backbone.spec, "name": backbone.name, "fingerprint": backbone.fingerprint,
                     "embed_dim": int(backbone.embed_dim), "mean": list(backbone.mean), "std": list(backbone.std)},
        "protocol": asdict(protocol),
        "store": {"root": str(Path(store_root).resolve()), "fps": store.meta.get("fps"), "short_side": store.meta.get("short_side")},
        "pooling": "mean over output tokens",
    }
    index, added = _sync_index(folder, store, meta, protocol, shard_size, force, log)
    todo = index.missing_shards()
    forwards = 0
    bar = tqdm(total=len(todo), desc="embed", unit="shard", disable=not progress)
    if engine == "ray" and todo:
        factory = functools.partial(_shard_embedder_on_worker, spec if isinstance(spec, str) else backbone, str(store_root),
                                    str(folder), protocol, batch_size, workers, device_name)
        for _, n in ray_actor_map(factory, todo, ray or RayOptions()):
            forwards += n
            bar.update(1)
    else:
        embed_shard = ShardEmbedder(backbone, store_root, folder, protocol, batch_size, workers, device)
        for k in todo:
            forwards += embed_shard(k)
            bar.update(1)
    bar.close()
    index = EmbeddingIndex(folder)
    return EmbedResult(index, len(todo), len(index.shards) - len(todo), added, forwards, time.perf_counter() - t0)


__all__ = ["ClipEmbedder", "EmbedProtocol", "EmbedResult", "EmbeddingIndex", "embed_store", "embedding_folder", "embeddings_root",
           "find_embeddings", "plan_samples"]
