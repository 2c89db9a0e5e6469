"""Benchmark tasks: how records become samples and targets, the probe's loss, and the metrics.

One class per task (docs/benchmark.md):

==============  =====================  ============================  ===============================
task            records                probe / loss                  metrics (units of the bootstrap)
==============  =====================  ============================  ===============================
phase           PhaseVideo             attentive, weighted CE        Acc, F1, Jaccard (+P, R, edit), videos
triplet         MultiLabelVideo        attentive, BCE                AP-I/V/T/IV/IT/IVT video-wise, videos
clip            ClipSample             attentive, weighted CE        Acc, macro F1, clips
skill           SkillTrial             attentive, L1 / MSE           MAE, Spearman (pooled), trials
segmentation    SegSample              dense decoder, BCE + Dice     Dice, MAE per test set, images
depth           DepthSample            dense decoder, masked L1      RMSE, AbsRel, SqRel, d<1.1, images
==============  =====================  ============================  ===============================

``score`` returns :class:`ScoreBlock` s: aggregate metrics plus the per-unit values that
:func:`unisurg.evaluation.head_selection.confidence_intervals` resamples.
"""

from __future__ import annotations

from unisurg.evaluation.tasks.base import MetricColumn, ScoreBlock, Task
from unisurg.evaluation.tasks.clip import ClipTask
from unisurg.evaluation.tasks.depth import DepthTask
from unisurg.evaluation.tasks.phase import PhaseTask
from unisurg.evaluation.tasks.segmentation import SegmentationTask
from unisurg.evaluation.tasks.skill import SkillTask
from unisurg.evaluation.tasks.triplet import TripletTask, triplet_mapping

TASKS = {"phase": PhaseTask, "triplet": TripletTask, "clip": ClipTask, "skill": SkillTask,
         "segmentation": SegmentationTask, "depth": DepthTask}


def make_task(adapter_task: str, class_names, cfg, records: list | None = None) -> Task:
    """The task of an adapter (``adapter.task``); ``records`` supply component names of triplet data."""
    if adapter_task not in TASKS:
        raise ValueError(f"no benchmark task for adapter task {adapter_task!r}; known: {', '.join(TASKS)}")
    if adapter_task == "triplet":
        comp = getattr(records[0], "component_names", {}) if records else {}
        return TripletTask(class_names, cfg, comp)
    return TASKS[adapter_task](class_names, cfg)


__all__ = ["TASKS", "ClipTask", "DepthTask", "MetricColumn", "PhaseTask", "ScoreBlock", "SegmentationTask", "SkillTask",
           "Task", "TripletTask", "make_task", "triplet_mapping"]
