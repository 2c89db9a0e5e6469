"""``unisurg curate``: embeddings, clustering + selection, dedup and the leakage guard, on a tiny
synthetic corpus (``unisurg synth`` videos at 96 x 64, ingested at 2 fps) and planted embeddings.

References are independent of the package: clip lists written out by hand from the clip rule,
pixels cropped and normalised here, water-filling counts worked out by hand for planted blob
sizes, copies and trims made here with PyAV whose identity and offset are known by construction."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from unisurg.curate.command import main as curate_main
from unisurg.curate.corpus_files import excluded_videos, read_exclusions, training_videos, update_exclusions
from unisurg.curate.embed import EmbeddingIndex, EmbedProtocol, embed_store
from unisurg.curate.hierarchy import LevelSpec
from unisurg.curate.leakage_check import LeakageError, check_leakage, parse_benchmark
from unisurg.train.leakage_guard import guard_corpus
from unisurg.curate.selection import (
    SelectionMismatchError,
    curate_selection,
    load_selection,
    restrict_clip_dataset,
)
from unisurg.curate.store_dedup import find_store_duplicates
from unisurg.curate.store_hashes import store_hashes
from unisurg.data.clips import ClipDataset, ClipSpec
from unisurg.data.ingest import IngestItem, IngestParams, ingest
from unisurg.data.manifest import MANIFEST_NAME, Manifest, VideoRecord
from unisurg.data.store import FrameStore
from unisurg.synth.generate import generate_dataset

torch.set_num_threads(1)
FPS, SHORT = 2.0, 64
PARAMS = IngestParams(fps=FPS, short_side=SHORT)


def reencode(src: Path, dst: Path, size: tuple[int, int], crf: int, start_s: float = 0.0) -> Path:
    """Re-encode ``src`` from ``start_s`` on at ``size`` (H, W) with libx264 at ``crf`` (pts restart at 0)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        st = inp.streams.video[0]
        o = out.add_stream("libx264", rate=st.average_rate)
        o.width, o.height, o.pix_fmt = size[1], size[0], "yuv420p"
        o.options = {"preset": "ultrafast", "crf": str(crf)}
        for f in inp.decode(st):
            if float(f.pts * f.time_base) < start_s - 1e-6:
                continue
            img = f.to_ndarray(format="rgb24", width=size[1], height=size[0])
            for p in o.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in o.encode():
            out.mux(p)
    return dst


def make_store(root: Path, items: list[tuple[Path, str]]) -> Path:
    summary = ingest([IngestItem(p.resolve(), ds, "General surgery") for p, ds in items], root, PARAMS, progress=False)
    assert summary.ok, summary.failed
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic benchmark (5 videos, by_fraction: video05 is the test video) and media derived from it."""
    base = tmp_path_factory.mktemp("curate")
    bench = base / "bench"
    generate_dataset(bench, n_videos=5, seconds=12, height=64, width=96, seed=0, progress=False)
    vids = {i: bench / "videos" / f"video{i:02d}.mp4" for i in range(1, 6)}
    extra = generate_dataset(base / "extra", n_videos=1, seconds=8, height=64, width=96, seed=7, progress=False)
    copies = {
        "v02_small": reencode(vids[2], base / "media" / "synB" / "v02_small.mp4", (48, 72), crf=30),
        "v03_tail": reencode(vids[3], base / "media" / "synA" / "v03_tail.mp4", (64, 96), crf=28, start_s=6.0),
        "v05_copy": reencode(vids[5], base / "media" / "synC" / "v05_copy.mp4", (56, 84), crf=32),
    }
    return {"base": base, "bench": bench, "videos": vids, "copies": copies, "extra": Path(extra["videos"][0]["video"])}


@pytest.fixture(scope="module")
def clean_store(world):
    """The benchmark's train/val videos only (not leakage: only test videos count)."""
    return make_store(world["base"] / "clean", [(world["videos"][i], "synA") for i in range(1, 5)])


@pytest.fixture(scope="module")
def corpus_store(world):
    """Train/val videos + a resized re-encode of video02 (other dataset), the second half of video03
    (same dataset) and a re-encode of the test video05."""
    c = world["copies"]
    items = [(world["videos"][i], "synA") for i in range(1, 5)]
    items += [(c["v02_small"], "synB"), (c["v03_tail"], "synA"), (c["v05_copy"], "synC")]
    return make_store(world["base"] / "corpus", items)


def run_cli(*args: str) -> int:
    return curate_main(["curate", *map(str, args)])


