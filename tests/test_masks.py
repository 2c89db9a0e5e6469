"""Tube / multiblock masks and the collator, checked with plain Python sets."""

import pytest
import torch
import torch.utils.data

from unisurg.train.mask_collator import SampleMaskCollator
from unisurg.train.masks import MaskBatch, MultiblockMaskGenerator, TubeMaskGenerator, vjepa2_multiblock

torch.set_num_threads(1)


def rows(idx, valid):
    """Per-sample lists of the valid indices."""
    return [[int(i) for i, v in zip(r, m) if v] for r, m in zip(idx.tolist(), valid.tolist())]


def check_layout(mb: MaskBatch, grid):
    """Conventions shared with the objectives code; returns per-sample (context, target) sets."""
    nt, nh, nw = grid
    s, n = nh * nw, nt * nh * nw
    assert mb.context_idx.dtype == torch.long and mb.target_idx.dtype == torch.long
    assert mb.context_valid.dtype == torch.bool and mb.masked_tubes.shape == (mb.batch_size, s)
    out = []
    for b in range(mb.batch_size):
        for idx, valid in ((mb.context_idx[b], mb.context_valid[b]), (mb.target_idx[b], mb.target_valid[b])):
            k = int(valid.sum())
            assert valid[:k].all() and not valid[k:].any(), "valid entries must come first"
            assert (idx[k:] == 0).all(), "pad value is 0"
            assert idx[:k].tolist() == sorted(set(idx[:k].tolist())), "ascending, no repeats"
        ctx = set(rows(mb.context_idx, mb.context_valid)[b])
        tgt = set(rows(mb.target_idx, mb.target_valid)[b])
        assert not ctx & tgt
        assert ctx | tgt == set(range(n))
        assert ctx and tgt
        full_tubes = {tube for tube in range(s) if all(t * s + tube in tgt for t in range(nt))}
        assert {i for i, m in enumerate(mb.masked_tubes[b].tolist()) if m} == full_tubes
        out.append((ctx, tgt))
    assert mb.context_padded == (not bool(mb.context_valid.all()))
    assert mb.target_padded == (not bool(mb.target_valid.all()))
    return out


def test_tube_masks_ratio_tubes_disjoint_cover():
    grid = (4, 8, 8)
    gen = TubeMaskGenerator(grid, ratio=(0.75, 0.95))
    mb = gen(200, torch.Generator().manual_seed(0))
    sets = check_layout(mb, grid)
    ratios = []
    for (ctx, tgt), tubes in zip(sets, mb.masked_tubes.tolist()):
        masked = {i for i, m in enumerate(tubes) if m}
        # a tube is masked at every time step, never partially
        assert tgt == {t * 64 + s for t in range(4) for s in masked}
        ratios.append(len(masked) / 64)
    assert min(ratios) >= 0.75 and max(ratios) <= 0.95
    assert len(set(ratios)) > 5, "the ratio is drawn per sample"
    # rho ~ U(0.75, 0.95): mean 0.85, the ends are reached
    assert abs(sum(ratios) / len(ratios) - 0.85) < 0.01
    assert min(ratios) < 0.78 and max(ratios) > 0.92
    assert mb.context_padded and mb.target_padded


def test_tube_masks_deterministic_given_seed():
    gen = TubeMaskGenerator((2, 4, 4))
    a = gen(8, torch.Generator().manual_seed(5))
    b = gen(8, torch.Generator().manual_seed(5))
    c = gen(8, torch.Generator().manual_seed(6))
    assert torch.equal(a.target_idx, b.target_idx) and torch.equal(a.context_valid, b.context_valid)
    assert not torch.equal(a.masked_tubes, c.masked_tubes)


def test_tube_grid_too_small_is_an_error():
    with pytest.raises(ValueError, match="cannot realise"):
        TubeMaskGenerator((2, 2, 2), ratio=(0.9, 0.95))
    with pytest.raises(ValueError, match="ratio"):
        TubeMaskGenerator((2, 8, 8), ratio=(0.9, 0.5))


def test_multiblock_full_temporal_extent_gives_tubes():
    grid = (4, 14, 14)
    for gen in vjepa2_multiblock(grid):
        mb = gen(16, torch.Generator().manual_seed(3))
        sets = check_layout(mb, grid)
        for (ctx, tgt), tubes in zip(sets, mb.masked_tubes.tolist()):
            masked = {i for i, m in enumerate(tubes) if m}
            assert tgt == {t * 196 + s for t in range(4) for s in masked}
    small, large = vjepa2_multiblock(grid)
    r_small = small(64, torch.Generator().manual_seed(0)).masked_tubes.float().mean()
    r_large = large(64, torch.Generator().manual_seed(0)).masked_tubes.float().mean()
    assert 0.4 < r_small < 0.95 and 0.5 < r_large < 1.0


