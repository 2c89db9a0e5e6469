"""A curated selection of training clips: hierarchical k-means on the clip embeddings, then
balanced sampling from the hierarchy (SurgRec; Vo et al. 2024, Sec. 4; docs/curation.md).

Two kinds, chosen at ``unisurg curate cluster`` time:

* ``"subset"``: a fixed list of ``target`` clips, top-level clusters as evenly represented as
  their sizes allow (:func:`~unisurg.curate.balanced.balanced_sample`, water-filling);
* ``"weights"``: every clip with a sampling weight (summing to 1) that gives every top-level
  cluster the same mass (:func:`~unisurg.curate.balanced.balanced_weights`), for a weighted sampler.

Clips of videos in ``STORE/curation/exclude.json`` (near duplicates dropped by ``curate dedup
--keep-one``, leaking videos excluded by ``curate leakage --exclude-hits``), and of videos no
longer ok in the store, are never selected; the clustering itself sees every embedding.

The file (``STORE/curation/selection.json`` by default)::

    {"format": "unisurg-curated-selection", "version": 1, "created": ..., "kind": "subset" | "weights",
     "clip": {"unit": "clip", "frames": T, "stride": S, "short_video": "pad_last"},     <- the contract
     "store": {"root": ..., "manifest_digest": ...},
     "embeddings": {"folder": ..., "backbone": {...}, "n": N},
     "clustering": {"levels": [LevelSpec...], "metric": ..., "seed": ..., "hierarchy_file": ..., "top_sizes": [...]},
     "sampling": {"target": ..., "leaf_strategy": ..., "weight_mode": ..., "seed": ..., "excluded_videos": [...]},
     "n_clips": ..., "top_level_histogram": [...],
     "videos": {"<video id>": {"starts": [s0, s1, ...], "weights": [w0, w1, ...]}}}     <- weights only for "weights"

**Contract with the trainer** (:func:`load_selection`, :meth:`CuratedSelection.apply`): a clip is
the pair ``(video id, start frame)`` of ``ClipDataset.samples``, i.e. the *nominal* start before
temporal jitter (jitter moves a start inside its stride at read time, as for any other sample).
The selection is only valid for a ``ClipDataset`` whose ``frames``, effective ``stride``
(``stride or frames``) and ``short_video`` equal the ``clip`` entry: anything else cuts other
clips, and :meth:`~CuratedSelection.apply` raises :class:`SelectionMismatchError` naming both.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

from unisurg.atomic_files import write_json_atomic
from unisurg.curate.balanced import balanced_sample, balanced_weights
from unisurg.curate.corpus_files import (
    CurationError,
    curation_dir,
    excluded_videos,
    manifest_digest,
    now_iso,
    read_json,
    store_records,
)
from unisurg.curate.embed import EmbeddingIndex, find_embeddings
from unisurg.curate.hierarchy import (
    HierarchicalClustering,
    LevelSpec,
    hierarchical_kmeans,
)
from unisurg.curate.kmeans import EmbeddingRows
from unisurg.curate.row_shards import RowPlacement, rank_slice

SELECTION_FORMAT = "unisurg-curated-selection"
SELECTION_NAME = "selection.json"


class SelectionMismatchError(CurationError):
    """The trainer's clips are not the clips the selection was made for."""


def default_selection_path(store_root: str | Path) -> Path:
    return curation_dir(store_root) / SELECTION_NAME


def hierarchy_path_for(selection_path: str | Path) -> Path:
    p = Path(selection_path)
    return p.with_name(p.stem + ".hierarchy.npz")


# -- making a selection -------------------------------------------------------------------------


def cluster_embeddings(index: EmbeddingIndex, levels: Sequence[int | LevelSpec], *, metric: str = "l2", seed: int = 0,
                       device=None, log: Callable[[str], None] | None = None,
                       placement: RowPlacement | None = None) -> HierarchicalClustering:
    """Hierarchical k-means over every row of a complete embedding index (shards memory-mapped);
    with a :class:`~unisurg.curate.row_shards.RankShards` placement each rank maps its slice only."""
    rows = EmbeddingRows(index.rows())
    if placement is not None and placement.world > 1:
        rows = rows.slice(rank_slice(len(rows), placement.rank, placement.world))
    return hierarchical_kmeans(rows, list(levels), metric=metric, seed=seed, device=device, log=log, placement=placement)


