"""Pretraining: config, schedules, parameter groups, step, masks, checkpoints, init, end to end (CPU, tiny)."""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from unisurg.typed_config import ConfigError
from unisurg.models.strict_load import CheckpointError
from unisurg.train.pretrain_config import load_pretrain_config
from unisurg.train.pretrain_config import pretrain_presets
from conftest import synth_store

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return synth_store(tmp_path_factory.mktemp("train_store"))


def tiny(store: Path, out: Path, *extra: str):
    return load_pretrain_config("tiny", [f"data.stores=[{store}]", f"run.out={out}", "run.progress=false", *extra])


# -- config ------------------------------------------------------------------------------------

def test_every_preset_loads_and_validates():
    names = set(pretrain_presets())
    assert {"tiny", "bench-s", "vitl-stage1", "vitl-stage2", "surgrec-jepa", "surgrec-mae"} <= names
    for name in names:
        load_pretrain_config(name)
    s1, s2 = load_pretrain_config("vitl-stage1"), load_pretrain_config("vitl-stage2")
    assert (s1.data.frames, s1.schedule.global_batch_size, s1.schedule.epochs, s1.optim.lr) == (16, 256, 200, 5e-4)
    assert (s2.data.frames, s2.schedule.global_batch_size, s2.schedule.epochs) == (64, 64, 80)
    assert s2.init.checkpoint and s2.optim.start_lr == 1e-4 and s2.optim.lr == 5.25e-4
    assert s1.ema.momentum == 0.99925 and s1.optim.weight_decay == 0.04 and s1.model.preset == "large"
    b = load_pretrain_config("bench-s")
    e, p = b.model.encoder, b.model.predictor
    assert (e.embed_dim, e.depth, e.num_heads, b.data.crop, e.patch_size, b.data.frames, p.predictor_dim, p.depth,
            p.num_heads, b.schedule.global_batch_size) == (192, 4, 3, 64, 16, 8, 96, 2, 2, 4)
    assert p.embed_dim == e.embed_dim == 192 and p.num_mask_tokens == 1
    assert load_pretrain_config("surgrec-jepa").model.predictor.num_mask_tokens == 2  # one per mask family
    mae = load_pretrain_config("surgrec-mae").model
    assert mae.decoder.patch_dim == 2 * 16 * 16 * 3 and mae.encoder.pos_embed == "sincos" and mae.decoder.depth == 4
    assert load_pretrain_config("surgrec-jepa").loss.unisurg().affinity is False
    assert load_pretrain_config("surgrec-mae").loss.objective == "mae"


def test_config_errors_name_the_key_and_suggest():
    with pytest.raises(ConfigError, match=r"optim\.lrr.*Did you mean 'lr'"):
        load_pretrain_config("tiny", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"data\.crop=30 is not divisible by model\.encoder\.patch_size=8"):
        load_pretrain_config("tiny", ["data.crop=30"])
    with pytest.raises(ConfigError, match=r"Did you mean 'large'"):
        load_pretrain_config("tiny", ["model.preset=larg"])
    with pytest.raises(ConfigError, match=r"model\.encoder\.embed_dimm.*Did you mean 'embed_dim'"):
        load_pretrain_config("tiny", ["model.encoder.embed_dimm=3"])
    with pytest.raises(ConfigError, match=r"the size preset is model\.preset=large"):
        load_pretrain_config("tiny", ["model.encoder=large"])
    with pytest.raises(ConfigError, match=r"model\.predictor\.pos_embed='sincos' differs from model\.encoder"):
        load_pretrain_config("tiny", ["model.predictor.pos_embed=sincos"])
    with pytest.raises(ConfigError, match=r"mask\.ratio"):
        load_pretrain_config("tiny", ["mask.ratio=[0.9]"])
    with pytest.raises(ConfigError, match="neither a preset"):
        load_pretrain_config("no-such-preset")


