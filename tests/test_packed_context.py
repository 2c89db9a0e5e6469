"""Packing several mask families' context tokens into one encoder pass equals one pass per family.

Reference: the encoder run once per family (``encoder(x, **m.encoder_kwargs())``, the unpacked
path), in float64; outputs and every parameter gradient must agree to rounding. Also: padded
families and stochastic depth fall back to one pass per family, and the packed path rejects
segment lengths that do not add up.
"""

from __future__ import annotations

import pytest
import torch

from unisurg.models import build_encoder
from unisurg.train.masks import mask_batch_from_token_mask
from unisurg.train.packed_context import encode_context_sets

torch.set_num_threads(1)


def _families(grid, b, ratios, seed=0):
    """Unpadded mask families: every sample keeps the same number of context tokens per family."""
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1] * grid[2]
    out = []
    for r in ratios:
        k = int(n * r)
        rows = torch.zeros(b, n, dtype=torch.bool)
        for i in range(b):
            rows[i, torch.randperm(n, generator=g)[:k]] = True
        out.append(mask_batch_from_token_mask(rows, grid))
    return out


@pytest.mark.parametrize("pos", ["rope", "sincos"])
def test_packed_families_equal_separate_passes(pos):
    torch.manual_seed(0)
    enc = build_encoder("tiny", embed_dim=48, depth=2, num_heads=4, pos_embed=pos).double()
    x = torch.randn(2, 3, 4, 32, 32, dtype=torch.float64)
    masks = _families(enc.grid(x.shape), 2, (0.75, 0.5))
    assert not any(m.context_padded for m in masks)

    packed = encode_context_sets(enc, x, masks)
    sum(z.square().sum() * (i + 1) for i, z in enumerate(packed)).backward()
    got = {n: p.grad.clone() for n, p in enc.named_parameters()}
    enc.zero_grad()
    ref = [enc(x, **m.encoder_kwargs()) for m in masks]
    sum(z.square().sum() * (i + 1) for i, z in enumerate(ref)).backward()
    for a, b in zip(packed, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for n, p in enc.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-10, atol=1e-12, msg=n)


def test_padded_families_and_drop_path_are_not_packed(monkeypatch):
    enc = build_encoder("tiny", embed_dim=48, depth=1, num_heads=4, drop_path_rate=0.1)
    x = torch.randn(2, 3, 4, 32, 32)
    masks = _families(enc.grid(x.shape), 2, (0.75, 0.5))
    calls = []
    orig = type(enc).forward

    def spy(self, *a, **k):
        calls.append(k.get("segments"))
        return orig(self, *a, **k)
    monkeypatch.setattr(type(enc), "forward", spy)
    enc.train()
    encode_context_sets(enc, x, masks)  # stochastic depth while training: one pass per family
    assert calls == [None, None]
    enc.eval()
    calls.clear()
    encode_context_sets(enc, x, masks)
    assert calls == [(masks[0].context_idx.shape[1], masks[1].context_idx.shape[1])]
    calls.clear()
    uneven = torch.zeros(2, masks[0].context_idx.shape[1] + masks[0].target_idx.shape[1], dtype=torch.bool)
    uneven[0, :3], uneven[1, :5] = True, True  # 3 and 5 targets: the context sets are padded
    padded = mask_batch_from_token_mask(uneven, enc.grid(x.shape))
    assert padded.context_padded
    encode_context_sets(enc, x, [padded, masks[1]])
    assert calls == [None, None]
    with pytest.raises(ValueError, match="add up"):
        orig(enc, x, context_idx=masks[0].context_idx, segments=(1, 2))
