"""Dataset adapters of the benchmark: each reads one dataset exactly as distributed.

Usage::

    from unisurg.datasets import get_adapter, DATASETS
    adapter = get_adapter("cholec80")("/data/cholec80")          # default split scheme
    splits = adapter.load()                                     # {"train": [...], "val": [...], "test": [...]}

Tasks and record types: ``phase`` -> :class:`PhaseVideo`, ``triplet`` -> :class:`MultiLabelVideo`,
``clip`` -> :class:`ClipSample`, ``skill`` -> :class:`SkillTrial`, ``segmentation`` ->
:class:`SegSample`, ``depth`` -> :class:`DepthSample`.
"""

import difflib
import re

from unisurg.data.image_files import read_depth_mm, read_image, read_mask  # noqa: E402

# adapter modules register themselves in DATASETS on import
from unisurg.datasets import (  # noqa: E402,F401
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
from unisurg.datasets.base import (
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
)


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())



def get_adapter(name: str) -> type[DatasetAdapter]:
    """Adapter class of dataset ``name`` (case, ``-``, ``_`` and spaces are ignored)."""
    by_norm = {_normalise(k): k for k in DATASETS}
    key = by_norm.get(_normalise(name))
    if key is None:
        close = difflib.get_close_matches(_normalise(name), list(by_norm), n=1, cutoff=0.5)
        hint = f". Did you mean {by_norm[close[0]]!r}?" if close else ""
        raise UnknownDatasetError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}{hint}")
    return DATASETS[key]

__all__ = [
    "DATASETS", "SPLITS", "AnnotationError", "ClipSample", "DatasetAdapter", "DatasetLayoutError", "DepthSample",
    "MultiLabelVideo", "PhaseVideo", "SegSample", "SkillTrial", "UnknownDatasetError", "get_adapter",
    "read_depth_mm", "read_image", "read_mask",
]
