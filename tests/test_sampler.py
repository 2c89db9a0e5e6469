"""Balanced (UniSurg) and uniform samplers: mass against the formula, DDP shares, determinism, resume."""

from __future__ import annotations

import numpy as np
import pytest

from unisurg.data.sampler import BalancedSampler, UniformSampler, balanced_weights

# specialty A: datasets a1 (10 samples), a2 (30); specialty B: b1 (5); specialty C: c1 (2), c2 (8), c3 (1)
CORPUS = [("A", "a1")] * 10 + [("A", "a2")] * 30 + [("B", "b1")] * 5 + [("C", "c1")] * 2 + [("C", "c2")] * 8 + [("C", "c3")]
SPEC = [s for s, _ in CORPUS]
DS = [d for _, d in CORPUS]
# hand-computed: each specialty 1/3, shared equally among its datasets
DATASET_MASS = {"a1": 1 / 6, "a2": 1 / 6, "b1": 1 / 3, "c1": 1 / 9, "c2": 1 / 9, "c3": 1 / 9}


def test_weights_match_the_formula_by_hand():
    w = balanced_weights(DS, SPEC)
    sizes = {d: DS.count(d) for d in DATASET_MASS}
    for i, d in enumerate(DS):
        assert w[i] == pytest.approx(DATASET_MASS[d] / sizes[d], rel=1e-12)
    assert w.sum() == pytest.approx(1.0)


def test_empirical_mass_per_specialty_and_dataset():
    s = BalancedSampler(DS, SPEC, num_samples=300_000, seed=3)
    idx = np.fromiter(iter(s), dtype=np.int64)
    ds_arr = np.array(DS)[idx]
    for d, mass in DATASET_MASS.items():
        assert np.mean(ds_arr == d) == pytest.approx(mass, abs=0.004)
    sp_arr = np.array(SPEC)[idx]
    for sp in "ABC":
        assert np.mean(sp_arr == sp) == pytest.approx(1 / 3, abs=0.004)
    # inside a dataset, samples are uniform
    a2 = idx[ds_arr == "a2"]
    hist = np.bincount(a2 - 10, minlength=30) / len(a2)
    assert np.abs(hist - 1 / 30).max() < 0.01


@pytest.mark.parametrize("cls", ["balanced", "uniform"])
def test_ddp_shares_are_disjoint_and_cover_the_draw(cls):
    def make(world, rank):
        if cls == "balanced":
            return BalancedSampler(DS, SPEC, num_samples=101, seed=7, num_replicas=world, rank=rank)
        return UniformSampler(len(DS), seed=7, num_replicas=world, rank=rank)

    whole = make(1, 0)
    whole.set_epoch(2)
    ref = list(whole)
    shares = []
    for r in range(3):
        s = make(3, r)
        s.set_epoch(2)
        shares.append(list(s))
    assert len({len(x) for x in shares}) == 1  # equal lengths: DDP ranks step together
    merged = [shares[i % 3][i // 3] for i in range(len(shares[0]) * 3)]
    assert merged[: len(ref)] == ref[: len(merged)]
    if cls == "uniform":
        assert set(merged) == set(range(len(DS)))


def test_deterministic_per_epoch_and_resumable():
    a = BalancedSampler(DS, SPEC, seed=1)
    b = BalancedSampler(DS, SPEC, seed=1)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    b.set_epoch(5)
    assert list(a) != list(b)
    full = list(a)
    a.advance(20)
    state = a.state_dict()
    c = BalancedSampler(DS, SPEC, seed=999)
    c.load_state_dict(state)
    assert list(c) == full[20:] and len(c) == len(full) - 20


def test_uniform_is_a_permutation():
    s = UniformSampler(57, seed=0)
    assert sorted(s) == list(range(57))


def test_world_size_change_on_resume_is_refused():
    a = BalancedSampler(DS, SPEC, seed=1, num_replicas=2, rank=0)
    b = BalancedSampler(DS, SPEC, seed=1, num_replicas=4, rank=0)
    with pytest.raises(ValueError, match="same world size"):
        b.load_state_dict(a.state_dict())
