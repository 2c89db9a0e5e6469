"""The authors' training augmentation (docs/benchmark.md): RandAugment ops against PIL (the library the reference
timm / V-JEPA 2 code calls frame by frame), one draw per clip, magnitudes by hand, random erasing's ranges and
probability, the normalised erase layer, and ``unisurg bench`` with ``clip.augment=paper`` end to end."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

import unisurg.data.augment as aug
from unisurg.data.pixels import random_resized_crop, to_model_input

torch.set_num_threads(1)
BB = "random:tiny@0?embed_dim=32&depth=1&num_heads=2"
FILL3 = (128, 128, 128)
PIL_RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def _images(H: int = 13, W: int = 17) -> np.ndarray:
    """Frames that exercise the edge cases: full range, narrow range, a flat channel, many saturated values."""
    rng = np.random.default_rng(0)
    full = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    narrow = rng.integers(60, 120, (H, W, 3), dtype=np.uint8)
    flat = narrow.copy()
    flat[..., 2] = 77
    bright = rng.integers(200, 256, (H, W, 3), dtype=np.uint8)
    bright[: H // 2] = 255  # equalize's look-up table overflows 255 here
    yy, xx = np.mgrid[0:H, 0:W]
    smooth = np.stack([128 + 100 * np.sin(xx / 3.0 + yy / 5.0), 128 + 90 * np.cos(yy / 4.0), 40 + 9 * xx], -1)
    return np.stack([full, narrow, flat, bright, smooth.clip(0, 255).astype(np.uint8)])


def _per_frame(frames: np.ndarray, fn) -> np.ndarray:
    return np.stack([np.asarray(fn(Image.fromarray(f))) for f in frames])


def _pil_op(im: Image.Image, name: str, arg, resample) -> Image.Image:
    """Reference: the PIL call the timm op makes, written here from the op's definition."""
    base = name.removesuffix("Increasing")
    W, H = im.size
    if base == "AutoContrast":
        return ImageOps.autocontrast(im)
    if base == "Equalize":
        return ImageOps.equalize(im)
    if base == "Invert":
        return ImageOps.invert(im)
    if base == "Posterize":
        if arg >= 8:
            return im
        if arg <= 0:  # older PIL: mask ~255 -> black; Pillow 13 refuses 0 bits
            return Image.new("RGB", im.size, 0)
        return ImageOps.posterize(im, arg)
    if base == "Solarize":
        return ImageOps.solarize(im, arg)
    if base == "SolarizeAdd":
        lut = [min(255, i + arg) if i < 128 else i for i in range(256)]
        return im.point(lut * 3)
    enh = {"Color": ImageEnhance.Color, "Contrast": ImageEnhance.Contrast, "Brightness": ImageEnhance.Brightness,
           "Sharpness": ImageEnhance.Sharpness}
    if base in enh:
        return enh[base](im).enhance(arg)
    if base == "Rotate":
        return im.rotate(arg, resample=resample, fillcolor=FILL3)
    coeffs = {"ShearX": (1, arg, 0, 0, 1, 0), "ShearY": (1, 0, 0, arg, 1, 0),
              "TranslateXRel": (1, 0, arg * W, 0, 1, 0), "TranslateYRel": (1, 0, 0, 0, 1, arg * H)}[base]
    return im.transform(im.size, Image.AFFINE, coeffs, resample=resample, fillcolor=FILL3)


# -- each op against PIL ------------------------------------------------------------------------------------


