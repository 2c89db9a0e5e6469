"""Fault injection: feature-cache shards damaged after they were written are never trusted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BB_A
from torch import nn

from unisurg.backbones.features import DamagedCacheError, FeatureSet
from unisurg.backbones.registry import load_backbone
from unisurg.evaluation.predict import load_probe
from unisurg.evaluation.runner import run_benchmark
from unisurg.models.strict_load import CheckpointError
from unisurg.synth.generate import generate_dataset

torch.set_num_threads(1)


class CountingModel(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, n_videos=6, seconds=20, height=64, width=96, fps=5, seed=0, progress=False)
    return root


def _bench(synth: Path, cache: Path, logs: list[str] | None = None):
    bb = load_backbone(BB_A)
    bb.model = CountingModel(bb.model)
    ov = [f"cache_dir={cache}", "report.bootstrap_n=20", "report.figures=false"]
    res = run_benchmark([bb], "synthetic", synth, config="tiny", overrides=ov,
                        log=(logs.append if logs is not None else lambda s: None))
    return bb.model.calls, next(iter(res["runs"].values()))


def _train_shards(cache: Path) -> list[Path]:
    return sorted((cache / "features" / "synthetic").rglob("train/shard_*.npy"))


def test_shards_are_recorded_with_their_sha256(synth, tmp_path):
    _bench(synth, tmp_path / "cache")
    shards = _train_shards(tmp_path / "cache")
    record = json.loads((shards[0].parent / "complete.json").read_text())["shards"]
    assert sorted(record) == [p.name for p in shards]
    for p in shards:
        assert record[p.name] == {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[-3] ^= 0x40  # a feature value, the .npy header intact: np.load reads it without complaint
    p.write_bytes(bytes(data))


def _cut(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-256])


@pytest.mark.parametrize("damage", [_flip, _cut], ids=["flipped-byte", "truncated"])
def test_a_damaged_shard_is_named_and_recomputed_alone(synth, tmp_path, damage):
    cache = tmp_path / "cache"
    _, first = _bench(synth, cache)
    shard = _train_shards(cache)[2]
    damage(shard)
    logs: list[str] = []
    calls, again = _bench(synth, cache, logs)
    assert calls == 2  # samples 32..47 (2 batches of 8), nothing else
    assert any(shard.name in line and "removed" in line for line in logs)
    assert again["honest"]["metrics"] == first["honest"]["metrics"]


def test_a_cache_without_checksums_is_recomputed(synth, tmp_path):
    cache = tmp_path / "cache"
    n_first, _ = _bench(synth, cache)
    for c in (cache / "features").rglob("complete.json"):  # as written before checksums existed
        rec = json.loads(c.read_text())
        c.write_text(json.dumps({"n": rec["n"], "finished": rec["finished"]}))
    calls, _ = _bench(synth, cache)
    assert calls == n_first


def test_reading_a_shard_damaged_after_opening_fails_naming_it(synth, tmp_path):
    cache = tmp_path / "cache"
    _bench(synth, cache)
    shards = _train_shards(cache)
    fs = FeatureSet(shards[0].parent)
    first = fs[0].clone()
    _flip(shards[3])
    with pytest.raises(DamagedCacheError, match=rf"{shards[3]}: SHA-256 differs"):
        fs[3 * fs.shard_size]
    assert not shards[3].exists() and not (shards[0].parent / "complete.json").exists()
    assert torch.equal(fs[0], first) and np.isfinite(first.numpy()).all()


def test_a_truncated_probe_file_names_the_file(synth, tmp_path):
    res = run_benchmark([BB_A], "synthetic", synth, out=tmp_path / "out", config="tiny",
                        overrides=[f"cache_dir={tmp_path / 'cache'}", "report.bootstrap_n=20", "report.figures=false"],
                        log=lambda s: None)
    probe_dir = tmp_path / "out" / next(iter(res["runs"].values()))["run_dir"]
    load_probe(probe_dir)
    w = probe_dir / "probe.safetensors"
    w.write_bytes(w.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match=rf"{w}: not a readable safetensors file"):
        load_probe(probe_dir)
