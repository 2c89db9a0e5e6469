"""Perceptual hashes, Hamming search, near-duplicate videos and benchmark leakage.

References: scipy's DCT, block means for area resizing, Python's bit counting, a plain
O(n*m) LCS table for the alignment; synthetic frames and hash sequences with planted copies."""

from __future__ import annotations

import numpy as np
import pytest
import simplejpeg

from unisurg.curate.duplicates import align, band_candidates, find_near_duplicates, group_duplicates, keep_one_per_group
from unisurg.curate.leakage import find_leakage
from unisurg.curate.phash import (
    area_resize,
    dct_matrix,
    dhash,
    hamming_matrix,
    hamming_matrix_torch,
    hamming_pairs,
    hash_frames,
    nearest_hamming,
    pack_bits,
    phash,
    unpack_bits,
)


def synth_frame(rng, h=240, w=320):
    """A smooth coloured field with random discs and sensor noise (an endoscopic-looking frame)."""
    low = rng.random((6, 8, 3))
    img = np.kron(low, np.ones((h // 6, w // 8, 1))) * 150
    yy, xx = np.mgrid[:h, :w]
    for _ in range(5):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, 60)
        img += (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)[..., None] * rng.uniform(-80, 80, 3)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg(frame, quality=50):
    return simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(np.ascontiguousarray(frame), quality=quality), colorspace="RGB")


def half(frame):
    """0.5x area resize by 2x2 block means (written here, independent of the package)."""
    h, w = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
    return frame[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).astype(np.float32).mean((1, 3)).round().astype(np.uint8)


def popcount_ref(a, b):
    return np.array([[bin(int(x) ^ int(y)).count("1") for y in b] for x in a])


# ---------------------------------------------------------------------------------------------
# hashing


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return np.stack([synth_frame(rng) for _ in range(24)])


@pytest.mark.parametrize("fn, copy_max, other_min", [(phash, 6, 16), (dhash, 8, 12)])
def test_hash_robust_to_reencode_and_resize(frames, fn, copy_max, other_min):
    h0 = fn(frames)
    h_copy = fn(np.stack([jpeg(half(f), 50) for f in frames]))  # 0.5x area resize + JPEG q50
    d_copy = np.bitwise_count(h0 ^ h_copy)
    assert d_copy.max() <= copy_max, d_copy
    d = hamming_matrix(h0, h0)[~np.eye(len(h0), dtype=bool)]
    assert d.min() >= other_min, d.min()


def test_dct_matrix_and_area_resize_against_references():
    from scipy.fft import dct

    x = np.random.default_rng(1).normal(size=32)
    np.testing.assert_allclose(dct_matrix(32) @ x, dct(x, norm="ortho"), atol=1e-5)
    img = np.random.default_rng(2).random((2, 10, 12)).astype(np.float32)
    # integer factor: block means
    np.testing.assert_allclose(area_resize(img, 5, 4), img.reshape(2, 5, 2, 4, 3).mean((2, 4)), atol=1e-6)
    # fractional factor: upsample to the common multiple by repetition, then block means
    up = img.repeat(2, axis=1).repeat(3, axis=2)  # 20 x 36 holds both grids exactly
    np.testing.assert_allclose(area_resize(img, 4, 9), up.reshape(2, 4, 5, 9, 4).mean((2, 4)), atol=1e-5)


def test_pack_unpack_and_hamming_search_against_bruteforce():
    rng = np.random.default_rng(3)
    bits = rng.random((40, 64)) > 0.5
    h = pack_bits(bits)
    np.testing.assert_array_equal(unpack_bits(h), bits)
    assert int(h[0]) == int("".join("1" if b else "0" for b in bits[0]), 2)  # first bit is the MSB
    a, b = h[:15], h[15:]
    ref = popcount_ref(a, b)
    np.testing.assert_array_equal(hamming_matrix(a, b), ref)
    np.testing.assert_array_equal(hamming_matrix_torch(a, b).numpy(), ref)
    idx, dist = nearest_hamming(a, b, block_elements=7)
    np.testing.assert_array_equal(dist, ref.min(1))
    np.testing.assert_array_equal(idx, ref.argmin(1))
    i, j, d = hamming_pairs(a, b, 28, block_elements=50)
    ri, rj = np.nonzero(ref <= 28)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(j, rj)
    np.testing.assert_array_equal(d, ref[ri, rj])


def test_hash_frames_contrast_and_input_checks(frames):
    black = np.zeros((2, 64, 80, 3), np.uint8)
    hashes, contrast = hash_frames(np.concatenate([frames[:2, :64, :80], black]))
    assert contrast[:2].min() > 10 and contrast[2:].max() == 0
    assert hashes.dtype == np.uint64 and len(hashes) == 4
    gray = frames[:3, :, :, 0]
    assert phash(gray).shape == (3,)
    with pytest.raises(ValueError, match="channels last"):
        phash(np.zeros((2, 3, 64, 64), np.uint8))
    with pytest.raises(ValueError, match="kind"):
        hash_frames(frames[:1], kind="ahash")


# ---------------------------------------------------------------------------------------------
# near-duplicate videos


def random_walk_video(rng, n, flips=4):
    """Hashes of a video whose consecutive frames differ by a few bits, with a static scene."""
    bits = np.empty((n, 64), bool)
    bits[0] = rng.random(64) > 0.5
    for t in range(1, n):
        bits[t] = bits[t - 1]
        bits[t, rng.choice(64, flips, replace=False)] ^= True
    if n > 90:
        bits[50:90] = bits[50]  # static scene: 40 identical frames
    return pack_bits(bits)


def perturb(rng, hashes, n_bits=3):
    bits = unpack_bits(hashes)
    for t in range(len(bits)):
        bits[t, rng.choice(64, n_bits, replace=False)] ^= True
    return pack_bits(bits)


@pytest.fixture(scope="module")
def videos():
    rng = np.random.default_rng(5)
    a = random_walk_video(rng, 300)
    kept = np.arange(40, 280)
    kept = kept[kept % 7 != 3]  # drop every 7th frame
    b = np.concatenate([random_walk_video(rng, 25), perturb(rng, a[kept])])  # 25 new frames first: time offset
    return {"A": a, "B": b, "C": random_walk_video(rng, 200), "D": random_walk_video(rng, 150)}, kept


def lcs_reference(q, r, max_distance):
    table = np.zeros((len(q) + 1, len(r) + 1), dtype=int)
    for i in range(1, len(q) + 1):
        for j in range(1, len(r) + 1):
            m = bin(int(q[i - 1]) ^ int(r[j - 1])).count("1") <= max_distance
            table[i, j] = max(table[i - 1, j], table[i, j - 1], table[i - 1, j - 1] + m)
    return table[-1, -1]


def test_alignment_count_matches_lcs_reference():
    rng = np.random.default_rng(6)
    a = random_walk_video(rng, 120, flips=3)[40:100]
    b = perturb(rng, a[::2].repeat(2)[5:55], 2)  # half frame rate, duplicated frames, shifted
    for thr in (4, 8, 12):
        qi, rj = align(a, b, max_distance=thr, block_elements=300)
        assert len(qi) == lcs_reference(a, b, thr)
        assert np.all(np.diff(qi) > 0) and np.all(np.diff(rj) > 0)
        assert np.all(np.bitwise_count(a[qi] ^ b[rj]) <= thr)


@pytest.mark.parametrize("candidates", ["all", "bands"])
def test_copy_with_offset_and_missing_frames_is_found(videos, candidates):
    vids, kept = videos
    found = find_near_duplicates(vids, candidates=candidates)
    assert [(m.query, m.reference) for m in found] == [("A", "B")]
    m = found[0]
    # nearly every frame of the copy (B minus its 25 new frames) is aligned
    assert m.matched_frames >= 0.95 * len(kept)
    assert m.containment >= 0.95 * len(kept) / len(vids["B"])
    # segment: A's frames 40..279 map onto B from frame 25 on
    seg = max(m.segments, key=lambda s: s.frames)
    assert abs(seg.query_start - 40) <= 2 and abs(seg.query_end - 279) <= 2
    assert abs(seg.reference_start - 25) <= 2 and seg.reference_end == len(vids["B"]) - 1
    assert -40 <= m.offset <= -15


def test_different_videos_not_flagged_and_masks_respected(videos):
    vids, _ = videos
    assert find_near_duplicates({"C": vids["C"], "D": vids["D"]}) == []
    # two unrelated videos sharing 30 uniform (black) frames: a match unless those frames are masked
    black = np.zeros(30, np.uint64)
    c = np.concatenate([black, vids["C"]])
    d = np.concatenate([vids["D"], black])
    assert len(find_near_duplicates({"C": c, "D": d}, min_fraction=0.1)) == 1
    valid = {"C": np.arange(len(c)) >= 30, "D": np.arange(len(d)) < len(vids["D"])}
    assert find_near_duplicates({"C": c, "D": d}, valid=valid, min_fraction=0.1) == []


def test_band_candidates_ignore_overfull_buckets():
    rng = np.random.default_rng(8)
    common = pack_bits(rng.random((1, 64)) > 0.5)
    hashes = [np.concatenate([common, pack_bits(rng.random((20, 64)) > 0.5)]) for _ in range(5)]
    valid = [np.ones(len(h), bool) for h in hashes]
    hashes[4] = hashes[0].copy()
    pairs = band_candidates(hashes, valid, max_bucket=4, min_votes=1)
    assert pairs.tolist() == [[0, 4]]  # the frame shared by all 5 videos is a stop word


def test_group_and_keep_one():
    groups = group_duplicates([("a", "b"), ("c", "b"), ("d", "e"), ("f", "f")])
    assert groups == [["a", "b", "c"], ["d", "e"]]
    dec = keep_one_per_group(groups, priority={"a": 1, "b": 5, "c": 5, "d": 0, "e": 0})
    assert dec.keep == ["b", "d"]
    assert dec.drop == {"a": "b", "c": "b", "e": "d"}
    with pytest.raises(KeyError, match="no entry"):
        keep_one_per_group(groups, priority={"a": 1})


# ---------------------------------------------------------------------------------------------
# leakage


def test_leakage_reports_corpus_video_with_test_footage():
    rng = np.random.default_rng(9)
    test = {f"T{i}": random_walk_video(rng, 200) for i in range(3)}
    leaked = np.concatenate([random_walk_video(rng, 100), perturb(rng, test["T1"][120:180]), random_walk_video(rng, 100)])
    corpus = {"c0": random_walk_video(rng, 250), "c1": leaked, "c2": random_walk_video(rng, 180)}
    for candidates in ("all", "bands"):
        hits = find_leakage(corpus, test, candidates=candidates)
        assert [h.corpus_video for h in hits] == ["c1"]
        hit = hits[0]
        assert hit.test_video == "T1"
        assert 57 <= hit.matched_frames <= 60
        assert hit.test_fraction == pytest.approx(hit.matched_frames / 200)
        assert hit.corpus_fraction == pytest.approx(hit.matched_frames / 260)
        seg = hit.best.segments[0]
        assert abs(seg.query_start - 100) <= 2 and abs(seg.reference_start - 120) <= 2
        assert hit.as_dict()["test_video"] == "T1"
    with pytest.raises(ValueError, match="video 'bad'"):
        find_leakage({"bad": np.zeros((3, 2), np.uint64)}, test)