def test_flat_model_keys_of_0_1_are_deprecated_aliases():
    with pytest.warns(DeprecationWarning, match=r"model\.embed_dim is deprecated; write model\.encoder\.embed_dim"):
        cfg = load_pretrain_config("tiny", ["model.embed_dim=32", "model.drop_path=0.1", "model.predictor_depth=3"])
    assert cfg.model.encoder.embed_dim == cfg.model.predictor.embed_dim == 32
    assert cfg.model.encoder.drop_path_rate == cfg.model.predictor.drop_path_rate == 0.1
    assert cfg.model.predictor.depth == 3


def test_overrides_and_yaml_accept_exponent_floats(tmp_path):
    cfg = load_pretrain_config("tiny", ["optim.lr=1e-3", "optim.final_lr=2e-10", "data.stores=/a/store"])
    assert cfg.optim.lr == 1e-3 and cfg.optim.final_lr == 2e-10 and cfg.data.stores == ["/a/store"]
    f = tmp_path / "mine.yaml"
    f.write_text("base: tiny\noptim:\n  lr: 3e-4\nschedule:\n  epochs: 5\n")
    cfg = load_pretrain_config(f)
    assert cfg.optim.lr == 3e-4 and cfg.schedule.epochs == 5 and cfg.model.encoder.embed_dim == 64


# -- schedules and optimiser -------------------------------------------------------------------

def test_lr_schedule_hand_values():
    from unisurg.train.optim import lr_at, wd_at

    # warmup 10 steps 1e-4 -> 5e-4, cosine to 1e-6 at step 110
    assert lr_at(0, 110, 10, 1e-4, 5e-4, 1e-6) == pytest.approx(1e-4)
    assert lr_at(5, 110, 10, 1e-4, 5e-4, 1e-6) == pytest.approx(3e-4)
    assert lr_at(10, 110, 10, 1e-4, 5e-4, 1e-6) == pytest.approx(5e-4)
    assert lr_at(60, 110, 10, 1e-4, 5e-4, 1e-6) == pytest.approx((5e-4 + 1e-6) / 2)
    assert lr_at(35, 110, 10, 1e-4, 5e-4, 1e-6) == pytest.approx(1e-6 + (5e-4 - 1e-6) * (1 + math.sqrt(0.5)) / 2)
    assert lr_at(110, 110, 10, 1e-4, 5e-4, 1e-6) == pytest.approx(1e-6)
    assert lr_at(60, 110, 10, 1e-4, 5e-4, 1e-6, "linear") == pytest.approx((5e-4 + 1e-6) / 2)
    assert lr_at(60, 110, 10, 1e-4, 5e-4, 1e-6, "constant") == 5e-4
    assert wd_at(50, 100, 0.04, None) == 0.04
    assert wd_at(50, 100, 0.04, 0.4) == pytest.approx(0.22)
    assert wd_at(100, 100, 0.04, 0.4) == pytest.approx(0.4)


