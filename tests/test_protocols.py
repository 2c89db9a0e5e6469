"""Named protocols (unisurg, surgmotion, surgrec) end to end on the synthetic benchmark at toy scale, the
``--explain`` table, and each protocol item against an independent reference (by hand, torch.optim.AdamW,
naive loops written here)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import BB_A, write_video
from conftest import bench_cli as cli

from unisurg.data.pixels import (
    per_second_indices,
    squash,
    strided_indices,
    surgmotion_positions,
    to_model_input,
)
from unisurg.datasets import get_adapter
from unisurg.evaluation.bench_config import BenchConfig
from unisurg.evaluation.mixing import BatchMixer, smooth_one_hot
from unisurg.evaluation.probe import MultiProbe, ProbeSpec, build_probe
from unisurg.evaluation.probe_optim import BatchedAdamW, cosine_factor
from unisurg.evaluation.protocols import PROTOCOLS, UNISURG, protocol_config
from unisurg.evaluation.runner import prepare, run_benchmark
from unisurg.synth.generate import generate_dataset
from unisurg.typed_config import to_dict

torch.set_num_threads(1)

TOY = ["clip.frames=4", "clip.res=32", "clip.short_side=36", "report.bootstrap_n=50", "train.batch_size=8",
       "train.epochs=2", "report.figures=false"]
TOY_ATTENTIVE = ["probe.depth=2", "probe.heads=2", "train.lrs=[3e-3,3e-4]", "train.wds=[0.01,0.1]"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, n_videos=6, seconds=16, height=64, width=96, fps=5, seed=0, progress=False)
    return root


def _bench(synth, tmp_path, protocol, *extra):
    out = tmp_path / protocol
    rc = cli("bench", "--backbone", BB_A, "--dataset", "synthetic", "--root", str(synth), "--out", str(out),
             "--config", "tiny", "--protocol", protocol, f"cache_dir={tmp_path / 'cache'}", "--quiet", *TOY, *extra)
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    return out, next(iter(res["runs"].values()))


def test_unisurg_protocol_end_to_end(synth, tmp_path):
    out, run = _bench(synth, tmp_path, "unisurg", *TOY_ATTENTIVE)
    assert run["config"]["protocol"] == "unisurg" and run["folds"][0]["n_units"]["val"] == 1
    assert run["honest"]["metrics"]["f1_gt_or_pred"]["value"] <= run["honest"]["metrics"]["f1"]["value"] + 1e-12
    md = (out / "table.md").read_text()
    assert "Protocol unisurg; probe chosen on validation by accuracy" in md
    rec = (out / "protocol_unisurg.md").read_text()
    assert "| head selection |" in rec and "```yaml" in rec and "field_of_view: short_side" in rec


def test_surgmotion_protocol_end_to_end(synth, tmp_path):
    out, run = _bench(synth, tmp_path, "surgmotion", *TOY_ATTENTIVE)
    cfg = run["config"]
    assert cfg["protocol"] == "surgmotion" and cfg["clip"]["field_of_view"] == "squash"
    assert cfg["clip"]["positions"] == "surgmotion" and cfg["clip"]["start"] == "last"
    assert cfg["features"]["online"] and cfg["clip"]["augment"] == "paper" and cfg["train"]["decay_all"]
    assert cfg["probe"]["eps"] == 1e-5 and not cfg["probe"]["cross_proj"] and cfg["train"]["amp_dtype"] == "float16"
    # wd-major grid
    assert [(p["lr"], p["wd"]) for p in run["probes"]] == [(3e-3, 0.01), (3e-4, 0.01), (3e-3, 0.1), (3e-4, 0.1)]
    # no validation split: no honest choice, the kept probe is the test-best by gt_or_pred macro-F1
    fold = run["folds"][0]
    assert fold["n_units"]["val"] == 0 and fold["n_units"]["train"] == 4  # the val video is not used and fold["val_source"].startswith("none")
    assert run["honest"]["probe_index"] is None and run["honest"]["metrics"] == {}
    ps = run["paper_style"]
    assert ps["selection_metric"] == "f1_gt_or_pred" and ps["selected_on"] == "test" and fold["selected"] == ps["probe_index"]
    m = ps["metrics"]["f1_gt_or_pred"]
    assert {"se", "sample_value"} <= set(m) and run["bootstrap"] == "surgmotion"
    md = (out / "table.md").read_text()
    assert "Protocol surgmotion; probe chosen ON TEST by f1_gt_or_pred" in md
    assert "mean of bootstrap means (SurgMotion)" in md
    rec = (out / "protocol_surgmotion.md").read_text()
    assert "| clip.frames | 64 | 4 |" in rec  # the toy scale is recorded as an override of the protocol
    probe = json.loads((out / run["run_dir"] / "probe.json").read_text())
    assert probe["selection"]["on"] == "test" and probe["probe"]["cross_proj"] is False


def test_surgrec_protocol_end_to_end(synth, tmp_path):
    out, run = _bench(synth, tmp_path, "surgrec")
    cfg = run["config"]
    assert cfg["probe"]["kind"] == "linear" and cfg["features"]["mode"] == "pooled"
    assert cfg["train"]["mixup_alpha"] == 0.8 and cfg["train"]["cutmix_alpha"] == 1.0
    assert cfg["train"]["label_smoothing"] == 0.1 and cfg["clip"]["test_temporal_views"] == 5
    # one head, every epoch a candidate (SurgRec keeps the best checkpoint)
    assert [(p["lr"], p["wd"], p["epoch"]) for p in run["probes"]] == [(pytest.approx(5e-4 * 8 / 256), 0.05, 1),
                                                                          (pytest.approx(5e-4 * 8 / 256), 0.05, 2)]
    assert run["paper_style"]["epoch"] in (1, 2)
    assert run["paper_style"]["selection_metric"] == "accuracy" and run["honest"]["metrics"]["accuracy"]["value"] >= 0
    assert math.isfinite(run["probes"][0]["train_loss_last_epoch"][0])
    assert "Protocol surgrec" in (out / "table.md").read_text()


def test_explain_lists_every_item_with_its_source(capsys):

    for name, proto in PROTOCOLS.items():
        assert cli("bench", "--protocol", name, "--explain") == 0
        text = capsys.readouterr().out
        assert all(f"| {it.item} |" in text for it in proto.items)
        assert ("authors' code" in text) == (name != "unisurg")
    assert cli("bench", "--protocol", "nope", "--explain") == 2
    assert cli("bench", "--protocol", "unisurg") == 2  # no backbone / dataset / root
    assert "--backbone" in capsys.readouterr().err


# -- the items, one by one ------------------------------------------------------------------------------


def test_surgmotion_frame_positions_and_start_readings_by_hand():
    assert surgmotion_positions(64).tolist() == list(range(62)) + [63, 63]
    assert surgmotion_positions(4).tolist() == [0, 1, 3, 3]  # linspace(0, 3, 3) = 0, 1.5, 3
    # second 2 of a 4-frame online clip: first -> 0,0,1,2; last -> 0,1,2,2 (frames 0..t then the last repeated)
    assert per_second_indices(2, 10, 4).tolist() == [0, 0, 1, 2]
    assert per_second_indices(2, 10, 4, start="last").tolist() == [0, 1, 2, 2]
    assert per_second_indices(7, 10, 4, start="last").tolist() == [4, 5, 6, 7]
    assert per_second_indices(7, 10, 4, positions="surgmotion").tolist() == [4, 5, 7, 7]


def test_skip_reading_leaves_the_first_seconds_unscored(synth):

    cfg = protocol_config("unisurg", "tiny", [f"cache_dir={synth / 'c'}", "clip.start=skip"])
    prep = prepare("synthetic", synth, None, cfg, log=lambda s: None)
    test = prep.folds[0].splits["test"]
    assert all(int(r.key.split("@")[1]) >= 3 for r in test.refs)  # T = 4: no clip before second 3
    assert len(test) == 16 - 3
    assert get_adapter("synthetic") is not None


def test_squash_field_of_view_keeps_more_of_a_wide_frame():
    H, W = 90, 160  # 16:9; column value = column index
    frame = np.broadcast_to((np.arange(W) * 255 // (W - 1)).astype(np.uint8)[None, :, None], (H, W, 3)).copy()
    sq = squash(frame[None], 292)[0]
    crop = sq[18:274, 18:274]  # centre 256 of 292
    seen = (crop[0, -1, 0] - crop[0, 0, 0]) / 255
    assert seen == pytest.approx(256 / 292, abs=0.02)  # 87.7% of the width
    ours = 256 / (292 * 16 / 9)  # short side 292 keeps the aspect: 49% of the width
    assert ours == pytest.approx(0.493, abs=0.001)


def test_strided_sampling_and_views_by_hand():
    assert strided_indices(0, 100, 4, 4)[0].tolist() == [42, 46, 50, 54]  # centred window of 16
    views = strided_indices(0, 100, 4, 4, views=5)
    assert [v[0] for v in views] == [0, 21, 42, 63, 84] and views[-1].tolist() == [84, 88, 92, 96]
    assert strided_indices(10, 16, 4, 4)[0].tolist() == [10, 14, 15, 15]  # short clip: last frame repeated


def test_decay_all_matches_torch_adamw_on_every_parameter():
    """One probe's AdamW step with weight decay on all parameters equals torch.optim.AdamW with one group."""

    spec = ProbeSpec("attentive", 8, 3, 8, depth=2, heads=2, eps=1e-5, cross_proj=False, init="vjepa2")
    ours = MultiProbe(spec, 1, seed=0)
    ref = MultiProbe(spec, 1, seed=0)
    opt = BatchedAdamW(ours, [1e-2], [0.4], decay_all=True)
    topt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.4)
    x = torch.randn(2, 5, 8)
    for _ in range(3):
        for m, o in ((ours, opt), (ref, topt)):
            o.zero_grad()
            m(x).sum().backward()
            o.step()
    for (n, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=n)
    bias = dict(ours.named_parameters())["cross.norm1.bias"]
    assert float(bias.detach().abs().sum()) > 0