def test_colour_ops_equal_pil_exactly():
    imgs = _images()
    fr = torch.from_numpy(imgs)
    cases = [("autocontrast", aug.auto_contrast(fr), ImageOps.autocontrast),
             ("equalize", aug.equalize(fr), ImageOps.equalize),
             ("invert", aug.invert(fr), ImageOps.invert)]
    for b in (1, 2, 3, 4, 8):
        cases.append((f"posterize {b}", aug.posterize(fr, b), lambda im, b=b: ImageOps.posterize(im, b)))
    for t in (0, 77, 128, 179, 256):
        cases.append((f"solarize {t}", aug.solarize(fr, t), lambda im, t=t: ImageOps.solarize(im, t)))
    for f in (0.1, 0.37, 1.0, 1.63, 1.9):
        for name, ours, enh in (("color", aug.color, ImageEnhance.Color),
                                ("contrast", aug.contrast, ImageEnhance.Contrast),
                                ("brightness", aug.brightness, ImageEnhance.Brightness),
                                ("sharpness", aug.sharpness, ImageEnhance.Sharpness)):
            cases.append((f"{name} {f}", ours(fr, f), lambda im, enh=enh, f=f: enh(im).enhance(f)))
    for name, ours, ref_fn in cases:
        assert ours.dtype == torch.uint8 and ours.shape == fr.shape, name
        np.testing.assert_array_equal(ours.numpy(), _per_frame(imgs, ref_fn), err_msg=name)
    # SolarizeAdd against a naive loop; posterize to 0 bits is black (timm on older PIL)
    add = aug.solarize_add(fr, 77).numpy()
    want = imgs.astype(np.int64)
    want = np.where(want < 128, np.minimum(255, want + 77), want)
    np.testing.assert_array_equal(add, want)
    assert not aug.posterize(fr, 0).numpy().any()


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic"])
def test_geometric_ops_match_pil(interpolation):
    imgs = _images(H=14, W=19)
    fr = torch.from_numpy(imgs)
    rs = PIL_RESAMPLE[interpolation]
    for name, arg in (("Rotate", -17.3), ("Rotate", 21.0), ("ShearX", 0.23), ("ShearY", -0.21),
                      ("TranslateXRel", 0.315), ("TranslateYRel", -0.3)):
        ours = aug.apply_op(fr, name, arg, interpolation).numpy().astype(int)
        ref = _per_frame(imgs, lambda im: _pil_op(im, name, arg, rs)).astype(int)
        diff = np.abs(ours - ref)
        if interpolation == "nearest":
            assert diff.max() == 0, name
        else:  # PIL truncates a double sum, we a float32 one: at most 1 grey level, rarely
            assert diff.max() <= 1 and (diff > 0).mean() < 0.02, (name, diff.max(), (diff > 0).mean())


def test_nearest_geometry_by_hand():
    """Integer translation and a 90-degree rotation of a tiny image, written out with numpy indexing."""
    img = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(1, 5, 6, 3)
    fr = torch.from_numpy(img)
    out = aug.translate_x(fr, 2, "nearest").numpy()[0]
    want = np.full_like(img[0], 128)
    want[:, :4] = img[0, :, 2:]  # content moves left by 2, the right 2 columns are fill
    np.testing.assert_array_equal(out, want)
    out = aug.translate_y(fr, -1, "bicubic").numpy()[0]  # integer shift: bicubic taps fall on pixel centres
    want = np.full_like(img[0], 128)
    want[1:] = img[0, :-1]
    np.testing.assert_array_equal(out, want)
    sq = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(1, 4, 4, 3)
    out = aug.rotate(torch.from_numpy(sq), 90.0, "nearest").numpy()[0]
    np.testing.assert_array_equal(out, np.rot90(sq[0], k=1, axes=(0, 1)))  # counter-clockwise
    # shear x by 1: row y takes input column x + y (0.5-offset pixel centres), fill past the right edge
    out = aug.shear_x(fr, 1.0, "nearest").numpy()[0]
    for y in range(5):
        for x in range(6):
            xi = math.floor(x + 0.5 + (y + 0.5))
            np.testing.assert_array_equal(out[y, x], img[0, y, xi] if xi < 6 else FILL3)


# -- RandAugment: arguments, sampling, one draw per clip -------------------------------------------------------


