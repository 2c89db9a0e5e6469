"""``--engine ray`` against the local engine, on a local Ray cluster of a head and a second node (1 CPU each).

Reference: the local engine's output (itself tested in test_ingest.py / test_curate_cli.py). Ray must give
the same manifest rows (all but the ingest timestamp), byte-identical frame packs and equal embeddings; a
worker killed mid-task (after writing part of its pack) is retried and nothing is lost or duplicated.
Skipped when Ray is not installed (``pip install 'unisurg[ray]'``).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import BB_A, write_video

import unisurg
import unisurg.data.ingest as ingest_mod
from unisurg.atomic_files import temp_name
from unisurg.curate.embed import EmbedProtocol, embed_store
from unisurg.curate.store_hashes import store_hashes
from unisurg.data.ingest import IngestParams, collect_inputs, ingest
from unisurg.data.manifest import MANIFEST_NAME, Manifest
from unisurg.data.ray_engine import RayOptions, RayUnavailableError, import_ray, ray_map
from unisurg.evaluation.runner import extract_features
from unisurg.synth.generate import generate_dataset

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

TESTS = Path(__file__).resolve().parent
PARAMS = IngestParams(fps=5, short_side=48)


@pytest.fixture(scope="module")
def cluster():
    """Head + second node, 1 CPU each; workers import unisurg and this test module from PYTHONPATH."""
    src = str(Path(unisurg.__file__).resolve().parents[1])
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([src, str(TESTS)] + ([old] if old else []))
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray_videos") / "ds"
    for i in range(4):
        write_video(folder / f"v{i}.mp4", n_frames=20 + 5 * i, fps=25, size=(48, 64), seed=i)
    return collect_inputs([str(folder)])


def _rows(store: Path) -> dict[str, dict]:
    with Manifest(store / MANIFEST_NAME, readonly=True) as m:
        return {r.id: {k: v for k, v in dataclasses.asdict(r).items() if k != "ingested_at"} for r in m.records()}


def _same_store(a: Path, b: Path) -> None:
    ra, rb = _rows(a), _rows(b)
    assert ra == rb and all(r["status"] == "ok" for r in ra.values())
    for r in ra.values():
        assert (a / r["pack"]).read_bytes() == (b / r["pack"]).read_bytes(), r["id"]
    assert not [p for p in (b / "frames").rglob("*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def local_store(videos, tmp_path_factory):
    store = tmp_path_factory.mktemp("local") / "store"
    assert ingest(videos, store, PARAMS, workers=1, progress=False).ok
    return store


def _square(x: int) -> int:
    return x * x


def test_ray_map_back_pressure_and_order(cluster):
    got = dict(ray_map(_square, range(7), RayOptions(max_in_flight=2)))
    assert got == {i: i * i for i in range(7)}


def test_missing_ray_names_the_extra(monkeypatch):
    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: (_ for _ in ()).throw(ImportError(name)) if name == "ray" else real(name, *a))
    with pytest.raises(RayUnavailableError, match=r"pip install 'unisurg\[ray\]'"):
        import_ray()


def test_ingest_on_ray_equals_local_engine(cluster, videos, local_store, tmp_path):
    summary = ingest(videos, tmp_path / "store", PARAMS, progress=False, engine="ray")
    assert summary.ok and len(summary.done) == len(videos)
    _same_store(local_store, tmp_path / "store")
    # resuming: nothing to redo
    again = ingest(videos, tmp_path / "store", PARAMS, progress=False, engine="ray")
    assert again.done == [] and len(again.skipped) == len(videos)


_real_ingest_one = ingest_mod.ingest_one


def _killed_on_first_attempt(item, video_id, root, params):
    """Writes half of a temporary pack, then SIGKILLs its own worker the first time it sees video v1."""
    marker = Path(root).parent / "markers" / (video_id.replace("/", "_") + ".killed")  # the test makes the folder
    if video_id.endswith("/v1") and marker.parent.is_dir() and not marker.exists():
        marker.touch()
        pack = Path(root) / "frames" / f"{video_id}.ujpk"
        pack.parent.mkdir(parents=True, exist_ok=True)
        temp_name(pack, "half").write_bytes(b"UJPK0001 half a pack")  # as a writer killed mid-pack leaves it
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_ingest_one(item, video_id, root, params)


def test_worker_killed_mid_ingest_is_retried_without_loss_or_duplicates(cluster, videos, local_store, tmp_path, monkeypatch):
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setattr(ingest_mod, "ingest_one", _killed_on_first_attempt)
    summary = ingest(videos, tmp_path / "store", PARAMS, progress=False, engine="ray", ray=RayOptions(max_retries=2))
    assert list(markers.iterdir()), "the kill never happened: the test would prove nothing"
    assert summary.ok and sorted(summary.done) == sorted(_rows(local_store))  # each video committed exactly once
    _same_store(local_store, tmp_path / "store")


def test_embed_on_ray_actors_equals_local(cluster, local_store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(local_store, copy)
    proto = EmbedProtocol(unit="frame", res=32, dtype="float32")  # one row per stored frame: several shards
    a = embed_store(local_store, "random:tiny@0", protocol=proto, shard_size=5, device="cpu", log=lambda m: None)
    b = embed_store(copy, "random:tiny@0", protocol=proto, shard_size=5, device="cpu", log=lambda m: None, engine="ray",
                    ray=RayOptions(actors=2))
    assert len(a.index.shards) >= 3 and b.shards_computed == len(a.index.shards)
    assert b.forwards == a.forwards
    np.testing.assert_array_equal(a.index.samples, b.index.samples)
    np.testing.assert_allclose(b.index.load(), a.index.load(), rtol=1e-5, atol=1e-6)


def test_frame_hashes_on_ray_equal_local(cluster, local_store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(local_store, copy)
    a, sa = store_hashes(local_store, workers=1, log=lambda m: None)
    b, sb = store_hashes(copy, log=lambda m: None, engine="ray")
    assert sa["hashed"] == sb["hashed"] == 4
    assert a.hashes.keys() == b.hashes.keys()
    for v in a.hashes:
        np.testing.assert_array_equal(a.hashes[v], b.hashes[v])
        np.testing.assert_array_equal(a.contrast[v], b.contrast[v])
    again, stats = store_hashes(copy, log=lambda m: None, engine="ray")  # the driver wrote the cache
    assert stats["reused"] == 4 and stats["hashed"] == 0


def test_extract_on_ray_actors_equals_local(cluster, tmp_path):

    generate_dataset(tmp_path / "synth", n_videos=3, seconds=6, height=48, width=64, fps=5, seed=1, progress=False)
    common = ["features.shard_size=4"]  # several shards per split
    a = extract_features([BB_A], "synthetic", tmp_path / "synth", config="tiny", overrides=common + [f"cache_dir={tmp_path / 'a'}"],
                         log=lambda m: None)
    b = extract_features([BB_A], "synthetic", tmp_path / "synth", config="tiny", overrides=common + [f"cache_dir={tmp_path / 'b'}"],
                         log=lambda m: None, engine="ray", ray=RayOptions(actors=2))
    (name, fa), (_, fb) = next(iter(a.items())), next(iter(b.items()))
    assert fa.keys() == fb.keys() and len(fa) == 3
    for split in fa:
        sa, sb = sorted(Path(fa[split]).glob("shard_*.npy")), sorted(Path(fb[split]).glob("shard_*.npy"))
        assert len(sa) == len(sb) >= 2 and (Path(fb[split]) / "complete.json").is_file()
        for x, y in zip(sa, sb):
            np.testing.assert_allclose(np.load(y).astype(np.float32), np.load(x).astype(np.float32), rtol=1e-3, atol=1e-3)
