"""``unisurg predict`` and ``unisurg embed`` on a video: outputs, agreement with the benchmark run that
trained the probe, an independent pixel-pipeline reference, and the refusal of a mismatched probe."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import BB_A, BB_B, bench_cli as cli
from unisurg.evaluation.predict import ProbeFormatError, ProbeMismatchError, embed_video, predict_video

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from unisurg.evaluation.runner import run_benchmark
    from unisurg.synth.generate import generate_dataset

    base = tmp_path_factory.mktemp("pred")
    generate_dataset(base / "synth", n_videos=5, seconds=16, height=64, width=96, fps=5, seed=1, progress=False)
    res = run_benchmark([BB_A], "synthetic", base / "synth", out=base / "out", config="tiny",
                        overrides=[f"cache_dir={base / 'cache'}", "report.bootstrap_n=20", "report.figures=false"],
                        log=lambda s: None)
    run = next(iter(res["runs"].values()))
    return base, base / "out" / run["run_dir"], run


def test_predict_outputs_match_the_benchmark_run(trained):
    base, probe_dir, run = trained
    test_video = run["honest"]["per_unit"][0]["video"]
    video = base / "synth" / "videos" / f"{test_video}.mp4"
    out = base / "predicted"
    assert cli("predict", str(video), "--backbone", BB_A, "--probe", str(probe_dir), "--out", str(out),
               "--cache-dir", str(base / "cache"), "--quiet") == 0
    res = json.loads((out / f"{test_video}_phases.json").read_text())
    with np.load(probe_dir / "predictions.npz") as z:
        bench_pred = z[f"pred/{test_video}"]
    assert res["seconds"] == list(range(16)) and len(res["labels"]) == 16
    labelled = bench_pred >= 0
    assert np.array_equal(np.array(res["labels"])[labelled], bench_pred[labelled])  # same clips, same probe
    probs = np.array(res["probabilities"])
    assert probs.shape == (16, len(run["class_names"])) and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert res["label_names"][0] == run["class_names"][res["labels"][0]]
    rows = list(csv.reader((out / f"{test_video}_phases.csv").read_text().splitlines()))
    assert rows[0][:3] == ["second", "label", "label_name"] and len(rows) == 17
    assert [int(r[1]) for r in rows[1:]] == res["labels"]
    assert (out / f"{test_video}_ribbon.png").stat().st_size > 1000


def test_predict_refuses_a_probe_of_another_backbone(trained, capsys):
    base, probe_dir, _ = trained
    video = base / "synth" / "videos" / "video01.mp4"
    with pytest.raises(ProbeMismatchError, match="fingerprint"):
        predict_video(video, BB_B, probe_dir, cache_dir=str(base / "cache"))
    assert cli("predict", str(video), "--backbone", BB_B, "--probe", str(probe_dir), "--cache-dir",
               str(base / "cache"), "--quiet") == 2
    err = capsys.readouterr().err
    assert "was trained on backbone" in err and BB_A in err
    with pytest.raises(ProbeFormatError, match="probe.json"):
        predict_video(video, BB_A, base, cache_dir=str(base / "cache"))


def test_embed_npy_and_safetensors_with_timestamps(trained):
    from safetensors.numpy import load_file

    from unisurg.backbones.registry import load_backbone
    from unisurg.data.decode import decode_video

    base, _, _ = trained
    video = base / "synth" / "videos" / "video02.mp4"
    ov = [f"cache_dir={base / 'cache'}"]
    r = embed_video(video, BB_A, base / "emb" / "v2.npy", config="tiny", overrides=ov)
    feats = np.load(base / "emb" / "v2.npy")
    side = json.loads((base / "emb" / "v2.npy.json").read_text())
    assert feats.shape == (16, 32) and r["shape"] == [16, 32] and side["features"] == "mean-pooled tokens"
    assert side["timestamps"]["second"] == list(range(16))
    assert side["timestamps"]["clip_start_s"][:5] == [0.0, 0.0, 0.0, 0.0, 1.0]  # T = 4, start padded
    assert side["timestamps"]["clip_end_s"][:3] == [0.0, 1.0, 2.0]
    # independent reference: decode, resize, centre-crop, normalise, forward, mean over tokens
    frames = decode_video(video, fps=1, short_side=36).frames
    H, W, _ = frames[0].shape
    bb = load_backbone(BB_A)
    for t in (1, 8):
        clip = np.stack([frames[max(0, i)][(H - 32) // 2:(H - 32) // 2 + 32, (W - 32) // 2:(W - 32) // 2 + 32]
                         for i in range(t - 3, t + 1)]).astype(np.float64)
        clip = (clip - np.array(bb.mean) * 255) / (np.array(bb.std) * 255)
        with torch.no_grad():
            want = bb.model(torch.from_numpy(clip).permute(3, 0, 1, 2)[None].float())[0].mean(0).numpy()
        assert np.abs(feats[t] - want).max() < 0.1 * np.abs(want).max()
    # safetensors, every 5 s, all tokens
    embed_video(video, BB_A, base / "emb" / "v2.safetensors", config="tiny", overrides=ov, stride_s=5, tokens=True)
    st = load_file(str(base / "emb" / "v2.safetensors"))
    assert st["seconds"].tolist() == [0, 5, 10, 15] and st["features"].shape == (4, 8, 32)
    assert st["features"].dtype == np.float16
    assert json.loads((base / "emb" / "v2.safetensors.json").read_text())["features"] == "tokens"
    with pytest.raises(ValueError, match=".npy or .safetensors"):
        embed_video(video, BB_A, base / "emb" / "v2.pt", config="tiny", overrides=ov)


def test_embed_cli(trained):
    base, _, _ = trained
    video = base / "synth" / "videos" / "video03.mp4"
    assert cli("embed", str(video), "--backbone", BB_A, "--out", str(base / "e3.npy"), "--config", "tiny",
               f"cache_dir={base / 'cache'}", "--stride", "4", "--quiet") == 0
    assert np.load(base / "e3.npy").shape == (4, 32)