def test_op_arguments_by_hand():
    rng = np.random.default_rng(0)
    signed = {"Rotate": 21.0, "ShearX": 0.21, "ShearY": 0.21, "TranslateXRel": 0.315, "TranslateYRel": 0.315}
    for name, v in signed.items():
        draws = [aug.op_argument(name, 7.0, rng) for _ in range(400)]
        assert {round(d, 12) for d in draws} == {v, -v}, name
        assert 0.4 < np.mean(np.array(draws) > 0) < 0.6, name  # the random sign is fair
    inc = [aug.op_argument("ColorIncreasing", 7.0, rng) for _ in range(400)]
    assert {round(d, 12) for d in inc} == {1.63, 0.37}
    assert aug.op_argument("Color", 7.0, rng) == pytest.approx(1.36)
    assert aug.op_argument("Sharpness", 0.0, rng) == pytest.approx(0.1)
    assert aug.op_argument("Brightness", 10.0, rng) == pytest.approx(1.9)
    assert aug.op_argument("Posterize", 7.0, rng) == 2  # int(2.8)
    assert aug.op_argument("PosterizeIncreasing", 7.0, rng) == 2  # 4 - int(2.8)
    assert aug.op_argument("PosterizeIncreasing", 10.0, rng) == 0
    assert aug.op_argument("Solarize", 7.0, rng) == 179  # int(179.2)
    assert aug.op_argument("SolarizeIncreasing", 7.0, rng) == 77  # 256 - 179
    assert aug.op_argument("SolarizeIncreasing", 0.0, rng) == 256  # nothing inverted
    assert aug.op_argument("SolarizeAdd", 7.0, rng) == 77
    assert aug.op_argument("Rotate", 10.0, rng) in (30.0, -30.0) and aug.op_argument("Rotate", 0.0, rng) == 0.0
    assert aug.op_argument("Equalize", 7.0, rng) is None
    with pytest.raises(ValueError, match="unknown op 'Cutout'"):
        aug.op_argument("Cutout", 7.0, rng)


def test_randaugment_sampling_statistics():
    ra = aug.RandAugment(n=4, m=7, mstd=0.5)
    assert len(ra.ops) == 15 and "PosterizeIncreasing" in ra.ops and "TranslateXRel" in ra.ops
    assert aug.RandAugment(increasing=False).ops[4:7] == ("Posterize", "Solarize", "SolarizeAdd")
    rng = np.random.default_rng(1)
    N = 6000
    draws = [ra.sample(rng) for _ in range(N)]
    kept = np.array([len(d) for d in draws])
    # kept ops ~ Binomial(4, 0.5): mean 2, variance 1; 5 standard errors
    assert abs(kept.mean() - 2.0) < 5 * math.sqrt(1.0 / N) and abs(kept.var() - 1.0) < 0.1
    names = [n for d in draws for n, _ in d]
    counts = np.array([names.count(o) for o in ra.ops])
    expected = len(names) / 15
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 36.1  # chi-square, 14 degrees of freedom, p = 0.001: uniform choice
    # magnitudes: |Rotate| = 3 * level, level ~ N(7, 0.5) clipped to [0, 10]
    levels = np.array([abs(a) / 3.0 for d in draws for n, a in d if n == "Rotate"])
    assert abs(levels.mean() - 7.0) < 0.05 and abs(levels.std() - 0.5) < 0.05 and levels.max() <= 10
    fixed = aug.RandAugment(n=4, m=7, mstd=0.0)
    assert {abs(a) for _ in range(300) for n, a in fixed.sample(rng) if n == "Rotate"} == {21.0}
    assert aug.RandAugment(n=0).sample(rng) == [] and aug.RandAugment(prob=0.0).sample(rng) == []
    with pytest.raises(ValueError, match="0 <= m <= 10"):
        aug.RandAugment(m=12)