def select_rows(hierarchy: HierarchicalClustering, *, kind: Literal["subset", "weights"], target: int | None = None,
                seed: int = 0, leaf_strategy: Literal["random", "closest"] = "random",
                weight_mode: Literal["recursive", "top"] = "recursive", keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows of the embeddings to train on: a balanced subset of ``target`` rows (weights None), or
    every kept row with its balanced weight (summing to 1). ``keep``: bool mask of eligible rows;
    the others are removed from level 1 before sampling (the hierarchy above is unchanged)."""
    level1 = hierarchy.levels[0]
    n = len(level1.assignment)
    keep = np.ones(n, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    if keep.shape != (n,):
        raise ValueError(f"keep has shape {keep.shape}, expected ({n},)")
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        raise CurationError("no clip is eligible (all excluded or gone from the store)")
    assignments = [level1.assignment[rows]] + [lv.assignment for lv in hierarchy.levels[1:]]
    if kind == "subset":
        if target is None or target < 1:
            raise CurationError(f"a subset needs a positive --target, got {target}")
        if target > len(rows):
            raise CurationError(f"--target {target} exceeds the {len(rows)} eligible clips; lower it, or use --weights "
                                "(a weighted sampler draws with replacement)")
        local = balanced_sample(assignments, target, seed=seed, leaf_strategy=leaf_strategy, distances=level1.distances[rows])
        return rows[local], None
    if kind == "weights":
        return rows, balanced_weights(assignments, mode=weight_mode)
    raise CurationError(f"kind={kind!r}; use 'subset' or 'weights'")


def level_specs(levels: Sequence[int], *, n_iter: int = 20, resample_steps: Sequence[int] | int = 0,
                resample_size: Sequence[int] | int = 1, resample_strategy: str = "closest",
                coarse: Sequence[int] | int | None = None) -> list[LevelSpec]:
    """One :class:`LevelSpec` per level; per-level options are a single value or one per level."""
    def per_level(value, name):
        if value is None:
            return [None] * len(levels)
        vals = [value] if isinstance(value, (int, np.integer)) else list(value)
        if len(vals) == 1:
            vals = vals * len(levels)
        if len(vals) != len(levels):
            raise CurationError(f"{name}: give one value or one per level ({len(levels)}), got {len(vals)}")
        return vals

    steps, sizes, coarses = per_level(resample_steps, "--resample-steps"), per_level(resample_size, "--resample-size"), per_level(coarse, "--coarse")
    specs = []
    for t, k in enumerate(levels):
        c = coarses[t]
        spec = LevelSpec(int(k), n_iter=n_iter, resample_steps=int(steps[t]), resample_size=int(sizes[t]),
                         resample_strategy=resample_strategy, coarse_clusters=int(c) if c else None)
        try:
            spec.validate(t + 1)
        except ValueError as e:
            raise CurationError(str(e)) from None
        specs.append(spec)
    return specs


def resolve_embeddings(store_root: str | Path, embeddings: str | Path | None) -> EmbeddingIndex:
    """The embedding folder given, or the store's only one."""
    if embeddings is not None:
        return EmbeddingIndex(embeddings)
    found = find_embeddings(store_root)
    if not found:
        raise CurationError(f"{store_root}: no embeddings under {curation_dir(store_root) / 'embeddings'}; "
                            "run `unisurg curate embed STORE --backbone SPEC` first")
    if len(found) > 1:
        listing = "\n  ".join(str(p) for p in found)
        raise CurationError(f"{store_root}: several embedding folders; pick one with --embeddings:\n  {listing}")
    return EmbeddingIndex(found[0])


def build_selection_doc(index: EmbeddingIndex, hierarchy: HierarchicalClustering, rows: np.ndarray, weights: np.ndarray | None,
                        *, kind: str, params: dict) -> dict:
    """The selection JSON document (see module doc) for the chosen ``rows`` of ``index``."""
    top = hierarchy.point_labels(hierarchy.n_levels)
    k_top = len(hierarchy.levels[-1].sizes)
    if weights is None:
        hist = np.bincount(top[rows], minlength=k_top).tolist()
    else:
        hist = [round(float(x), 10) for x in np.bincount(top[rows], weights=weights, minlength=k_top)]
    ids = index.video_ids()
    order = np.lexsort((index.samples[rows, 1], index.samples[rows, 0]))
    rows_sorted = rows[order]
    w_sorted = None if weights is None else weights[order]
    videos: dict[str, dict] = {}
    vnum = index.samples[rows_sorted, 0]
    bounds = np.flatnonzero(np.diff(vnum)) + 1
    for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(vnum)]])):
        entry = {"starts": index.samples[rows_sorted[a:b], 1].tolist()}
        if w_sorted is not None:
            entry["weights"] = [float(w) for w in w_sorted[a:b]]
        videos[ids[int(vnum[a])]] = entry
    proto = index.protocol
    return {
        "format": SELECTION_FORMAT, "version": 1, "created": now_iso(), "kind": kind,
        "clip": {"unit": proto["unit"], "frames": proto["frames"], "stride": proto["stride"] if proto["unit"] == "clip" else None,
                 "frame_step": proto.get("frame_step"), "short_video": proto["short_video"]},
        **params,
        "embeddings": {"folder": str(index.folder), "backbone": index.backbone, "n": index.n},
        "n_clips": int(len(rows)),
        "top_level_histogram": hist,
        "videos": videos,
    }