def test_no_weight_decay_on_biases_and_norms():
    """Behaviour, not bookkeeping: with zero gradients AdamW only applies decoupled decay (p *= 1 - lr wd)."""
    from unisurg.models import build_encoder, build_predictor
    from unisurg.train.pretrain_config import OptimConfig
    from unisurg.train.optim import StepHyperparams, build_optimizer, set_hyperparams
    from unisurg.train.steps import JepaStudent

    enc = build_encoder("tiny", embed_dim=32, depth=1, num_heads=2, patch_size=8)
    student = JepaStudent(enc, build_predictor(enc, predictor_dim=16, depth=1, num_heads=2))
    with torch.no_grad():
        for p in student.parameters():
            p.fill_(1.0)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    opt = build_optimizer(student, OptimConfig(), torch.device("cpu"))
    set_hyperparams(opt, StepHyperparams(lr=0.1, weight_decay=0.5, momentum=0.99))
    for p in student.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    norm_like = {n for n, m in student.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    for name, p in student.named_parameters():
        owner = name.rsplit(".", 1)[0]
        exempt = name.endswith("bias") or owner in norm_like
        expected = before[name] if exempt else before[name] * (1 - 0.1 * 0.5)
        torch.testing.assert_close(p.detach(), expected, msg=name)
    assert any(not (n.endswith("bias") or n.rsplit(".", 1)[0] in norm_like) for n, _ in student.named_parameters())


# -- masks: independent of how the global batch is split ----------------------------------------

def test_sample_masks_do_not_depend_on_world_size():
    from unisurg.train.masks import TubeMaskGenerator
    from unisurg.train.mask_collator import SampleMaskCollator

    grid = (4, 4, 4)
    gens = [TubeMaskGenerator(grid, (0.75, 0.95))]
    clips = [torch.zeros(3, 8, 32, 32, dtype=torch.uint8) for _ in range(4)]

    def token_masks(mb):
        out = torch.zeros(mb.batch_size, 64, dtype=torch.bool)
        for b in range(mb.batch_size):
            out[b, mb.target_idx[b][mb.target_valid[b]]] = True
        return out

    one = SampleMaskCollator(gens, grid, seed=3, tubelet_size=2, patch_size=8, per_rank_batch=4)
    one.set_epoch(2, start_batch=1)  # batch 1 of epoch 2: draw positions 4..7
    single = token_masks(one(clips)[1][0])
    for rank in range(2):
        c = SampleMaskCollator(gens, grid, seed=3, tubelet_size=2, patch_size=8, per_rank_batch=2, rank=rank, world=2)
        c.set_epoch(2, start_batch=1)  # rank r, batch 1: positions r + 2 * (2 + j)
        split = token_masks(c(clips[:2])[1][0])
        for j in range(2):
            q = rank + 2 * (2 + j)
            assert torch.equal(split[j], single[q - 4])
    # tube masks: every tubelet of a masked tube, ratio in range; samples differ
    per_tube = single.view(4, 4, 16)
    assert torch.equal(per_tube.all(dim=1), per_tube.any(dim=1))
    ratios = per_tube[:, 0].float().mean(dim=1)
    assert bool(((ratios >= 0.75) & (ratios <= 0.95)).all())
    assert len({tuple(r.tolist()) for r in single}) > 1


# -- the step ----------------------------------------------------------------------------------

def _small_task(objective="vjepa", pos="rope"):
    from unisurg.models import build_encoder, build_predictor, make_target
    from unisurg.models.mae_decoder import MAEDecoder, MAEDecoderConfig
    from unisurg.objectives.unisurg_loss import UniSurgLossConfig
    from unisurg.train.steps import JepaStudent, JepaTask, MaeStudent, MaeTask, forward_losses

    torch.manual_seed(0)
    enc = build_encoder("tiny", embed_dim=32, depth=1, num_heads=2, patch_size=8, pos_embed=pos)
    if objective == "mae":
        dec = MAEDecoder(MAEDecoderConfig.for_encoder(enc, decoder_dim=16, depth=1, num_heads=2))
        return MaeTask(MaeStudent(enc, dec), (2, 8, 8))
    student = JepaStudent(enc, build_predictor(enc, predictor_dim=16, depth=1, num_heads=2))
    return JepaTask(student, make_target(enc), UniSurgLossConfig.plain_vjepa(), (2, 8, 8), online_encoder=enc)


def _batch(seed=0, b=2):
    from unisurg.train.masks import TubeMaskGenerator

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (b, 3, 4, 16, 16), dtype=torch.uint8, generator=g)
    masks = [TubeMaskGenerator((2, 2, 2), (0.5, 0.75))(b, g)]
    return x, masks


