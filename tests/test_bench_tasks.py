"""Every benchmark task end to end on tiny fixtures made here, in the datasets' distributed layouts:
multi-label triplets (CholecT50 frame folders), clip classification (PolypDiag), skill regression
(JIGSAWS, all LOSO folds), polyp segmentation (raw Kvasir-SEG), depth (C3VD), and the online
(augmented) training path. Metrics are re-derived independently from what the run saved."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_video
from unisurg.evaluation.runner import run_benchmark

torch.set_num_threads(1)
BB = "random:tiny@0?embed_dim=32&depth=1&num_heads=2"
QUIET = lambda s: None  # noqa: E731


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _run(dataset, root, tmp_path, *extra, scheme=None):
    out = tmp_path / "out"
    res = run_benchmark([BB], dataset, root, split_scheme=scheme, out=out, config="tiny", strict=False,
                        overrides=[f"cache_dir={tmp_path / 'cache'}", "report.bootstrap_n=100", *extra], log=QUIET)
    run = next(iter(res["runs"].values()))
    return out, run


def _check_cis(run):
    for key, v in run["honest"]["metrics"].items():
        if np.isfinite(v["value"]):
            assert v["ci_low"] - 1e-9 <= v["value"] <= v["ci_high"] + 1e-9, key


# -- CholecT50-format triplets --------------------------------------------------------------------------

INSTR, VERB, TARGET = ["grasper", "hook"], ["grasp", "dissect", "null_verb"], ["gallbladder", "liver", "null_target"]
TRIPLETS = ["grasper,grasp,gallbladder", "grasper,dissect,liver", "hook,dissect,gallbladder", "hook,dissect,liver",
            "grasper,null_verb,null_target", "hook,null_verb,null_target"]


def _t50(root: Path, vid: int, n: int, rng) -> None:
    cats = {"instrument": INSTR, "verb": VERB, "target": TARGET, "triplet": TRIPLETS, "phase": ["prep", "dissection"]}
    cats = {k: {str(i): name for i, name in enumerate(v)} for k, v in cats.items()}
    ann = {}
    for f in range(n):
        rows = []
        for t in rng.choice(len(TRIPLETS), size=rng.integers(1, 3), replace=False):
            i, v, tg = TRIPLETS[t].split(",")
            rows.append([int(t), INSTR.index(i), 1, .1, .1, .2, .2, VERB.index(v), TARGET.index(tg), 1, -1, -1, -1, -1, f % 2])
        ann[str(f)] = rows
        _png(root / "videos" / f"VID{vid:02d}" / f"{f:06d}.png", rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / f"VID{vid:02d}.json").write_text(json.dumps(
        {"video": vid, "fps": 1, "num_frames": n, "categories": cats, "annotations": ann}))


def test_triplet_mapping_from_names_by_hand():
    from unisurg.evaluation.tasks import triplet_mapping

    comp = {"i": tuple(INSTR), "v": tuple(VERB), "t": tuple(TARGET),
            "iv": tuple(f"{a},{b}" for a in INSTR for b in VERB), "it": tuple(f"{a},{b}" for a in INSTR for b in TARGET)}
    m = triplet_mapping(TRIPLETS, comp)
    # hook,dissect,liver: i=1, v=1, t=1, iv = 1*3+1 = 4, it = 1*3+1 = 4
    assert m[3].tolist() == [3, 1, 1, 1, 4, 4]
    assert m[4].tolist() == [4, 0, 2, 2, 2, 2]
    assert triplet_mapping(["a", "b"], comp) is None


def test_triplets_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "t50"
    for vid in (79, 2, 1, 4, 80, 32, 5, 15):  # fold 1: test 79 2; val 1 4; train the others
        _t50(root, vid, 10, rng)
    out, run = _run("cholect50", root, tmp_path)
    assert run["task"] == "triplet" and run["folds"][0]["val_source"] == "dataset split scheme"
    assert run["folds"][0]["n_units"] == {"train": 4, "val": 2, "test": 2}
    assert [c["label"] for c in run["columns"]] == ["AP-I", "AP-V", "AP-T", "AP-IV", "AP-IT", "AP-IVT"]
    for c in ("i", "v", "t", "iv", "it", "ivt"):
        assert 0.0 <= run["honest"]["metrics"][f"ap_{c}"]["value"] <= 1.0
    assert sorted(r["video"] for r in run["honest"]["per_unit"]) == ["VID02", "VID79"]
    _check_cis(run)
    assert "cholect50 AP-IVT" in (out / "table.md").read_text()


# -- PolypDiag-format clips -----------------------------------------------------------------------------


def test_clip_classification_end_to_end(tmp_path):
    from sklearn.metrics import f1_score

    root = tmp_path / "pd"
    train = [(f"c{i:02d}", i % 2) for i in range(10)]
    test = [(f"t{i}", i % 2) for i in range(4)]
    for name, lab in train + test:
        write_video(root / "videos" / f"{name}.mp4", n_frames=10, fps=5, seed=lab * 7 + len(name))
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("".join(f"{n}.mp4,{lab}\n" for n, lab in train))
    (root / "splits" / "val.txt").write_text("".join(f"{n}.mp4,{lab}\n" for n, lab in test))
    out, run = _run("polypdiag", root, tmp_path)
    assert run["task"] == "clip" and run["folds"][0]["n_units"] == {"train": 8, "val": 2, "test": 4}
    rows = run["honest"]["per_unit"]
    y, p = np.array([r["label"] for r in rows]), np.array([r["pred"] for r in rows])
    assert run["honest"]["metrics"]["accuracy"]["value"] == pytest.approx(np.mean(y == p))
    assert run["honest"]["metrics"]["macro_f1"]["value"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    _check_cis(run)


# -- JIGSAWS skill regression, all LOSO folds -----------------------------------------------------------


def test_skill_regression_all_loso_folds(tmp_path):
    from scipy.stats import spearmanr

    root = tmp_path / "jig"
    task = root / "Suturing"
    rows, rng = [], np.random.default_rng(1)
    for s in "BC":
        for k in range(1, 6):
            trial = f"Suturing_{s}{k:03d}"
            osats = rng.integers(1, 6, 6)
            rows.append(f"{trial}\t\t{'N' if s == 'B' else 'E'}\t{osats.sum()}\t\t" + "\t".join(map(str, osats)))
            write_video(task / "video" / f"{trial}_capture1.avi", n_frames=8, fps=4, seed=k)
    (task / "meta_file_Suturing.txt").write_text("\n".join(rows) + "\n")
    out, run = _run("jigsaws", root, tmp_path, "train.val_fraction=0.25", scheme="loso")
    assert [f["name"] for f in run["folds"]] == [f"loso_{k}" for k in range(1, 6)]
    assert all(f["n_units"]["test"] == 2 and f["n_units"]["val"] == 2 for f in run["folds"])
    units = run["honest"]["per_unit"]
    assert len(units) == 10
    y, p = np.array([u["grs"] for u in units]), np.array([u["pred"] for u in units])
    assert run["honest"]["metrics"]["mae"]["value"] == pytest.approx(np.mean(np.abs(y - p)))
    assert run["honest"]["metrics"]["spearman"]["value"] == pytest.approx(spearmanr(y, p).statistic)
    assert all((out / run["run_dir"] / f"fold_loso_{k}" / "probe.safetensors").exists() for k in range(1, 6))


# -- dense tasks ---------------------------------------------------------------------------------------


def _disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r


def test_segmentation_end_to_end(tmp_path):
    root = tmp_path / "kvasir"
    rng = np.random.default_rng(0)
    for i in range(10):
        m = _disc(40, 48, rng.integers(12, 28), rng.integers(12, 36), rng.integers(5, 10))
        img = rng.integers(40, 90, (40, 48, 3), dtype=np.uint8)
        img[m] = [200, 80, 80]
        _png(root / "images" / f"img{i}.png", img)
        _png(root / "masks" / f"img{i}.png", (m * 255).astype(np.uint8))
    out, run = _run("polyp", root, tmp_path, "train.epochs=4", scheme="kvasir_raw_v1")
    assert run["task"] == "segmentation" and run["folds"][0]["n_units"] == {"train": 8, "val": 1, "test": 1}
    (unit,) = run["honest"]["per_unit"]
    with np.load(out / run["run_dir"] / "predictions.npz") as z:
        prob = z[f"pred/{unit['image']}"]
    from unisurg.datasets import read_mask

    gt = read_mask(root / "masks" / f"{unit['image']}.png")
    pred = prob > 0.5
    denom = pred.sum() + gt.sum()
    dice = 1.0 if denom == 0 else 2 * (pred & gt).sum() / denom
    assert unit["dice"] == pytest.approx(dice, abs=1e-6)
    assert unit["mae"] == pytest.approx(np.abs(prob - gt).mean(), abs=1e-5)
    assert (out / "figures" / "polyp" / f"seg_{unit['image']}.png").exists()


def _tiff16(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint16)).save(path)


def test_depth_end_to_end(tmp_path):
    root = tmp_path / "c3vd"
    rng = np.random.default_rng(0)
    for seq in ("cecum_t1_a", "cecum_t1_b", "cecum_t3_a", "cecum_t2_a"):
        for k in range(3):
            depth_mm = np.linspace(5, 60, 40)[:, None] * np.ones((1, 48)) + rng.uniform(0, 3)
            _png(root / seq / f"{k:04d}_color.png", (255 - 3 * depth_mm).clip(0, 255).astype(np.uint8)[..., None].repeat(3, 2))
            code = np.round(depth_mm / 100 * 65535)
            code[:2, :2] = 0  # invalid pixels
            _tiff16(root / seq / f"{k:04d}_depth.tiff", code)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, run = _run("c3vd", root, tmp_path)
    assert run["task"] == "depth" and run["folds"][0]["n_units"] == {"train": 6, "val": 3, "test": 3}
    unit = run["honest"]["per_unit"][0]
    from unisurg.datasets import read_depth_mm

    gt = read_depth_mm(root / unit["image"].split("/")[0] / f"{unit['image'].split('/')[1]}_depth.tiff")
    with np.load(out / run["run_dir"] / "predictions.npz") as z:
        pred = z[f"pred/{unit['image']}"].astype(np.float64)
    v = gt > 0
    rmse = np.sqrt(np.mean((np.clip(pred[v], 1e-3, None) - gt[v]) ** 2))
    ratio = np.maximum(pred[v] / gt[v], gt[v] / pred[v])
    assert unit["rmse"] == pytest.approx(rmse, rel=1e-4)
    assert unit["delta"] == pytest.approx(np.mean(ratio < 1.1), abs=1e-6)
    assert "c3vd RMSE" in (out / "table.md").read_text()
    assert any((out / "figures" / "c3vd").glob("depth_*.png"))


# -- the online path: augmentation, backbone inside the training loop -----------------------------------


def test_random_resized_crop_box_and_determinism():
    from unisurg.data.pixels import random_resized_crop, rrc_box

    rng = np.random.default_rng(0)
    for _ in range(200):
        y, x, h, w = rrc_box(36, 64, (0.08, 1.0), (0.75, 4 / 3), rng)
        assert 0 <= y and y + h <= 36 and 0 <= x and x + w <= 64 and h > 0 and w > 0
        assert 0.08 * 36 * 64 * 0.9 <= h * w <= 36 * 64
    frames = np.random.default_rng(1).integers(0, 255, (3, 36, 64, 3), dtype=np.uint8)
    a = random_resized_crop(frames, 32, (0.2, 1.0), (0.75, 4 / 3), np.random.default_rng(5))
    b = random_resized_crop(frames, 32, (0.2, 1.0), (0.75, 4 / 3), np.random.default_rng(5))
    assert a.shape == (3, 32, 32, 3) and np.array_equal(a, b)


def test_online_training_with_augmentation(tmp_path):
    root = tmp_path / "pd"
    names = [(f"c{i:02d}", i % 2) for i in range(6)]
    for name, lab in names + [("t0", 0), ("t1", 1)]:
        write_video(root / "videos" / f"{name}.mp4", n_frames=10, fps=5, seed=lab)
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("".join(f"{n}.mp4,{lab}\n" for n, lab in names))
    (root / "splits" / "val.txt").write_text("t0.mp4,0\nt1.mp4,1\n")
    out, run = _run("polypdiag", root, tmp_path, "features.online=true", "clip.augment=rrc", "train.epochs=2")
    # train: 6 clips minus 2 carved to val, batch 8 -> 1 step per epoch, 2 epochs = 2 forwards in training;
    # val (2 clips) and test (2 clips) extracted once: 1 batch each
    assert run["folds"][0]["n_samples"] == {"train": 4, "val": 2, "test": 2}
    assert run["timings"]["backbone_forwards"] == 2 + 1 + 1
    assert not list((tmp_path / "cache" / "features").rglob("train/meta.json"))  # the train split is never cached