def curate_selection(
    store_root: str | Path,
    *,
    levels: Sequence[int | LevelSpec],
    kind: Literal["subset", "weights"] = "subset",
    target: int | None = None,
    embeddings: str | Path | None = None,
    metric: str = "l2",
    seed: int = 0,
    leaf_strategy: Literal["random", "closest"] = "random",
    weight_mode: Literal["recursive", "top"] = "recursive",
    honour_exclusions: bool = True,
    out: str | Path | None = None,
    device=None,
    log: Callable[[str], None] = print,
    placement: RowPlacement | None = None,
) -> tuple[Path, dict]:
    """Cluster a store's embeddings and write the selection (and the hierarchy next to it);
    returns the selection path and document. Under torchrun (``placement`` = RankShards) the
    k-means runs across the ranks, every rank computes the same selection and rank 0 writes it."""
    t0 = time.perf_counter()
    index = resolve_embeddings(store_root, embeddings)
    index.check_complete()
    specs = [LevelSpec(int(s)) if isinstance(s, (int, np.integer)) else s for s in levels]
    hierarchy = cluster_embeddings(index, specs, metric=metric, seed=seed, device=device, log=log, placement=placement)
    writer = placement is None or placement.rank == 0
    _, recs = store_records(store_root)
    present = {r.id for r in recs}
    excluded = excluded_videos(store_root) if honour_exclusions else set()
    eligible_video = np.array([(v in present) and (v not in excluded) for v in index.video_ids()], dtype=bool)
    keep = eligible_video[index.samples[:, 0]] if index.n else np.zeros(0, bool)
    rows, weights = select_rows(hierarchy, kind=kind, target=target, seed=seed, leaf_strategy=leaf_strategy,
                                weight_mode=weight_mode, keep=keep)
    out = Path(out) if out is not None else default_selection_path(store_root)
    hier_path = hierarchy_path_for(out)
    if writer:
        out.parent.mkdir(parents=True, exist_ok=True)
        hierarchy.save(hier_path)
    params = {
        "store": {"root": str(Path(store_root).resolve()), "manifest_digest": manifest_digest(store_root)},
        "clustering": {"levels": [asdict(s) for s in hierarchy.specs], "metric": metric, "seed": seed,
                       "hierarchy_file": str(hier_path), "top_sizes": hierarchy.levels[-1].sizes.tolist(),
                       "inertia": [lv.inertia for lv in hierarchy.levels]},
        "sampling": {"target": target, "leaf_strategy": leaf_strategy, "weight_mode": weight_mode, "seed": seed,
                     "honour_exclusions": honour_exclusions,
                     "excluded_videos": sorted(v for v in index.video_ids() if v in excluded),
                     "videos_gone_from_store": sorted(v for v in index.video_ids() if v not in present),
                     "excluded_clips": int((~keep).sum())},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    doc = build_selection_doc(index, hierarchy, rows, weights, kind=kind, params=params)
    if writer:
        write_json_atomic(out, doc, indent=None)
    return out, doc


def format_selection_summary(path: Path, doc: dict) -> str:
    hist = doc["top_level_histogram"]
    nonzero = [h for h in hist if h]
    what = "clips" if doc["kind"] == "subset" else "weight mass"
    spread = (f"min {min(nonzero):.4g}, max {max(nonzero):.4g}" if nonzero else "empty")
    lines = [f"{doc['kind']} selection of {doc['n_clips']} of {doc['embeddings']['n']} {doc['clip']['unit']}s -> {path}",
             f"  top level: {len(hist)} clusters (sizes {doc['clustering']['top_sizes']}), {what} per cluster: {spread}",
             f"  clip contract: frames={doc['clip']['frames']} stride={doc['clip']['stride']} short_video={doc['clip']['short_video']}"]
    if doc["sampling"]["excluded_clips"]:
        lines.append(f"  left out {doc['sampling']['excluded_clips']} clips of {len(doc['sampling']['excluded_videos'])} excluded "
                     f"and {len(doc['sampling']['videos_gone_from_store'])} vanished videos")
    return "\n".join(lines)


# -- reading a selection (the trainer's side) ---------------------------------------------------


@dataclass
class AppliedSelection:
    """A selection matched against one ``ClipDataset``.

    ``indices``: positions in ``dataset.samples`` to keep (ascending); ``weights``: their sampling
    weights, summing to 1 (``None`` for a subset: sample them as usual). Counts say what did not
    match: ``selected_missing`` selected clips that the dataset does not hold (video filtered out
    by ``include_datasets`` or gone), ``unselected`` dataset clips outside the selection (e.g. of
    videos ingested after the clustering; rerun ``curate embed`` and ``curate cluster``),
    ``excluded`` dataset clips of videos in ``exclude.json``.
    """

    indices: np.ndarray
    weights: np.ndarray | None
    kind: str
    path: str
    n_dataset: int
    selected_missing: int
    unselected: int
    excluded: int

    def as_log(self) -> dict:
        """JSON-ready record for the run log."""
        return {"selection": self.path, "kind": self.kind, "clips_kept": int(len(self.indices)), "clips_in_dataset": self.n_dataset,
                "selected_missing": self.selected_missing, "unselected": self.unselected, "excluded": self.excluded}


@dataclass
class CuratedSelection:
    """A selection file, read by :func:`load_selection`. ``videos``: ``{video id: sorted int64
    starts}``; ``weights``: ``{video id: float64 weights}`` in the same order (weights kind only)."""

    path: Path
    kind: str
    unit: str
    frames: int
    stride: int | None
    short_video: str
    store_root: str
    manifest_digest: str
    videos: dict[str, np.ndarray]
    weights: dict[str, np.ndarray] | None
    params: dict = field(default_factory=dict)

    @property
    def n_clips(self) -> int:
        return int(sum(len(s) for s in self.videos.values()))

    def check_clip_spec(self, frames: int, stride: int | None = None, short_video: str = "pad_last") -> None:
        """Raise :class:`SelectionMismatchError` unless clips of ``frames``/``stride``/``short_video``
        are the clips this selection was made for (see module doc)."""
        if self.unit != "clip":
            raise SelectionMismatchError(f"{self.path}: this selection holds single frames (embedded with unit=frame); "
                                         "pretraining needs a selection of clips: rerun `unisurg curate embed --unit clip` "
                                         "and `unisurg curate cluster`")
        want = (self.frames, self.stride, self.short_video)
        have = (int(frames), int(stride or frames), short_video)
        if want != have:
            raise SelectionMismatchError(
                f"{self.path}: made for clips of frames={want[0]}, stride={want[1]}, short_video={want[2]!r}, but the trainer "
                f"cuts frames={have[0]}, stride={have[1]}, short_video={have[2]!r}; set data.frames/data.stride/"
                f"data.short_video to the selection's values, or re-embed and re-cluster with "
                f"`unisurg curate embed STORE --frames {have[0]} --stride {have[1]}`")

    def membership(self, video_ids: Sequence[str], starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For samples ``(video_ids[i], starts[i])``: whether each is selected, and its weight (1.0 for a subset)."""
        starts = np.asarray(starts, dtype=np.int64)
        ids = np.asarray(video_ids, dtype=object)
        hit = np.zeros(len(starts), dtype=bool)
        w = np.zeros(len(starts), dtype=np.float64)
        order = np.argsort(ids, kind="stable") if len(ids) else np.zeros(0, np.int64)
        sorted_ids = ids[order]
        bounds = np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1 if len(ids) > 1 else np.zeros(0, np.int64)
        for a, b in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(ids)]])):
            if a == b:
                continue
            vid = sorted_ids[a]
            sel = self.videos.get(vid)
            if sel is None:
                continue
            pos_rows = order[a:b]
            s = starts[pos_rows]
            j = np.minimum(np.searchsorted(sel, s), len(sel) - 1)
            found = sel[j] == s
            hit[pos_rows[found]] = True
            w[pos_rows[found]] = self.weights[vid][j[found]] if self.weights is not None else 1.0
        return hit, w

    def apply(self, dataset, *, honour_exclusions: bool = True) -> AppliedSelection:
        """Match against a ``ClipDataset`` (checks its clip spec first); does not modify it."""
        spec = dataset.spec
        self.check_clip_spec(spec.frames, spec.stride, spec.short_video)
        ids = np.asarray([v.id for v in dataset.videos], dtype=object)
        sample_ids = ids[dataset.samples[:, 0]]
        hit, w = self.membership(sample_ids, dataset.samples[:, 1])
        excluded = np.zeros(len(hit), dtype=bool)
        if honour_exclusions:
            drop = excluded_videos(dataset.store.root)
            if drop:
                excluded = np.array([v in drop for v in sample_ids], dtype=bool)
        keep = hit & ~excluded
        if not keep.any():
            raise CurationError(f"{self.path}: none of its {self.n_clips} clips is among the {len(hit)} clips of store "
                                f"{dataset.store.root} (selection made for store {self.store_root}); use the selection of this store")
        weights = None
        if self.weights is not None:
            weights = w[keep] / w[keep].sum()
        return AppliedSelection(indices=np.flatnonzero(keep), weights=weights, kind=self.kind, path=str(self.path),
                                n_dataset=len(hit), selected_missing=self.n_clips - int(hit.sum()),
                                unselected=int((~hit & ~excluded).sum()), excluded=int(excluded.sum()))


def restrict_clip_dataset(dataset, applied: AppliedSelection):
    """Keep only the selected samples of a ``ClipDataset`` (in place: ``samples``, ``datasets``,
    ``specialties``); returns the dataset. Sample i of the result has weight ``applied.weights[i]``."""
    idx = applied.indices
    dataset.samples = dataset.samples[idx]
    dataset.datasets = [dataset.datasets[i] for i in idx]
    dataset.specialties = [dataset.specialties[i] for i in idx]
    return dataset


def load_selection(path: str | Path) -> CuratedSelection:
    """Read a selection written by ``unisurg curate cluster``; errors name the file and the key."""
    path = Path(path)
    doc = read_json(path, "curated selection", SELECTION_FORMAT)
    try:
        kind, clip, videos = doc["kind"], doc["clip"], doc["videos"]
        unit, frames, short_video = clip["unit"], int(clip["frames"]), clip["short_video"]
        stride = None if clip.get("stride") is None else int(clip["stride"])
    except (KeyError, TypeError, ValueError) as e:
        raise CurationError(f"{path}: missing or malformed key {e}; rewrite it with `unisurg curate cluster`") from None
    if kind not in ("subset", "weights"):
        raise CurationError(f"{path}: kind={kind!r}; expected 'subset' or 'weights'")
    starts_of: dict[str, np.ndarray] = {}
    weights_of: dict[str, np.ndarray] | None = {} if kind == "weights" else None
    for vid, entry in videos.items():
        s = np.asarray(entry.get("starts", []), dtype=np.int64)
        order = np.argsort(s, kind="stable")
        starts_of[vid] = s[order]
        if weights_of is not None:
            w = np.asarray(entry.get("weights", []), dtype=np.float64)
            if w.shape != s.shape or np.any(w < 0) or not np.all(np.isfinite(w)):
                raise CurationError(f"{path}: videos.{vid}: 'weights' must be {len(s)} finite numbers >= 0, one per start")
            weights_of[vid] = w[order]
    store = doc.get("store", {})
    params = {k: v for k, v in doc.items() if k != "videos"}
    return CuratedSelection(path=path, kind=kind, unit=unit, frames=frames, stride=stride, short_video=short_video,
                            store_root=str(store.get("root", "")), manifest_digest=str(store.get("manifest_digest", "")),
                            videos=starts_of, weights=weights_of, params=params)


def parse_levels(text: str) -> list[int]:
    """``"1000,100"`` -> ``[1000, 100]`` (level 1 first, K non-increasing)."""
    try:
        levels = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise CurationError(f"--levels {text!r}: expected comma-separated integers, e.g. 1000,100") from None
    if not levels or any(k < 1 for k in levels):
        raise CurationError(f"--levels {text!r}: give at least one positive cluster count, e.g. 1000,100")
    if any(b > a for a, b in zip(levels, levels[1:])):
        raise CurationError(f"--levels {text!r}: cluster counts must not increase from level 1 upward (e.g. 1000,100)")
    return levels


__all__ = [
    "AppliedSelection",
    "CuratedSelection",
    "SelectionMismatchError",
    "build_selection_doc",
    "cluster_embeddings",
    "curate_selection",
    "default_selection_path",
    "format_selection_summary",
    "level_specs",
    "load_selection",
    "parse_levels",
    "resolve_embeddings",
    "restrict_clip_dataset",
    "select_rows",
]