def test_jepa_loss_is_l1_to_layernormed_ema_target_naive():
    from unisurg.data.clips import normalize_batch
    from unisurg.train.steps import forward_losses

    task = _small_task()
    x, masks = _batch()
    xn = normalize_batch(x)
    m = masks[0]
    with torch.no_grad():
        metrics = forward_losses(task, xn, masks)
        pred = task.student(xn, masks)[0].double()
        h = task.target(xn).double()
    total, count = 0.0, 0
    for b in range(h.shape[0]):
        for j in range(m.target_idx.shape[1]):
            if not m.target_valid[b, j]:
                continue
            v = h[b, m.target_idx[b, j]]
            z = (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + 1e-5)  # LayerNorm without affine
            total += float((pred[b, j] - z).abs().mean())
            count += 1
    assert float(metrics["loss"]) == pytest.approx(total / count, rel=1e-5)


def test_train_step_updates_student_then_ema_target():
    from unisurg.train.pretrain_config import OptimConfig
    from unisurg.train.optim import StepHyperparams, build_optimizer
    from unisurg.train.steps import StepConfig, train_step

    task = _small_task()
    opt = build_optimizer(task.student, OptimConfig(), torch.device("cpu"))
    t0 = {n: p.detach().double().clone() for n, p in task.target.named_parameters()}
    s0 = {n: p.detach().clone() for n, p in task.online_encoder.named_parameters()}
    x, masks = _batch()
    vec = train_step(task, opt, x, masks, StepHyperparams(1e-3, 0.04, 0.9), StepConfig(torch.device("cpu"), None, 1.0),
                     want_norm=True)
    assert vec.shape == (len(task.metric_names) + 1,) and bool(torch.isfinite(vec).all())
    changed = False
    for n, p in task.online_encoder.named_parameters():
        changed |= not torch.equal(p, s0[n])
        expected = 0.9 * t0[n] + 0.1 * p.detach().double()  # EMA with the new online weights
        torch.testing.assert_close(task.target.get_parameter(n).double(), expected, rtol=0, atol=1e-6)
    assert changed
    assert all(p.grad is None for p in task.student.parameters())


def test_device_normalisation_equals_the_data_module():
    from unisurg.data.clips import normalize_batch
    from unisurg.train.steps import normalize_on_device

    x = torch.randint(0, 256, (2, 3, 2, 4, 4), dtype=torch.uint8)
    assert torch.equal(normalize_on_device(x), normalize_batch(x))
    channels_last = x.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
    out = normalize_on_device(channels_last)
    assert out.is_contiguous() and torch.equal(out, normalize_batch(x))
    ref = (x.double() / 255 - torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1, 1)) \
        / torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(normalize_on_device(x).double(), ref, rtol=1e-6, atol=1e-5)


def test_grad_clip_bounds_the_update_norm():
    from unisurg.train.optim import grad_norm

    p = torch.nn.Parameter(torch.zeros(10))
    p.grad = torch.arange(10, dtype=torch.float32)
    norm = grad_norm([p], 1.0)
    assert float(norm) == pytest.approx(math.sqrt(sum(i * i for i in range(10))))
    assert float(p.grad.norm()) == pytest.approx(1.0, rel=1e-4)


def test_mae_loss_is_mse_on_patch_normalised_pixels_naive():
    from unisurg.data.clips import normalize_batch
    from unisurg.train.steps import forward_losses

    task = _small_task("mae", pos="sincos")
    x, masks = _batch(1)
    xn = normalize_batch(x)
    m = masks[0]
    with torch.no_grad():
        loss = float(forward_losses(task, xn, masks)["loss"])
        pred = task.student(xn, masks)[0].double()
    xd = xn.double()
    total, count = 0.0, 0
    for b in range(2):
        for j in range(m.target_idx.shape[1]):
            if not m.target_valid[b, j]:
                continue
            n = int(m.target_idx[b, j])
            t, rest = divmod(n, 4)
            hh, ww = divmod(rest, 2)
            cube = xd[b, :, 2 * t:2 * t + 2, 8 * hh:8 * hh + 8, 8 * ww:8 * ww + 8]  # [C, 2, 8, 8]
            vec = cube.permute(1, 2, 3, 0).reshape(-1, 3)  # (tt, ph, pw) x C, channel fastest
            norm = (vec - vec.mean(0)) / (vec.std(0, unbiased=True) + 1e-6)
            total += float(((pred[b, j] - norm.reshape(-1)) ** 2).mean())
            count += 1
    assert loss == pytest.approx(total / count, rel=1e-5)


