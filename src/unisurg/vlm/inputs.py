"""The samples of a VLM run and their pixels, from the benchmark's dataset adapters and frame store.

A dataset is read by its adapter (:mod:`unisurg.datasets`, also the synthetic world) and
its samples are made by the benchmark's task (:mod:`unisurg.evaluation.tasks`): one per clip of a clip
dataset, one per labelled second of a phase dataset. Frames come from the benchmark's frame
store (:func:`unisurg.data.media_store.build_store`; videos decoded once, shared with ``unisurg
bench``) at short side ``short_side``; the image is the whole stored frame (no crop: the model's
processor resizes it, as SurgRec passes the full frame).

Which frames (``input``):

* ``middle`` (SurgRec): one frame, the middle of the clip (stored frame ``lo + n // 2`` of a clip
  with ``n`` stored frames); for a phase dataset, the labelled second's own frame;
* ``frames``: ``frames`` images spread uniformly over the clip (phase datasets: ``frames`` seconds
  centred on the labelled one with ``anchor=offline``, ending at it with ``online``);
* ``video``: the same frames as one video input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from unisurg.data.media_store import build_store
from unisurg.data.pixels import read_frames
from unisurg.datasets import get_adapter
from unisurg.evaluation.bench_config import load_bench_config
from unisurg.evaluation.tasks import make_task
from unisurg.vlm.config import VLMConfig

TASKS = ("phase", "clip")  # single-label tasks a multiple-choice question fits


class VLMDataError(ValueError):
    """A dataset the VLM study cannot use (task, empty split); the message says why and what to do."""


@dataclass(frozen=True)
class Sample:
    key: str  # unique in the split ("video01@37", a clip id)
    group: str  # bootstrap unit: the video (phase) or the clip
    label: int
    media: str  # resolved media path (the frame store's key)
    indices: tuple[int, ...]  # stored-frame indices of the images


@dataclass
class StudyData:
    dataset: str
    split_scheme: str
    class_names: tuple[str, ...]
    samples: list[Sample]
    store: object
    ids: dict[str, str]

    def images(self, sample: Sample) -> list[Image.Image]:
        frames = read_frames(self.store, self.ids[sample.media], np.asarray(sample.indices, dtype=np.int64))
        return [Image.fromarray(f) for f in frames]

    def frames_array(self, sample: Sample) -> np.ndarray:
        """``uint8 [T, H, W, 3]``, the video input."""
        return read_frames(self.store, self.ids[sample.media], np.asarray(sample.indices, dtype=np.int64))


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """``k`` of ``n`` indices, evenly spaced (all when ``k`` is 0 or >= n)."""
    if k <= 0 or k >= n:
        return np.arange(n)
    return np.floor((np.arange(k) + 0.5) * n / k).astype(np.int64)


def load_study_data(dataset: str, root: Path, cfg: VLMConfig, *, strict: bool = True,
                    progress: bool = False) -> StudyData:
    """Records of ``cfg.split`` -> frame store -> the samples (module docstring)."""
    adapter = get_adapter(dataset)(root, cfg.split_scheme, strict=strict)
    records = adapter.load().get(cfg.split, [])
    if adapter.task not in TASKS:
        raise VLMDataError(f"{dataset}: task {adapter.task!r}; a multiple-choice question needs a single-label "
                           f"task ({', '.join(TASKS)})")
    if not records:
        raise VLMDataError(f"{dataset} (split scheme {adapter.split_scheme}): split {cfg.split!r} is empty under {root}")
    T = cfg.n_frames()
    bench = load_bench_config("paper", [f"clip.frames={T}", f"clip.anchor={cfg.anchor}",
                                        f"clip.short_side={cfg.short_side}", f"clip.jpeg_quality={cfg.jpeg_quality}",
                                        f"cache_dir={cfg.cache_dir}"])
    task = make_task(adapter.task, tuple(adapter.class_names), bench, records)
    store, ids = build_store(task.media(records), Path(bench.cache_dir), dataset, fps=task.store_fps(),
                             short_side=cfg.short_side, quality=cfg.jpeg_quality, progress=progress)
    split = task.build_split(cfg.split, records, store, ids)
    targets = np.asarray(split.targets, dtype=np.int64)
    keep, seen = [], {}
    for i, ref in enumerate(split.refs):  # stride: every stride-th sample of each video
        k = seen.get(ref.group, 0)
        seen[ref.group] = k + 1
        if k % cfg.stride == 0:
            keep.append(i)
    keep = [keep[j] for j in evenly_spaced(len(keep), cfg.max_samples)]
    samples = []
    for i in keep:
        ref = split.refs[i]  # with T = 1 its single index is the middle / labelled frame
        samples.append(Sample(ref.key, split.groups[ref.group], int(targets[i]), ref.media,
                              tuple(int(x) for x in ref.indices)))
    return StudyData(dataset, adapter.split_scheme, tuple(adapter.class_names), samples, store, ids)
