"""The benchmark pipeline end to end on a tiny synthetic dataset: ``unisurg bench`` (CLI glue), results,
tables, ribbons, saved probes, the feature cache (reuse, resume, invalidation), merging backbones,
selection on validation only, and the clip protocol."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BB_A, BB_B
from conftest import bench_cli as cli
from torch import nn

import unisurg.evaluation.runner as runner
from unisurg.backbones.registry import load_backbone
from unisurg.data.decode import decode_video
from unisurg.data.media_store import resample_folder_indices
from unisurg.data.pixels import per_second_indices, spread_indices
from unisurg.datasets import PhaseVideo, get_adapter
from unisurg.evaluation.runner import BenchError, carve_validation, run_benchmark
from unisurg.synth.generate import generate_dataset

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, n_videos=6, seconds=20, height=64, width=96, fps=5, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def bench_out(synth, tmp_path_factory) -> tuple[Path, Path]:
    out, cache = tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("cache")
    rc = cli("bench", "--backbone", BB_A, "--dataset", "synthetic", "--root", str(synth), "--out", str(out),
             "--config", "tiny", f"cache_dir={cache}", "--quiet", "report.bootstrap_n=200")
    assert rc == 0
    return out, cache


class CountingModel(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def counted(spec: str):

    bb = load_backbone(spec)
    bb.model = CountingModel(bb.model)
    return bb


# -- the clip protocol --------------------------------------------------------------------------------


def test_per_second_clip_indices_by_hand():
    # online: T frames ending at the second, the start padded with the first frame
    assert per_second_indices(2, n_frames=10, frames=4).tolist() == [0, 0, 1, 2]
    assert per_second_indices(7, 10, 4).tolist() == [4, 5, 6, 7]
    # offline: centred (T//2 before), the end padded with the last frame
    assert per_second_indices(8, 10, 4, anchor="offline").tolist() == [6, 7, 8, 9]
    assert per_second_indices(9, 10, 4, anchor="offline").tolist() == [7, 8, 9, 9]
    # a labelled second past the decoded video uses the last frame
    assert per_second_indices(12, 10, 3).tolist() == [9, 9, 9]
    # 2 fps store: second 3 ends at frame 6
    assert per_second_indices(3, 20, 3, fps=2.0).tolist() == [4, 5, 6]
    assert spread_indices(10, 14, 8).tolist() == [10, 10, 11, 11, 12, 12, 13, 13]
    assert spread_indices(0, 100, 4).tolist() == [12, 37, 62, 87]
    with pytest.raises(ValueError, match="anchor"):
        per_second_indices(1, 5, 2, anchor="middle")


def test_frame_folder_resampling_by_hand():
    assert resample_folder_indices(5, folder_fps=1, store_fps=1).tolist() == [0, 1, 2, 3, 4]
    assert resample_folder_indices(4, folder_fps=0.5, store_fps=1).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert resample_folder_indices(10, folder_fps=5, store_fps=1).tolist() == [0, 5]


def test_carved_validation_is_deterministic_and_never_test():
    vids = [PhaseVideo(f"v{i:02d}", Path(f"v{i:02d}.mp4"), "train", np.zeros(3, np.int64), ("a",)) for i in range(10)]
    test = [PhaseVideo("t", Path("t.mp4"), "test", np.zeros(3, np.int64), ("a",))]
    recs, how = carve_validation({"train": vids, "val": [], "test": test}, 0.2, "phase")
    again, _ = carve_validation({"train": list(reversed(vids)), "val": [], "test": test}, 0.2, "phase")
    assert len(recs["val"]) == 2 and len(recs["train"]) == 8 and recs["test"] == test
    assert {v.video_id for v in recs["val"]} == {v.video_id for v in again["val"]}
    assert not {v.video_id for v in recs["val"]} & {v.video_id for v in recs["train"]}
    assert all(v.split == "val" for v in recs["val"]) and "carved" in how
    with pytest.raises(BenchError, match="never selected on test"):
        carve_validation({"train": vids[:1], "val": [], "test": test}, 0.2, "phase")


# -- bench end to end ---------------------------------------------------------------------------------


def test_bench_writes_results_tables_ribbons_and_probe(bench_out, synth):
    out, _ = bench_out
    res = json.loads((out / "results.json").read_text())
    (key, run), = res["runs"].items()
    assert key == "synthetic/random-init tiny" and run["task"] == "phase"
    assert not (out / "paired.json").exists()  # one backbone: nothing to pair
    assert run["honest"]["label"] == "honest (selected on validation)"
    assert run["paper_style"]["label"] == "paper-style (selected on test)"
    assert [(p["lr"], p["wd"]) for p in run["probes"]] == [(3e-3, 0.01), (3e-3, 0.1), (3e-4, 0.01), (3e-4, 0.1)]
    fold = run["folds"][0]
    assert fold["n_units"] == {"train": 4, "val": 1, "test": 1} and fold["n_samples"]["test"] == 20
    for m in ("accuracy", "f1", "jaccard", "edit"):
        v = run["honest"]["metrics"][m]
        assert v["ci_low"] <= v["value"] + 1e-12 and v["value"] <= v["ci_high"] + 1e-12
    # the honest accuracy, recomputed independently from the saved per-second predictions
    run_dir = out / run["run_dir"]
    with np.load(run_dir / "predictions.npz") as z:
        vids = sorted(k[3:] for k in z.files if k.startswith("gt/"))
        accs = [np.mean(z[f"pred/{v}"][z[f"gt/{v}"] >= 0] == z[f"gt/{v}"][z[f"gt/{v}"] >= 0]) for v in vids]
    assert vids == ["video06"] and [r["video"] for r in run["honest"]["per_unit"]] == vids
    assert run["honest"]["metrics"]["accuracy"]["value"] == pytest.approx(float(np.mean(accs)))
    # the chosen probe is the val-best one and is saved with what predict needs
    val_acc = [p["val"]["accuracy"] for p in run["probes"]]
    assert run["honest"]["probe_index"] == int(np.argmax(val_acc))
    meta = json.loads((run_dir / "probe.json").read_text())
    assert meta["backbone"]["spec"] == BB_A and meta["probe_index"] == run["honest"]["probe_index"]
    assert meta["clip"]["frames"] == 4 and meta["class_names"] == run["class_names"] and meta["selection"]["on"] == "val"
    assert (run_dir / "probe.safetensors").stat().st_size > 0
    # tables and figures
    md = (out / "table.md").read_text()
    assert "honest (selected on validation)" in md and "paper-style (selected on test)" in md
    assert "| random-init tiny |" in md and "synthetic Acc" in md
    tex = (out / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\multicolumn{5}{c}{synthetic}" in tex  # Acc, F1 and Jaccard (gt), F1 and Jaccard (gt_or_pred)
    assert (out / "figures" / "synthetic" / "ribbon_video06.png").stat().st_size > 1000


def test_second_backbone_merges_into_one_table(bench_out, synth):
    out, cache = bench_out
    run_benchmark([BB_B], "synthetic", synth, out=out, config="tiny",
                  overrides=[f"cache_dir={cache}", "report.bootstrap_n=200"], log=lambda s: None)
    res = json.loads((out / "results.json").read_text())
    labels = [r["backbone"]["label"] for r in res["runs"].values()]
    assert len(labels) == 2 and labels[0] == "random-init tiny" and labels[1].startswith("random-init tiny [")
    rows = list(csv.reader((out / "table.csv").read_text().splitlines()))
    assert rows[0][:5] == ["model", "selection", "synthetic Acc", "synthetic Acc ci_low", "synthetic Acc ci_high"]
    assert [(r[0], r[1]) for r in rows[1:]] == [(labels[0], "honest (selected on validation)"),
                                                (labels[1], "honest (selected on validation)"),
                                                (labels[0], "paper-style (selected on test)"),
                                                (labels[1], "paper-style (selected on test)")]
    assert sum(line.startswith("| random-init tiny") for line in (out / "table.md").read_text().splitlines()) == 4
    # two backbones share the test split: paired comparisons, A - B per test video (checked by hand)
    paired = json.loads((out / "paired.json").read_text())["synthetic"]
    assert {"accuracy", "f1", "jaccard"} <= set(paired["families"])
    (r,) = paired["families"]["f1"]
    units_a, units_b = (res["runs"][f"synthetic/{lab}"]["honest"]["per_unit"] for lab in labels)
    by_video = {u["video"]: u["f1"] for u in units_b}
    diffs = [u["f1"] - by_video[u["video"]] for u in units_a]
    assert (r["a"], r["b"], r["n_units"]) == (labels[0], labels[1], len(diffs))
    assert r["difference"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-12)
    assert r["family_size"] == 1 and r["p_holm"] == r["permutation_p"]
    assert "Holm-corrected" in (out / "paired.md").read_text()
    # rerunning the first backbone replaces its run instead of adding a third row
    run_benchmark([BB_A], "synthetic", synth, out=out, config="tiny",
                  overrides=[f"cache_dir={cache}", "report.bootstrap_n=200"], log=lambda s: None)
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 2


def test_feature_cache_reused_resumed_and_keyed_by_protocol(synth, tmp_path):
    cache = tmp_path / "cache"
    ov = [f"cache_dir={cache}", "report.bootstrap_n=50", "report.figures=false"]
    quiet = lambda s: None  # noqa: E731
    bb = counted(BB_A)
    r1 = run_benchmark([bb], "synthetic", synth, config="tiny", overrides=ov, log=quiet)
    first = bb.model.calls
    assert first > 0
    bb.model.calls = 0
    r2 = run_benchmark([bb], "synthetic", synth, config="tiny", overrides=ov, log=quiet)
    assert bb.model.calls == 0  # every split read back from the cache
    run1, run2 = (next(iter(r["runs"].values())) for r in (r1, r2))
    assert run2["timings"]["backbone_forwards"] == 0
    assert run1["honest"]["metrics"] == run2["honest"]["metrics"]
    # a lost shard is recomputed alone (train: 80 samples in shards of 16; batches of 8, one video per batch)
    shards = sorted((cache / "features" / "synthetic").rglob("train/shard_*.npy"))
    assert len(shards) == 5
    shards[2].unlink()
    (shards[2].parent / "complete.json").unlink()
    run_benchmark([bb], "synthetic", synth, config="tiny", overrides=ov, log=quiet)
    assert bb.model.calls == 2  # samples 32..47: 2 batches of 8 from one video, nothing else
    # another clip protocol is another cache entry
    bb.model.calls = 0
    run_benchmark([bb], "synthetic", synth, config="tiny", overrides=ov + ["clip.frames=2"], log=quiet)
    assert bb.model.calls == first


def test_cached_features_equal_a_direct_backbone_forward(synth, tmp_path):
    """The cache holds exactly backbone(normalised centre-cropped clip); reference built by hand from the video."""

    cache = tmp_path / "cache"
    run_benchmark([BB_A], "synthetic", synth, config="tiny", overrides=[f"cache_dir={cache}", "report.bootstrap_n=20"],
                  log=lambda s: None)
    test_dir = next((cache / "features" / "synthetic").rglob("test/meta.json")).parent
    tokens = np.load(test_dir / "shard_00000.npy")  # [16, N, D] float16: seconds 0..15 of video06
    video = get_adapter("synthetic")(synth).load()["test"][0]
    frames = decode_video(video.frames, fps=1, short_side=36).frames  # as the store: short side 256*32/224 -> 36
    H, W, _ = frames[0].shape
    y, x = (H - 32) // 2, (W - 32) // 2
    bb = load_backbone(BB_A)
    mean, std = np.array(bb.mean) * 255, np.array(bb.std) * 255
    for t in (0, 2, 9):
        idx = [max(0, i) for i in range(t - 3, t + 1)]  # online clip of 4 frames, start padded with frame 0
        clip = np.stack([frames[i][y:y + 32, x:x + 32] for i in idx]).astype(np.float64)
        clip = (clip - mean) / std
        with torch.no_grad():
            want = bb.model(torch.from_numpy(clip).permute(3, 0, 1, 2)[None].float())[0].numpy()
        # JPEG in the frame store vs the raw decode: small pixel differences
        assert np.abs(tokens[t].astype(np.float32) - want).max() < 0.15 * np.abs(want).max()
        assert np.corrcoef(tokens[t].ravel(), want.ravel())[0, 1] > 0.99


def test_selection_never_uses_test(synth, tmp_path, monkeypatch):
    """Rigged probe outputs: probe 1 is best on validation, probe 3 on test; honest must report probe 1."""

    K = 7

    def fake_collect(probe, inputs, task, split, cfg, device, progress=False):
        y = np.asarray(split.targets)
        n, P = y.size, probe.n_probes
        out = np.zeros((P, n, K), np.float32)
        for p in range(P):
            pred = (y + 1) % K
            if split.name == "val" and p == 1:
                pred = y
            if split.name == "test" and p == 3:
                pred = y
            if split.name == "test" and p == 1:
                pred = np.where(np.arange(n) < n // 2, y, (y + 1) % K)
            out[p, np.arange(n), pred] = 1.0
        return out

    monkeypatch.setattr(runner, "collect_outputs", fake_collect)
    res = run_benchmark([BB_A], "synthetic", synth, out=tmp_path / "o", config="tiny",
                        overrides=[f"cache_dir={tmp_path / 'c'}", "report.bootstrap_n=20", "report.figures=false"],
                        log=lambda s: None)
    run = next(iter(res["runs"].values()))
    assert run["honest"]["probe_index"] == 1 and run["paper_style"]["probe_index"] == 3
    assert run["honest"]["metrics"]["accuracy"]["value"] == pytest.approx(0.5)  # probe 1 on test: half right
    assert run["paper_style"]["metrics"]["accuracy"]["value"] == pytest.approx(1.0)
    assert json.loads((tmp_path / "o" / run["run_dir"] / "probe.json").read_text())["probe_index"] == 1


def test_cli_errors_are_clear(synth, tmp_path, capsys):
    base = ["bench", "--backbone", BB_A, "--dataset", "synthetic", "--root", str(synth), "--out", str(tmp_path / "o"),
            "--config", "tiny", f"cache_dir={tmp_path / 'c'}", "--quiet"]
    assert cli(*base, "train.epoch=2") == 2
    assert "unknown config key 'train.epoch'" in capsys.readouterr().err
    assert cli(*base, "clip.augment=rrc") == 2
    assert "features.online=true" in capsys.readouterr().err
    assert cli(*[a if a != "synthetic" else "synthetik" for a in base]) == 2
    assert "Did you mean 'synthetic'" in capsys.readouterr().err
    empty = tmp_path / "novideo"
    (empty / "phase_annotations").mkdir(parents=True)
    for v in range(1, 6):
        (empty / "phase_annotations" / f"video{v:02d}-phase.txt").write_text(
            "Frame\tPhase\n" + "".join(f"{i}\tPreparation\n" for i in range(50)))
    assert cli(*[a if a != str(synth) else str(empty) for a in base], "--lenient") == 2
    err = capsys.readouterr().err
    assert "media not found" in err and "video01.mp4" in err


def test_extract_command_then_bench_reuses_it_and_protocol_options(synth, tmp_path):
    cache = tmp_path / "cache"
    assert cli("extract", "--backbone", BB_A, "--dataset", "synthetic", "--root", str(synth), "--config", "tiny",
               f"cache_dir={cache}", "--quiet") == 0
    assert len(list((cache / "features").rglob("complete.json"))) == 3  # train, val, test
    bb = counted(BB_A)
    res = run_benchmark([bb], "synthetic", synth, out=tmp_path / "o", config="tiny", log=lambda s: None,
                        overrides=[f"cache_dir={cache}", "report.bootstrap_n=50", "report.relaxed=cholec80"])
    assert bb.model.calls == 0
    run = next(iter(res["runs"].values()))
    # the Cholec80 relaxed-boundary metrics come as their own column group
    assert {"relaxed:accuracy", "relaxed:f1", "relaxed:jaccard"} <= set(run["honest"]["metrics"])
    assert "synthetic relaxed Acc" in (tmp_path / "o" / "table.md").read_text()
    # pooled features: [D] per clip in the cache, the probe sees one token
    res = run_benchmark([bb], "synthetic", synth, config="tiny", log=lambda s: None,
                        overrides=[f"cache_dir={cache}", "report.bootstrap_n=20", "features.mode=pooled",
                                   "clip.anchor=offline"])
    shards = [p for p in (cache / "features").rglob("test/shard_00000.npy")]
    shapes = sorted(np.load(p).shape for p in shards)
    assert shapes == [(16, 8, 32), (16, 32)]
    # no cache at all: features computed in memory, nothing new on disk
    n_before = len(list((cache / "features").rglob("complete.json")))
    run_benchmark([bb], "synthetic", synth, config="tiny", log=lambda s: None,
                  overrides=[f"cache_dir={cache}", "report.bootstrap_n=20", "features.cache=false", "clip.frames=6"])
    assert len(list((cache / "features").rglob("complete.json"))) == n_before
    with pytest.raises(BenchError, match="multiple of the tubelet size"):
        run_benchmark([bb], "synthetic", synth, config="tiny", log=lambda s: None,
                      overrides=[f"cache_dir={cache}", "clip.frames=3"])


def test_time_pooled_features_are_per_time_step_means_of_the_tokens(synth, tmp_path):
    """features.mode=time caches [T', D]: each time step's patch tokens averaged (token order t, h, w)."""
    cache = tmp_path / "cache"
    common = ["clip.frames=8", f"cache_dir={cache}", "report.bootstrap_n=20", "train.epochs=1"]
    run_benchmark([BB_A], "synthetic", synth, config="tiny", overrides=common, log=lambda s: None)
    run_benchmark([BB_A], "synthetic", synth, config="tiny", overrides=common + ["features.mode=time"],
                  log=lambda s: None)
    metas = sorted((cache / "features" / "synthetic").rglob("test/meta.json"))
    shards = [np.load(m.parent / "shard_00000.npy").astype(np.float32) for m in metas]
    tokens, timed = sorted(shards, key=lambda a: -a.shape[1])  # [n, 4*Hp*Wp, D] and [n, 4, D]
    assert timed.shape[1] == 4 and tokens.shape[1] % 4 == 0
    n, N, D = tokens.shape
    ref = np.stack([[tokens[i, t * (N // 4):(t + 1) * (N // 4)].mean(0) for t in range(4)] for i in range(n)])
    np.testing.assert_allclose(timed, ref, atol=2e-2)  # both stored as float16