# ---------------------------------------------------------------------------------------------
# embed


class CountingForwards:
    def __init__(self, module: torch.nn.Module):
        self.n = 0
        module.register_forward_hook(lambda *_: setattr(self, "n", self.n + 1))


def test_embed_writes_shards_matching_clips_and_pixels_and_resumes(world, tmp_path):
    from unisurg.backbones.registry import load_backbone

    store = make_store(tmp_path / "s", [(world["videos"][i], "synA") for i in range(1, 5)])
    bb = load_backbone("random:tiny@0")
    calls = CountingForwards(bb.model)
    proto = EmbedProtocol(frames=4, res=64, dtype="float32")
    res = embed_store(store, bb, protocol=proto, batch_size=4, shard_size=8, device="cpu", log=lambda m: None)
    idx = res.index
    # 4 videos x 24 stored frames, clips of 4 every 4 -> 6 per video, in 3 shards of 8; batches of 4
    assert FrameStore(store).records[0].n_frames == 24
    assert idx.n == 24 and len(idx.shards) == 3 and calls.n == 6 and res.shards_computed == 3
    ids, starts = idx.sample_keys()
    expected = [(f"synA/video{v:02d}", s) for v in range(1, 5) for s in range(0, 21, 4)]
    assert list(zip(ids.tolist(), starts.tolist())) == expected
    assert idx.folder.parent.name == bb.fingerprint
    emb = idx.load()
    assert emb.shape == (24, 192)
    # row 7 = video02, frames 4..7: centre crop 64 x 64 of the 64 x 96 frames, ImageNet normalisation, mean of tokens
    frames = FrameStore(store).read_frames("synA/video02", 4, 4)[:, :, 16:80].astype(np.float32) / 255.0
    x = (frames - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    x = torch.from_numpy(x.astype(np.float32)).permute(3, 0, 1, 2)[None]
    with torch.no_grad():  # a second instance of the same seeded backbone, so the counter only sees embed_store
        ref = load_backbone("random:tiny@0").model(x).mean(dim=1)[0].numpy()
    np.testing.assert_allclose(emb[7], ref, rtol=1e-4, atol=1e-4)

    # rerun: nothing to compute
    again = embed_store(store, bb, protocol=proto, batch_size=4, shard_size=8, device="cpu", log=lambda m: None)
    assert calls.n == 6 and again.shards_computed == 0 and again.shards_reused == 3
    # a lost shard is recomputed alone, identically
    os.remove(idx.shard_path(1))
    embed_store(store, bb, protocol=proto, batch_size=4, shard_size=8, device="cpu", log=lambda m: None)
    assert calls.n == 8
    np.testing.assert_array_equal(EmbeddingIndex(idx.folder).load(), emb)
    # a newly ingested video is appended in a new shard; old shards untouched
    mtimes = [os.stat(idx.shard_path(k)).st_mtime_ns for k in range(3)]
    make_store(store, [(world["extra"], "synD")])
    grown = embed_store(store, bb, protocol=proto, batch_size=4, shard_size=8, device="cpu", log=lambda m: None)
    assert grown.videos_added == 1 and grown.shards_computed == 1 and calls.n == 9
    assert grown.index.n == 24 + 4 and len(grown.index.shards) == 4  # 8 s at 2 fps = 16 frames -> 4 clips
    assert [os.stat(idx.shard_path(k)).st_mtime_ns for k in range(3)] == mtimes
    np.testing.assert_array_equal(grown.index.load()[:24], emb)


def test_embed_cli_frame_unit_and_bad_options(clean_store, capsys):
    assert run_cli("embed", clean_store, "--backbone", "random:tiny@0", "--unit", "frame", "--frame-step", "3", "--res", "32",
                   "--quiet", "--device", "cpu") == 0
    out = capsys.readouterr().out
    assert "32 embeddings" in out  # 4 videos x frames 0, 3, ..., 21
    folder = Path(out.strip().split("-> ")[-1])
    idx = EmbeddingIndex(folder)
    assert idx.protocol["unit"] == "frame" and idx.protocol["frames"] == 2  # a still clip of one tubelet
    assert sorted(set(idx.samples[:, 1].tolist())) == list(range(0, 24, 3))
    assert run_cli("embed", clean_store, "--backbone", "random:tiny@0", "--frames", "3", "--res", "32", "--quiet") == 2
    assert "tubelet" in capsys.readouterr().err
    assert run_cli("embed", clean_store, "--backbone", "random:tiny@0", "--res", "40", "--quiet") == 2
    assert "patch size" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# cluster + selection


def test_cluster_cli_subset_contract_with_clip_dataset(clean_store, capsys, tmp_path):
    assert run_cli("embed", clean_store, "--backbone", "random:tiny@0", "--frames", "4", "--res", "32", "--quiet",
                   "--device", "cpu") == 0
    out = tmp_path / "sel.json"
    # several embedding folders exist now (frame unit from another test may exist): pick explicitly
    folder = Path(capsys.readouterr().out.strip().split("-> ")[-1])
    assert run_cli("cluster", clean_store, "--embeddings", folder, "--levels", "6,2", "--target", "10", "--out", out) == 0
    sel = load_selection(out)
    assert sel.kind == "subset" and sel.n_clips == 10 and (sel.frames, sel.stride, sel.short_video) == (4, 4, "pad_last")
    doc = json.loads(out.read_text())
    assert sum(doc["top_level_histogram"]) == 10 and Path(doc["clustering"]["hierarchy_file"]).is_file()
    ds = ClipDataset(clean_store, ClipSpec(frames=4, crop=32))
    applied = sel.apply(ds)
    assert len(applied.indices) == 10 and applied.weights is None and applied.unselected == 14
    picked = {(ds.videos[v].id, s) for v, s in ds.samples[applied.indices].tolist()}
    assert picked == {(vid, s) for vid, st in sel.videos.items() for s in st.tolist()}
    restrict_clip_dataset(ds, applied)
    assert len(ds) == 10 and len(ds.datasets) == 10 and ds[0].shape == (3, 4, 32, 32)
    with pytest.raises(SelectionMismatchError, match="frames=4, stride=4"):
        sel.apply(ClipDataset(clean_store, ClipSpec(frames=8, crop=32)))
    with pytest.raises(SelectionMismatchError, match="stride=2"):
        sel.apply(ClipDataset(clean_store, ClipSpec(frames=4, stride=2, crop=32)))
    # a target beyond the eligible clips is a clear error
    assert run_cli("cluster", clean_store, "--embeddings", folder, "--levels", "6,2", "--target", "999", "--out", out) == 2
    assert "exceeds the 24 eligible clips" in capsys.readouterr().err
    bogus = tmp_path / "bogus.json"
    bogus.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="bogus.json.*expected 'unisurg-curated-selection'"):
        load_selection(bogus)


