"""One smoke test over every entry of each registry (as timm tests every registered model).

A new backbone kind, dataset adapter or task is tested here without new test code, given a tiny example in
its own layout in ``tests/registry_examples.py``; an entry without one fails, naming that file.
"""

from __future__ import annotations

import pytest
import torch

from registry_examples import BACKBONE_EXAMPLES, DATASET_EXAMPLES
from unisurg.backbones.registry import backbone_kinds, load_backbone
from unisurg.datasets import DATASETS, SPLITS, get_adapter
from unisurg.evaluation.bench_config import load_bench_config
from unisurg.evaluation.tasks import TASKS, make_task


@pytest.mark.parametrize("kind", sorted(backbone_kinds()))
def test_every_backbone_kind_loads_frozen_and_gives_tokens(kind, tmp_path):
    if kind not in BACKBONE_EXAMPLES:
        pytest.fail(f"backbone kind {kind!r} has no example in tests/registry_examples.py (BACKBONE_EXAMPLES)")
    spec = BACKBONE_EXAMPLES[kind](tmp_path)
    bb = load_backbone(spec)
    assert not bb.model.training and not any(p.requires_grad for p in bb.model.parameters())
    assert bb.kind in ("video", "image") and bb.embed_dim > 0 and len(bb.mean) == len(bb.std) == 3
    T, S = bb.num_frames, bb.img_size
    x = torch.randn(1, 3, T, S, S, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = bb.model(x)
    t, h, w = bb.grid(T, S, S)
    assert tokens.shape == (1, t * h * w, bb.embed_dim), (kind, tuple(tokens.shape), (t, h, w))
    assert torch.isfinite(tokens).all()
    assert load_backbone(spec).fingerprint == bb.fingerprint  # the same file, the same cache key


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_adapter_reads_its_example(name, tmp_path):
    if name not in DATASET_EXAMPLES:
        pytest.fail(f"dataset {name!r} has no example in tests/registry_examples.py (DATASET_EXAMPLES)")
    build, kwargs = DATASET_EXAMPLES[name]
    root = build(tmp_path)
    kwargs = {k: (root if v == "ROOT" else v) for k, v in kwargs.items()}
    adapter = get_adapter(name)(root, **kwargs)
    splits = adapter.load()
    assert set(splits) <= set(SPLITS) and sum(len(v) for v in splits.values()) > 0, name
    assert adapter.task in TASKS, f"{name}: adapter task {adapter.task!r} has no benchmark task"
    assert isinstance(adapter.class_names, tuple)
    if adapter.task in ("phase", "triplet", "clip"):
        assert len(adapter.class_names) > 0, name
    for records in splits.values():
        assert all(type(r) is type(records[0]) for r in records)


def test_every_task_has_an_adapter_and_consistent_columns():
    cfg = load_bench_config("tiny")
    by_task = {}
    for name, cls in DATASETS.items():
        by_task.setdefault(cls.task, name)
    for task_name in TASKS:
        assert task_name in by_task, f"task {task_name!r}: no dataset adapter produces it"
        task = make_task(task_name, ("a", "b"), cfg, [])
        keys = {c.key for c in task.columns}
        metric, _ = task.select_key()
        assert metric.split(":")[-1] in {k.split(":")[-1] for k in keys} | {"map", "ivt"}, (task_name, metric, keys)
