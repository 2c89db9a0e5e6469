"""Fine-tuning (``unisurg finetune``): the pieces against independent references, and tiny runs on the
synthetic benchmark: one process end to end, 2-process gloo torchrun (DDP and FSDP2) equal to one process,
SIGKILL + ``--resume`` on the same trajectory, and the exported model through ``unisurg predict --model``."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import bench_cli as cli
from conftest import torchrun, write_video
from registry_examples import BACKBONE_EXAMPLES
from safetensors.torch import load_file
from test_bench_tasks import _t50
from torch import nn

from unisurg.backbones.registry import load_backbone
from unisurg.data.pixels import center_crop, spread_indices
from unisurg.evaluation.finetune import finetune
from unisurg.evaluation.finetune_export import clean_keys
from unisurg.evaluation.finetune_mixing import (
    MixDraw,
    draw_mix,
    mix_inputs,
    mix_targets,
    smooth_one_hot,
    soft_cross_entropy,
)
from unisurg.evaluation.finetune_model import (
    FinetuneModel,
    LinearHead,
    enable_activation_checkpointing,
    find_blocks,
    layer_index_fn,
    set_drop_path,
)
from unisurg.evaluation.finetune_views import shifted_indices, spatial_crops
from unisurg.models.blocks import DropPath
from unisurg.synth.generate import generate_dataset
from unisurg.train.logs import read_jsonl
from unisurg.train.optim import StepHyperparams, layer_decay_groups, set_hyperparams

torch.set_num_threads(1)
BB = "random:tiny@0?embed_dim=32&depth=2&num_heads=2"
TOL = 1e-5


# -- pieces -----------------------------------------------------------------------------------


def test_soft_cross_entropy_matches_torch_label_smoothing_and_class_weights():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(6, 5, generator=g), torch.tensor([0, 1, 4, 2, 2, 3])
    for s in (0.0, 0.1, 0.3):
        ref = F.cross_entropy(logits, y, label_smoothing=s)
        assert float(soft_cross_entropy(logits, smooth_one_hot(y, 5, s))) == pytest.approx(float(ref), abs=1e-6)
    w = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.7])
    ref = F.cross_entropy(logits, y, weight=w)
    assert float(soft_cross_entropy(logits, smooth_one_hot(y, 5, 0.0), w)) == pytest.approx(float(ref), abs=1e-6)


def test_mixup_and_cutmix_follow_their_definitions():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 2, 10, 12, generator=g)
    d = MixDraw(0.3)
    assert torch.allclose(mix_inputs(x, d), 0.3 * x + 0.7 * x.flip(0))
    # cutmix: the box comes from the reversed batch in every frame; lam is the uncovered share
    for seed in range(20):
        d = draw_mix(np.random.default_rng(seed), 10, 12, mixup=0.0, cutmix=1.0, prob=1.0, switch_prob=0.5)
        assert d.box is not None
        y0, y1, x0, x1 = d.box
        out = mix_inputs(x, d)
        inside = torch.zeros(10, 12, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.equal(out[..., inside], x.flip(0)[..., inside])
        assert torch.equal(out[..., ~inside], x[..., ~inside])
        assert d.lam == pytest.approx(1 - inside.float().mean().item())
    soft = smooth_one_hot(torch.tensor([0, 1, 2, 1]), 3, 0.1)
    assert torch.allclose(soft.sum(-1), torch.ones(4))
    assert soft[0, 0] == pytest.approx(1 - 0.1 + 0.1 / 3)
    mixed = mix_targets(soft, MixDraw(0.25))
    assert torch.allclose(mixed, 0.25 * soft + 0.75 * soft.flip(0))
    assert draw_mix(np.random.default_rng(0), 8, 8, mixup=0.8, cutmix=1.0, prob=0.0, switch_prob=0.5).lam == 1.0


def test_layer_decay_groups_scale_each_layer_and_skip_decay_on_biases_and_norms():

    bb = load_backbone("random:tiny@0?embed_dim=32&depth=3&num_heads=2", trainable=True)
    assert all(p.requires_grad for p in bb.model.parameters()) and bb.model.training
    model = FinetuneModel(bb.model, LinearHead(32, 4))
    path, blocks = find_blocks(bb.model)
    layer_of = layer_index_fn(path, len(blocks))
    groups = layer_decay_groups(model, layer_of, len(blocks) + 1, 0.5)
    by_param = {id(p): g for g in groups for p in g["params"]}
    n = 0
    for name, p in model.named_parameters():
        g = by_param[id(p)]
        if name.startswith("head."):
            want = 1.0
        elif name.startswith(f"backbone.{path}."):
            i = int(name.split(".")[2])
            want = 0.5 ** (len(blocks) - i)  # block i is layer i + 1 of L + 1 = 4
        elif "patch_embed" in name:
            want = 0.5 ** (len(blocks) + 1)
        else:  # final norm
            want = 1.0
        assert g["lr_scale"] == pytest.approx(want), name
        assert g["no_decay"] == (name.endswith("bias") or p.ndim == 1), name
        n += 1
    assert n == sum(len(g["params"]) for g in groups)
    opt = torch.optim.AdamW(groups, lr=1.0)
    set_hyperparams(opt, StepHyperparams(lr=2e-3, weight_decay=0.05, momentum=0.0))
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(2e-3 * g["lr_scale"])
        assert g["weight_decay"] == (0.0 if g["no_decay"] else 0.05)


def test_drop_path_ramp_on_our_blocks_and_none_on_a_model_without_it():

    bb = load_backbone("random:tiny@0?embed_dim=32&depth=3&num_heads=2", trainable=True)
    _, blocks = find_blocks(bb.model)
    assert set_drop_path(blocks, 0.2) == 3
    rates = [blk.drop_path.p if isinstance(blk.drop_path, DropPath) else 0.0 for blk in blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])
    plain = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert set_drop_path(plain, 0.2) == 0


def test_views_centre_crop_and_shifted_grids():
    frames = np.random.default_rng(0).integers(0, 255, (3, 40, 60, 3), dtype=np.uint8)
    (one,) = spatial_crops(frames, 32, 1)
    assert np.array_equal(one, center_crop(frames, 32))
    left, mid, right = spatial_crops(frames, 32, 3)
    assert np.array_equal(left, frames[:, 4:36, 0:32]) and np.array_equal(right, frames[:, 4:36, 28:60])
    idx = spread_indices(0, 40, 4)  # stride 10
    views = [shifted_indices(idx, v, 2, 40) for v in range(2)]
    assert views[0].tolist() == (idx - 2).tolist() or views[0].tolist() == (idx - 3).tolist()
    assert sorted(np.concatenate(views).tolist()) == sorted(set(np.concatenate(views).tolist()))  # no frame twice
    assert shifted_indices(idx, 0, 1, 40) is idx


# -- runs -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:

    root = tmp_path_factory.mktemp("ft-synth")
    generate_dataset(root, n_videos=6, seconds=16, height=48, width=64, fps=4, seed=0, progress=False)
    return root


def _args(synth: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["--backbone", BB, "--dataset", "synthetic", "--root", str(synth), "--config", "tiny", f"run.out={out}",
            f"cache_dir={cache}", "train.batch_size=8", *extra]


def test_single_process_run_reports_like_the_benchmark_and_exports_a_model(synth, tmp_path):
    out, cache = tmp_path / "ft", tmp_path / "cache"
    assert cli("finetune", *_args(synth, out, cache, "train.epochs=3", "train.use_ema=true")) == 0
    res = json.loads((out / "results.json").read_text())
    (run,) = res["runs"].values()
    assert run["protocol"] == "fine-tuned" and run["backbone"]["label"].endswith("(fine-tuned)")
    assert set(run["honest"]["metrics"]) >= {"accuracy", "f1", "jaccard"}
    ci = run["honest"]["metrics"]["f1"]
    assert ci["ci_low"] <= ci["value"] <= ci["ci_high"]
    # the best checkpoint is the validation argmax over the epochs
    vals = [h["accuracy"] for h in run["history"]["val"]]
    assert len(vals) == 3 and run["folds"][0]["best"]["epoch"] == int(np.argmax(vals)) + 1
    assert "(fine-tuned)" in (out / "table.md").read_text()
    assert list((out / "figures" / "synthetic").glob("ribbon_*.png"))
    meta = json.loads((out / "best" / "model.json").read_text())
    assert meta["format"] == "unisurg-finetuned" and meta["task"] == "phase" and meta["class_names"] == run["class_names"]
    assert meta["clip"]["frames"] == 4 and len(meta["norm"]["mean"]) == 3
    # the whole encoder moved (not only the head): compare the exported encoder with the random init

    init = load_backbone(BB).model.state_dict()
    tuned = load_file(str(out / "best" / "weights.safetensors"))
    moved = [k for k in init if (tuned[f"backbone.{k}"] - init[k]).abs().max() > 1e-6]
    assert any("blocks.0." in k for k in moved) and any("patch_embed" in k for k in moved)
    enc = load_backbone(f"unisurg:{out / 'best' / 'backbone'}").model.state_dict()
    assert all(torch.equal(enc[k], tuned[f"backbone.{k}"]) for k in enc)

    # the exported model runs on a video: per-second labels, as `unisurg predict --probe`
    video = next((synth / "videos").iterdir())
    pred_out = tmp_path / "pred"
    assert cli("predict", str(video), "--model", str(out / "best"), "--out", str(pred_out),
               "--cache-dir", str(cache), "--quiet") == 0
    pj = json.loads(next(pred_out.glob("*_phases.json")).read_text())
    assert pj["class_names"] == run["class_names"] and len(pj["labels"]) == len(pj["seconds"]) >= 10
    assert np.allclose(np.asarray(pj["probabilities"]).sum(-1), 1.0, atol=1e-4)


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    return torchrun("-m", "unisurg.evaluation.finetune_command", *args)


def _max_diff(a: Path, b: Path, name: str = "model.safetensors") -> float:
    wa, wb = load_file(str(a / name)), load_file(str(b / name))
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.mark.slow
def test_two_process_ddp_and_fsdp_match_one_process(synth, tmp_path):
    """Global batch 8 = 2 x 4: the same clips, augmentation keyed by (seed, epoch, sample); no mixing
    and no stochastic depth (both draw per process); float32 all-reduce order differs (~1e-7)."""
    det = ["train.mixup=0", "train.cutmix=0", "model.drop_path=0", "train.epochs=1", "test.spatial=1",
           "test.temporal=1"]
    cache = tmp_path / "cache"
    assert cli("finetune", *_args(synth, tmp_path / "one", cache, *det)) == 0
    _torchrun(_args(synth, tmp_path / "ddp", cache, *det))
    _torchrun(_args(synth, tmp_path / "fsdp", cache, *det, "run.strategy=fsdp"))
    last = json.loads((tmp_path / "one" / "checkpoints" / "latest.json").read_text())["dir"]
    a = [r["loss"] for r in read_jsonl(tmp_path / "one" / "log.jsonl") if "loss" in r]
    for name in ("ddp", "fsdp"):
        state = torch.load(tmp_path / name / "checkpoints" / last / "train_state.pt", weights_only=True)
        assert state["world"] == 2 and state["config"]["run"]["strategy"] == name
        assert _max_diff(tmp_path / "one" / "checkpoints" / last, tmp_path / name / "checkpoints" / last) <= TOL
        b = [r["loss"] for r in read_jsonl(tmp_path / name / "log.jsonl") if "loss" in r]
        assert b == pytest.approx(a, abs=1e-5)
        ra = json.loads((tmp_path / "one" / "results.json").read_text())
        rb = json.loads((tmp_path / name / "results.json").read_text())
        (x,), (y,) = ra["runs"].values(), rb["runs"].values()
        assert y["honest"]["metrics"]["accuracy"]["value"] == pytest.approx(x["honest"]["metrics"]["accuracy"]["value"])


def _latest_step(out: Path) -> int:
    try:
        return json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_sigkill_then_resume_follows_the_same_trajectory(synth, tmp_path):
    """Mixup / cutmix, stochastic depth, augmentation and an EMA all on: the restored RNGs, position and
    EMA must reproduce the uninterrupted run step for step."""
    cache = tmp_path / "cache"
    extra = ["train.epochs=3", "run.checkpoint_every=4", "train.use_ema=true", "model.drop_path=0.2",
             "test.spatial=1", "test.temporal=1"]
    assert cli("finetune", *_args(synth, tmp_path / "ref", cache, *extra)) == 0
    steps = _latest_step(tmp_path / "ref")

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "unisurg.evaluation.finetune_command", *_args(synth, out, cache, *extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while proc.poll() is None and _latest_step(out) < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-way: rc={proc.returncode} {err[-2000:]!r}"
    killed_at = _latest_step(out)
    assert 4 <= killed_at < steps

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed at {killed_at}" in done.stdout
    a = {r["step"]: r for r in read_jsonl(tmp_path / "ref" / "log.jsonl") if "loss" in r}
    b = {r["step"]: r for r in read_jsonl(out / "log.jsonl") if "loss" in r}
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    for s in a:
        assert b[s]["loss"] == pytest.approx(a[s]["loss"], abs=1e-6), s
        assert b[s]["lr"] == pytest.approx(a[s]["lr"], abs=1e-12), s
    last = f"step_{steps:08d}"
    assert _max_diff(tmp_path / "ref" / "checkpoints" / last, out / "checkpoints" / last) <= 1e-6
    assert _max_diff(tmp_path / "ref" / "checkpoints" / last, out / "checkpoints" / last, "ema.safetensors") <= 1e-6
    assert _max_diff(tmp_path / "ref" / "best", out / "best", "weights.safetensors") <= 1e-6


def test_resume_refuses_other_settings_and_unsupported_tasks(synth, tmp_path):
    out, cache = tmp_path / "ft", tmp_path / "cache"
    assert cli("finetune", *_args(synth, out, cache, "train.epochs=1", "test.spatial=1", "test.temporal=1")) == 0
    assert cli("finetune", *_args(synth, out, cache, "train.epochs=1")) == 2  # a run is there: --resume needed
    assert cli("finetune", *_args(synth, out, cache, "train.epochs=1", "optim.lr=0.5"), "--resume") == 2
    assert math.isfinite(json.loads((out / "results.json").read_text())["runs"].popitem()[1]["history"]["steps"])


@pytest.mark.parametrize("kind", sorted(__import__("registry_examples").BACKBONE_EXAMPLES))
def test_every_backbone_kind_trains_whole_with_a_head(kind, tmp_path):
    """Every registry kind: trainable, layer groups cover every parameter, one AdamW step moves the first block
    and the head, and activation checkpointing changes neither outputs nor state-dict names."""

    bb = load_backbone(BACKBONE_EXAMPLES[kind](tmp_path), trainable=True)
    assert bb.model.training and all(p.requires_grad for p in bb.model.parameters())
    found = find_blocks(bb.model)
    path, blocks = found if found is not None else (None, None)
    torch.manual_seed(0)
    model = FinetuneModel(bb.model, LinearHead(bb.embed_dim, 3, init_scale=1.0)).eval()  # eval: no dropout
    groups = layer_decay_groups(model, layer_index_fn(path, len(blocks or [])), len(blocks or []) + 1, 0.75)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    x = torch.randn(1, 3, bb.num_frames, bb.img_size, bb.img_size, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ref = model(x)
    ref.square().mean().backward()
    opt = torch.optim.AdamW(groups, lr=1e-2)
    opt.step()
    after = model.state_dict()
    assert not torch.equal(before["head.fc.weight"], after["head.fc.weight"])
    if blocks is not None:
        moved = [k for k in before if k.startswith(f"backbone.{path}.0.") and not torch.equal(before[k], after[k])]
        assert moved, f"{kind}: block 0 did not train"
    opt.zero_grad()
    with torch.no_grad():
        out1 = model(x)
    keys = set(clean_keys(model.state_dict()))
    if enable_activation_checkpointing(bb.model, blocks):
        model.train(False)
        out2 = model(x)
        out2.sum().backward()  # recomputation in the backward works
        assert torch.allclose(out1, out2.detach(), atol=1e-6)
        assert set(clean_keys(model.state_dict())) == keys


def _ft(dataset: str, root: Path, tmp_path: Path, *extra: str, scheme: str | None = None) -> dict:

    res = finetune("random:tiny@0?embed_dim=32&depth=1&num_heads=2", dataset, root, config="tiny", strict=False,
                   split_scheme=scheme, overrides=[f"run.out={tmp_path / 'ft'}", f"cache_dir={tmp_path / 'cache'}",
                                                   "report.bootstrap_n=50", "train.epochs=1", *extra],
                   log=lambda m: None)
    return res.run


def test_triplet_clip_and_skill_tasks_fine_tune(tmp_path):
    """Multi-label (CholecT50 layout), clip classification with 2 x 2 test views (PolypDiag layout), skill
    regression (JIGSAWS, one LOSO fold); metrics re-derived from the saved per-unit rows."""

    rng = np.random.default_rng(0)
    t50 = tmp_path / "t50"
    for vid in (79, 2, 1, 4, 80, 32, 5, 15):
        _t50(t50, vid, 10, rng)
    run = _ft("cholect50", t50, tmp_path / "a", "train.batch_size=8")
    assert run["task"] == "triplet" and run["protocol"] == "fine-tuned"
    assert sorted(r["video"] for r in run["honest"]["per_unit"]) == ["VID02", "VID79"]
    assert all(0 <= run["honest"]["metrics"][f"ap_{c}"]["value"] <= 1 for c in ("i", "v", "t", "ivt"))

    pd = tmp_path / "pd"
    train = [(f"c{i:02d}", i % 2) for i in range(10)]
    test = [(f"t{i}", i % 2) for i in range(4)]
    for name, lab in train + test:
        write_video(pd / "videos" / f"{name}.mp4", n_frames=10, fps=5, seed=lab * 7 + len(name))
    (pd / "splits").mkdir()
    (pd / "splits" / "train.txt").write_text("".join(f"{n}.mp4,{lab}\n" for n, lab in train))
    (pd / "splits" / "val.txt").write_text("".join(f"{n}.mp4,{lab}\n" for n, lab in test))
    run = _ft("polypdiag", pd, tmp_path / "b", "train.batch_size=4", "test.temporal=2", "test.spatial=2")
    assert run["task"] == "clip" and run["test_views"] == {"temporal": 2, "spatial": 2}
    rows = run["honest"]["per_unit"]
    y, p = np.array([r["label"] for r in rows]), np.array([r["pred"] for r in rows])
    assert len(rows) == 4 and run["honest"]["metrics"]["accuracy"]["value"] == pytest.approx(np.mean(y == p))

    jig = tmp_path / "jig" / "Suturing"
    lines = []
    for s in "BC":
        for k in range(1, 6):
            trial = f"Suturing_{s}{k:03d}"
            osats = rng.integers(1, 6, 6)
            lines.append(f"{trial}\t\t{'N' if s == 'B' else 'E'}\t{osats.sum()}\t\t" + "\t".join(map(str, osats)))
            write_video(jig / "video" / f"{trial}_capture1.avi", n_frames=8, fps=4, seed=k)
    (jig / "meta_file_Suturing.txt").write_text("\n".join(lines) + "\n")
    run = _ft("jigsaws", jig.parent, tmp_path / "c", "train.batch_size=2", "train.val_fraction=0.25", scheme="loso_1")
    units = run["honest"]["per_unit"]
    y, p = np.array([u["grs"] for u in units]), np.array([u["pred"] for u in units])
    assert len(units) == 2 and run["honest"]["metrics"]["mae"]["value"] == pytest.approx(np.mean(np.abs(y - p)))