def test_multiblock_block_shape():
    grid = (2, 10, 10)
    gen = MultiblockMaskGenerator(grid, num_blocks=1, spatial_scale=(0.36, 0.36), aspect_ratio=(1.0, 1.0))
    mb = gen(4, torch.Generator().manual_seed(0))
    for tubes in mb.masked_tubes.view(4, 10, 10):
        hs, ws = tubes.nonzero(as_tuple=True)
        assert len(hs) == 36
        assert hs.max() - hs.min() == 5 and ws.max() - ws.min() == 5  # one 6x6 block


def test_multiblock_partial_time_marks_only_full_tubes():
    grid = (4, 6, 6)
    gen = MultiblockMaskGenerator(grid, num_blocks=2, spatial_scale=(0.2, 0.3), temporal_scale=(0.5, 0.5))
    mb = gen(8, torch.Generator().manual_seed(1))
    check_layout(mb, grid)


def _collator(generators, grid, seed, **kw):
    gens = generators if isinstance(generators, list) else [generators]
    return SampleMaskCollator(gens, grid, seed=seed, tubelet_size=2, patch_size=16, per_rank_batch=kw.pop("batch", 4), **kw)


def test_collator_stacks_and_checks_shapes():
    grid = (2, 2, 3)
    coll = _collator(TubeMaskGenerator(grid, ratio=(0.5, 0.7)), grid, seed=1, batch=3)
    clips = [torch.randn(3, 4, 32, 48) for _ in range(3)]
    x, (mb,) = coll(clips)
    assert torch.equal(x, torch.stack(clips))
    assert isinstance(mb, MaskBatch) and mb.batch_size == 3
    with pytest.raises(ValueError, match="grid"):
        coll([torch.randn(3, 8, 32, 48)])
    with pytest.raises(ValueError, match="share a shape"):
        coll([torch.randn(3, 4, 32, 48), torch.randn(3, 4, 48, 32)])
    x3, masks = _collator(vjepa2_multiblock((2, 4, 4)), (2, 4, 4), seed=0)([torch.randn(3, 4, 64, 64)] * 2)
    assert isinstance(masks, list) and len(masks) == 2


def test_collator_deterministic_per_batch_and_epoch():
    grid = (2, 4, 4)
    gen = TubeMaskGenerator(grid)
    a, b = _collator(gen, grid, seed=7), _collator(gen, grid, seed=7)
    clips = [torch.zeros(3, 4, 64, 64)] * 4
    first = [a(clips)[1][0].target_idx for _ in range(3)]
    second = [b(clips)[1][0].target_idx for _ in range(3)]
    for x, y in zip(first, second):
        assert torch.equal(x, y)
    assert not torch.equal(first[0], first[1])
    a.set_epoch(1)
    assert not torch.equal(a(clips)[1][0].target_idx, first[0])
    b.set_epoch(0, start_batch=2)  # a resumed run that skips two batches draws batch 2's masks
    assert torch.equal(b(clips)[1][0].target_idx, first[2])


class _Clips(torch.utils.data.Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        return torch.full((3, 4, 32, 32), float(i))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_collator_same_masks_with_and_without_workers():
    def masks(workers):
        coll = _collator(TubeMaskGenerator((2, 2, 2), ratio=(0.25, 0.75)), (2, 2, 2), seed=3, batch=2)
        loader = torch.utils.data.DataLoader(_Clips(), batch_size=2, num_workers=workers, collate_fn=coll)
        return [(x[:, 0, 0, 0, 0].tolist(), mbs[0].target_idx) for x, mbs in loader]

    serial, parallel = masks(0), masks(2)
    assert len(serial) == 6
    for (xs, ms), (xp, mp) in zip(serial, parallel):
        assert xs == xp and torch.equal(ms, mp)


def test_maskbatch_to_and_kwargs():
    mb = TubeMaskGenerator((2, 4, 4))(3, torch.Generator().manual_seed(0)).to("cpu")
    kw = mb.encoder_kwargs()
    assert kw["context_valid"] is (mb.context_valid if mb.context_padded else None)
    pk = mb.predictor_kwargs()
    assert set(pk) == {"context_idx", "target_idx", "context_valid", "target_valid"}
    one = TubeMaskGenerator((2, 4, 4))(1, torch.Generator().manual_seed(0))
    assert not one.context_padded and one.encoder_kwargs()["context_valid"] is None