def test_randaugment_one_draw_per_clip_equals_pil_per_frame():
    """Each frame of an augmented clip equals the reference (the same PIL ops, same arguments, frame by frame);
    identical input frames stay identical; the same seed gives the same clip."""
    T, H, W = 4, 12, 15
    rng0 = np.random.default_rng(3)
    base = rng0.integers(0, 256, (H, W, 3), dtype=np.uint8)
    clip = np.stack([np.clip(base.astype(int) + 9 * t, 0, 255).astype(np.uint8) for t in range(T)])
    ra = aug.RandAugment(n=4, m=7, mstd=0.5, interpolation="nearest")
    seen = set()
    for seed in range(40):
        ops = ra.sample(np.random.default_rng(seed))
        seen.update(n for n, _ in ops)
        ours = ra.apply(torch.from_numpy(clip), ops).numpy()
        for t in range(T):
            im = Image.fromarray(clip[t])
            for name, arg in ops:
                im = _pil_op(im, name, arg, Image.NEAREST)
            np.testing.assert_array_equal(ours[t], np.asarray(im), err_msg=f"seed {seed} frame {t} ops {ops}")
        same = ra(np.repeat(base[None], 3, axis=0), np.random.default_rng(seed))
        assert isinstance(same, np.ndarray) and (same == same[:1]).all()
        a, b = ra(clip, np.random.default_rng(seed)), ra(clip, np.random.default_rng(seed))
        np.testing.assert_array_equal(a, b)
    assert len(seen) >= 13  # the 40 draws exercised nearly every op
    bicubic = aug.RandAugment()
    outs = [bicubic(clip, np.random.default_rng(s)) for s in range(5)]
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])
    with pytest.raises(ValueError, match=r"uint8 frames \[T, H, W, 3\]"):
        bicubic.apply(torch.zeros(2, 4, 4, 3), [])


# -- random erasing --------------------------------------------------------------------------------------------


def test_erase_box_ranges():
    rng = np.random.default_rng(0)
    H, W = 64, 96
    boxes = [aug.erase_box(H, W, rng) for _ in range(20000)]
    assert all(b is not None for b in boxes)
    b = np.array(boxes, dtype=np.float64)
    y, x, h, w = b.T
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= H).all() and (x + w <= W).all()
    assert (h < H).all() and (w < W).all()
    # h and w are rounded from sqrt(A r) and sqrt(A / r): area and aspect up to that rounding
    lo_a, hi_a = 0.02 * H * W, H * W / 3
    assert ((np.sqrt(lo_a) - 0.5) ** 2 * 0.99 <= h * w).all()
    assert (h * w <= (np.sqrt(hi_a * 3.34) + 0.5) * (np.sqrt(hi_a / 3.34) + 0.5) * 1.01).all()
    r = h / w
    assert (r >= 0.3 * 0.8).all() and (r <= 3.34 / 0.8).all()
    # the area fraction of boxes that fit easily (r near 1) follows U(0.02, 1/3): mean 0.177
    near = (r > 0.8) & (r < 1.25)
    frac = (h * w / (H * W))[near]
    assert abs(frac.mean() - (0.02 + 1 / 3) / 2) < 0.01
    # by hand: area 0.5 * 64 = 32, square -> h = w = round(sqrt(32)) = 6
    sq = aug.erase_box(8, 8, rng, area=(0.5, 0.5), aspect=(1.0, 1.0))
    assert sq[2:] == (6, 6)
    assert aug.erase_box(4, 4, rng, area=(0.99, 0.99), aspect=(1.0, 1.0)) is None  # 4 x 4 never fits (need h < H)


