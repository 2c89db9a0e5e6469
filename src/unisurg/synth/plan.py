"""Planning half of the synthetic surgical world: what happens in a video, frame by frame.

A :class:`VideoPlan` holds everything that is decided before a pixel is drawn: the phase
segments, the instruments in each hand (kind, entry port, tip trajectory, jaw opening), the
camera drift and the smoke level. Rendering (``synth_render``) only turns a plan into pixels,
so tests and analyses can read the ground-truth motion here without decoding video.

All random draws are made in frame-size-independent units (fractions of the frame) and in
seconds, so one seed gives the same procedure at any frame size; only the per-frame processes
depend on ``fps``. See ``unisurg.synth.generate`` for the world's design.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PHASES: tuple[str, ...] = (
    "Preparation",
    "CalotTriangleDissection",
    "ClippingCutting",
    "GallbladderDissection",
    "GallbladderPackaging",
    "CleaningCoagulation",
    "GallbladderRetraction",
)
TOOLS: tuple[str, ...] = ("Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag")

# Instrument kinds as drawn; "bag" is a grasper carrying the specimen bag.
KINDS: tuple[str, ...] = ("grasper", "hook", "bipolar", "scissors", "clipper", "irrigator", "bag")
KIND_LABELS: dict[str, tuple[str, ...]] = {
    "grasper": ("Grasper",),
    "hook": ("Hook",),
    "bipolar": ("Bipolar",),
    "scissors": ("Scissors",),
    "clipper": ("Clipper",),
    "irrigator": ("Irrigator",),
    "bag": ("Grasper", "SpecimenBag"),
}

# Mean share of procedure time per phase, roughly Cholec80's (Calot and GB dissection dominate).
PHASE_SHARE = np.array([0.05, 0.36, 0.08, 0.29, 0.07, 0.08, 0.07])

# Per phase: (right-hand instrument kind(s), its motion program, left-hand kind).
# Phases sharing instruments and position distributions differ only in the motion program:
#   Preparation / CalotTriangleDissection / GallbladderDissection: hook + grasper;
#     sweep left->right (sawtooth) / clockwise orbit / counter-clockwise orbit.
#   GallbladderPackaging / GallbladderRetraction: grasper holding the bag + grasper;
#     slow / fast oscillation along the same random axis with the same amplitude.
PHASE_PROGRAM: dict[str, tuple[tuple[str, ...], str, str]] = {
    "Preparation": (("hook",), "sweep_lr", "grasper"),
    "CalotTriangleDissection": (("hook",), "orbit_cw", "grasper"),
    "ClippingCutting": (("clipper", "scissors"), "jab", "grasper"),
    "GallbladderDissection": (("hook",), "orbit_ccw", "grasper"),
    "GallbladderPackaging": (("bag",), "oscillate_slow", "grasper"),
    "CleaningCoagulation": (("irrigator",), "sweep_across", "bipolar"),
    "GallbladderRetraction": (("bag",), "oscillate_fast", "grasper"),
}
CAUTERY_KINDS = ("hook", "bipolar")  # instruments that make smoke puffs

# Motion ranges (periods in s, lengths as a fraction of frame width, speeds in widths/s).
ORBIT_PERIOD_S = (5.0, 9.0)
ORBIT_RADIUS_W = (0.08, 0.14)
SWEEP_SPEED_W = (0.06, 0.1)
SWEEP_HALF_LEN_W = (0.15, 0.22)
SWEEP_RETURN_S = 0.25  # quick repositioning; short so that few 1 fps samples land inside it
OSC_AMPLITUDE_W = (0.08, 0.11)
OSC_SLOW_PERIOD_S = (7.0, 11.0)
OSC_FAST_PERIOD_S = (2.2, 3.0)  # still above the 2 s Nyquist period of 1 fps sampling
JAB_PERIOD_S = (3.0, 5.0)
ACROSS_PERIOD_S = (3.0, 6.0)
SLIDE_IN_S = 0.6
SLIDE_OUT_S = 0.3


@dataclass
class HandTrack:
    """One hand's instrument over the whole video (screen pixels, camera drift applied).

    ``kind[i]`` indexes :data:`KINDS` (-1 = no instrument), ``tip`` and ``port`` are ``[N, 2]``
    (x, y) pixel positions of the instrument tip and of the trocar it enters through (outside the
    frame), ``jaw`` is the jaw opening in [0, 1].
    """

    kind: np.ndarray
    tip: np.ndarray
    port: np.ndarray
    jaw: np.ndarray


@dataclass
class VideoPlan:
    """Everything one synthetic video shows, decided before rendering.

    ``segments`` are ``(phase_index, start_frame, end_frame_exclusive)`` in time order;
    ``hands`` = (right hand: the phase's working instrument, left hand: the assisting one);
    ``camera`` ``[N, 2]`` is the world offset seen at frame i (the texture crop origin shift, px),
    ``zoom`` ``[N]`` the background magnification, ``smoke`` ``[N]`` the haze opacity scale.
    """

    seed: int
    index: int
    fps: int
    height: int
    width: int
    n_frames: int
    segments: list[tuple[int, int, int]]
    hands: tuple[HandTrack, HandTrack]
    camera: np.ndarray
    zoom: np.ndarray
    smoke: np.ndarray

    @property
    def phase(self) -> np.ndarray:
        """Phase index of every frame, ``[N]`` int64."""
        out = np.empty(self.n_frames, dtype=np.int64)
        for p, a, b in self.segments:
            out[a:b] = p
        return out

    @property
    def tools(self) -> np.ndarray:
        """Presence of each :data:`TOOLS` column at every frame, ``[N, 7]`` uint8."""
        out = np.zeros((self.n_frames, len(TOOLS)), dtype=np.uint8)
        for hand in self.hands:
            for k, kind in enumerate(KINDS):
                on = hand.kind == k
                for name in KIND_LABELS[kind]:
                    out[on, TOOLS.index(name)] = 1
        return out

    def segment_dicts(self) -> list[dict]:
        """Segments as JSON-ready dicts ``{"phase", "start", "end"}`` (end exclusive, frames)."""
        return [{"phase": PHASES[p], "start": int(a), "end": int(b)} for p, a, b in self.segments]


def plan_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """Independent generator per (dataset seed, video index, stream); stream 0 = plan, 1 = render."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and video index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng(np.random.SeedSequence([seed, index, stream]))


def smooth_noise(rng: np.random.Generator, t: np.ndarray, timescale_s: float, n_waves: int = 4) -> np.ndarray:
    """Slowly varying zero-mean signal of about unit variance, clipped to [-2, 2].

    A sum of ``n_waves`` sinusoids with random phases and periods in [timescale, 3 timescale]:
    cheap, smooth at every frame rate, and the draws do not depend on the number of frames.
    """
    freqs = 1.0 / (timescale_s * rng.uniform(1.0, 3.0, n_waves))
    phases = rng.uniform(0, 2 * np.pi, n_waves)
    s = np.sin(2 * np.pi * freqs[:, None] * t[None, :] + phases[:, None]).sum(0)
    return np.clip(s / np.sqrt(n_waves / 2), -2.0, 2.0)


def sample_segments(rng: np.random.Generator, n_frames: int, fps: int, min_phase_s: float) -> list[tuple[int, int, int]]:
    """Phase order and lengths of one procedure.

    Canonical Cholec80 order, with Preparation skipped in 10% of videos (as in video13) and
    GallbladderPackaging / CleaningCoagulation swapped in 30% (as in video78). Every phase gets
    ``min_phase_s`` seconds plus a share of the rest proportional to :data:`PHASE_SHARE` times a
    log-normal factor, so lengths scale with the video duration.
    """
    order = list(range(len(PHASES)))
    if rng.random() < 0.3:
        order[4], order[5] = order[5], order[4]
    if rng.random() < 0.1:
        order = order[1:]
    min_frames = int(round(min_phase_s * fps))
    spare = n_frames - min_frames * len(order)
    if spare < 0 or min_frames < 1:
        raise ValueError(
            f"a video of {n_frames} frames at {fps} fps cannot hold {len(order)} phases of at least "
            f"{min_phase_s:.2f} s each; use more seconds per video or a smaller min_phase_seconds"
        )
    weights = PHASE_SHARE[order] * rng.lognormal(0.0, 0.35, len(order))
    extra = np.floor(np.cumsum(weights) / weights.sum() * spare + 0.5).astype(np.int64)
    extra[-1] = spare
    lengths = min_frames + np.diff(np.concatenate([[0], extra]))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    return [(int(p), int(a), int(b)) for p, a, b in zip(order, starts, ends)]


def _cycle_phase(rng: np.random.Generator, t: np.ndarray, period_range: tuple[float, float], wobble: float = 0.2) -> np.ndarray:
    """Cumulative angle (rad) of a periodic motion whose rate wobbles by +-``wobble`` but never reverses."""
    f0 = 1.0 / rng.uniform(*period_range)
    rate = f0 * (1.0 + wobble * 0.5 * smooth_noise(rng, t, 3.0))
    dt = np.diff(t, prepend=t[0] - (t[1] - t[0] if len(t) > 1 else 1.0))
    return rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.cumsum(rate * dt)


def _anchor(rng: np.random.Generator, w: int, h: int, lo: float = 0.35, hi: float = 0.65) -> np.ndarray:
    return np.array([rng.uniform(lo, hi) * w, rng.uniform(lo, hi) * h])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.hypot(*v)), 1e-6)


