"""Tests of the synthetic surgical world: Cholec80 file format, real H.264, determinism, and that motion is the label."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from unisurg.synth.generate import PHASES, TOOLS, generate_dataset, plan_video, render_video
from unisurg.synth.render import FrameRenderer

# Written out from the Cholec80 files themselves (not from the module's constants).
CHOLEC80_PHASES = {
    "Preparation",
    "CalotTriangleDissection",
    "ClippingCutting",
    "GallbladderDissection",
    "GallbladderPackaging",
    "CleaningCoagulation",
    "GallbladderRetraction",
}
PHASE_HEADER = b"Frame\tPhase\n"
TOOL_HEADER = b"Frame\tGrasper\tBipolar\tHook\tScissors\tClipper\tIrrigator\tSpecimenBag\n"

SMALL = dict(n_videos=2, seconds=8.0, height=64, width=96, fps=25, seed=0, progress=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    return out, generate_dataset(out, **SMALL)


def _decode(path: str | Path, fmt: str = "rgb24") -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format=fmt) for f in c.decode(video=0)])


def _parse_phase(data: bytes) -> list[tuple[int, str]]:
    assert data.startswith(PHASE_HEADER)
    assert data.endswith(b"\n") and b"\r" not in data
    rows = []
    for k, line in enumerate(data.decode("ascii").split("\n")[1:-1]):
        m = re.fullmatch(r"(\d+)\t([A-Za-z]+)", line)
        assert m, f"phase row {k + 2} malformed: {line!r}"
        rows.append((int(m.group(1)), m.group(2)))
    return rows


def _parse_tool(data: bytes) -> list[tuple[int, list[int]]]:
    assert data.startswith(TOOL_HEADER)
    assert data.endswith(b"\n") and b"\r" not in data
    rows = []
    for k, line in enumerate(data.decode("ascii").split("\n")[1:-1]):
        m = re.fullmatch(r"(\d+)" + r"\t([01])" * 7, line)
        assert m, f"tool row {k + 2} malformed: {line!r}"
        rows.append((int(m.group(1)), [int(x) for x in m.groups()[1:]]))
    return rows


def test_constants_are_cholec80():
    assert set(PHASES) == CHOLEC80_PHASES and len(PHASES) == 7
    assert PHASES[0] == "Preparation" and PHASES[-1] == "GallbladderRetraction"
    assert "\t".join(TOOLS).encode() == TOOL_HEADER[len(b"Frame\t") : -1]


def test_layout_and_annotation_format(dataset):
    out, summary = dataset
    assert json.loads(json.dumps(summary)) == summary  # JSON-ready
    meta = json.loads((out / "synth.json").read_text())
    assert meta["complete"] and meta["params"]["seed"] == 0 and meta["params"]["n_videos"] == 2
    assert [v["id"] for v in summary["videos"]] == ["video01", "video02"]
    for v in summary["videos"]:
        assert Path(v["video"]) == out / "videos" / f"{v['id']}.mp4"
        phases = _parse_phase((out / "phase_annotations" / f"{v['id']}-phase.txt").read_bytes())
        tools = _parse_tool((out / "tool_annotations" / f"{v['id']}-tool.txt").read_bytes())
        n = len(_decode(v["video"]))
        assert n == v["n_frames"] == len(phases) == 200
        assert [f for f, _ in phases] == list(range(n))
        assert {p for _, p in phases} <= CHOLEC80_PHASES
        assert [f for f, _ in tools] == list(range(0, n, 25))
        # Segments in the summary agree with the per-frame rows.
        from_rows = [p for _, p in phases]
        from_segments = [s["phase"] for s in v["segments"] for _ in range(s["end"] - s["start"])]
        assert from_rows == from_segments
        # Tool presence follows the phase's instruments (table written from the design, not the code).
        working = {
            "Preparation": {"Hook"},
            "CalotTriangleDissection": {"Hook"},
            "GallbladderDissection": {"Hook"},
            "ClippingCutting": {"Clipper", "Scissors"},
            "GallbladderPackaging": {"SpecimenBag"},
            "GallbladderRetraction": {"SpecimenBag"},
            "CleaningCoagulation": {"Irrigator"},
        }
        names = TOOL_HEADER.decode().strip().split("\t")[1:]
        for f, flags in tools:
            present = {name for name, x in zip(names, flags) if x}
            phase = phases[f][1]
            assert present & working[phase], (v["id"], f, phase, present)
            if "Hook" in present:
                assert phase in ("Preparation", "CalotTriangleDissection", "GallbladderDissection")


def test_real_h264_at_requested_fps_and_size(tmp_path):
    summary = generate_dataset(tmp_path / "d", n_videos=1, seconds=6.0, height=48, width=80, fps=10, seed=3, progress=False)
    v = summary["videos"][0]
    with av.open(v["video"]) as c:
        s = c.streams.video[0]
        assert c.format.name.startswith("mov,mp4")
        assert s.codec_context.name == "h264"
        assert s.codec_context.pix_fmt == "yuv420p"
        assert (s.width, s.height) == (80, 48)
        assert s.average_rate == 10
        frames = list(c.decode(video=0))
    assert len(frames) == v["n_frames"] == 60
    assert [round(float(f.time) * 10) for f in frames] == list(range(60))
    tools = _parse_tool(Path(v["tool"]).read_bytes())
    assert [f for f, _ in tools] == [0, 25, 50]


def test_lossless_encode_returns_the_rendered_frames(tmp_path):
    plan = plan_video(5, 0, seconds=1.2, height=32, width=48)
    render_video(plan, tmp_path / "v.mp4", crf=0)
    decoded = _decode(tmp_path / "v.mp4", fmt="yuv420p")
    r = FrameRenderer(plan)
    rendered = np.stack([r.render_yuv(i) for i in range(plan.n_frames)])
    np.testing.assert_array_equal(decoded, rendered)


def test_deterministic_and_parallel_equals_serial(dataset, tmp_path):
    out, summary = dataset
    again = generate_dataset(tmp_path / "again", **{**SMALL, "workers": 2})
    for a, b in zip(summary["videos"], again["videos"]):
        for key in ("phase", "tool"):
            assert Path(a[key]).read_bytes() == Path(b[key]).read_bytes()
        np.testing.assert_array_equal(_decode(a["video"]), _decode(b["video"]))
    other = generate_dataset(tmp_path / "seed1", **{**SMALL, "n_videos": 1, "seed": 1})
    assert Path(other["videos"][0]["phase"]).read_bytes() != Path(summary["videos"][0]["phase"]).read_bytes()
    diff = np.abs(_decode(other["videos"][0]["video"]).astype(int) - _decode(summary["videos"][0]["video"]).astype(int))
    assert diff.mean() > 10


def test_rerun_reuses_and_refuses_foreign_or_changed(dataset, tmp_path):
    out, summary = dataset
    mtimes = [Path(v["video"]).stat().st_mtime_ns for v in summary["videos"]]
    again = generate_dataset(out, **SMALL)
    assert all(v["reused"] for v in again["videos"])
    assert [Path(v["video"]).stat().st_mtime_ns for v in again["videos"]] == mtimes
    with pytest.raises(ValueError, match="other parameters.*seed"):
        generate_dataset(out, **{**SMALL, "seed": 9})
    foreign = tmp_path / "cholec80"
    (foreign / "phase_annotations").mkdir(parents=True)
    (foreign / "phase_annotations" / "video01-phase.txt").write_text("Frame\tPhase\n")
    with pytest.raises(ValueError, match="not made by unisurg synth"):
        generate_dataset(foreign, **SMALL)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(width=95), "width must be an even"),
        (dict(height=8), "height must be an even"),
        (dict(fps=0), "fps must be"),
        (dict(n_videos=0), "n_videos"),
        (dict(seconds=-1.0), "seconds must be"),
    ],
)
def test_bad_parameters_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_dataset(tmp_path / "x", **{**SMALL, **kwargs})


def test_too_short_for_seven_phases_says_how_to_fix():
    with pytest.raises(ValueError, match="more seconds"):
        plan_video(0, 0, seconds=0.2, fps=25, min_phase_seconds=1.0)


def test_procedures_canonical_with_variation():
    canonical = list(PHASES)
    swapped = canonical[:4] + [canonical[5], canonical[4], canonical[6]]
    seen_swap = seen_skip = 0
    for i in range(150):
        plan = plan_video(11, i, seconds=60.0, fps=1, height=48, width=64)
        order = [PHASES[p] for p, _, _ in plan.segments]
        lengths = [b - a for _, a, b in plan.segments]
        assert plan.segments[0][1] == 0 and plan.segments[-1][2] == plan.n_frames == 60
        assert all(a == b for (_, _, a), (_, b, _) in zip(plan.segments[:-1], plan.segments[1:]))
        assert min(lengths) >= 4  # 4 s floor at 1 fps
        assert order in (canonical, swapped, canonical[1:], swapped[1:]), order
        seen_swap += order[-3] == "CleaningCoagulation"
        seen_skip += order[0] != "Preparation"
    assert 20 <= seen_swap <= 70 and 3 <= seen_skip <= 30  # 30% and 10% by design


def test_instrument_is_drawn_where_the_plan_puts_its_tip():
    plan = plan_video(2, 0, seconds=20.0, fps=5, height=96, width=128)
    r = FrameRenderer(plan)
    hand = plan.hands[0]
    hits = checked = 0
    for i in range(0, plan.n_frames, 7):
        x, y = np.round(hand.tip[i]).astype(int)
        if hand.kind[i] < 0 or not (2 <= x < 126 and 2 <= y < 94):
            continue
        with_tools = r.render(i).astype(int)
        without = r.render(i, tools=False).astype(int)
        checked += 1
        hits += np.abs(with_tools[y - 1 : y + 2, x - 1 : x + 2] - without[y - 1 : y + 2, x - 1 : x + 2]).max() > 20
    assert checked >= 10 and hits == checked


# ---------- motion is the label ----------


def _frame_features(rgb: np.ndarray) -> np.ndarray:
    """Single-frame statistics: mean and std colour, 4x4 grid of mean luminance."""
    f = rgb.astype(np.float64)
    h, w = f.shape[:2]
    grid = f.mean(2)[: h // 4 * 4, : w // 4 * 4].reshape(4, h // 4, 4, w // 4).mean((1, 3)).ravel()
    return np.concatenate([f.reshape(-1, 3).mean(0), f.reshape(-1, 3).std(0), grid])


def _cw_statistic(xy: np.ndarray) -> float:
    """Mean turn of a track, cross(d_k, d_k+1) of consecutive steps: > 0 = clockwise on screen (y points down)."""
    d = np.diff(xy, axis=0)
    return float(np.mean(d[:-1, 0] * d[1:, 1] - d[:-1, 1] * d[1:, 0]))


def test_motion_only_phase_pairs_single_frame_inseparable_motion_separable():
    """Calot vs GB dissection (orbit direction) and packaging vs retraction (oscillation speed), at 1 fps.

    A logistic regression on single-frame statistics, cross-validated across videos, stays near
    chance; the same classifier on a motion statistic of the 1 fps tip track separates them.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fps, h, w = 5, 48, 64
    rows = []  # (video, phase, single-frame features, orbit statistic, speed statistic)
    for v in range(20):
        plan = plan_video(7, v, seconds=60.0, fps=fps, height=h, width=w)
        r = FrameRenderer(plan)
        tip = plan.hands[0].tip
        for p, a, b in plan.segments:
            if PHASES[p] not in ("CalotTriangleDissection", "GallbladderDissection", "GallbladderPackaging", "GallbladderRetraction"):
                continue
            lo, hi = a + fps, b - fps // 2  # after the entry slide, before the exit slide
            for s in range(lo, hi - 3 * fps, fps):
                win = tip[s : s + 3 * fps + 1 : fps]  # 4 samples at 1 fps
                i = s + fps
                speed = np.linalg.norm(np.diff(win, axis=0), axis=1).mean() / w
                rows.append((v, PHASES[p], _frame_features(r.render(i)), _cw_statistic(win) / w**2, speed))

    def accuracy(a: str, b: str, feature) -> float:
        sel = [row for row in rows if row[1] in (a, b)]
        x = np.array([np.atleast_1d(feature(row)) for row in sel])
        y = np.array([row[1] == a for row in sel])
        groups = np.array([row[0] for row in sel])
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        return float(cross_val_score(clf, x, y, groups=groups, cv=GroupKFold(4)).mean())

    calot, gbd, pack, retr = "CalotTriangleDissection", "GallbladderDissection", "GallbladderPackaging", "GallbladderRetraction"
    assert accuracy(calot, gbd, lambda row: row[2]) < 0.65
    assert accuracy(pack, retr, lambda row: row[2]) < 0.65
    assert accuracy(calot, gbd, lambda row: row[3]) > 0.95
    assert accuracy(pack, retr, lambda row: row[4]) > 0.9
    # Direction by design: Calot clockwise, GB dissection counter-clockwise on screen.
    cw = np.array([row[3] for row in rows if row[1] == calot])
    ccw = np.array([row[3] for row in rows if row[1] == gbd])
    assert (cw > 0).mean() > 0.95 and (ccw < 0).mean() > 0.95


