"""Benchmark metrics against independent references: scikit-learn, scipy, naive loops, hand-computed cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

import unisurg.evaluation.metrics as M

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL = SHARED / "real-data"


def _ap_sklearn(t, s):
    """Reference AP of one class; only called with at least one positive."""
    return skm.average_precision_score(t, s)


# ----------------------------------------------------------------------------- average precision

def test_average_precision_matches_sklearn_with_ties_and_degenerate_columns():
    rng = np.random.default_rng(0)
    n, c = 60, 9
    t = rng.integers(0, 2, (n, c))
    s = np.round(rng.random((n, c)), 1)  # many ties
    t[:, 0] = 1  # all positive
    t[:, 1] = 0
    t[7, 1] = 1  # a single positive
    s[:, 2] = 0.5  # constant scores
    s[:, 3] = rng.integers(0, 3, n)  # integer scores
    ap = M.average_precision(t, s)
    ref = skm.average_precision_score(t, s, average=None)
    np.testing.assert_allclose(ap, ref, rtol=0, atol=1e-12)
    assert M.average_precision(t[:, 4], s[:, 4]) == pytest.approx(ref[4], abs=1e-12)


def test_average_precision_is_nan_for_class_without_positive():
    t = np.array([[1, 0], [0, 0], [1, 0]])
    s = np.array([[0.9, 0.8], [0.2, 0.1], [0.4, 0.3]])
    ap = M.average_precision(t, s)
    assert ap[0] == pytest.approx(1.0)
    assert np.isnan(ap[1])


# ----------------------------------------------------------------------------- phase recognition (strict)

def _random_videos(rng, n_videos, k, lengths=(30, 80)):
    videos = []
    for _ in range(n_videos):
        n = int(rng.integers(*lengths))
        # piecewise-constant GT over a random subset of phases, noisy predictions
        present = np.sort(rng.choice(k, size=int(rng.integers(2, k + 1)), replace=False))
        cuts = np.sort(rng.choice(np.arange(1, n), size=present.size - 1, replace=False))
        yt = np.repeat(present, np.diff(np.r_[0, cuts, n]))
        yp = np.where(rng.random(n) < 0.3, rng.integers(0, k, n), yt)
        videos.append((yt, yp))
    return videos


def test_phase_metrics_strict_match_sklearn_per_video_over_gt_present_phases():
    rng = np.random.default_rng(1)
    k = 7
    videos = _random_videos(rng, 6, k)
    res = M.phase_metrics(videos, n_classes=k)
    ref = {m: [] for m in ("accuracy", "precision", "recall", "f1", "jaccard")}
    for (yt, yp), row in zip(videos, res["per_video"]):
        labels = np.unique(yt)  # phases present in this video's ground truth
        kw = dict(labels=labels, average="macro", zero_division=0)
        vals = {"accuracy": skm.accuracy_score(yt, yp), "precision": skm.precision_score(yt, yp, **kw),
                "recall": skm.recall_score(yt, yp, **kw), "f1": skm.f1_score(yt, yp, **kw),
                "jaccard": skm.jaccard_score(yt, yp, **kw)}
        for m, v in vals.items():
            assert row[m] == pytest.approx(v, abs=1e-12), m
            ref[m].append(v)
        assert row["n_phases_present"] == labels.size
    for m, v in ref.items():
        assert res["mean"][m] == pytest.approx(np.mean(v), abs=1e-12)
        assert res["std"][m] == pytest.approx(np.std(v, ddof=1), abs=1e-12)


def test_phase_metrics_matlab_style_phase_aggregation():
    rng = np.random.default_rng(2)
    k = 5
    videos = _random_videos(rng, 4, k)
    res = M.phase_metrics(videos, n_classes=k)
    # naive: per phase, mean of sklearn per-class F1 over the videos where the phase is in GT; then over phases
    per_phase = []
    for c in range(k):
        vals = [skm.f1_score(yt, yp, labels=[c], average="macro", zero_division=0)
                for yt, yp in videos if np.any(yt == c)]
        if vals:
            per_phase.append(np.mean(vals))
    assert res["phase_mean"]["f1"] == pytest.approx(np.mean(per_phase), abs=1e-12)
    assert res["phase_std"]["f1"] == pytest.approx(np.std(per_phase, ddof=1), abs=1e-12)


def test_phase_predicted_but_absent_from_gt_is_not_averaged_but_hurts_the_gt_phase():
    yt = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    yp = np.array([0, 0, 2, 2, 1, 1, 1, 1])  # phase 2 never occurs in GT
    row = M.phase_metrics([(yt, yp)], n_classes=3)["per_video"][0]
    # phase 0: P = 2/2, R = 2/4, F1 = 2*2/(4+2) = 2/3, J = 2/4; phase 1 perfect. Phase 2 not averaged.
    assert row["precision"] == pytest.approx((1 + 1) / 2)
    assert row["recall"] == pytest.approx((0.5 + 1) / 2)
    assert row["f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert row["jaccard"] == pytest.approx((0.5 + 1) / 2)
    assert row["accuracy"] == pytest.approx(6 / 8)


# ----------------------------------------------------------------------------- relaxed boundary (hand-computed)

def test_relaxed_cholec80_general_rule_and_matlab_early_quirk():
    # window 2. Frames 3,4: GT 0, predicted 1 (early transition). Frames 5,6: GT 1, predicted 0 (late).
    yt = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2])
    yp = np.array([0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    ok = M.relaxed_correct(yt, yp, "cholec80", window=2)
    # MATLAB: the early mask zeroes frames 0,1 of the segment (already right), so 3,4 stay errors.
    np.testing.assert_array_equal(ok, [1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    ok_end = M.relaxed_correct(yt, yp, "cholec80", window=2, early_window="end")
    assert ok_end.all()
    sc = M.relaxed_phase_scores(yt, yp, "cholec80", window=2)
    # phase 0: union = frames 0..6 (7), tp = 5 (0,1,2 and forgiven 5,6); P = 5/5;
    # R = 5/5 (forgiven frames of phase 1 count for phase 0)
    np.testing.assert_allclose(sc["jaccard"][:3], [5 / 7, 5 / 7, 1.0])
    np.testing.assert_allclose(sc["precision"][:3], [1, 1, 1])
    np.testing.assert_allclose(sc["recall"][:3], [1, 1, 1])
    assert np.isnan(sc["jaccard"][3:]).all()
    assert sc["accuracy"] == pytest.approx(12 / 14)
    # early_window="end": tp = 7 > #pred = 5 -> precision 7/5 clipped to 1, as Main.m clips at 100
    sc_end = M.relaxed_phase_scores(yt, yp, "cholec80", window=2, early_window="end")
    np.testing.assert_allclose(sc_end["precision"][:3], [1, 1, 1])
    np.testing.assert_allclose(sc_end["jaccard"][:3], [1, 1, 1])
    row = M.phase_metrics([(yt, yp)], 7, relaxed="cholec80", window=2)["per_video"][0]
    assert row["jaccard"] == pytest.approx(17 / 21)
    assert row["accuracy"] == pytest.approx(6 / 7)


def test_relaxed_matlab_quirk_forgives_a_wrong_first_frame():
    yt = np.array([1, 1, 1, 1, 1, 1])
    yp = np.array([4, 1, 1, 1, 2, 1])  # diff [3, 0, 0, 0, 1, 0]; last-2 mask [True, False] lands on frame 0
    np.testing.assert_array_equal(M.relaxed_correct(yt, yp, "cholec80", window=2), [1, 1, 1, 1, 0, 1])
    np.testing.assert_array_equal(M.relaxed_correct(yt, yp, "cholec80", window=2, early_window="end"),
                                  [0, 1, 1, 1, 1, 1])


def test_relaxed_cholec80_special_phases():
    yt = np.array([3, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6])
    yp = np.array([3, 3, 5, 4, 4, 4, 3, 5, 5, 6, 6, 4])
    # frame 2: +2 early in GallbladderDissection (allowed {+1,+2}) -> only forgiven with early_window="end"
    # frame 6: -2 late in CleaningCoagulation (allowed {-1,-2}) -> forgiven
    # frame 11: -2 at the end of GallbladderRetraction -> never forgiven
    np.testing.assert_array_equal(M.relaxed_correct(yt, yp, "cholec80", window=2),
                                  [1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(M.relaxed_correct(yt, yp, "cholec80", window=2, early_window="end"),
                                  [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0])


def test_relaxed_never_predicted_phase_has_nan_precision_and_zero_f1():
    yt = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    yp = np.array([0, 0, 0, 3, 3, 3, 3, 3])  # diff +2 inside phase 1: never forgiven by the default rule
    sc = M.relaxed_phase_scores(yt, yp, "cholec80", window=2)
    assert np.isnan(sc["precision"][1]) and sc["recall"][1] == 0 and sc["f1"][1] == 0 and sc["jaccard"][1] == 0
    row = M.phase_metrics([(yt, yp)], 7, relaxed="cholec80", window=2)["per_video"][0]
    # Main.m's nanmean skips the undefined precision; phase 3 (predicted, absent from GT) is not averaged
    assert row["precision"] == 1.0 and row["recall"] == 0.5 and row["f1"] == 0.5 and row["jaccard"] == 0.5


def test_relaxed_m2cai16_rules_are_shifted_by_one_phase():
    yt = np.array([3, 3, 3, 3])
    yp = np.array([3, 3, 3, 5])  # +2 early transition
    # Cholec80 phase 3 = GallbladderDissection (early {+1,+2}); M2CAI phase 3 = ClippingCutting (early {+1})
    assert M.relaxed_correct(yt, yp, "cholec80", 2, "end").all()
    np.testing.assert_array_equal(M.relaxed_correct(yt, yp, "m2cai16", 2, "end"), [1, 1, 1, 0])
    # window 0 = no relaxation
    assert M.relaxed_correct(yt, yp, "cholec80", 0).sum() == 3


def _cholec80_1fps(path: Path) -> np.ndarray:
    names = list(M.CHOLEC80_PHASES)
    lines = path.read_text().splitlines()[1:]
    return np.array([names.index(line.split("\t")[1].strip()) for line in lines[::25]])


@pytest.mark.skipif(not (REAL / "cholec80").is_dir(), reason="shared real-data/cholec80 not present")
def test_relaxed_on_real_cholec80_video41_with_5s_delayed_prediction():
    yt = _cholec80_1fps(REAL / "cholec80" / "video41-phase.txt")
    assert yt.size == 3104
    yp = np.r_[np.full(5, yt[0]), yt[:-5]]  # the prediction lags the ground truth by 5 s
    # transitions 0->1->2->3->5->4->6: 6 x 5 frames wrong frame-exactly; relaxed forgives -1 everywhere,
    # -2 at the start of phases 5 and 6, but not +1 at the start of GallbladderPackaging (4) after 5.
    strict = M.phase_metrics([(yt, yp)], 7)["per_video"][0]
    relaxed = M.phase_metrics([(yt, yp)], 7, relaxed="cholec80", window=10)["per_video"][0]
    assert strict["accuracy"] == pytest.approx(1 - 30 / 3104)
    assert relaxed["accuracy"] == pytest.approx(1 - 5 / 3104)
    perfect = M.phase_metrics([(yt, yt)], 7, relaxed="cholec80")["mean"]
    assert all(perfect[m] == 1.0 for m in ("accuracy", "precision", "recall", "f1", "jaccard", "edit"))
    v13 = _cholec80_1fps(REAL / "cholec80" / "video13-phase.txt")  # no Preparation; sequential order
    d13 = np.r_[np.full(5, v13[0]), v13[:-5]]
    row = M.phase_metrics([(v13, d13)], 7, relaxed="cholec80")["per_video"][0]
    assert row["n_phases_present"] == 6 and row["accuracy"] == 1.0


# ----------------------------------------------------------------------------- edit score, F1@k

def _naive_levenshtein(a, b):
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1][-1]


def test_levenshtein_against_naive_dp_and_known_pair():
    enc = {ch: i for i, ch in enumerate("kitensg")}
    assert M.levenshtein([enc[c] for c in "kitten"], [enc[c] for c in "sitting"]) == 3
    rng = np.random.default_rng(3)
    for _ in range(30):
        a = rng.integers(0, 4, rng.integers(0, 12)).tolist()
        b = rng.integers(0, 4, rng.integers(0, 12)).tolist()
        assert M.levenshtein(a, b) == _naive_levenshtein(a, b)


def test_edit_score_on_hand_made_segments():
    yt = [0, 0, 1, 1, 1, 2, 2]  # segments 0 1 2
    yp = [0, 2, 2, 1, 1, 2, 2]  # segments 0 2 1 2 -> one deletion
    assert M.edit_score(yt, yp) == pytest.approx(1 - 1 / 4)
    assert M.edit_score(yt, yt) == 1.0
    # background label 9 is dropped from both segment lists
    assert M.edit_score([9, 0, 0, 9, 1], [0, 9, 0, 1, 1], background=[9]) == pytest.approx(1 - 1 / 3)
    labels, starts, ends = M.segments([4, 4, 1, 1, 1, 4])
    assert labels.tolist() == [4, 1, 4] and starts.tolist() == [0, 2, 5] and ends.tolist() == [2, 5, 6]


def test_segmental_f1_pooled_over_videos():
    v1 = (np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1]))
    # predicted 0:[0,2) IoU 2/4 with GT 0; predicted 1:[2,10) IoU 6/8 with GT 1
    f = M.segmental_f1([v1], overlaps=(0.1, 0.5, 0.6, 0.8))
    assert f[0.1] == 1.0 and f[0.5] == 1.0 and f[0.6] == pytest.approx(0.5) and f[0.8] == 0.0
    v2 = (np.array([2, 2, 2, 2]), np.array([2, 2, 3, 3]))  # tp 1, fp 1 at 0.1
    f2 = M.segmental_f1([v1, v2], overlaps=(0.1,))
    p, r = 3 / 4, 3 / 3
    assert f2[0.1] == pytest.approx(2 * p * r / (p + r))


# ----------------------------------------------------------------------------- triplets

def test_packaged_mapping_shape_and_null_triplets():
    m = M.load_ivt_mapping()
    assert m.shape == (100, 6)
    assert M.null_triplets().tolist() == [94, 95, 96, 97, 98, 99]
    assert [M.component_classes(c).size for c in ("i", "v", "t", "iv", "it", "ivt")] == [6, 10, 15, 26, 59, 100]


@pytest.mark.skipif(not (REAL / "cholect50").is_dir(), reason="shared real-data/cholect50 not present")
def test_packaged_mapping_equals_the_real_ivtmetrics_file():
    real = REAL / "cholect50" / "label_mapping_ivtmetrics_maps.txt"
    packaged = Path(M.__file__).parent / "cholect50_maps.txt"

    def data_lines(p):
        return [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]

    assert data_lines(real) == data_lines(packaged)
    assert "# IVT, I, V, T, IV, IT" in real.read_text() and "# IVT, I, V, T, IV, IT" in packaged.read_text()
    np.testing.assert_array_equal(M.load_ivt_mapping(real), M.load_ivt_mapping())


def test_component_max_mapping_two_triplets():
    # map rows: triplet 0 -> I0 V2 T1 IV2 IT1; triplet 1 -> I0 V2 T0 IV2 IT0
    x = np.zeros((1, 100))
    x[0, 0], x[0, 1] = 0.3, 0.7
    comp = {}
    for c in ("i", "v", "t", "iv", "it"):
        vals, ids = M.component_scores(x, c)
        comp[c] = dict(zip(ids.tolist(), vals[0].tolist()))
    assert comp["i"][0] == 0.7  # both triplets use instrument 0: max
    assert comp["v"][2] == 0.7  # both use verb 2
    assert comp["t"][1] == 0.3 and comp["t"][0] == 0.7  # different targets
    assert comp["iv"][2] == 0.7 and comp["it"][1] == 0.3 and comp["it"][0] == 0.7
    assert comp["i"][1] == 0.0
    # a 2-triplet mapping of our own: both triplets share instrument 0, differ in verb
    tiny = np.array([[0, 0, 0, 0, 0, 0], [1, 0, 1, 0, 1, 0]])
    vals, ids = M.component_scores(np.array([[0.2, 0.9], [0.6, 0.1]]), "i", tiny)
    assert ids.tolist() == [0] and vals[:, 0].tolist() == [0.9, 0.6]
    vals, ids = M.component_scores(np.array([[0.2, 0.9]]), "v", tiny)
    assert ids.tolist() == [0, 1] and vals[0].tolist() == [0.2, 0.9]


def test_component_scores_match_naive_loop():
    rng = np.random.default_rng(4)
    m = M.load_ivt_mapping()
    x = rng.random((5, 100))
    for comp, col in (("i", 1), ("v", 2), ("t", 3), ("iv", 4), ("it", 5)):
        vals, ids = M.component_scores(x, comp)
        for j, cid in enumerate(ids):
            rows = [r for r in range(100) if m[r, col] == cid]
            np.testing.assert_array_equal(vals[:, j], x[:, rows].max(axis=1))
    assert np.array_equal(M.component_scores(x, "ivt")[0], x)


def _ivtmetrics_videowise_reference(videos, comp):
    """ivtmetrics compute_video_AP semantics, written as loops, with exclusion decided by the labels."""
    per_video = []
    for t, s in videos:
        tc, _ = M.component_scores(t, comp)
        sc, _ = M.component_scores(s, comp)
        per_video.append([_ap_sklearn(tc[:, c], sc[:, c]) if tc[:, c].any() else np.nan
                          for c in range(tc.shape[1])])
    per_video = np.array(per_video)
    per_class = [np.mean(col[~np.isnan(col)]) if (~np.isnan(col)).any() else np.nan for col in per_video.T]
    per_class = np.array(per_class)
    return per_class, np.mean(per_class[~np.isnan(per_class)])


def _random_triplet_videos(rng, n_videos=3, n=40):
    videos = []
    for _ in range(n_videos):
        t = np.zeros((n, 100), dtype=int)
        active = rng.choice(100, size=12, replace=False)  # each video uses a few triplets
        t[:, active] = rng.random((n, 12)) < 0.3
        s = np.round(rng.random((n, 100)), 2)
        videos.append((t, s))
    return videos


def test_triplet_videowise_ap_matches_ivtmetrics_semantics_with_label_exclusion():
    rng = np.random.default_rng(5)
    videos = _random_triplet_videos(rng)
    for comp in M.IVT_COMPONENTS:
        res = M.triplet_ap(videos, comp, mode="video")
        ref_ap, ref_map = _ivtmetrics_videowise_reference(videos, comp)
        np.testing.assert_allclose(res["AP"], ref_ap, atol=1e-12)
        assert res["mAP"] == pytest.approx(ref_map, abs=1e-12)
    # per-class averaging across videos differs from the mean of per-video mAPs
    res = M.triplet_ap(videos, "ivt")
    assert res["mAP"] != pytest.approx(np.nanmean(res["per_video_mAP"]), abs=1e-6)


def test_triplet_class_without_positive_in_a_video_is_excluded():
    t1 = np.zeros((4, 100), int)
    t1[[0, 2], 5] = 1
    s1 = np.zeros((4, 100))
    s1[:, 5] = [0.9, 0.8, 0.7, 0.1]
    t2 = np.zeros((3, 100), int)  # triplet 5 never occurs in video 2
    s2 = np.zeros((3, 100))
    s2[:, 5] = [0.9, 0.2, 0.1]
    ap_v1 = _ap_sklearn(t1[:, 5], s1[:, 5])  # (1 + 2/3) / 2
    assert ap_v1 == pytest.approx((1 + 2 / 3) / 2)
    with pytest.warns(UserWarning):
        naive_v2 = skm.average_precision_score(t2[:, 5], s2[:, 5])
    assert naive_v2 == 0.0 or np.isnan(naive_v2)  # 0.0 on scikit-learn >= 1.6: the ivtmetrics pitfall
    res = M.triplet_ap([(t1, s1), (t2, s2)], "ivt")
    assert np.isnan(res["per_video_AP"][1, 5])
    assert res["AP"][5] == pytest.approx(ap_v1)  # not (ap_v1 + 0) / 2
    assert res["mAP"] == pytest.approx(ap_v1)  # the only class with any positive
    assert np.isnan(res["AP"][6])


def test_triplet_global_ap_and_ignore_null():
    rng = np.random.default_rng(6)
    videos = _random_triplet_videos(rng)
    t = np.concatenate([v[0] for v in videos])
    s = np.concatenate([v[1] for v in videos])
    t[:5, 97] = 1  # make a null triplet positive
    videos = [(t[:40], s[:40]), (t[40:80], s[40:80]), (t[80:], s[80:])]
    res = M.triplet_ap(videos, "ivt", mode="global")
    ref = np.array([_ap_sklearn(t[:, c], s[:, c]) if t[:, c].any() else np.nan for c in range(100)])
    np.testing.assert_allclose(res["AP"], ref, atol=1e-12)
    assert res["mAP"] == pytest.approx(np.nanmean(ref))
    nn = M.triplet_ap(videos, "ivt", mode="global", ignore_null=True)
    assert nn["classes"].tolist() == list(range(94))
    assert nn["mAP"] == pytest.approx(np.nanmean(ref[:94]))
    # ignore_null only concerns IVT, as in ivtmetrics
    assert M.triplet_ap(videos, "v", "global", True)["classes"].size == 10
    allm = M.triplet_metrics(videos, mode="global")
    assert allm["mAP"]["ivt"] == pytest.approx(res["mAP"])


# ----------------------------------------------------------------------------- classification

def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(7)
    yt = rng.integers(0, 6, 80)
    yp = np.where(rng.random(80) < 0.5, yt, rng.integers(0, 7, 80))  # class 6 only predicted
    res = M.classification_metrics(yt, yp)
    assert res["accuracy"] == pytest.approx(skm.accuracy_score(yt, yp))
    for key, fn in (("macro_f1", skm.f1_score), ("macro_precision", skm.precision_score),
                    ("macro_recall", skm.recall_score)):
        assert res[key] == pytest.approx(fn(yt, yp, average="macro", zero_division=0), abs=1e-12), key
    labels = list(range(8))
    assert M.macro_f1(yt, yp, labels) == pytest.approx(
        skm.f1_score(yt, yp, labels=labels, average="macro", zero_division=0), abs=1e-12)


def test_multilabel_map_matches_sklearn_over_classes_with_positives():
    rng = np.random.default_rng(8)
    t = rng.integers(0, 2, (50, 5))
    t[:, 3] = 0
    s = rng.random((50, 5))
    res = M.multilabel_map(t, s)
    keep = [0, 1, 2, 4]
    assert np.isnan(res["AP"][3])
    assert res["mAP"] == pytest.approx(skm.average_precision_score(t[:, keep], s[:, keep], average="macro"))


# ----------------------------------------------------------------------------- skill regression

def test_mae_and_spearman_match_sklearn_and_scipy_with_ties():
    rng = np.random.default_rng(9)
    yt = rng.integers(6, 31, 40).astype(float)  # GRS-like, many ties
    yp = np.round(yt + rng.normal(0, 4, 40))  # ties too
    assert M.mae(yt, yp) == pytest.approx(skm.mean_absolute_error(yt, yp))
    assert M.spearman(yt, yp) == pytest.approx(stats.spearmanr(yt, yp).statistic, abs=1e-12)
    np.testing.assert_allclose(M.average_ranks(yt), stats.rankdata(yt))
    assert np.isnan(M.spearman([1, 2, 3], [5, 5, 5]))


def test_skill_metrics_pooled_and_per_fold():
    rng = np.random.default_rng(10)
    folds = [(rng.integers(6, 31, 6).astype(float), rng.integers(6, 31, 6).astype(float)) for _ in range(5)]
    res = M.skill_metrics(folds)
    yt = np.concatenate([f[0] for f in folds])
    yp = np.concatenate([f[1] for f in folds])
    assert res["pooled"]["spearman"] == pytest.approx(stats.spearmanr(yt, yp).statistic, abs=1e-12)
    assert res["pooled"]["mae"] == pytest.approx(np.mean(np.abs(yt - yp)))
    assert res["fold_mean"]["mae"] == pytest.approx(np.mean([np.mean(np.abs(a - b)) for a, b in folds]))
    assert M.fisher_z_mean([0.5, 0.5]) == pytest.approx(0.5)
    assert M.fisher_z_mean([0.2, 0.6]) == pytest.approx(math.tanh((math.atanh(0.2) + math.atanh(0.6)) / 2))


# ----------------------------------------------------------------------------- segmentation

def test_dice_and_mae_hand_cases_and_empty_convention():
    prob = np.array([[0.9, 0.2], [0.6, 0.4]])
    gt = np.array([[1, 0], [0, 1]])
    res = M.segmentation_metrics([prob], [gt])
    assert res["dice"] == pytest.approx(0.5)  # |P&G| = 1, |P| = |G| = 2
    assert res["iou"] == pytest.approx(1 / 3)
    assert res["mae"] == pytest.approx((0.1 + 0.2 + 0.6 + 0.6) / 4)
    empty = np.zeros((2, 2))
    assert M.dice(empty + 0.1, empty) == 1.0  # both empty: a correct "no polyp"
    assert M.dice(empty + 0.9, empty) == 0.0
    both = M.segmentation_metrics(np.stack([prob, empty]), np.stack([gt, empty.astype(int)]))
    assert both["dice"] == pytest.approx((0.5 + 1.0) / 2)


def test_dice_equals_sklearn_f1_on_random_masks():
    rng = np.random.default_rng(11)
    probs = [rng.random((9, 7)) for _ in range(4)]
    gts = [rng.random((9, 7)) < 0.4 for _ in range(4)]
    res = M.segmentation_metrics(probs, gts)
    ref = [skm.f1_score(g.ravel(), (p > 0.5).ravel()) for p, g in zip(probs, gts)]
    np.testing.assert_allclose(res["per_image"]["dice"], ref, atol=1e-12)
    np.testing.assert_allclose(res["per_image"]["mae"], [np.abs(p - g).mean() for p, g in zip(probs, gts)])


@pytest.mark.skipif(not (REAL / "kvasir_seg").is_dir(), reason="shared real-data/kvasir_seg not present")
def test_dice_on_a_real_kvasir_mask():
    simplejpeg = pytest.importorskip("simplejpeg")
    path = next(iter(sorted((REAL / "kvasir_seg" / "masks").glob("*.jpg"))))
    mask = simplejpeg.decode_jpeg(path.read_bytes(), colorspace="GRAY")[..., 0] >= 128
    assert M.dice(mask.astype(float), mask) == 1.0
    shifted = np.roll(mask, 15, axis=1).astype(float)
    assert M.dice(shifted, mask) == pytest.approx(skm.f1_score(mask.ravel(), shifted.ravel() > 0.5))


# ----------------------------------------------------------------------------- depth

def test_depth_metrics_hand_case_and_median_scaling():
    gt = np.array([[10.0, 20.0], [0.0, 40.0]])  # 0 = no depth
    pred = np.array([[11.0, 18.0], [5.0, 40.0]])
    res = M.depth_metrics([pred], [gt])
    assert res["rmse"] == pytest.approx(math.sqrt((1 + 4 + 0) / 3))
    assert res["abs_rel"] == pytest.approx((0.1 + 0.1 + 0) / 3)
    assert res["sq_rel"] == pytest.approx((1 / 10 + 4 / 20 + 0) / 3)
    assert res["delta"] == pytest.approx(1 / 3)  # 11/10 = 1.1 is not < 1.1; 20/18 > 1.1
    scaled = M.depth_metrics([2 * gt + 1e-9 * (gt == 0)], [gt], median_scaling=True)
    assert scaled["rmse"] == pytest.approx(0, abs=1e-9) and scaled["delta"] == 1.0
    assert scaled["per_image"]["scale"][0] == pytest.approx(0.5)
    assert M.c3vd_depth_to_mm(np.array([0, 65535], np.uint16)).tolist() == [0.0, 100.0]


# ----------------------------------------------------------------------------- bootstrap

def test_bootstrap_matches_scipy_percentile_bootstrap():
    rng = np.random.default_rng(12)
    x = rng.random(17)
    est, lo, hi = M.bootstrap_ci(x, n_resamples=1000, seed=42, alpha=0.05)
    ref = stats.bootstrap((x,), np.mean, n_resamples=1000, method="percentile", confidence_level=0.95,
                          rng=np.random.default_rng(42))
    assert est == pytest.approx(x.mean())
    assert lo == pytest.approx(ref.confidence_interval.low, abs=1e-12)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=1e-12)


def test_bootstrap_rows_function_path_and_nan_policy():
    rng = np.random.default_rng(13)
    rows = rng.random((11, 3))
    est, lo, hi = M.bootstrap_ci(rows, n_resamples=200)
    for j in range(3):
        assert M.bootstrap_ci(rows[:, j], n_resamples=200) == pytest.approx((est[j], lo[j], hi[j]))
    items = [{"v": float(r)} for r in rows[:, 0]]
    by_fn = M.bootstrap_ci(items, lambda vids: np.mean([d["v"] for d in vids]), n_resamples=200)
    assert by_fn == pytest.approx(M.bootstrap_ci(rows[:, 0], n_resamples=200))
    with_nan = np.r_[rows[:, 0], np.nan]
    with pytest.raises(ValueError, match="NaN"):
        M.bootstrap_ci(with_nan)
    assert M.bootstrap_ci(with_nan, nan_policy="omit", n_resamples=200) == pytest.approx(
        M.bootstrap_ci(rows[:, 0], n_resamples=200))


# ----------------------------------------------------------------------------- errors

def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"videos\[1\].*frames"):
        M.phase_metrics([([0, 1], [0, 1]), ([0, 1, 1], [0, 1])], n_classes=2)
    with pytest.raises(ValueError, match=r"out of range for n_classes=2"):
        M.phase_metrics([([0, 2], [0, 1])], n_classes=2)
    with pytest.raises(ValueError, match="7 phases"):
        M.phase_metrics([([0, 1], [0, 1])], n_classes=8, relaxed="cholec80")
    with pytest.raises(ValueError, match="0/1"):
        M.triplet_ap([(np.full((2, 100), -1), np.zeros((2, 100)))])
    bad = tmp_path / "maps.txt"
    bad.write_text("# IVT, I, V, T, IV, IT\n0,0,2,1,2,1\n1,0,2\n")
    with pytest.raises(ValueError, match=r"maps.txt:3"):
        M.load_ivt_mapping(bad)
    with pytest.raises(ValueError, match="outside"):
        M.segmentation_metrics([np.full((2, 2), 3.0)], [np.zeros((2, 2))])