# -- end to end, checkpoints, init, resume -------------------------------------------------------

def test_end_to_end_synth_ingest_pretrain_through_the_cli(tmp_path):
    """`unisurg synth` + `unisurg ingest` (CLI entry point) then `pretrain` through command.run(args)."""
    from unisurg.cli import main as cli_main
    from unisurg.models import load_encoder
    from unisurg.train import command
    from unisurg.train.logs import read_jsonl

    assert cli_main(["synth", "--out", str(tmp_path / "synth"), "--videos", "2", "--seconds", "8", "--height", "64",
                     "--width", "80", "--fps", "8", "--quiet"]) == 0
    assert cli_main(["ingest", str(tmp_path / "synth" / "videos"), "--out", str(tmp_path / "store"), "--fps", "4",
                     "--short-side", "64", "--workers", "1", "--quiet"]) == 0
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    tb = "true"
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        tb = "false"
    args = parser.parse_args(["pretrain", "--config", "tiny", f"data.stores=[{tmp_path / 'store'}]",
                              "run.progress=false", f"run.tensorboard={tb}", "--out", str(tmp_path / "run")])
    assert args.func(args) == 0
    run = tmp_path / "run"
    recs = read_jsonl(run / "log.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "l_pred", "l_st", "l_var", "l1", "pred_std", "target_std", "grad_norm", "lr", "wd",
                "ema_momentum", "clips_per_s", "data_wait_s", "step_time_s"):
        assert all(isinstance(r[key], float) and math.isfinite(r[key]) for r in recs), key
    for r in recs:  # the total is the weighted sum of its logged terms (paper's lambdas)
        assert r["loss"] == pytest.approx(r["l_pred"] + 0.1 * r["l_st"] + 0.3 * r["l_var"], rel=1e-5)
    assert recs[0]["lr"] == pytest.approx(1e-4) and recs[2]["lr"] == pytest.approx(5e-4)
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000004", "step_00000006"]
    if tb == "true":
        assert list((run / "tb").glob("events.out.tfevents.*"))
    enc = load_encoder(run / "final")
    assert enc.config.embed_dim == 64 and enc(torch.zeros(1, 3, 8, 32, 32)).shape == (1, 64, 64)
    # rerunning without --resume into a used folder is refused
    with pytest.raises(ConfigError, match="--resume"):
        args.func(args)