@pytest.fixture
def planted(tmp_path):
    """500 clip embeddings in 5 far-apart tight blobs of sizes 300/120/40/25/15 (blob = dataset),
    5 clips per video, and a manifest listing the videos (no frames needed to select)."""
    sizes = [300, 120, 40, 25, 15]
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16)) * 50
    store = tmp_path / "planted"
    starts, vmeta, rows = {}, {}, []
    with Manifest(store / MANIFEST_NAME) as m:
        for b, n in enumerate(sizes):
            for j in range(n // 5):
                vid = f"blob{b}/v{j:03d}"
                starts[vid] = np.arange(0, 20, 4)
                vmeta[vid] = {"dataset": f"blob{b}", "n_frames": 20, "signature": "x"}
                rows.append(centres[b] + rng.normal(size=(5, 16)))
                m.upsert(VideoRecord(id=vid, dataset=f"blob{b}", specialty="s", source=f"/x/{vid}", status="ok", n_frames=20))
    meta = {"backbone": {"spec": "planted", "fingerprint": "planted", "embed_dim": 16},
            "protocol": {"unit": "clip", "frames": 4, "stride": 4, "short_video": "pad_last", "frame_step": 1, "res": 32, "dtype": "float32"}}
    idx = EmbeddingIndex.create(store / "emb", meta, starts, video_meta=vmeta, shard_size=128)
    emb = np.concatenate(rows).astype(np.float32)
    for k, s in enumerate(idx.shards):
        idx.write_shard(k, emb[s["start"]:s["stop"]])
    return store, idx, sizes


def blob_of(video_id: str) -> int:
    return int(video_id.split("/")[0][4:])


def test_cluster_subset_is_flat_over_planted_imbalance(planted):
    store, idx, sizes = planted
    path, doc = curate_selection(store, levels=[LevelSpec(20), LevelSpec(5)], kind="subset", target=100, embeddings=idx.folder,
                                 seed=3, log=lambda m: None)
    sel = load_selection(path)
    per_blob = np.zeros(5, int)
    for vid, st in sel.videos.items():
        per_blob[blob_of(vid)] += len(st)
    # water-filling by hand: cap 21 (4*21 + 15 = 99 <= 100 < 4*22 + 15), one leftover -> 21/21/21/22 and all 15 of the smallest
    assert per_blob[4] == 15
    assert sorted(per_blob[:4].tolist()) == [21, 21, 21, 22]
    assert sorted(doc["top_level_histogram"]) == [15, 21, 21, 21, 22]  # tolerance: flat to one clip above the cap


def test_cluster_weights_balance_blobs_and_honour_exclusions(planted):
    store, idx, sizes = planted
    update_exclusions(store, "dedup", {"blob0/v000": {"reason": "test"}})
    path, doc = curate_selection(store, levels=[LevelSpec(20), LevelSpec(5)], kind="weights", embeddings=idx.folder, seed=1,
                                 log=lambda m: None)
    sel = load_selection(path)
    assert "blob0/v000" not in sel.videos and doc["sampling"]["excluded_clips"] == 5
    mass = np.zeros(5)
    for vid, w in sel.weights.items():
        mass[blob_of(vid)] += w.sum()
    np.testing.assert_allclose(mass, 0.2, atol=1e-9)  # every top-level cluster (= blob) the same mass
    assert sel.n_clips == sum(sizes) - 5


# ---------------------------------------------------------------------------------------------
# dedup


def test_dedup_finds_reencoded_copy_and_trimmed_segment_only(corpus_store, world, capsys):
    report = find_store_duplicates(corpus_store, log=lambda m: None)
    pairs = {frozenset((p["a"], p["b"])): p for p in report["pairs"]}
    assert set(pairs) == {frozenset({"synA/video02", "synB/v02_small"}), frozenset({"synA/video03", "synA/v03_tail"})}
    copy = pairs[frozenset({"synA/video02", "synB/v02_small"})]
    assert copy["scope"] == "across" and copy["class"] == "same" and copy["matched_frames"] >= 22
    tail = pairs[frozenset({"synA/video03", "synA/v03_tail"})]
    assert tail["scope"] == "within" and tail["class"] == "contained"
    # the tail starts 6 s (12 stored frames) into video03
    offset = tail["offset_frames"] if tail["a"] == "synA/v03_tail" else -tail["offset_frames"]
    assert offset == 12 and tail["matched_frames"] >= 10
    assert {tuple(g["videos"]) for g in report["groups"]} == {("synA/video02", "synB/v02_small"), ("synA/v03_tail", "synA/video03")}

    assert run_cli("dedup", corpus_store, "--keep-one", "--quiet") == 0
    out = capsys.readouterr().out
    assert "2 near-duplicate pairs in 2 groups (1 across datasets)" in out
    excl = read_exclusions(corpus_store)
    # equal lengths: the smallest id is kept; the 12-frame tail loses to the 24-frame original
    assert set(excl) == {"synB/v02_small", "synA/v03_tail"} and excl["synA/v03_tail"]["kept"] == "synA/video03"
    assert all(e["source"] == "dedup" for e in excl.values())
    update_exclusions(corpus_store, "dedup", {})  # leave the shared store as found


def test_store_hash_cache_is_incremental_and_exact(world, tmp_path):
    from unisurg.curate.phash import hash_frames

    store = make_store(tmp_path / "h", [(world["videos"][1], "synA"), (world["videos"][2], "synA")])
    h1, stats1 = store_hashes(store, log=lambda m: None)
    assert stats1["hashed"] == 2 and (store / "curation" / "phash.npz").is_file()
    direct, _ = hash_frames(FrameStore(store).read_frames("synA/video02"))
    np.testing.assert_array_equal(h1.hashes["synA/video02"], direct)
    make_store(store, [(world["videos"][3], "synA")])
    h2, stats2 = store_hashes(store, log=lambda m: None)
    assert stats2 == {**stats2, "hashed": 1, "reused": 2}
    np.testing.assert_array_equal(h2.hashes["synA/video02"], direct)


# ---------------------------------------------------------------------------------------------
# leakage


def test_leakage_check_and_guard_block_the_test_video_only(corpus_store, clean_store, world, capsys):
    bench = f"synthetic:{world['bench']}"
    assert parse_benchmark(bench + ":by_fraction").split_scheme == "by_fraction"
    assert run_cli("leakage", corpus_store, "--benchmark", bench, "--quiet") == 1
    assert "LEAK synC/v05_copy <- synthetic:by_fraction:test:video05" in capsys.readouterr().out
    report = json.loads((corpus_store / "curation" / "leakage.json").read_text())
    assert report["leaking_videos"] == ["synC/v05_copy"]
    assert report["checked"]["n_test_videos"] == 1 and report["checked"]["benchmarks"][0]["split_scheme"] == "by_fraction"
    assert report["checked"]["thresholds"]["min_frames"] == 5 and report["created"]
    assert report["hits"][0]["test_fraction"] >= 0.9

    with pytest.raises(LeakageError) as err:
        guard_corpus([corpus_store], allow_leakage=False, log=lambda m: None)
    assert "synC/v05_copy" in str(err.value) and "synthetic:by_fraction:test:video05" in str(err.value)
    assert err.value.record["status"] == "leakage"
    warnings = []
    record = guard_corpus([corpus_store], allow_leakage=True, log=warnings.append)
    assert record["status"] == "leakage_allowed" and record["stores"][0]["hits"][0]["corpus_video"] == "synC/v05_copy"
    assert any("explicitly allowed" in w for w in warnings)
    json.dumps(record)  # goes into the run log as is

    # the same check from a list of files
    direct = check_leakage(corpus_store, videos=[world["videos"][5]], out=corpus_store / "curation" / "files.json", log=lambda m: None)
    assert [h["corpus_video"] for h in direct["hits"]] == ["synC/v05_copy"]

    # a corpus of train/val videos only passes
    assert run_cli("leakage", clean_store, "--benchmark", bench, "--quiet") == 0
    assert guard_corpus(clean_store, log=lambda m: None)["status"] == "clean"


def test_guard_excluded_hits_pass_and_missing_or_stale_reports_warn(world, tmp_path, capsys):
    store = make_store(tmp_path / "g", [(world["videos"][1], "synA"), (world["copies"]["v05_copy"], "synC")])
    warnings = []
    assert guard_corpus(store, log=warnings.append)["status"] == "not_checked" and "no leakage check" in warnings[0]
    assert run_cli("leakage", store, "--benchmark", f"synthetic:{world['bench']}:by_fraction", "--exclude-hits", "--quiet") == 1
    assert excluded_videos(store) == {"synC/v05_copy"}
    train = training_videos(store)
    assert train == ["synA/video01"]
    assert guard_corpus(store, videos=train, log=lambda m: None)["status"] == "clean"
    with pytest.raises(LeakageError):
        guard_corpus(store, log=lambda m: None)  # without the exclusions the copy is trained on

    make_store(store, [(world["videos"][2], "synA")])  # ingested after the check
    warnings = []
    rec = guard_corpus(store, videos=training_videos(store), log=warnings.append)
    assert rec["status"] == "stale" and rec["stores"][0]["unchecked_videos"] == 1
    assert rec["stores"][0]["unchecked_examples"] == ["synA/video02"] and rec["stores"][0]["manifest_changed"]
    assert any("stale" in w for w in warnings)


def test_leakage_bad_inputs_are_named(clean_store, world, tmp_path, capsys):
    assert run_cli("leakage", clean_store, "--benchmark", "nosuch:/x", "--quiet") == 2
    assert "nosuch" in capsys.readouterr().err
    assert run_cli("leakage", clean_store, "--videos", tmp_path / "missing.mp4", "--quiet") == 2
    err = capsys.readouterr().err
    assert "missing.mp4" in err and "--skip-missing" in err
    assert run_cli("leakage", clean_store, "--quiet") == 2
    assert "--benchmark" in capsys.readouterr().err


def test_pretrain_refuses_leaking_corpus_unless_allowed_and_logs_the_check(corpus_store, world, tmp_path, capsys):
    from unisurg.cli import main as unisurg_main

    if not (corpus_store / "curation" / "leakage.json").exists():
        assert run_cli("leakage", corpus_store, "--benchmark", f"synthetic:{world['bench']}", "--quiet") == 1
    args = ["pretrain", "--config", "tiny", f"data.stores=[{corpus_store}]", "run.progress=false",
            "schedule.epochs=1", "schedule.iterations_per_epoch=2", "data.honour_exclusions=false"]
    assert unisurg_main(args + [f"run.out={tmp_path / 'refused'}"]) == 2
    err = capsys.readouterr().err
    assert "synC/v05_copy" in err and "video05" in err
    assert not (tmp_path / "refused" / "final").exists()
    assert unisurg_main(args + [f"run.out={tmp_path / 'allowed'}", "run.allow_leakage=true"]) == 0
    check = json.loads((tmp_path / "allowed" / "corpus_check.json").read_text())
    assert check["status"] == "leakage_allowed"
    assert (tmp_path / "allowed" / "final" / "weights.safetensors").exists()
