"""``unisurg bench --protocol zero-shot``: prompts -> text embeddings, labelled frame -> image embedding, cosine ->
class, scored by the task's metrics; end to end on a toy dataset of solid-colour videos whose colour is the class."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import bench_cli as cli
from torch import nn

from unisurg.backbones.spec import IMAGENET_MEAN, IMAGENET_STD, Backbone
from unisurg.datasets import PhaseVideo
from unisurg.evaluation.runner import BenchError
from unisurg.evaluation.zero_shot import class_prompts, run_zero_shot
from unisurg.synth.generate import generate_dataset

torch.set_num_threads(1)

COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
CLASSES = ("red", "green", "blue")
# the class changes almost every second: a clip of several seconds would mix classes
LABELS = {
    "v1": [0, 1, 2, 0, 0, 2, 1, 1, 0, 2, 1, 0],
    "v2": [2, 2, 0, 1, 2, 0, 1, 0, 2, 1, 1, 2],
    "v3": [1, 0, 2, 2, 1, 0, 0, 2, 1, 0, 2, 1],
}
FIX = Path(__file__).resolve().parent / "fixtures" / "baselines" / "surgvlp"


def colour_video(path: Path, labels: list[int], fps: int = 5, size: int = 48) -> Path:
    """One solid colour per second: the colour of that second's class."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "0"}
        for lab in labels:
            img = np.empty((size, size, 3), np.uint8)
            img[:] = COLOURS[CLASSES[lab]]
            for _ in range(fps):
                for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    split_of = {"v1": "train", "v2": "val", "v3": "test"}
    recs = {"train": [], "val": [], "test": []}
    for vid, labels in LABELS.items():
        path = colour_video(root / f"{vid}.mp4", labels)
        recs[split_of[vid]].append(PhaseVideo(vid, path, split_of[vid], np.array(labels, np.int64), CLASSES))
    return root, recs


class ColourOracle(nn.Module):
    """A 'vision-language model' that sees mean colours and reads colour words: zero-shot must be perfect."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def encode_image(self, images):  # [N, 3, H, W], ImageNet-normalised
        return images.float().mean(dim=(2, 3))

    def encode_text(self, prompts):
        return torch.stack([torch.eye(3)[[w in p for w in CLASSES].index(True)] for p in prompts])


def oracle_backbone() -> Backbone:
    return Backbone(name="oracle", spec="oracle", model=ColourOracle(), embed_dim=3, num_frames=1, img_size=32,
                    patch_size=32, tubelet_size=1, mean=IMAGENET_MEAN, std=IMAGENET_STD, kind="image",
                    fingerprint="oracle")


def _run(toy, tmp_path, backbones, **kw):
    root, recs = toy
    over = [f"cache_dir={tmp_path / 'cache'}", "report.bootstrap_n=50"] + kw.pop("overrides", [])
    return run_zero_shot(backbones, "colours", root, splits=recs, class_names=CLASSES, task_name="phase",
                         config="tiny", overrides=over, out=tmp_path / "out", log=lambda s: None, **kw)


def test_oracle_is_perfect_on_the_labelled_frames(toy, tmp_path):
    # 4-frame clips (the tiny preset) ending at each second would mix classes; zero-shot uses the labelled frame
    res = _run(toy, tmp_path, [oracle_backbone()], template="a {} scene")
    run = res["runs"]["colours/oracle"]
    assert run["n_test"] == len(LABELS["v3"])
    assert run["prompts"] == ["a red scene", "a green scene", "a blue scene"]
    assert run["point"]["accuracy"] == 1.0 and run["metrics"]["accuracy"]["value"] == 1.0
    saved = json.loads((tmp_path / "out" / "zero-shot.json").read_text())
    assert saved["runs"]["colours/oracle"]["point"]["accuracy"] == 1.0
    assert "colours/oracle" in (tmp_path / "out" / "zero-shot.md").read_text()
    # the same centred on the second (offline anchor): still the labelled frame
    res = _run(toy, tmp_path, [oracle_backbone()], template="a {} scene", overrides=["clip.anchor=offline"])
    assert res["runs"]["colours/oracle"]["point"]["accuracy"] == 1.0


def test_prompts_file_order_is_the_class_order(toy, tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("the blue one\nthe red one\nthe green one\n")  # deliberately mismatched to the classes
    res = _run(toy, tmp_path, [oracle_backbone()], prompts_file=f)
    test = np.array(LABELS["v3"])
    # class k is described by the prompt of colour (k + 2) % 3: a prediction is right only where that matches
    assert res["runs"]["colours/oracle"]["point"]["accuracy"] == 0.0
    assert test.size == res["runs"]["colours/oracle"]["n_test"]


def test_prompt_errors_and_non_language_backbone(toy, tmp_path):
    with pytest.raises(BenchError, match="2 prompts for 3 classes"):
        f = tmp_path / "short.txt"
        f.write_text("a\nb\n")
        class_prompts(CLASSES, prompts_file=f)
    with pytest.raises(BenchError, match=r"must contain '\{\}'"):
        class_prompts(CLASSES, template="no slot")
    with pytest.raises(BenchError, match="no text tower"):
        _run(toy, tmp_path, ["random:tiny@0?embed_dim=32&depth=1&num_heads=2"])


def test_cli_zero_shot_with_surgvlp_release_layout(toy, tmp_path):
    """``unisurg bench --protocol zero-shot --backbone surgvlp:FILE?tokenizer=DIR`` through the command line and a
    dataset adapter (the synthetic Cholec80-format dataset; the CLI has no way to pass the toy records)."""
    pytest.importorskip("transformers")

    root = tmp_path / "synth"
    generate_dataset(root, n_videos=3, seconds=10, height=48, width=64, fps=2, seed=0, progress=False)
    spec = f"surgvlp:{FIX / 'surgvlp_tiny.pth'}?tokenizer={FIX / 'tokenizer'}&text_heads=2"
    out = tmp_path / "out"
    rc = cli("bench", "--protocol", "zero-shot", "--backbone", spec, "--dataset", "synthetic", "--root", str(root),
             "--out", str(out), "--config", "tiny", f"cache_dir={tmp_path / 'cache'}", "--quiet",
             "--prompt-template", "this is {}", "report.bootstrap_n=20")
    assert rc == 0
    runs = json.loads((out / "zero-shot.json").read_text())["runs"]
    (key, run), = runs.items()
    assert key.startswith("synthetic/SurgVLP") and run["task"] == "phase" and run["n_test"] > 0
    assert len(run["prompts"]) == len(run["classes"]) == 7
    assert 0.0 <= run["point"]["accuracy"] <= 1.0
    assert not (out / "results.json").exists()  # no probe was trained
    rc = cli("bench", "--backbone", spec, "--dataset", "synthetic", "--root", str(root), "--out", str(out),
             "--prompts", str(tmp_path / "p.txt"), "--quiet")
    assert rc == 2  # --prompts without --protocol zero-shot