def test_scheduler_stepped_before_the_update():
    """SurgMotion's WarmupCosineLRSchedule.step() runs before each update: update k uses step k + 1."""

    total = 10
    theirs = [0.5 * (1 + math.cos(math.pi * (k + 1) / total)) for k in range(total)]
    assert [cosine_factor(k + 1, total) for k in range(total)] == pytest.approx(theirs)
    assert cosine_factor(0, total) == 1.0 and theirs[-1] == pytest.approx(0.0)


def test_mixup_and_cutmix_against_a_naive_reference():

    y = torch.tensor([0, 2, 1])
    soft = smooth_one_hot(y, 3, 0.1)
    assert soft[0].tolist() == pytest.approx([1 - 0.1 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    clips = torch.randint(0, 255, (3, 2, 8, 10, 3), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    for seed in range(6):
        mixer = BatchMixer(0.8, 1.0, seed=seed)
        lam, box = BatchMixer(0.8, 1.0, seed=seed).draw(8, 10)  # the same draws, replayed
        out, t = mixer(clips, soft, mean, std)
        x = to_model_input(clips, mean, std).double()
        want = x.clone()
        if box is None:
            want = lam * x + (1 - lam) * x.flip(0)
        else:
            y0, y1, x0, x1 = box
            want[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
            assert lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / 80)
        assert out.shape == (3, 2, 8, 10, 4) and bool((out[..., 3] == 1).all())
        got = to_model_input(out, mean, std).double()  # the pass-through form reproduces the mixed input
        torch.testing.assert_close(got, want, atol=5e-3, rtol=2e-3)
        torch.testing.assert_close(t, lam * soft + (1 - lam) * soft.flip(0))


def test_linear_probe_matches_a_naive_float64_head():

    probe = build_probe(ProbeSpec("linear", 6, 3, 6), 2, seed=0)
    w = probe.head.weight.detach().double().numpy()  # [P, D, K]
    assert np.abs(w).max() < 0.02 * 0.001 * 2.01  # trunc_normal(0.02) x init_scale 0.001
    with torch.no_grad():
        probe.head.weight.normal_()
        probe.head.bias.normal_()
    x = np.random.default_rng(0).standard_normal((4, 5, 6))
    m = x.mean(1)
    ln = (m - m.mean(-1, keepdims=True)) / np.sqrt(m.var(-1, keepdims=True) + 1e-6)
    want = np.einsum("bd,pdk->pbk", ln, probe.head.weight.detach().double().numpy()) + \
        probe.head.bias.detach().double().numpy()[:, None]
    with torch.no_grad():
        got = probe(torch.from_numpy(x).float()).double().numpy()
        pooled = probe(torch.from_numpy(m).float()).double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(pooled, want, atol=1e-4)
    one = probe.select(1)
    with torch.no_grad():
        np.testing.assert_allclose(one(torch.from_numpy(x).float()).numpy()[0], got[1], atol=1e-6)


def test_test_views_average_the_softmax_of_each_clip(tmp_path):
    """SurgRec's 5 x 3 test views on a clip dataset: 15 refs per test clip, probabilities averaged per clip."""

    root = tmp_path / "pd"
    train = [(f"c{i:02d}", i % 2) for i in range(6)]
    test = [(f"t{i}", i % 2) for i in range(2)]
    for name, lab in train + test:
        write_video(root / "videos" / f"{name}.mp4", n_frames=20, fps=10, size=(40, 72), seed=lab * 7 + len(name))
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("".join(f"{n}.mp4,{lab}\n" for n, lab in train))
    (root / "splits" / "val.txt").write_text("".join(f"{n}.mp4,{lab}\n" for n, lab in test))
    res = run_benchmark([BB_A], "polypdiag", root, out=tmp_path / "o", config="tiny", strict=False,
                        overrides=[f"cache_dir={tmp_path / 'c'}", "report.bootstrap_n=20", "report.figures=false",
                                   "clip.sampling=stride", "clip.sampling_rate=2", "clip.test_temporal_views=5",
                                   "clip.test_spatial_views=3", "clip.clip_fps=10"], log=lambda s: None)
    run = next(iter(res["runs"].values()))
    assert run["folds"][0]["n_samples"]["test"] == 2 * 15 and run["folds"][0]["n_units"]["test"] == 2
    assert len(run["honest"]["per_unit"]) == 2


def test_grad_scaler_drives_the_batched_optimiser():
    """The fp16 path's GradScaler unscales the stacked gradients and steps BatchedAdamW exactly as without it
    (checked on CPU with a CPU scaler; on CUDA train.amp_dtype=float16 builds the same with 'cuda')."""

    spec = ProbeSpec("attentive", 8, 3, 8, depth=1, heads=2)
    a, b = MultiProbe(spec, 2, seed=0), MultiProbe(spec, 2, seed=0)
    oa, ob = BatchedAdamW(a, [1e-2, 1e-3], [0.1, 0.0]), BatchedAdamW(b, [1e-2, 1e-3], [0.1, 0.0])
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    x = torch.randn(3, 4, 8)
    for _ in range(2):
        oa.zero_grad()
        a(x).sum().backward()
        oa.step()
        ob.zero_grad()
        scaler.scale(b(x).sum()).backward()
        scaler.step(ob)
        scaler.update()
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7, msg=n)
    oa.zero_grad()
    ob.zero_grad()
    before = [p.detach().clone() for p in b.parameters()]
    scaler.scale(b(x * float("inf")).sum()).backward()  # an overflow: the step is skipped, the scale halves
    scale = scaler.get_scale()
    scaler.step(ob)
    scaler.update()
    assert scaler.get_scale() == scale / 2 and all(torch.equal(p, q) for p, q in zip(b.parameters(), before))


def test_the_default_protocol_is_the_defaults_and_keeps_a_config_files_values():

    defaults = to_dict(BenchConfig())
    for it in UNISURG.items:
        for key, want in it.settings.items():
            got = defaults
            for part in key.split("."):
                got = got[part]
            assert got == want, key
    cfg = protocol_config("unisurg", {"clip": {"augment": "paper"}, "features": {"online": True}})
    assert cfg.clip.augment == "paper" and cfg.protocol == "unisurg"
    sm = protocol_config("surgmotion", "tiny", ["clip.frames=4"])  # a protocol's items win over the preset,
    assert sm.clip.field_of_view == "squash" and sm.clip.frames == 4  # the user's overrides over both


def test_epoch_snapshots_are_the_probes_after_each_epoch(synth, tmp_path):
    """The last epoch's candidates are exactly the probes a run without snapshots ends with."""

    base = [f"cache_dir={tmp_path / 'c'}", "report.bootstrap_n=20", "report.figures=false", "train.epochs=2"]
    plain = run_benchmark([BB_A], "synthetic", synth, out=tmp_path / "a", config="tiny", overrides=base,
                          log=lambda s: None)
    snap = run_benchmark([BB_A], "synthetic", synth, out=tmp_path / "b", config="tiny",
                         overrides=base + ["train.epoch_snapshots=true"], log=lambda s: None)
    p, s = next(iter(plain["runs"].values()))["probes"], next(iter(snap["runs"].values()))["probes"]
    assert len(s) == 2 * len(p) and [c["epoch"] for c in s] == [1] * len(p) + [2] * len(p)
    for a, b in zip(p, s[len(p):]):
        assert (a["lr"], a["wd"]) == (b["lr"], b["wd"]) and a["test"] == pytest.approx(b["test"], abs=1e-6)
    assert any(a["test"] != b["test"] for a, b in zip(s[:len(p)], s[len(p):]))  # epoch 1 differs