def test_preparation_sweeps_left_to_right_in_the_pixels():
    """The hook's tip, located in rendered pixels (frame with vs without instruments), moves right at 1 fps.

    Most 1 s steps go right; a 1 fps sample that lands inside the quick return gives two left steps.
    """
    fps, h, w = 5, 72, 96
    steps = []
    for v in range(20):
        plan = plan_video(13, v, seconds=60.0, fps=fps, height=h, width=w)
        right_only = (plan.hands[0], dataclasses.replace(plan.hands[1], kind=np.full(plan.n_frames, -1)))
        plan = dataclasses.replace(plan, hands=right_only)
        r = FrameRenderer(plan)
        for p, a, b in plan.segments:
            if PHASES[p] != "Preparation":
                continue
            xs = []
            for i in range(a + fps, b, fps):
                mask = np.abs(r.render(i).astype(int) - r.render(i, tools=False).astype(int)).max(2) > 40
                cols = np.nonzero(mask.any(0))[0]
                # The shaft enters from the right border, so the tip is the leftmost instrument pixel.
                xs.append(cols.min() if len(cols) else np.nan)
            steps.extend(np.diff(xs))
    steps = np.array(steps)
    steps = steps[np.isfinite(steps)]
    assert len(steps) >= 50
    assert (steps > 0).mean() > 0.6 and np.median(steps) > 0.03 * w