def test_stage2_initialises_from_stage1_at_longer_clips(store, tmp_path):
    from unisurg.models import load_encoder, load_predictor
    from unisurg.train.distributed import DistInfo
    from unisurg.train.trainer import build_models, train
    from unisurg.train.steps import JepaStudent

    train(tiny(store, tmp_path / "s1", "schedule.max_steps=2"))
    cfg2 = tiny(store, tmp_path / "s2", "data.frames=16", f"init.checkpoint={tmp_path / 's1'}")
    models = build_models(cfg2, DistInfo(), load_init=True)
    s1_enc = load_encoder(tmp_path / "s1" / "final", which="encoder")
    s1_tgt = load_encoder(tmp_path / "s1" / "final", which="target_encoder")
    s1_pred = load_predictor(tmp_path / "s1" / "final")
    student = models.student
    assert isinstance(student, JepaStudent)
    for a, b in ((student.encoder, s1_enc), (models.target, s1_tgt), (student.predictor, s1_pred)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    res = train(cfg2)  # runs at T = 16 from the T = 8 weights
    assert res.steps == 6 and torch.isfinite(torch.tensor([r["loss"] for r in res.history])).all()

    bad = tiny(store, tmp_path / "s3", "model.encoder.embed_dim=32", f"init.checkpoint={tmp_path / 's1' / 'final'}")
    with pytest.raises(CheckpointError, match=r"model\.encoder\.embed_dim(.|\n)*blocks\.0\.attn\.qkv\.weight \(checkpoint \(192, 64\)"):
        build_models(bad, DistInfo(), load_init=True)
    sincos = tiny(store, tmp_path / "s4", "model.encoder.pos_embed=sincos", f"init.checkpoint={tmp_path / 's1' / 'final'}")
    with pytest.raises(CheckpointError, match=r"model\.encoder\.pos_embed"):
        build_models(sincos, DistInfo(), load_init=True)


def test_init_from_an_official_vjepa2_file(store, tmp_path):
    from unisurg.models import VideoViT, build_predictor, export_vjepa2
    from unisurg.train.distributed import DistInfo
    from unisurg.train.trainer import build_models

    cfg = tiny(store, tmp_path / "run")
    torch.manual_seed(5)
    enc = VideoViT(cfg.model.encoder)
    pred = build_predictor(enc, predictor_dim=64, depth=2, num_heads=2)
    export_vjepa2(enc, tmp_path / "official.pt", predictor=pred, num_frames=8, img_size=32)
    cfg = tiny(store, tmp_path / "run", f"init.checkpoint={tmp_path / 'official.pt'}")
    models = build_models(cfg, DistInfo(), load_init=True)
    for k, v in enc.state_dict().items():
        assert torch.equal(models.student.encoder.state_dict()[k], v)
        assert torch.equal(models.target.state_dict()[k], v)
    for k, v in pred.state_dict().items():
        assert torch.equal(models.student.predictor.state_dict()[k], v)
    no_pred = tmp_path / "enc_only.pt"
    export_vjepa2(enc, no_pred, num_frames=8, img_size=32)
    with pytest.raises(CheckpointError, match="init.load_predictor=false"):
        build_models(tiny(store, tmp_path / "r2", f"init.checkpoint={no_pred}"), DistInfo(), load_init=True)
    build_models(tiny(store, tmp_path / "r2", f"init.checkpoint={no_pred}", "init.load_predictor=false"),
                 DistInfo(), load_init=True)


def test_resume_refuses_a_changed_config_and_mae_resumes_exactly(store, tmp_path):
    from unisurg.train.trainer import train

    args = ("loss.objective=mae", "mask.ratio=[0.85,0.95]")
    full = train(tiny(store, tmp_path / "a", *args))
    train(tiny(store, tmp_path / "b", *args, "schedule.max_steps=3"))
    with pytest.raises(ConfigError, match=r"optim\.lr: 0\.0005 -> 0\.001"):
        train(tiny(store, tmp_path / "b", *args, "optim.lr=1e-3"), resume=True)
    resumed = train(tiny(store, tmp_path / "b", *args), resume=True)
    assert resumed.start_step == 3 and resumed.steps == 6
    a = {r["step"]: r["loss"] for r in full.history}
    b = {r["step"]: r["loss"] for r in resumed.history}
    assert sorted(b) == [4, 5, 6]
    for s in b:
        assert b[s] == pytest.approx(a[s], abs=1e-6)
    assert (tmp_path / "b" / "final" / "decoder.safetensors").exists()


def test_checkpoint_write_is_atomic_and_keeps_last_n(store, tmp_path, monkeypatch):
    from unisurg.train import checkpointing as ckpt
    from unisurg.train.trainer import Trainer

    trainer = Trainer(tiny(store, tmp_path / "run", "run.keep_last=2"))
    trainer.fit()
    cdir = tmp_path / "run" / "checkpoints"
    assert [s for s, _ in ckpt.list_checkpoints(cdir)] == [4, 6]
    assert json.loads((cdir / "latest.json").read_text()) == {"step": 6, "dir": "step_00000006"}

    real_save = torch.save

    def dying_save(obj, path, *a, **k):  # the process "dies" half way through the train state
        real_save(obj, path, *a, **k)
        Path(path).write_bytes(Path(path).read_bytes()[:100])
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.save(7, 2, 1)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert [s for s, _ in ckpt.list_checkpoints(cdir)] == [4, 6]  # no torn step_7
    assert ckpt.latest_checkpoint(cdir).name == "step_00000006"
    assert any(p.name.startswith(".tmp-") for p in cdir.iterdir())
    ckpt.clean_temporaries(cdir)
    assert not any(p.name.startswith(".") for p in cdir.iterdir())
    # killed between moving the old copy of a re-saved step aside and renaming the new one in: restored
    (cdir / "step_00000006").rename(cdir / ".old-step_00000006-999")
    ckpt.clean_temporaries(cdir)
    assert ckpt.latest_checkpoint(cdir).name == "step_00000006"
    student, target, state = ckpt.read_checkpoint(cdir / "step_00000006")
    assert state["step"] == 6 and state["sampler"]["start"] == 12 and state["rng"][0]["torch"].dtype == torch.uint8
    assert target is not None and any(k.startswith("predictor.") for k in student)


def test_tiny_run_learns_the_data_not_a_collapse(store, tmp_path):
    """20 steps on the same 8 clips: the prediction loss falls, the target's channels keep their spread."""
    from unisurg.train.trainer import train

    res = train(tiny(store, tmp_path / "run", "schedule.epochs=1", "schedule.iterations_per_epoch=20",
                     "run.checkpoint_every=0", "run.export=false", "optim.warmup_steps=2"))
    first = np.mean([r["l_pred"] for r in res.history[:3]])
    last = np.mean([r["l_pred"] for r in res.history[-3:]])
    assert last < first
    assert min(r["target_std"] for r in res.history) > 0.1
    assert res.export is None


def test_train_data_rejects_small_stores_and_bad_batches(store, tmp_path):
    from unisurg.train.data import build_data
    from unisurg.train.distributed import DistInfo

    with pytest.raises(ConfigError, match="global_batch_size"):
        build_data(tiny(store, tmp_path, "schedule.global_batch_size=64", "schedule.iterations_per_epoch=null"),
                   DistInfo())
    with pytest.raises(ConfigError, match="not divisible by the 3 processes"):
        build_data(tiny(store, tmp_path), DistInfo(world=3))
    with pytest.raises(ConfigError, match="data.stores"):
        build_data(load_pretrain_config("tiny"), DistInfo())
    with pytest.raises(ConfigError, match="uniform"):
        build_data(tiny(store, tmp_path, "data.sampler=uniform", "schedule.iterations_per_epoch=50"), DistInfo())
    d = build_data(tiny(store, tmp_path, "data.sampler=uniform", "schedule.iterations_per_epoch=null"), DistInfo())
    assert d.iterations_per_epoch == len(d.dataset) // 4 == 2


def test_loader_workers_and_activation_checkpointing_keep_the_trajectory(store, tmp_path):
    from unisurg.train.trainer import train

    common = ("schedule.max_steps=4", "run.export=false", "run.checkpoint_every=0", "model.encoder.drop_path_rate=0.1",
              "model.predictor.drop_path_rate=0.1")
    a = train(tiny(store, tmp_path / "w0", *common))
    b = train(tiny(store, tmp_path / "w2", *common, "data.workers=2"))
    c = train(tiny(store, tmp_path / "ac", *common, "model.encoder.act_checkpoint=true", "model.predictor.act_checkpoint=true"))
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    assert [r["loss"] for r in c.history] == pytest.approx([r["loss"] for r in a.history], abs=1e-6)


def test_trainer_copy_of_config_is_untouched(store, tmp_path):
    cfg = tiny(store, tmp_path / "run", "schedule.max_steps=1", "run.export=false")
    before = copy.deepcopy(cfg)
    from unisurg.train.trainer import train

    train(cfg)
    assert cfg == before