def working_motion(rng: np.random.Generator, program: str, t: np.ndarray, port: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Tip trajectory ``[n, 2]`` and jaw opening ``[n]`` of the right-hand instrument for one phase.

    ``t`` is time in seconds from the segment start. Programs (y points down, so an increasing
    screen angle turns clockwise): ``orbit_cw``/``orbit_ccw`` ellipse around a random centre;
    ``sweep_lr`` sawtooth along a near-horizontal line, slow left->right stroke and 0.25 s return;
    ``oscillate_slow``/``oscillate_fast`` sinusoid along a random axis; ``jab`` in-out along the
    shaft with the jaws opening when retracted; ``sweep_across`` side to side across the shaft.
    """
    n = len(t)
    c = _anchor(rng, w, h)
    jaw = np.full(n, 0.15)
    if program in ("orbit_cw", "orbit_ccw"):
        rx = rng.uniform(*ORBIT_RADIUS_W) * w
        ry = rx * rng.uniform(0.6, 1.0)
        ang = _cycle_phase(rng, t, ORBIT_PERIOD_S)
        if program == "orbit_ccw":
            ang = -ang
        tip = c + np.stack([rx * np.cos(ang), ry * np.sin(ang)], 1)
    elif program == "sweep_lr":
        half = rng.uniform(*SWEEP_HALF_LEN_W) * w
        speed = rng.uniform(*SWEEP_SPEED_W) * w
        period = 2 * half / speed + SWEEP_RETURN_S
        fwd = 1.0 - SWEEP_RETURN_S / period  # share of the cycle spent on the slow left->right stroke
        u = np.mod(_cycle_phase(rng, t, (period, period), wobble=0.15) / (2 * np.pi), 1.0)
        pos = np.where(u < fwd, u / fwd, 1.0 - (u - fwd) / (1.0 - fwd))
        alpha = rng.uniform(-0.4, 0.4)
        tip = c + (2 * pos - 1)[:, None] * half * np.array([np.cos(alpha), np.sin(alpha)])
    elif program in ("oscillate_slow", "oscillate_fast"):
        amp = rng.uniform(*OSC_AMPLITUDE_W) * w
        beta = rng.uniform(0, np.pi)
        periods = OSC_SLOW_PERIOD_S if program == "oscillate_slow" else OSC_FAST_PERIOD_S
        s = np.sin(_cycle_phase(rng, t, periods, wobble=0.1))
        tip = c + (amp * s)[:, None] * np.array([np.cos(beta), np.sin(beta)])
    elif program == "jab":
        along = _unit(c - port)
        amp = rng.uniform(0.06, 0.1) * w
        ph = _cycle_phase(rng, t, JAB_PERIOD_S, wobble=0.1)
        depth = amp * (0.5 - 0.5 * np.cos(ph))
        tip = c + (depth - amp)[:, None] * along
        jaw = 0.5 + 0.5 * np.cos(ph)
    elif program == "sweep_across":
        along = _unit(c - port)
        across = np.array([-along[1], along[0]])
        amp = rng.uniform(0.06, 0.12) * w
        s = np.sin(_cycle_phase(rng, t, ACROSS_PERIOD_S, wobble=0.1))
        tip = c + (amp * s)[:, None] * across
    else:
        raise ValueError(f"unknown motion program {program!r}")
    return tip, jaw


def _slide(tip: np.ndarray, port: np.ndarray, fps: int) -> np.ndarray:
    """Instrument enters from its port at the start of a presence interval and leaves at its end."""
    n = len(tip)
    k_in = min(max(int(SLIDE_IN_S * fps), 1), n)
    k_out = min(max(int(SLIDE_OUT_S * fps), 1), n - k_in)
    out = tip.copy()
    if k_in > 1:
        s = np.linspace(0.35, 1.0, k_in)  # starts a third of the way in, so the tip is on screen
        s = s * s * (3 - 2 * s)
        out[:k_in] = port + (tip[:k_in] - port) * s[:, None]
    if k_out > 1:
        s = np.linspace(1.0, 0.5, k_out)
        out[n - k_out :] = port + (tip[n - k_out :] - port) * s[:, None]
    return out


def _intervals_on_off(rng: np.random.Generator, n: int, fps: int) -> list[tuple[int, int]]:
    """On-intervals of the assisting hand: on 3-12 s, off 1-4 s, on at the start with p = 0.8."""
    out, i, on = [], 0, rng.random() < 0.8
    while i < n:
        dur = int(round((rng.uniform(3, 12) if on else rng.uniform(1, 4)) * fps))
        j = min(n, i + max(dur, 1))
        if on:
            out.append((i, j))
        i, on = j, not on
    return out


def _tremor(rng: np.random.Generator, t: np.ndarray, w: int) -> np.ndarray:
    amp = rng.uniform(0.005, 0.015) * w
    return amp * np.stack([smooth_noise(rng, t, 1.0), smooth_noise(rng, t, 1.0)], 1)


def _ports(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Trocar positions (outside the frame) of the right (working) and left (assisting) hands."""
    right = np.array([rng.uniform(1.08, 1.25) * w, rng.uniform(-0.15, 0.9) * h])
    left = np.array([rng.uniform(-0.25, -0.08) * w, rng.uniform(-0.15, 0.7) * h])
    return right, left


def plan_video(
    seed: int,
    index: int,
    *,
    seconds: float = 60.0,
    fps: int = 25,
    height: int = 240,
    width: int = 320,
    min_phase_seconds: float | None = None,
) -> VideoPlan:
    """Decide the procedure, instrument motion, camera drift and smoke of video ``index``.

    ``min_phase_seconds`` defaults to ``min(4, 0.6 * seconds / 7)``: long videos give every phase
    at least 4 s (several samples at 1 fps), short test videos still hold all 7 phases.
    """
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    n = int(round(seconds * fps))
    if min_phase_seconds is None:
        min_phase_seconds = min(4.0, 0.6 * seconds / len(PHASES))
    rng = plan_rng(seed, index, 0)
    w, h = width, height
    t = np.arange(n) / fps
    segments = sample_segments(rng, n, fps, min_phase_seconds)
    port_r, port_l = _ports(rng, w, h)

    kind_r = np.full(n, -1, dtype=np.int64)
    kind_l = np.full(n, -1, dtype=np.int64)
    tip_r = np.zeros((n, 2))
    tip_l = np.zeros((n, 2))
    jaw_r = np.full(n, 0.15)
    jaw_l = np.full(n, 0.1)
    cautery = np.zeros(n, dtype=bool)
    for p, a, b in segments:
        kinds, program, assist = PHASE_PROGRAM[PHASES[p]]
        tip, jaw = working_motion(rng, program, t[a:b] - t[a], port_r, w, h)
        tip = tip + _tremor(rng, t[a:b], w) * 0.5
        # Clipping then cutting: the clipper works first, the scissors take over.
        cuts = [a]
        if len(kinds) > 1:
            cuts.append(a + int(round((b - a) * rng.uniform(0.45, 0.7))))
        cuts.append(b)
        for k, (u, v) in enumerate(zip(cuts[:-1], cuts[1:])):
            if v <= u:
                continue
            kind_r[u:v] = KINDS.index(kinds[k])
            tip_r[u:v] = _slide(tip[u - a : v - a], port_r, fps)
            jaw_r[u:v] = jaw[u - a : v - a]
        cautery[a:b] |= kinds[0] in CAUTERY_KINDS
        for u, v in _intervals_on_off(rng, b - a, fps):
            u, v = a + u, a + v
            anchor = np.array([rng.uniform(0.2, 0.5) * w, rng.uniform(0.25, 0.65) * h])
            kind_l[u:v] = KINDS.index(assist)
            tip_l[u:v] = _slide(anchor + _tremor(rng, t[u:v], w), port_l, fps)
            cautery[u:v] |= assist in CAUTERY_KINDS

    # Camera: slow drift (px) and zoom jitter, the same process in every phase.
    amp = np.array([rng.uniform(0.01, 0.03) * w, rng.uniform(0.01, 0.03) * h])
    camera = amp * np.stack([smooth_noise(rng, t, 8.0), smooth_noise(rng, t, 8.0)], 1)
    zoom = 1.0 + rng.uniform(0.005, 0.025) * smooth_noise(rng, t, 10.0)

    smoke = _smoke_level(rng, t, cautery, fps)

    def to_screen(tip: np.ndarray, port: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return tip - camera, port[None, :] - camera

    tr, pr = to_screen(tip_r, port_r)
    tl, pl = to_screen(tip_l, port_l)
    hands = (HandTrack(kind_r, tr, pr, jaw_r), HandTrack(kind_l, tl, pl, jaw_l))
    return VideoPlan(seed, index, fps, h, w, n, segments, hands, camera, zoom, smoke)


def _smoke_level(rng: np.random.Generator, t: np.ndarray, cautery: np.ndarray, fps: int) -> np.ndarray:
    """Haze opacity over time: a per-video base plus decaying puffs while a cautery tool is in.

    Puffs are Poisson events (per-video rate), so smoke is more likely in hook/bipolar phases but
    absent in many of their frames and lingering into the next phase: a weak, unreliable cue.
    """
    n = len(t)
    base = rng.uniform(0.0, 0.12) * (1.0 + 0.5 * smooth_noise(rng, t, 6.0))
    rate = rng.uniform(0.04, 0.2) / fps
    events = (rng.random(n) < rate) & cautery
    tau = rng.uniform(1.5, 4.0) * fps
    kern_len = int(5 * tau) + 1
    k = np.arange(kern_len)
    kernel = (1 - np.exp(-k / (0.3 * fps))) * np.exp(-k / tau)
    amps = np.where(events, rng.uniform(0.2, 0.5, n), 0.0)
    puffs = np.convolve(amps, kernel)[:n]
    return np.clip(base + puffs, 0.0, 0.75)
