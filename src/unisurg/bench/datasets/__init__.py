"""Dataset adapters of the benchmark: each reads one dataset exactly as distributed.

Usage::

    from unisurg.bench.datasets import get_adapter, DATASETS
    adapter = get_adapter("cholec80")("/data/cholec80")          # default split scheme
    splits = adapter.load()                                     # {"train": [...], "val": [...], "test": [...]}

Tasks and record types: ``phase`` -> :class:`PhaseVideo`, ``triplet`` -> :class:`MultiLabelVideo`,
``clip`` -> :class:`ClipSample`, ``skill`` -> :class:`SkillTrial`, ``segmentation`` ->
:class:`SegSample`, ``depth`` -> :class:`DepthSample`.
"""

from unisurg.bench.datasets.base import (
    DATASETS,
    SPLITS,
    AnnotationError,
    ClipSample,
    DatasetAdapter,
    DatasetLayoutError,
    DepthSample,
    MultiLabelVideo,
    PhaseVideo,
    SegSample,
    SkillTrial,
    UnknownDatasetError,
    get_adapter,
)

# adapter modules register themselves in DATASETS on import
from unisurg.bench.datasets import (  # noqa: E402,F401
    autolaparo,
    c3vd,
    cholec,
    cholect50,
    clips,
    egosurgery,
    jigsaws,
    ophnet,
    pitvis,
    pmlr50,
    polyp,
    surgrec,
)
from unisurg.bench.datasets.media import read_depth_mm, read_image, read_mask  # noqa: E402

__all__ = [
    "DATASETS", "SPLITS", "AnnotationError", "ClipSample", "DatasetAdapter", "DatasetLayoutError", "DepthSample",
    "MultiLabelVideo", "PhaseVideo", "SegSample", "SkillTrial", "UnknownDatasetError", "get_adapter",
    "read_depth_mm", "read_image", "read_mask",
]
