"""Encoder, predictor, position encodings and EMA, checked against naive float64 references."""

import cmath
import math

import pytest
import torch

from unisurg.models import (
    EncoderConfig,
    gather_tokens,
    MomentumSchedule,
    PredictorConfig,
    VideoPredictor,
    VideoViT,
    build_encoder,
    build_predictor,
    ema_update_,
    encoder_config,
    make_target,
    momentum_at,
)
from unisurg.models.pos_embed import sincos_3d
from unisurg.train.mask_collator import SampleMaskCollator
from unisurg.train.masks import TubeMaskGenerator
from unisurg.models.presets import PRESETS
from unisurg.models.rope import apply_rope, rope_cos_sin

torch.set_num_threads(1)


def small_encoder(pos_embed="rope", **kw):
    torch.manual_seed(0)
    cfg = dict(embed_dim=48, depth=2, num_heads=3, pos_embed=pos_embed)
    cfg.update(kw)
    return VideoViT(EncoderConfig(**cfg)).eval()


# ---------------------------------------------------------------- references written for the tests


def naive_sincos(dim, grid, uniform_power):
    """Channel-by-channel float64 loop: [t part | h part | w part], each [sin ..., cos ...]."""
    if uniform_power:
        parts = [2 * math.ceil(dim / 6)] * 3
    else:
        parts = [dim // 2, dim // 4, dim // 4]
    nt, nh, nw = grid
    rows = []
    for t in range(nt):
        for h in range(nh):
            for w in range(nw):
                row = []
                for p, d in zip((t, h, w), parts):
                    half = d // 2
                    row += [math.sin(p / 10000 ** (k / half)) for k in range(half)]
                    row += [math.cos(p / 10000 ** (k / half)) for k in range(half)]
                rows.append(row[:dim])
    return torch.tensor(rows, dtype=torch.float64)


def naive_rope_vector(vec, pos_thw, head_dim, variant):
    """Rotate one head vector with Python complex numbers, one axis segment at a time."""
    a = 2 * ((head_dim // 3) // 2)
    half = a // 2
    out = list(vec)
    for axis, p in enumerate(pos_thw):
        off = axis * a
        for i in range(half):
            c0, c1 = off + 2 * i, off + 2 * i + 1
            z = complex(vec[c0], vec[c1])
            if variant == "standard":
                th0 = th1 = p * 10000 ** (-i / half)
            else:  # V-JEPA 2 tiles the frequency list: channel l of the segment uses frequency l mod half
                th0 = p * 10000 ** (-((2 * i) % half) / half)
                th1 = p * 10000 ** (-((2 * i + 1) % half) / half)
            out[c0] = (z * cmath.exp(1j * th0)).real
            out[c1] = (z * cmath.exp(1j * th1)).imag
    return out


# ---------------------------------------------------------------- position encodings


@pytest.mark.parametrize("uniform", [False, True])
@pytest.mark.parametrize("dim,grid", [(48, (3, 2, 4)), (40, (2, 3, 3))])
def test_sincos_3d_matches_naive_loop(dim, grid, uniform):
    if not uniform and dim % 8:
        pytest.skip("split needs dim % 8 == 0")
    ours = sincos_3d(dim, grid, uniform_power=uniform, dtype=torch.float64)
    ref = naive_sincos(dim, grid, uniform)
    assert ours.shape == (grid[0] * grid[1] * grid[2], dim)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)


def test_sincos_rejects_bad_width():
    with pytest.raises(ValueError, match="divisible by 8"):
        sincos_3d(44, (1, 2, 2))


@pytest.mark.parametrize("variant", ["vjepa2", "standard"])
@pytest.mark.parametrize("head_dim", [32, 30, 64])
def test_rope_matches_complex_reference(variant, head_dim):
    g = torch.Generator().manual_seed(1)
    grid = (3, 2, 4)
    n = 3 * 2 * 4
    idx = torch.randperm(n, generator=g)[:10]
    x = torch.randn(1, 2, 10, head_dim, generator=g, dtype=torch.float64)
    cos, sin = rope_cos_sin(idx, grid, head_dim, variant)
    ours = apply_rope(x.float(), cos, sin).double()
    for h in range(2):
        for j, token in enumerate(idx.tolist()):
            t, s = divmod(token, 8)
            hh, ww = divmod(s, 4)
            ref = naive_rope_vector(x[0, h, j].tolist(), (t, hh, ww), head_dim, variant)
            torch.testing.assert_close(ours[0, h, j], torch.tensor(ref, dtype=torch.float64), atol=2e-6, rtol=0)


def test_rope_standard_is_a_rotation_vjepa2_is_not():
    x = torch.randn(1, 1, 5, 32)
    idx = torch.arange(5) + 7
    for variant, norm_kept in (("standard", True), ("vjepa2", False)):
        cos, sin = rope_cos_sin(idx, (4, 2, 2), 32, variant)
        y = apply_rope(x, cos, sin)
        same = torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
        assert same == norm_kept


# ---------------------------------------------------------------- encoder


@pytest.mark.parametrize("pos", ["rope", "sincos"])
def test_shapes_any_grid_same_weights(pos):
    enc = small_encoder(pos)
    with torch.no_grad():
        for t, h, w in [(16, 32, 32), (64, 32, 32), (4, 48, 32), (2, 16, 64)]:
            y = enc(torch.randn(1, 3, t, h, w))
            assert y.shape == (1, (t // 2) * (h // 16) * (w // 16), 48)
            assert torch.isfinite(y).all()


def test_bad_inputs_name_the_problem():
    enc = small_encoder()
    with pytest.raises(ValueError, match="T=15"):
        enc(torch.randn(1, 3, 15, 32, 32))
    with pytest.raises(ValueError, match="W=40"):
        enc(torch.randn(1, 3, 4, 32, 40))
    with pytest.raises(ValueError, match="channels"):
        enc(torch.randn(1, 4, 3, 32, 32))


@pytest.mark.parametrize("pos", ["rope", "sincos"])
def test_all_tokens_in_any_order_equals_full_forward(pos):
    """Attention is permutation-equivariant, so positions must travel with the tokens."""
    enc = small_encoder(pos)
    x = torch.randn(2, 3, 4, 32, 48)
    n = 2 * 2 * 3
    perm = torch.stack([torch.randperm(n), torch.randperm(n)])
    with torch.no_grad():
        full = enc(x)
        part = enc(x, context_idx=perm)
    torch.testing.assert_close(part, torch.gather(full, 1, perm[..., None].expand(-1, -1, 48)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("pos", ["rope", "sincos"])
def test_padding_does_not_change_valid_outputs(pos):
    enc = small_encoder(pos)
    x = torch.randn(2, 3, 4, 32, 48)
    idx0 = torch.tensor([0, 3, 5, 9])
    idx1 = torch.tensor([1, 2, 4, 6, 7, 10, 11])
    with torch.no_grad():
        alone = enc(x[:1], context_idx=idx0[None])
        ctx = torch.zeros(2, 7, dtype=torch.long)
        ctx[0, :4], ctx[1] = idx0, idx1
        valid = torch.zeros(2, 7, dtype=torch.bool)
        valid[0, :4], valid[1] = True, True
        batched = enc(x, context_idx=ctx, context_valid=valid)
        alone1 = enc(x[1:], context_idx=idx1[None])
    torch.testing.assert_close(batched[0, :4], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[1], alone1[0], atol=1e-5, rtol=0)
    # without the valid mask the padded copies of token 0 would leak into attention
    with torch.no_grad():
        leaky = enc(x, context_idx=ctx)
    assert not torch.allclose(leaky[0, :4], alone[0], atol=1e-4)


def test_out_layers_and_activation_checkpointing():
    enc = small_encoder()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        last = enc(x)
        layers = enc(x, out_layers=[0, -1])
    assert len(layers) == 2
    torch.testing.assert_close(layers[1], last)
    enc.train()
    y1 = enc(x).square().sum()
    y1.backward()
    g1 = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    enc.act_checkpoint = True
    y2 = enc(x).square().sum()
    y2.backward()
    torch.testing.assert_close(y1, y2)
    for a, p in zip(g1, enc.parameters()):
        torch.testing.assert_close(a, p.grad, atol=1e-5, rtol=1e-4)


def test_bf16_autocast_runs():
    enc = small_encoder()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = enc(torch.randn(1, 3, 4, 32, 32))
    assert torch.isfinite(y.float()).all()


def test_presets_hyperparameters():
    expect = {
        "small": (384, 12, 6, 1536),
        "base": (768, 12, 12, 3072),
        "large": (1024, 24, 16, 4096),
        "huge": (1280, 32, 16, 5120),
        "giant": (1408, 40, 22, 6144),
    }
    for name, (d, depth, heads, hidden) in expect.items():
        c = encoder_config(name)
        assert (c.embed_dim, c.depth, c.num_heads, c.mlp_hidden_dim) == (d, depth, heads, hidden)
        assert (c.tubelet_size, c.patch_size, c.norm_eps) == (2, 16, 1e-6)
    assert set(PRESETS) == {"tiny", "small", "base", "large", "huge", "giant"}
    tiny = build_encoder("tiny")
    n = sum(p.numel() for p in tiny.parameters())
    # conv 3*2*16*16*192+192, 4 blocks of (LN, qkv, proj, LN, fc1, fc2), final LN
    d, h = 192, 768
    per_block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * h + h) + (h * d + d)
    assert n == (3 * 2 * 16 * 16 * d + d) + 4 * per_block + 2 * d
    assert VideoViT(encoder_config("tiny"), embed_dim=96, num_heads=2).config.mlp_hidden_dim == 384
    with pytest.raises(ValueError, match="unknown encoder preset"):
        build_encoder("gigantic")


# ---------------------------------------------------------------- predictor


@pytest.mark.parametrize("pos", ["rope", "sincos"])
def test_predictor_shapes_and_padding(pos):
    enc = small_encoder(pos)
    torch.manual_seed(1)
    pred = build_predictor(enc, predictor_dim=24, depth=2, num_heads=2, num_mask_tokens=2,
                           zero_init_mask_tokens=False).eval()
    grid = (2, 2, 3)
    z_all = torch.randn(2, 12, 48)
    c0, t0 = torch.tensor([0, 4, 7]), torch.tensor([1, 2, 3, 5])
    c1, t1 = torch.tensor([1, 2, 3, 6, 8]), torch.tensor([0, 4, 5, 7, 9, 10, 11])
    with torch.no_grad():
        a0 = pred(z_all[:1, c0], c0[None], t0[None], grid)
        a1 = pred(z_all[1:, c1], c1[None], t1[None], grid)
        assert a0.shape == (1, 4, 48)
        ctx = torch.zeros(2, 5, dtype=torch.long)
        tgt = torch.zeros(2, 7, dtype=torch.long)
        ctx[0, :3], ctx[1] = c0, c1
        tgt[0, :4], tgt[1] = t0, t1
        cv, tv = ctx.new_zeros(2, 5, dtype=torch.bool), tgt.new_zeros(2, 7, dtype=torch.bool)
        cv[0, :3], cv[1], tv[0, :4], tv[1] = True, True, True, True
        z = torch.gather(z_all, 1, ctx[..., None].expand(-1, -1, 48))
        b = pred(z, ctx, tgt, grid, cv, tv)
        other_token = pred(z_all[:1, c0], c0[None], t0[None], grid, mask_index=1)
    assert b.shape == (2, 7, 48)
    torch.testing.assert_close(b[0, :4], a0[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(b[1], a1[0], atol=1e-5, rtol=0)
    assert not torch.allclose(other_token, a0)


def test_predictor_targets_do_not_depend_on_context_order():
    pred = VideoPredictor(PredictorConfig(embed_dim=48, predictor_dim=24, depth=2, num_heads=2)).eval()
    grid = (2, 2, 2)
    z = torch.randn(1, 4, 48)
    c = torch.tensor([[0, 2, 5, 7]])
    t = torch.tensor([[1, 3, 4, 6]])
    p = torch.tensor([3, 1, 0, 2])
    with torch.no_grad():
        a = pred(z, c, t, grid)
        b = pred(z[:, p], c[:, p], t, grid)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- EMA


def test_ema_update_matches_formula():
    online = small_encoder()
    target = make_target(online)
    assert all(not p.requires_grad for p in target.parameters())
    before = [p.detach().double().clone() for p in target.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    m = 0.9
    ema_update_(target, online, m)
    for t0, t, o in zip(before, target.parameters(), online.parameters()):
        torch.testing.assert_close(t.double(), m * t0 + (1 - m) * o.double(), atol=1e-6, rtol=0)
    # a tensor momentum (kept on device by a trainer) gives the same update
    t2 = make_target(target)
    ema_update_(target, online, 0.5)
    ema_update_(t2, online, torch.tensor(0.5))
    for a, b in zip(target.parameters(), t2.parameters()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="parameters"):
        ema_update_(target, small_encoder(depth=1), 0.9)


def test_momentum_schedules():
    assert momentum_at(123, 1000) == 0.99925
    assert momentum_at(500, 1000, "linear", 0.99, 1.0) == pytest.approx(0.995)
    assert momentum_at(500, 1000, "cosine", 0.99, 1.0) == pytest.approx(0.995)
    assert momentum_at(0, 1000, "cosine", 0.99, 1.0) == pytest.approx(0.99)
    assert momentum_at(2000, 1000, "linear", 0.99, 1.0) == pytest.approx(1.0)
    assert MomentumSchedule(100, "linear", 0.9, 1.0)(25) == pytest.approx(0.925)
    with pytest.raises(ValueError, match="kind"):
        momentum_at(0, 10, "step")


def test_jepa_training_step_composes():
    """Collator -> context encoder -> predictor -> loss against the EMA target -> backward -> EMA."""
    enc = small_encoder()
    enc.train()
    target = make_target(enc)
    pred = build_predictor(enc, predictor_dim=24, depth=1, num_heads=2)
    coll = SampleMaskCollator([TubeMaskGenerator((2, 2, 3), ratio=(0.5, 0.7))], (2, 2, 3), seed=0, tubelet_size=2,
                              patch_size=16, per_rank_batch=3)
    x, (mb,) = coll([torch.randn(3, 4, 32, 48) for _ in range(3)])
    with torch.no_grad():
        h = torch.nn.functional.layer_norm(target(x), (48,))
        h = gather_tokens(h, mb.target_idx)
    z = enc(x, **mb.encoder_kwargs())
    p = pred(z, grid=enc.grid(x.shape), **mb.predictor_kwargs())
    w = mb.target_valid[..., None].float()
    loss = ((p - h).abs() * w).sum() / (w.sum() * 48)
    loss.backward()
    assert all(q.grad is not None for q in pred.parameters())
    assert enc.patch_embed.proj.weight.grad.abs().sum() > 0
    before = target.norm.weight.clone()
    with torch.no_grad():
        enc.norm.weight.add_(1.0)
    ema_update_(target, enc, 0.99925)
    torch.testing.assert_close(target.norm.weight, before + 0.00075 * (enc.norm.weight - before))
