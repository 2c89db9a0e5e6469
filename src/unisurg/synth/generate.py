"""A synthetic surgical-video world with Cholec80-format labels (``unisurg synth``).

No real surgical corpus can be downloaded on a fresh machine, so this generator is the default
data of the demo and the fixtures of the tests (docs/synthetic-world.md). It writes real H.264 videos and
annotations byte-compatible with Cholec80::

    OUT/videos/videoNN.mp4                      libx264, yuv420p, ``fps`` (25), H x W (240 x 320)
    OUT/phase_annotations/videoNN-phase.txt     "Frame\\tPhase", one row per frame 0..N-1
    OUT/tool_annotations/videoNN-tool.txt       "Frame\\tGrasper\\t...\\tSpecimenBag", a row every 25 frames
    OUT/synth.json                              generation parameters, versions, per-video segments

(LF line endings, a trailing newline, as the real files.) Tool rows are every 25 frames whatever
the fps (Cholec80's convention at 25 fps), at every multiple of 25 below N; the real files also
lack the last such row, which these keep.

Design of the world
-------------------
*Procedure.* The 7 Cholec80 phases in canonical order; Preparation is skipped in 10% of videos
(as real video13) and GallbladderPackaging / CleaningCoagulation are swapped in 30% (as real
video78). Lengths: every phase gets ``min_phase_seconds`` (4 s for videos of a minute or more,
so it survives 1 fps sampling) plus a random share of the rest, proportional to Cholec80's mean
phase shares times a log-normal factor; so lengths scale with the requested duration.

*Scene.* A per-video tissue texture (flesh-tone low-frequency blobs, fat patches, a vessel
network, relief shading, fine grain, specular glints) larger than the frame; the camera drifts
slowly (global translation of a few % of the frame, zoom jitter of a few %); smoke is a
translucent upward-drifting haze whose opacity has a per-video base plus puffs that are only
*more likely* while a cautery tool (hook, bipolar) is in, and linger into the next phase;
vignetting and sensor noise on top. Colours, noise, smoke and drift vary per video, and none of
them depends on the phase except through the smoke puffs, which are shared by all hook phases.

*Instruments.* Shafts enter from two trocar ports outside the frame (right hand: the phase's
working instrument; left hand: the assisting grasper or bipolar, coming and going every few
seconds) and pivot about them; each kind has its own tip (grasper jaws, L-hook, bipolar prongs
with blue insulation, golden scissor blades, clip applier with a clip, irrigator with suction
holes, grasper holding a translucent specimen bag).

*Motion is the label.* Some phases are identical in any single frame, in distribution: same
instruments, same port, same tip position distribution (a random centre in the middle 30% of
the frame, the same radius/amplitude ranges), same background, smoke and camera statistics.
Only how the working tip moves tells them apart:

- CalotTriangleDissection vs GallbladderDissection (hook + grasper): the hook tip orbits an
  ellipse (radius 8-14% of the width, period 5-9 s) *clockwise* vs *counter-clockwise* on screen.
- GallbladderPackaging vs GallbladderRetraction (grasper holding the bag + grasper): the bag
  oscillates along a random axis (amplitude 8-11% of the width) *slowly* (period 7-11 s) vs
  *fast* (period 2.2-3.0 s, still above the 2 s Nyquist period of 1 fps sampling).
- Preparation (hook + grasper) shares instruments with the orbit pair; its hook sweeps a
  near-horizontal line (30-44% of the width) *left to right* at 6-10% of the width per second,
  with a quick (0.25 s) return.

At 1 fps a 16-frame clip shows about 2-3 orbits or 2-4 sweeps (40-72 degrees, or 6-10% of the
width, between consecutive samples); at 25 fps a 16-frame clip still moves the tip by a pixel
or more per frame at 320 x 240. The other phases have their own instruments (ClippingCutting: clip applier
then scissors, jabbing in and out along the shaft; CleaningCoagulation: irrigator sweeping
across its shaft plus bipolar). Rates wobble +-10-20% within a segment and every range is drawn
per segment, so nothing is memorisable from one video.

Everything is deterministic for a seed (``numpy`` generators seeded by (seed, video index);
single-threaded x264): same annotation bytes, same decoded frames. :func:`plan_video` gives the
ground truth (phases, tools, per-frame tip trajectories) without rendering.
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
from tqdm.auto import tqdm

from unisurg.atomic_files import atomic_path, write_text_atomic
from unisurg.synth.plan import PHASES, TOOLS, VideoPlan, plan_video
from unisurg.synth.render import FrameRenderer

__all__ = [
    "PHASES",
    "TOOLS",
    "SYNTH_VERSION",
    "plan_video",
    "iter_frames",
    "render_video",
    "phase_annotation_text",
    "tool_annotation_text",
    "generate_dataset",
]

SYNTH_VERSION = "1.0"
TOOL_STRIDE = 25  # Cholec80 tool rows: every 25th frame (1 per second at 25 fps)


def phase_annotation_text(plan: VideoPlan) -> str:
    """Cholec80 phase file content: ``Frame\\tPhase`` header, one ``i\\tName`` row per frame, LF, trailing newline."""
    names = np.asarray(PHASES, dtype=object)[plan.phase]
    rows = "".join(f"{i}\t{name}\n" for i, name in enumerate(names))
    return "Frame\tPhase\n" + rows


def tool_annotation_text(plan: VideoPlan, stride: int = TOOL_STRIDE) -> str:
    """Cholec80 tool file content: header of the 7 tools, then ``frame\\t0/1...`` every ``stride`` frames."""
    tools = plan.tools
    lines = ["Frame\t" + "\t".join(TOOLS) + "\n"]
    for f in range(0, plan.n_frames, stride):
        lines.append(f"{f}\t" + "\t".join(str(int(x)) for x in tools[f]) + "\n")
    return "".join(lines)


def iter_frames(plan: VideoPlan, *, rgb: bool = True, tools: bool = True) -> Iterator[np.ndarray]:
    """Frames of a plan in order: ``[H, W, 3]`` uint8 RGB, or packed yuv420p ``[H*3/2, W]`` with ``rgb=False``."""
    renderer = FrameRenderer(plan)
    for i in range(plan.n_frames):
        yield renderer.render(i, tools) if rgb else renderer.render_yuv(i, tools)


def render_video(
    plan: VideoPlan,
    path: str | Path,
    *,
    crf: int = 23,
    preset: str = "ultrafast",
    on_frames: Callable[[int], None] | None = None,
) -> Path:
    """Render ``plan`` and encode it to ``path`` as H.264 (libx264, yuv420p, ``plan.fps``) in an mp4.

    Single-threaded x264 (deterministic; parallelism is across videos). The file is written
    under a temporary name and renamed at the end, so an interrupted run never leaves a
    truncated ``.mp4``. ``on_frames(k)`` is called every ``fps`` frames with the count done since
    the last call (progress bars).
    """

    path = Path(path)
    renderer = FrameRenderer(plan)
    with atomic_path(path) as tmp:
        container = av.open(str(tmp), mode="w", format="mp4")
        try:
            stream = container.add_stream("libx264", rate=plan.fps)
            stream.width, stream.height = plan.width, plan.height
            stream.pix_fmt = "yuv420p"
            tb = Fraction(1, plan.fps)
            stream.time_base = tb
            stream.options = {"preset": preset, "crf": str(crf), "threads": "1"}
            stream.codec_context.color_range = 1  # limited ("tv") range, as rendered
            stream.codec_context.colorspace = 6  # SMPTE 170M = BT.601, as rendered
            pending = 0
            for i in range(plan.n_frames):
                frame = av.VideoFrame.from_ndarray(renderer.render_yuv(i), format="yuv420p")
                frame.pts = i
                frame.time_base = tb  # not stream.time_base: the muxer changes it once the header is written
                for packet in stream.encode(frame):
                    container.mux(packet)
                pending += 1
                if on_frames is not None and pending == plan.fps:
                    on_frames(pending)
                    pending = 0
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    if on_frames is not None and pending:
        on_frames(pending)
    return path


def _video_id(index: int, n_videos: int) -> str:
    return f"video{index + 1:0{max(2, len(str(n_videos)))}d}"


def _paths(out: Path, vid: str) -> dict[str, Path]:
    return {
        "video": out / "videos" / f"{vid}.mp4",
        "phase": out / "phase_annotations" / f"{vid}-phase.txt",
        "tool": out / "tool_annotations" / f"{vid}-tool.txt",
    }


def _make_video(job: dict, on_frames: Callable[[int], None] | None = None) -> dict:
    """Plan, render, encode and annotate one video (skipped when its files already match: resume)."""
    out, index, params = Path(job["out"]), job["index"], job["params"]
    plan = plan_video(
        params["seed"],
        index,
        seconds=params["seconds"],
        fps=params["fps"],
        height=params["height"],
        width=params["width"],
        min_phase_seconds=params["min_phase_seconds"],
    )
    vid = _video_id(index, params["n_videos"])
    paths = _paths(out, vid)
    phase_txt, tool_txt = phase_annotation_text(plan), tool_annotation_text(plan, params["tool_stride"])
    done = (
        paths["video"].is_file()
        and paths["phase"].is_file()
        and paths["tool"].is_file()
        and paths["phase"].read_text(encoding="utf-8") == phase_txt
        and paths["tool"].read_text(encoding="utf-8") == tool_txt
    )
    if not done:
        # Video first: annotations are written last, so their presence marks a finished video.
        for p in (paths["phase"], paths["tool"]):
            p.unlink(missing_ok=True)
        render_video(plan, paths["video"], crf=params["crf"], preset=params["preset"], on_frames=on_frames)
        write_text_atomic(paths["phase"], phase_txt)
        write_text_atomic(paths["tool"], tool_txt)
    elif on_frames is not None:
        on_frames(plan.n_frames)
    return {
        "id": vid,
        "index": index,
        **{k: str(v) for k, v in paths.items()},
        "n_frames": plan.n_frames,
        "fps": plan.fps,
        "segments": plan.segment_dicts(),
        "reused": done,
    }


def _check_params(n_videos, seconds, height, width, fps, seed, workers, crf) -> None:
    problems = []
    if not isinstance(n_videos, int) or n_videos < 1:
        problems.append(f"n_videos must be an integer >= 1 (got {n_videos!r})")
    if not seconds > 0:
        problems.append(f"seconds must be > 0 (got {seconds!r})")
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, int) or v < 16 or v % 2:
            problems.append(f"{name} must be an even integer >= 16 for yuv420p H.264 (got {v!r})")
    if not isinstance(fps, int) or fps < 1:
        problems.append(f"fps must be an integer >= 1 (got {fps!r})")
    if not isinstance(seed, int) or seed < 0:
        problems.append(f"seed must be an integer >= 0 (got {seed!r})")
    if not isinstance(workers, int) or workers < 1:
        problems.append(f"workers must be an integer >= 1 (got {workers!r})")
    if not 0 <= crf <= 51:
        problems.append(f"crf must be in 0..51 (got {crf!r})")
    if problems:
        raise ValueError("generate_dataset: " + "; ".join(problems))


def generate_dataset(
    out: str | Path,
    *,
    n_videos: int = 8,
    seconds: float = 60.0,
    height: int = 240,
    width: int = 320,
    fps: int = 25,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    crf: int = 23,
    preset: str = "ultrafast",
    min_phase_seconds: float | None = None,
    overwrite: bool = False,
) -> dict:
    """Write ``n_videos`` synthetic videos with Cholec80-format annotations under ``out``.

    Returns a JSON-ready summary: ``{"out", "params", "phases", "tools", "videos": [{"id",
    "video", "phase", "tool", "n_frames", "fps", "segments": [{"phase", "start", "end"}],
    "reused"}]}`` (frames, end exclusive). Rerunning with the same parameters reuses finished
    videos (an interrupted run resumes); a directory holding other data, or a synthetic dataset
    made with other parameters, is refused unless ``overwrite=True``. ``workers > 1`` renders
    videos in parallel "spawn" processes (one x264 thread each; a calling script needs the usual
    ``if __name__ == "__main__":`` guard). ``preset``/``crf`` are libx264's; ``min_phase_seconds``
    defaults to ``min(4, 0.6 * seconds / 7)``.
    """
    _check_params(n_videos, seconds, height, width, fps, seed, workers, crf)
    out = Path(out)
    params = {
        "version": SYNTH_VERSION,
        "n_videos": n_videos,
        "seconds": float(seconds),
        "height": height,
        "width": width,
        "fps": fps,
        "seed": seed,
        "min_phase_seconds": None if min_phase_seconds is None else float(min_phase_seconds),
        "tool_stride": TOOL_STRIDE,
        "crf": int(crf),
        "preset": preset,
    }
    meta_path = out / "synth.json"
    _prepare_dir(out, meta_path, params, overwrite)

    meta = {
        "generator": "unisurg.synth.generate",
        "params": params,
        "phases": list(PHASES),
        "tools": list(TOOLS),
        "software": {"pyav": av.__version__, "libavcodec": ".".join(map(str, av.library_versions["libavcodec"]))},
        "complete": False,
        "videos": [],
    }
    write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")

    jobs = [{"out": str(out), "index": i, "params": params} for i in range(n_videos)]
    total = sum(int(round(seconds * fps)) for _ in jobs)
    results: list[dict] = []

    with tqdm(total=total, unit="frame", desc="synth", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                results.append(_make_video(job, on_frames=bar.update))
        else:
            ctx = multiprocessing.get_context("spawn")  # no fork of a parent that may hold torch threads
            with ProcessPoolExecutor(max_workers=min(workers, n_videos), mp_context=ctx) as pool:
                futures = [pool.submit(_make_video, job) for job in jobs]
                for fut in as_completed(futures):
                    res = fut.result()
                    results.append(res)
                    bar.update(res["n_frames"])
    results.sort(key=lambda r: r["index"])

    meta["complete"] = True
    meta["videos"] = [{k: r[k] for k in ("id", "n_frames", "fps", "segments")} for r in results]
    write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    return {"out": str(out), "params": params, "phases": list(PHASES), "tools": list(TOOLS), "videos": results}


def _prepare_dir(out: Path, meta_path: Path, params: dict, overwrite: bool) -> None:
    """Create the layout; refuse to mix with foreign data or another parameter set unless overwriting."""
    subdirs = [out / "videos", out / "phase_annotations", out / "tool_annotations"]
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text(encoding="utf-8")).get("params")
        except (json.JSONDecodeError, AttributeError) as e:
            raise ValueError(f"{meta_path} is not a readable synth.json ({e}); delete it or pass overwrite=True") from e
        if old != params and not overwrite:
            diff = {k: (old.get(k) if isinstance(old, dict) else None, v) for k, v in params.items() if not isinstance(old, dict) or old.get(k) != v}
            raise ValueError(
                f"{out} already holds a synthetic dataset made with other parameters (old, new): {diff}; "
                "choose another output folder, or overwrite it (--overwrite / overwrite=True)"
            )
    elif any(d.is_dir() and any(d.iterdir()) for d in subdirs) and not overwrite:
        raise ValueError(
            f"{out} already holds videos or annotations that were not made by unisurg synth (no synth.json); "
            "choose an empty output directory or pass overwrite=True"
        )
    if overwrite:
        for d, pattern in zip(subdirs, ("video*.mp4*", "video*-phase.txt*", "video*-tool.txt*")):
            if d.is_dir():
                for f in d.glob(pattern):
                    f.unlink()
    for d in subdirs:
        d.mkdir(parents=True, exist_ok=True)