def test_erase_layer_probability_cube_and_noise():
    rng = np.random.default_rng(0)
    T, H, W = 3, 16, 20
    frames = rng.integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    n, hits, noise = 4000, 0, []
    for _ in range(n):
        out = aug.erase_layer(frames, rng, prob=0.25)
        assert out.dtype == np.float16 and out.shape == (T, H, W, 4)
        m = out[..., 3] > 0
        if m.any():
            hits += 1
            assert (m == m[:1]).all()  # one rectangle for every frame
            ys, xs = np.nonzero(m[0])
            assert m[0].sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # a filled rectangle
            vals = out[..., :3][m].astype(np.float32)
            noise.append(vals)
            assert not np.array_equal(out[0, ..., :3][m[0]], out[1, ..., :3][m[1]])  # each frame its own noise
        np.testing.assert_array_equal(out[..., :3][~m], frames[~m])  # the rest is the untouched pixels
    sigma = math.sqrt(0.25 * 0.75 / n)
    assert abs(hits / n - 0.25) < 4 * sigma  # probability 0.25 (4 standard errors)
    z = np.concatenate(noise)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01  # N(0, 1) in the normalised space
    assert not (aug.erase_layer(frames, rng, prob=0.0)[..., 3]).any()
    assert all(aug.erase_layer(frames, rng, prob=1.0)[..., 3].any() for _ in range(20))


def test_to_model_input_normalises_pixels_and_passes_erased_noise():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 3, 6, 7, 3), dtype=np.uint8)  # [B, T, H, W, 3]
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    want = (frames.astype(np.float64) - np.array(mean) * 255) / (np.array(std) * 255)  # [B, T, H, W, 3]
    plain = to_model_input(torch.from_numpy(frames), mean, std).numpy()
    np.testing.assert_allclose(plain, want.transpose(0, 4, 1, 2, 3), atol=1e-5)
    layer = np.stack([aug.erase_layer(f, rng, prob=1.0) for f in frames])
    got = to_model_input(torch.from_numpy(layer), mean, std).numpy().transpose(0, 2, 3, 4, 1)
    m = layer[..., 3] > 0
    assert m.any() and (~m).any()
    np.testing.assert_allclose(got[~m], want[~m], atol=1e-5)
    np.testing.assert_array_equal(got[m], layer[..., :3][m].astype(np.float32))


# -- the pipeline and its wiring -------------------------------------------------------------------------------


def test_paper_augment_order_and_determinism():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 36, 64, 3), dtype=np.uint8)
    ra = aug.RandAugment()
    out = aug.paper_augment(frames, 32, (0.08, 1.0), (0.75, 4 / 3), ra, 0.25, np.random.default_rng(7))
    assert out.dtype == np.float16 and out.shape == (3, 32, 32, 4)
    again = aug.paper_augment(frames, 32, (0.08, 1.0), (0.75, 4 / 3), ra, 0.25, np.random.default_rng(7))
    np.testing.assert_array_equal(out, again)
    # the order: RandAugment on the stored frames, then the crop, then the erase layer (one rng, in that order)
    r = np.random.default_rng(7)
    manual = aug.erase_layer(random_resized_crop(ra(frames, r), 32, (0.08, 1.0), (0.75, 4 / 3), r), r, 0.25)
    np.testing.assert_array_equal(out, manual)
    # with no op and no erasing it is the plain random-resized crop of the same draw
    bare = aug.paper_augment(frames, 32, (0.2, 1.0), (0.75, 4 / 3), aug.RandAugment(n=0), 0.0,
                             np.random.default_rng(5))
    crop = random_resized_crop(frames, 32, (0.2, 1.0), (0.75, 4 / 3), np.random.default_rng(5))
    np.testing.assert_array_equal(bare[..., :3], crop)
    assert not bare[..., 3].any()


def test_online_clips_paper_mode():
    from types import SimpleNamespace

    from unisurg.evaluation.bench_config import load_bench_config
    from unisurg.backbones.features import OnlineClips

    frames = np.random.default_rng(0).integers(0, 256, (4, 36, 48, 3), dtype=np.uint8)

    class Pixels:  # stands in for ClipPixels: the stored frames of every sample
        def one(self, ref, augment=None):
            return augment(frames) if augment else frames[:, 2:34, 8:40]

    cfg = load_bench_config("tiny", ["clip.augment=paper", "features.online=true"])
    split = SimpleNamespace(refs=[None] * 5)
    ds = OnlineClips(Pixels(), split, cfg, seed=3)
    a = ds[2]
    assert a.dtype == torch.float16 and tuple(a.shape) == (4, 32, 32, 4)
    assert torch.equal(a, ds[2])  # (seed, epoch, index) fixes the draw
    assert not torch.equal(a, ds[3])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[2])  # a new epoch, new augmentation
    plain = OnlineClips(Pixels(), split, load_bench_config("tiny"), seed=3)[0]
    assert plain.dtype == torch.uint8 and torch.equal(plain, torch.from_numpy(frames[:, 2:34, 8:40]))


