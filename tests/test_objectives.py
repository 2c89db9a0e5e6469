"""UniSurg objectives and SurgRec-MAE loss against naive float64 references.

Each reference below is written independently of the package: explicit Python loops over
samples, tubes, tokens and neighbours, numpy float64, straight from the paper's equations
(with the interpretations of docs/objectives.md: per-pixel means in g, L1 as a channel mean, token-pooled
means, unbiased variance).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unisurg.typed_config import ConfigError, load_config
from unisurg.objectives import (UniSurgLossConfig, affinity_distillation_loss, channel_std, dense_motion_map,
                                dense_motion_prediction_loss, gram_affinity_loss, mae_loss, mae_targets,
                                motion_prediction_loss, motion_score, patchify, topk_motion_tubes,
                                topk_motion_weights, unisurg_loss, unpatchify, variance_loss)

torch.set_num_threads(1)

TUBELET = (2, 16, 16)
B, C, T, H, W, D = 2, 3, 4, 48, 64, 8
HP, WP = H // 16, W // 16
S = HP * WP                      # 12 tubes on a 3 x 4 grid: corner, edge and inner patches
TG = T // 2
N = TG * S


def make_clip(seed=0, b=B, t=T, h=H, w=W):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, C, t, h, w, generator=g)


def make_batch(counts=(7, 3), seed=0, d=D, pad_value=None):
    """Tube masks with a different number of masked tubes per sample; padded target tokens.

    Padded entries get random indices (pointing at visible tubes too) and huge latents, so any
    leak of padding into a loss or a statistic shows.
    """
    rng = np.random.default_rng(seed)
    b = len(counts)
    masked = torch.zeros(b, S, dtype=torch.bool)
    rows = []
    for i, cnt in enumerate(counts):
        tubes = rng.choice(S, size=cnt, replace=False)
        masked[i, torch.as_tensor(tubes)] = True
        rows.append(sorted(tp * S + s for tp in range(TG) for s in tubes))
    nt = max(len(r) for r in rows)
    idx = torch.zeros(b, nt, dtype=torch.long)
    valid = torch.zeros(b, nt, dtype=torch.bool)
    for i, r in enumerate(rows):
        idx[i, :len(r)] = torch.as_tensor(r)
        idx[i, len(r):] = torch.as_tensor(rng.integers(0, N, nt - len(r))) if pad_value is None else pad_value
        valid[i, :len(r)] = True
    gen = torch.Generator().manual_seed(seed + 1)
    pred = torch.randn(b, nt, d, generator=gen)
    target = torch.randn(b, nt, d, generator=gen)
    pred[~valid] = 1e3
    target[~valid] = -1e3
    return pred, target, {"target_idx": idx, "target_valid": valid, "masked_tubes": masked}


# ----------------------------------------------------------------------------- references

def patch_vec(xb, t, s, p=16):
    h, w = divmod(s, WP)
    return xb[:, t, h * p:(h + 1) * p, w * p:(w + 1) * p].ravel()


def neighbours(s):
    h, w = divmod(s, WP)
    out = []
    for dh, dw in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        hh, ww = h + dh, w + dw
        if 0 <= hh < HP and 0 <= ww < WP:
            out.append(hh * WP + ww)
    return out


def ref_motion_score(x):
    x = x.double().numpy()
    bsz, _, t_len = x.shape[:3]
    g = np.zeros((bsz, S))
    for b in range(bsz):
        for s in range(S):
            temporal = sum(np.mean(np.abs(patch_vec(x[b], t + 1, s) - patch_vec(x[b], t, s)))
                           for t in range(t_len - 1)) / (t_len - 1)
            spatial = 0.0
            for t in range(t_len):
                nb = neighbours(s)
                spatial += sum(np.mean(np.abs(patch_vec(x[b], t, s) - patch_vec(x[b], t, j))) for j in nb) / len(nb)
            g[b, s] = temporal + spatial / t_len
    return g


def ref_topk_weights(g, masked, k, gamma):
    w = np.zeros_like(g)
    for b in range(g.shape[0]):
        cand = [s for s in range(g.shape[1]) if masked[b, s]]
        top = sorted(cand, key=lambda s: -g[b, s])[:k]
        z = sum(math.exp(gamma * g[b, s]) for s in top)
        for s in top:
            w[b, s] = math.exp(gamma * g[b, s]) / z
    return w


def ref_token_l1(pred, target, b, n):
    return float(np.mean(np.abs(pred[b, n] - target[b, n])))


def ref_motion_loss(pred, target, masks, w, scope):
    pred, target = pred.double().numpy(), target.double().numpy()
    idx, valid = masks["target_idx"].numpy(), masks["target_valid"].numpy()
    total, count = 0.0, 0
    for b in range(pred.shape[0]):
        for n in range(pred.shape[1]):
            if not valid[b, n]:
                continue
            s = idx[b, n] % S
            if scope == "topk" and w[b, s] == 0:
                continue
            total += (1 + w[b, s]) * ref_token_l1(pred, target, b, n)
            count += 1
    return total / count


def ref_dense_map(x, eps=1e-6):
    x = x.double().numpy()
    bsz, _, t_len, h, w = x.shape
    out = np.zeros((bsz, N))
    for b in range(bsz):
        gh = np.mean(np.abs(x[b, :, :, 1:, :] - x[b, :, :, :-1, :]))
        gw = np.mean(np.abs(x[b, :, :, :, 1:] - x[b, :, :, :, :-1]))
        gbar = gh + gw
        frames = []
        for t in range(t_len):
            a, c = (1, 0) if t == 0 else (t, t - 1)
            frames.append(np.mean(np.abs(x[b, :, a] - x[b, :, c]), axis=0) / (gbar + eps))
        cell = np.zeros((TG, HP, WP))
        for tp in range(TG):
            for hh in range(HP):
                for ww in range(WP):
                    vals = [frames[tp * 2 + k][hh * 16:(hh + 1) * 16, ww * 16:(ww + 1) * 16].mean() for k in range(2)]
                    cell[tp, hh, ww] = np.mean(vals)
        for tp in range(TG):
            for hh in range(HP):
                for ww in range(WP):
                    nb = [cell[a, c, e] for a in range(tp - 1, tp + 2) for c in range(hh - 1, hh + 2)
                          for e in range(ww - 1, ww + 2) if 0 <= a < TG and 0 <= c < HP and 0 <= e < WP]
                    s = np.mean(nb)
                    out[b, tp * S + hh * WP + ww] = s / (1 + s)
    return out


def ref_tube_latents(z, masks, b):
    idx, valid = masks["target_idx"].numpy(), masks["target_valid"].numpy()
    groups = {}
    for n in range(z.shape[1]):
        if valid[b, n]:
            groups.setdefault(idx[b, n] % S, []).append(z[b, n])
    tubes = sorted(groups)
    return tubes, np.stack([np.mean(groups[s], axis=0) for s in tubes]) if tubes else np.zeros((0, z.shape[2]))


def ref_norm(u, eps=1e-6):
    return u / max(np.linalg.norm(u), eps)


def ref_affinity_kl(pred, target, masks, tau):
    pred, target = pred.double().numpy(), target.double().numpy()
    per_sample = []
    for b in range(pred.shape[0]):
        tubes, zh = ref_tube_latents(pred, masks, b)
        _, zt = ref_tube_latents(target, masks, b)
        n = len(tubes)
        if n == 0:
            continue
        uh = [ref_norm(v) for v in zh]
        ut = [ref_norm(v) for v in zt]
        total = 0.0
        for i in range(n):
            eh = [math.exp(float(uh[i] @ uh[j]) / tau) for j in range(n)]
            et = [math.exp(float(ut[i] @ ut[j]) / tau) for j in range(n)]
            for j in range(n):
                ah, at = eh[j] / sum(eh), et[j] / sum(et)
                total += at * math.log(at / ah)
        per_sample.append(total / n)
    return float(np.mean(per_sample)) if per_sample else 0.0


def ref_gram(pred, target, masks, beta):
    pred, target = pred.double().numpy(), target.double().numpy()
    per_sample = []
    for b in range(pred.shape[0]):
        tubes, zh = ref_tube_latents(pred, masks, b)
        _, zt = ref_tube_latents(target, masks, b)
        n = len(tubes)
        if n == 0:
            continue
        total = 0.0
        for i in range(n):
            for j in range(n):
                d = abs(float(ref_norm(zh[i]) @ ref_norm(zh[j]) - ref_norm(zt[i]) @ ref_norm(zt[j])))
                total += 0.5 * d * d / beta if d < beta else d - 0.5 * beta
        per_sample.append(total / (n * n))
    return float(np.mean(per_sample))


def ref_valid_rows(z, valid):
    z = z.double().numpy()
    return np.array([z[b, n] for b in range(z.shape[0]) for n in range(z.shape[1]) if valid[b, n]])


def ref_variance(pred, valid, sigma0=1.0, eps=1e-4):
    rows = ref_valid_rows(pred, valid)
    total = 0.0
    for d in range(rows.shape[1]):
        col = rows[:, d]
        var = sum((v - col.mean()) ** 2 for v in col) / (len(col) - 1)
        total += max(0.0, sigma0 - math.sqrt(var + eps))
    return total / rows.shape[1]


def ref_plain_l1(pred, target, valid):
    p, t = pred.double().numpy(), target.double().numpy()
    vals = [ref_token_l1(p, t, b, n) for b in range(p.shape[0]) for n in range(p.shape[1]) if valid[b, n]]
    return float(np.mean(vals))


# ----------------------------------------------------------------------------- motion

def test_motion_score_matches_naive_loops_with_border_neighbourhoods():
    x = make_clip(0)
    g = motion_score(x, TUBELET)
    assert g.shape == (B, S) and g.dtype == torch.float32
    np.testing.assert_allclose(g.double().numpy(), ref_motion_score(x), rtol=1e-5, atol=1e-6)


def test_motion_score_bf16_clip_is_accumulated_in_fp32():
    x = make_clip(1)
    g = motion_score(x.to(torch.bfloat16), TUBELET)
    assert g.dtype == torch.float32
    np.testing.assert_allclose(g.numpy(), ref_motion_score(x.to(torch.bfloat16).float()), rtol=1e-5)


def test_motion_score_is_highest_where_something_moves():
    x = torch.zeros(1, C, T, H, W)
    for t in range(T):  # a bright square sliding right inside patch (1, 2)
        x[0, :, t, 20:28, 34 + 2 * t:42 + 2 * t] = 3.0
    g = motion_score(x, TUBELET)[0]
    assert int(g.argmax()) == 1 * WP + 2
    static = torch.ones(1, C, T, H, W)
    assert torch.count_nonzero(motion_score(static, TUBELET)) == 0


def test_motion_score_rejects_bad_clips():
    with pytest.raises(ValueError, match="not divisible by the patch"):
        motion_score(torch.zeros(1, 3, 4, 40, 32), TUBELET)
    with pytest.raises(ValueError, match=r"\[B, C, T, H, W\]"):
        motion_score(torch.zeros(3, 4, 32, 32), TUBELET)
    with pytest.raises(ValueError, match="at least 2 frames"):
        motion_score(torch.zeros(1, 3, 1, 32, 32), TUBELET)


def test_topk_weights_match_reference_including_k_above_masked_count():
    g = torch.rand(3, S, generator=torch.Generator().manual_seed(3)) * 2
    masked = torch.zeros(3, S, dtype=torch.bool)
    masked[0, [0, 2, 5, 7, 9, 11]] = True
    masked[1, [4, 8]] = True          # fewer masked tubes than K: all of them
    for k in (1, 3, 5):
        w = topk_motion_weights(g, masked, k=k, gamma=2.0)
        ref = ref_topk_weights(g.double().numpy(), masked.numpy(), k, 2.0)
        np.testing.assert_allclose(w.double().numpy(), ref, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(topk_motion_tubes(g, masked, k).numpy(), ref > 0)
    w = topk_motion_weights(g, masked, k=3)
    assert torch.all(w[2] == 0)        # nothing masked: no weight, no NaN
    assert torch.allclose(w[:2].sum(1), torch.ones(2))


def test_topk_weights_reject_bad_input():
    with pytest.raises(ValueError, match="masked_tubes shape"):
        topk_motion_weights(torch.zeros(2, S), torch.zeros(2, S + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        topk_motion_weights(torch.zeros(2, S), torch.zeros(2, S))
    with pytest.raises(ValueError, match="k"):
        topk_motion_weights(torch.zeros(2, S), torch.zeros(2, S, dtype=torch.bool), k=0)


def test_dense_motion_map_matches_naive_loops_and_is_contrast_invariant():
    x = make_clip(4)
    m = dense_motion_map(x, TUBELET)
    assert m.shape == (B, N)
    np.testing.assert_allclose(m.double().numpy(), ref_dense_map(x), rtol=1e-5, atol=1e-7)
    assert torch.all((m >= 0) & (m < 1))
    np.testing.assert_allclose(dense_motion_map(3.0 * x - 0.5, TUBELET).numpy(), m.numpy(), rtol=1e-4)
    still = x[:, :, :1].expand(-1, -1, T, -1, -1)
    assert torch.count_nonzero(dense_motion_map(still, TUBELET)) == 0


# ----------------------------------------------------------------------------- prediction losses

@pytest.mark.parametrize("scope", ["all", "topk"])
def test_motion_prediction_loss_matches_reference(scope):
    x = make_clip(5)
    pred, target, masks = make_batch((7, 3), seed=5)
    g = motion_score(x, TUBELET)
    w = topk_motion_weights(g, masks["masked_tubes"], k=3, gamma=2.0)
    got = motion_prediction_loss(pred, target, masks["target_idx"], masks["target_valid"], w, scope=scope)
    ref_w = ref_topk_weights(ref_motion_score(x), masks["masked_tubes"].numpy(), 3, 2.0)
    assert got.item() == pytest.approx(ref_motion_loss(pred, target, masks, ref_w, scope), rel=1e-5)


def test_motion_prediction_loss_without_weights_is_plain_l1():
    pred, target, masks = make_batch((5, 2), seed=6)
    zero = torch.zeros(2, S)
    got = motion_prediction_loss(pred, target, masks["target_idx"], masks["target_valid"], zero, scope="all")
    assert got.item() == pytest.approx(ref_plain_l1(pred, target, masks["target_valid"]), rel=1e-6)
    with pytest.raises(ValueError, match="scope"):
        motion_prediction_loss(pred, target, masks["target_idx"], masks["target_valid"], zero, scope="some")


def test_dense_motion_prediction_loss_matches_reference():
    x = make_clip(7)
    pred, target, masks = make_batch((6, 4), seed=7, pad_value=-1)
    m = dense_motion_map(x, TUBELET)
    got = dense_motion_prediction_loss(pred, target, masks["target_idx"], masks["target_valid"], m, strength=2.0)
    mref = ref_dense_map(x)
    p, t = pred.double().numpy(), target.double().numpy()
    idx, valid = masks["target_idx"].numpy(), masks["target_valid"].numpy()
    vals = [(1 + 2 * mref[b, idx[b, n]]) * ref_token_l1(p, t, b, n)
            for b in range(2) for n in range(p.shape[1]) if valid[b, n]]
    assert got.item() == pytest.approx(float(np.mean(vals)), rel=1e-5)


def test_prediction_losses_reject_mismatched_shapes():
    pred, target, masks = make_batch((3, 3), seed=8)
    with pytest.raises(ValueError, match="target shape"):
        motion_prediction_loss(pred, target[:, :-1], masks["target_idx"], masks["target_valid"], torch.zeros(2, S))
    with pytest.raises(ValueError, match="target_valid must be a bool"):
        motion_prediction_loss(pred, target, masks["target_idx"], masks["target_valid"].float(), torch.zeros(2, S))


# ----------------------------------------------------------------------------- affinity

@pytest.mark.parametrize("counts", [(7, 3), (12, 1), (4, 0)])
def test_affinity_kl_matches_reference_with_padding(counts):
    pred, target, masks = make_batch(counts, seed=9)
    got = affinity_distillation_loss(pred, target, masks["target_idx"], masks["target_valid"], S, tau=0.1)
    assert got.item() == pytest.approx(ref_affinity_kl(pred, target, masks, 0.1), rel=1e-4, abs=1e-6)


def test_affinity_kl_is_zero_when_prediction_matches_target_direction():
    pred, target, masks = make_batch((6, 5), seed=10)
    got = affinity_distillation_loss(3.0 * target, target, masks["target_idx"], masks["target_valid"], S)
    assert abs(got.item()) < 1e-5
    with pytest.raises(ValueError, match="tau"):
        affinity_distillation_loss(pred, target, masks["target_idx"], masks["target_valid"], S, tau=0.0)


@pytest.mark.parametrize("beta", [1.0, 0.05])
def test_gram_affinity_matches_reference(beta):
    pred, target, masks = make_batch((7, 3), seed=11)
    got = gram_affinity_loss(pred, target, masks["target_idx"], masks["target_valid"], S, beta=beta)
    assert got.item() == pytest.approx(ref_gram(pred, target, masks, beta), rel=1e-5)


# ----------------------------------------------------------------------------- variance

def test_variance_loss_and_channel_std_match_reference():
    pred, _, masks = make_batch((7, 3), seed=12)
    pred = pred * 0.5                                     # std below sigma0 so the hinge is active
    valid = masks["target_valid"]
    got = variance_loss(pred, valid, sigma0=1.0, eps=1e-4)
    assert got.item() == pytest.approx(ref_variance(pred, valid.numpy()), rel=1e-5)
    rows = ref_valid_rows(pred, valid.numpy())
    np.testing.assert_allclose(channel_std(pred, valid).numpy(), rows.std(axis=0, ddof=1), rtol=1e-5)
    assert variance_loss(pred * 100, valid).item() == 0.0


# ----------------------------------------------------------------------------- total

def full_reference(x, pred, target, masks, cfg):
    ref_w = ref_topk_weights(ref_motion_score(x), masks["masked_tubes"].numpy(), cfg.k, cfg.gamma)
    l_pred = ref_motion_loss(pred, target, masks, ref_w, cfg.motion_scope)
    l_st = ref_affinity_kl(pred, target, masks, cfg.tau)
    l_var = ref_variance(pred, masks["target_valid"].numpy(), cfg.sigma0)
    return l_pred + cfg.lambda_st * l_st + cfg.lambda_var * l_var, l_pred, l_st, l_var


def test_unisurg_loss_matches_reference_and_reports_diagnostics():
    x = make_clip(13)
    pred, target, masks = make_batch((8, 2), seed=13)
    pred = pred * 0.7
    cfg = UniSurgLossConfig()
    out = unisurg_loss(x, pred, target, masks, cfg, TUBELET)
    total, l_pred, l_st, l_var = full_reference(x, pred, target, masks, cfg)
    assert out["loss"].item() == pytest.approx(total, rel=1e-5)
    assert out["l_pred"].item() == pytest.approx(l_pred, rel=1e-5)
    assert out["l_st"].item() == pytest.approx(l_st, rel=1e-4)
    assert out["l_var"].item() == pytest.approx(l_var, rel=1e-5)
    valid = masks["target_valid"].numpy()
    assert out["pred_std"].item() == pytest.approx(ref_valid_rows(pred, valid).std(axis=0, ddof=1).mean(), rel=1e-5)
    assert out["target_std"].item() == pytest.approx(ref_valid_rows(target, valid).std(axis=0, ddof=1).mean(),
                                                     rel=1e-5)
    assert all(isinstance(v, torch.Tensor) for v in out.values())


def test_unisurg_loss_with_every_extra_off_is_plain_vjepa_l1():
    x = make_clip(14)
    pred, target, masks = make_batch((9, 4), seed=14)
    out = unisurg_loss(x, pred, target, masks, UniSurgLossConfig.plain_vjepa(), TUBELET)
    assert out["loss"].item() == pytest.approx(ref_plain_l1(pred, target, masks["target_valid"]), rel=1e-6)
    assert out["l_st"].item() == 0.0 and out["l_var"].item() == 0.0
    assert torch.equal(out["loss"], out["l1"])


def test_unisurg_loss_options_dense_topk_scope_and_gram():
    x = make_clip(15)
    pred, target, masks = make_batch((6, 3), seed=15)
    cfg = UniSurgLossConfig(motion_mode="dense", affinity_mode="gram_smoothl1", variance=False, lambda_st=0.5)
    out = unisurg_loss(x, pred, target, masks, cfg, TUBELET)
    mref = ref_dense_map(x)
    p, t = pred.double().numpy(), target.double().numpy()
    idx, valid = masks["target_idx"].numpy(), masks["target_valid"].numpy()
    l_pred = np.mean([(1 + 2 * mref[b, idx[b, n]]) * ref_token_l1(p, t, b, n)
                      for b in range(2) for n in range(p.shape[1]) if valid[b, n]])
    assert out["loss"].item() == pytest.approx(l_pred + 0.5 * ref_gram(pred, target, masks, 1.0), rel=1e-5)
    cfg = UniSurgLossConfig(motion_scope="topk", affinity=False, variance=False)
    out = unisurg_loss(x, pred, target, masks, cfg, TUBELET)
    ref_w = ref_topk_weights(ref_motion_score(x), masks["masked_tubes"].numpy(), 3, 2.0)
    assert out["loss"].item() == pytest.approx(ref_motion_loss(pred, target, masks, ref_w, "topk"), rel=1e-5)


def test_gradients_reach_pred_only_and_never_padding():
    x = make_clip(16)
    pred, target, masks = make_batch((7, 2), seed=16)
    for cfg in (UniSurgLossConfig(), UniSurgLossConfig(motion_mode="dense", affinity_mode="gram_smoothl1")):
        p = pred.clone().requires_grad_(True)
        tg = target.clone().requires_grad_(True)
        unisurg_loss(x, p, tg, masks, cfg, TUBELET)["loss"].backward()
        assert tg.grad is None
        valid = masks["target_valid"]
        assert torch.isfinite(p.grad).all()
        assert torch.count_nonzero(p.grad[~valid]) == 0
        assert (p.grad[valid].abs().sum(-1) > 0).all()


def test_affinity_gradient_is_finite_with_an_empty_sample():
    pred, target, masks = make_batch((5, 0), seed=17)
    p = pred.clone().requires_grad_(True)
    affinity_distillation_loss(p, target, masks["target_idx"], masks["target_valid"], S).backward()
    assert torch.isfinite(p.grad).all() and torch.count_nonzero(p.grad[1]) == 0


def test_bf16_autocast_on_cpu_stays_close_to_fp32():
    x = make_clip(18)
    pred, target, masks = make_batch((8, 5), seed=18, d=16)
    lin = torch.nn.Linear(16, 16)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(16) + 0.01 * torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))
        lin.bias.zero_()
    cfg = UniSurgLossConfig()
    ref = unisurg_loss(x, lin(pred), target, masks, cfg, TUBELET)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = lin(pred)
        assert p.dtype == torch.bfloat16
        out = unisurg_loss(x, p, target.to(torch.bfloat16), masks, cfg, TUBELET)
    for key in ("loss", "l_pred", "l_st", "l_var"):
        assert out[key].dtype == torch.float32 and torch.isfinite(out[key])
        assert out[key].item() == pytest.approx(ref[key].item(), rel=3e-2, abs=3e-3), key
    out["loss"].backward()
    assert torch.isfinite(lin.weight.grad).all()


def test_unisurg_loss_rejects_bad_masks_and_config():
    x = make_clip(19)
    pred, target, masks = make_batch((4, 4), seed=19)
    bad = dict(masks)
    del bad["masked_tubes"]
    with pytest.raises(ValueError, match="masked_tubes"):
        unisurg_loss(x, pred, target, bad, UniSurgLossConfig(), TUBELET)
    bad = dict(masks, masked_tubes=masks["masked_tubes"][:, :5])
    with pytest.raises(ValueError, match="3x4 patch grid"):
        unisurg_loss(x, pred, target, bad, UniSurgLossConfig(), TUBELET)
    for field, value in (("k", 0), ("tau", 0.0), ("lambda_st", -1.0), ("motion_scope", "some"),
                         ("affinity_mode", "cosine"), ("sigma0", float("nan"))):
        with pytest.raises(ValueError, match=field):
            UniSurgLossConfig(**{field: value}).validate()
    with pytest.raises(ValueError, match="motion_scope"):
        UniSurgLossConfig(motion_mode="dense", motion_scope="topk").validate()
    with pytest.raises(ConfigError, match="lambda_var"):
        load_config(UniSurgLossConfig, {"lambda_var": -0.3})
    assert load_config(UniSurgLossConfig, {"k": 5}).k == 5


def test_unisurg_loss_accepts_mask_objects():
    class Masks:
        def __init__(self, d):
            self.__dict__.update(d)

    x = make_clip(20)
    pred, target, masks = make_batch((5, 3), seed=20)
    a = unisurg_loss(x, pred, target, masks, UniSurgLossConfig(), TUBELET)["loss"]
    b = unisurg_loss(x, pred, target, Masks(masks), UniSurgLossConfig(), TUBELET)["loss"]
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- SurgRec-MAE

def test_patchify_matches_naive_layout_and_round_trips_exactly():
    x = make_clip(21)
    pt = patchify(x, TUBELET)
    assert pt.shape == (B, N, 2 * 16 * 16 * C)
    xn = x.numpy()
    for b in range(B):
        for n in range(N):
            tp, s = divmod(n, S)
            h, w = divmod(s, WP)
            vec = [xn[b, c, tp * 2 + dt, h * 16 + i, w * 16 + j]
                   for dt in range(2) for i in range(16) for j in range(16) for c in range(C)]
            np.testing.assert_array_equal(pt[b, n].numpy(), np.array(vec, dtype=np.float32))
    assert torch.equal(unpatchify(pt, TUBELET, (T, H, W)), x)
    with pytest.raises(ValueError, match="do not fit"):
        unpatchify(pt[:, :-1], TUBELET, (T, H, W))


def test_mae_targets_normalise_each_patch_per_channel_like_videomae():
    x = make_clip(22) * 2 + 1
    tg = mae_targets(x, TUBELET, norm_pix=True)
    xn = x.double().numpy()
    for b, n in ((0, 0), (1, N - 1), (0, 13)):
        tp, s = divmod(n, S)
        h, w = divmod(s, WP)
        expect = []
        for dt in range(2):
            for i in range(16):
                for j in range(16):
                    for c in range(C):
                        block = xn[b, c, tp * 2:tp * 2 + 2, h * 16:h * 16 + 16, w * 16:w * 16 + 16]
                        mu, sd = block.mean(), block.std(ddof=1)
                        expect.append((xn[b, c, tp * 2 + dt, h * 16 + i, w * 16 + j] - mu) / (sd + 1e-6))
        np.testing.assert_allclose(tg[b, n].numpy(), expect, rtol=1e-4, atol=1e-5)
    scale = torch.tensor([0.2, 3.0, 1.5]).view(1, C, 1, 1, 1)
    shift = torch.tensor([-1.0, 0.5, 2.0]).view(1, C, 1, 1, 1)
    torch.testing.assert_close(mae_targets(x * scale + shift, TUBELET), tg, rtol=1e-4, atol=1e-4)
    assert torch.equal(mae_targets(x, TUBELET, norm_pix=False), patchify(x, TUBELET))


def test_mae_loss_is_mse_over_masked_patches_only():
    x = make_clip(23)
    targets = mae_targets(x, TUBELET)
    _, _, masks = make_batch((6, 2), seed=23)
    idx, valid = masks["target_idx"], masks["target_valid"]
    pred = torch.randn(B, idx.shape[1], targets.shape[2], generator=torch.Generator().manual_seed(1))
    pred[~valid] = 1e4
    got = mae_loss(pred, targets, idx, valid)
    p, tgn = pred.double().numpy(), targets.double().numpy()
    vals = [np.mean((p[b, n] - tgn[b, idx[b, n]]) ** 2) for b in range(B) for n in range(idx.shape[1]) if valid[b, n]]
    assert got.item() == pytest.approx(float(np.mean(vals)), rel=1e-5)
    pr = pred.clone().requires_grad_(True)
    mae_loss(pr, targets, idx, valid).backward()
    assert torch.count_nonzero(pr.grad[~valid]) == 0
    with pytest.raises(ValueError, match="targets must be"):
        mae_loss(pred, targets[..., :-1], idx, valid)