def test_config_validation():
    from unisurg.typed_config import ConfigError
    from unisurg.evaluation.bench_config import load_bench_config

    c = load_bench_config("paper", ["clip.augment=paper", "features.online=true"]).clip
    assert (c.randaug_n, c.randaug_m, c.randaug_mstd, c.randaug_increasing, c.erase_prob) == (4, 7.0, 0.5, True, 0.25)
    assert c.rrc_scale == [0.08, 1.0]
    for bad, msg in ((["clip.augment=paper"], "features.online=true"),
                     (["clip.erase_prob=1.5"], "clip.erase_prob=1.5"),
                     (["clip.randaug_m=11"], r"clip.randaug_m=11.0 must be in \[0, 10\]"),
                     (["clip.randaug_n=-1"], "clip.randaug_n=-1"),
                     (["clip.augment=randaug"], "'randaug' is not one of")):
        with pytest.raises(ConfigError, match=msg):
            load_bench_config("tiny", bad)


# -- end to end ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from unisurg.synth.generate import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, n_videos=6, seconds=20, height=64, width=96, fps=5, seed=0, progress=False)
    return root


def test_bench_cli_with_paper_augmentation(synth, tmp_path, monkeypatch):
    import unisurg.backbones.registry as backbones
    import unisurg.evaluation.runner as runner
    from unisurg.evaluation.command import add_parser

    calls = {"forward": 0, "augment": 0, "erased": 0, "float_batches": 0}
    load = backbones.load_backbone

    def counting_load(spec, **kw):
        bb = load(spec, **kw)
        inner = bb.model

        class Counting(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                calls["forward"] += 1
                return self.inner(x)

        bb.model = Counting()
        return bb

    real = aug.paper_augment

    def spy(frames, *a, **kw):
        out = real(frames, *a, **kw)
        calls["augment"] += 1
        calls["erased"] += int(out[..., 3].any())
        return out

    monkeypatch.setattr(runner, "load_backbone", counting_load)  # where the runner looks it up
    monkeypatch.setattr(aug, "paper_augment", spy)
    p = argparse.ArgumentParser(prog="unisurg")
    add_parser(p.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    a = p.parse_args(["bench", "--backbone", BB, "--dataset", "synthetic", "--root", str(synth), "--out", str(out),
                      "--config", "tiny", f"cache_dir={tmp_path / 'cache'}", "--quiet", "report.bootstrap_n=50",
                      "report.figures=false", "train.epochs=2", "clip.augment=paper", "features.online=true"])
    assert a.func(a) == 0
    run = next(iter(json.loads((out / "results.json").read_text())["runs"].values()))
    n = run["folds"][0]["n_samples"]
    assert n == {"train": 80, "val": 20, "test": 20}  # 4 / 1 / 1 videos of 20 labelled seconds
    # training: 80 clips in batches of 8, 2 epochs = 20 forwards, every clip augmented once per epoch;
    # val and test: extracted once, 20 seconds in feature batches of 8 = 3 forwards each
    assert calls["augment"] == 2 * 80
    assert calls["forward"] == 20 + 3 + 3 == run["timings"]["backbone_forwards"]
    assert 0 < calls["erased"] < calls["augment"]  # p = 0.25 of 160 clips
    assert all(np.isfinite(l) for l in run["probes"][0]["val"].values() if isinstance(l, float))
    assert not list((tmp_path / "cache" / "features").rglob("train/meta.json"))  # the train split is never cached
