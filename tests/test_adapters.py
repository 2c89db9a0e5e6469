"""Dataset adapters: each read on a fixture written in the distributed format (quirks included),
malformed files rejected with file + line, and the real public files in shared/real-data read in
place when that folder exists (never copied into the repository)."""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unisurg.datasets import (
    DATASETS,
    AnnotationError,
    DatasetLayoutError,
    UnknownDatasetError,
    get_adapter,
    read_depth_mm,
    read_image,
    read_mask,
)
from unisurg.datasets.cholect50 import components_from_triplets, triplet_component_map
from unisurg.datasets.jigsaws import read_meta_file, read_transcription
from unisurg.data.image_files import sniff_format
from unisurg.datasets.ophnet import read_ophnet_surgeries
from unisurg.datasets.safe_pickle import UnsafePickleError
from unisurg.datasets.splitfiles import load_split_file
from unisurg.datasets.timeline import frame_labels_to_seconds, segments_to_seconds

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-data"
CHOLEC80_PHASES = ["Preparation", "CalotTriangleDissection", "ClippingCutting", "GallbladderDissection",
                   "GallbladderPackaging", "CleaningCoagulation", "GallbladderRetraction"]
TOOLS = ["Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag"]


def real(sub: str) -> Path:
    p = REAL / sub
    if not p.exists():
        pytest.skip(f"real data {p} not present")
    return p


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def phase_file(frames_labels: list[tuple[int, str]]) -> str:
    return "Frame\tPhase\n" + "".join(f"{f}\t{p}\n" for f, p in frames_labels)


def expand(segments: list[tuple[int, str]], n: int) -> list[tuple[int, str]]:
    """Per-frame rows from (first frame, phase) change points."""
    rows = []
    for f in range(n):
        rows.append((f, [p for s, p in segments if s <= f][-1]))
    return rows


# ---------------------------------------------------------------------------------------------
# registry, split files, timelines
# ---------------------------------------------------------------------------------------------


def test_registry_names_tasks_and_suggestions():
    assert {"cholec80", "m2cai16", "autolaparo", "cholect50", "cholect45", "pitvis", "ophnet", "egosurgery",
            "pmlr50", "jigsaws", "surgicalactions160", "avos", "polypdiag", "polyp", "c3vd", "surgrec",
            "synthetic"} <= set(DATASETS)
    for name, cls in DATASETS.items():
        assert cls.task in {"phase", "triplet", "clip", "skill", "segmentation", "depth"}, name
        assert cls.default_split_scheme in cls.split_schemes, name
    assert get_adapter("M2CAI-16") is DATASETS["m2cai16"]
    with pytest.raises(UnknownDatasetError) as e:
        get_adapter("cholec08")
    assert "Did you mean 'cholec80'" in str(e.value) and "pitvis" in str(e.value)


def test_unknown_split_scheme_and_missing_root(tmp_path):
    with pytest.raises(ValueError, match="Did you mean '40_40'"):
        get_adapter("cholec80")(tmp_path, split_scheme="40-40")
    with pytest.raises(DatasetLayoutError, match="is not a folder"):
        get_adapter("c3vd")(tmp_path / "absent")


def test_split_files_versioned_and_match_spec():
    shipped = [f.name for f in resources.files("unisurg.datasets").joinpath("splits").iterdir() if f.name.endswith(".json")]
    assert len(shipped) >= 13
    for name in shipped:
        data = load_split_file(name)
        assert data["version"] and len(data["origin"]) > 40, name
    t50 = load_split_file("cholect50.json")
    spec = {"1": "79 2 51 6 25 14 66 23 50 111", "2": "80 32 5 15 40 47 26 48 70 96",
            "3": "31 57 36 18 52 68 10 8 73 103", "4": "42 29 60 27 65 75 22 49 12 110",
            "5": "78 43 62 35 74 1 56 4 13 92"}
    assert t50["crossval_folds_cholect50"] == {k: [int(x) for x in v.split()] for k, v in spec.items()}
    assert t50["crossval_folds_cholect45"] == {k: [int(x) for x in v.split()][:-1] for k, v in spec.items()}
    ego = load_split_file("egosurgery.json")["schemes"]["official"]
    assert ego == {"train": [1, 2, 3, 4, 8, 9, 11, 13, 14, 15, 17, 20, 21], "val": [5, 19], "test": [6, 7, 10, 12, 18]}
    c80 = load_split_file("cholec80.json")["schemes"]
    for scheme in c80.values():
        allv = scheme["train"] + scheme["val"] + scheme["test"]
        assert sorted(allv) == list(range(1, 81))
    assert load_split_file("autolaparo.json")["schemes"]["10_4_7"] == {
        "train": list(range(1, 11)), "val": [11, 12, 13, 14], "test": list(range(15, 22))}
    c3 = load_split_file("c3vd.json")["schemes"]["by_sequence_v1"]
    seqs = c3["train"] + c3["val"] + c3["test"]
    assert len(seqs) == len(set(seqs)) == 22


def _naive_seconds(frames, labels, fps):
    n = 0
    while n / 1.0 * fps < frames[-1] + 1 - 1e-9:  # instants t with t*fps inside the last frame's span
        n += 1
    out = []
    for t in range(n):
        on_screen = math.floor(t * fps + 1e-9)
        best = None
        for f, lab in zip(frames, labels):
            if f <= on_screen:
                best = lab
        out.append(best)
    return out


@pytest.mark.parametrize("fps", [25.0, 0.5, 29.97, 1.0])
def test_frame_labels_to_seconds_matches_naive_loop(fps):
    rng = np.random.default_rng(int(fps * 100))
    frames = np.concatenate([[0], np.cumsum(rng.integers(1, 9, size=60))])
    labels = rng.integers(0, 5, size=frames.size)
    assert frame_labels_to_seconds(frames, labels, fps).tolist() == _naive_seconds(frames.tolist(), labels.tolist(), fps)


def test_frame_labels_to_seconds_cholec80_known_answer():
    # 101 frames at 25 fps -> instants 0..4 -> frames 0, 25, 50, 75, 100
    frames = np.arange(101)
    labels = np.where(frames < 30, 0, np.where(frames < 100, 1, 2))
    assert frame_labels_to_seconds(frames, labels, 25.0).tolist() == [0, 0, 1, 1, 2]
    assert frame_labels_to_seconds(np.arange(100), labels[:100], 25.0).tolist() == [0, 0, 1, 1]


def test_segments_to_seconds_matches_naive_loop():
    rng = np.random.default_rng(0)
    starts = np.sort(rng.uniform(0, 50, 12)).round(2)
    ends = (starts + rng.uniform(0.2, 9, 12)).round(2)
    labels = rng.integers(0, 7, 12)
    got = segments_to_seconds(starts, ends, labels, background=99)
    n = math.ceil(ends.max())
    want = []
    for t in range(n):
        best = (None, -1.0, -1)
        for i, (s, e, lab) in enumerate(zip(starts, ends, labels)):
            if s <= t < e and (s, i) >= (best[1], best[2]):
                best = (lab, s, i)
        want.append(99 if best[0] is None else best[0])
    assert got.tolist() == want


# ---------------------------------------------------------------------------------------------
# Cholec80 / synthetic / M2CAI16
# ---------------------------------------------------------------------------------------------


def _cholec_fixture(root: Path, n: int, segments, tool_rows: int | None = None) -> None:
    write(root / "phase_annotations" / f"video{n:02d}-phase.txt", phase_file(expand(segments, 101)))
    rows = tool_rows if tool_rows is not None else 4  # ceil(101/25) = 5 seconds, the release omits the last
    text = "Frame\t" + "\t".join(TOOLS) + "\n"
    for r in range(rows):
        text += f"{25 * r}\t" + "\t".join(str((r + k) % 2) for k in range(7)) + "\n"
    write(root / "tool_annotations" / f"video{n:02d}-tool.txt", text)


def test_cholec80_fixture_labels_tools_and_split(tmp_path):
    # video 01 ends CleaningCoagulation -> GallbladderPackaging (order not fixed, as in video78)
    _cholec_fixture(tmp_path, 1, [(0, "Preparation"), (30, "CleaningCoagulation"), (99, "GallbladderPackaging")])
    _cholec_fixture(tmp_path, 33, [(0, "Preparation")])
    _cholec_fixture(tmp_path, 41, [(0, "CalotTriangleDissection"), (60, "ClippingCutting")])
    with pytest.raises(DatasetLayoutError, match="strict=False"):
        get_adapter("cholec80")(tmp_path).load()
    splits = get_adapter("cholec80")(tmp_path, strict=False).load()
    assert [v.video_id for v in splits["train"]] == ["video01"]
    assert [v.video_id for v in splits["val"]] == ["video33"]
    assert [v.video_id for v in splits["test"]] == ["video41"]
    v1 = splits["train"][0]
    p = CHOLEC80_PHASES.index
    assert v1.labels.tolist() == [p("Preparation"), p("Preparation"), p("CleaningCoagulation"),
                                  p("CleaningCoagulation"), p("GallbladderPackaging")]
    assert v1.fps_source == 25.0 and v1.class_names == tuple(CHOLEC80_PHASES)
    tools = v1.extra["tools"]
    assert tools.shape == (5, 7) and tools[-1].tolist() == [-1] * 7
    assert tools[1].tolist() == [(1 + k) % 2 for k in range(7)]
    assert splits["test"][0].labels.tolist() == [1, 1, 1, 2, 2]  # change at frame 60: seconds 3, 4
    s40 = get_adapter("cholec80")(tmp_path, split_scheme="40_40", strict=False).load()
    assert [v.video_id for v in s40["train"]] == ["video01", "video33"] and s40["val"] == []


@pytest.mark.parametrize("body, line, expect", [
    ("Frame\tPhase\n0\tPreparation\n1\tPreparation\n2\tCalot\n", 4, "unknown phase 'Calot'"),
    ("Frame\tPhase\n0\tPreparation\n2\tPreparation\n", 3, "frame 2 follows frame 0"),
    ("Frame\tLabel\n0\tPreparation\n", 1, "header"),
    ("Frame\tPhase\n0\tPreparation\textra\n", 2, "3 fields"),
    ("Frame\tPhase\n1\tPreparation\n", 2, "first frame is 1"),
])
def test_cholec80_malformed_phase_file_names_file_and_line(tmp_path, body, line, expect):
    write(tmp_path / "video01-phase.txt", body)
    with pytest.raises(AnnotationError) as e:
        get_adapter("cholec80")(tmp_path, strict=False).load()
    msg = str(e.value)
    assert f"video01-phase.txt:{line}:" in msg and expect in msg


def test_cholec80_tool_file_wrong_length_is_error(tmp_path):
    _cholec_fixture(tmp_path, 1, [(0, "Preparation")], tool_rows=2)
    with pytest.raises(AnnotationError, match=r"video01-tool\.txt: 2 tool rows leave 3 of 5 seconds unannotated"):
        get_adapter("cholec80")(tmp_path, strict=False).load()


def test_cholec80_real_phase_and_tool_files(tmp_path):
    src = real("cholec80")
    for n in (13, 41, 78):
        for kind, folder in (("phase", "phase_annotations"), ("tool", "tool_annotations")):
            (tmp_path / folder).mkdir(exist_ok=True)
            os.symlink(src / f"video{n}-{kind}.txt", tmp_path / folder / f"video{n}-{kind}.txt")
    splits = get_adapter("cholec80")(tmp_path, split_scheme="40_40", strict=False).load()
    assert [v.video_id for v in splits["train"]] == ["video13"]
    assert [v.video_id for v in splits["test"]] == ["video41", "video78"]
    for v in splits["train"] + splits["test"]:
        with open(src / f"{v.video_id}-phase.txt", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))[1:]
        n_frames = len(rows)
        assert v.n_seconds == math.ceil(n_frames / 25)
        want = [CHOLEC80_PHASES.index(rows[25 * t][1]) for t in range(v.n_seconds)]
        assert v.labels.tolist() == want
        with open(src / f"{v.video_id}-tool.txt", newline="") as f:
            tool_rows = [[int(x) for x in r[1:]] for r in list(csv.reader(f, delimiter="\t"))[1:]]
        assert len(tool_rows) == v.n_seconds - 1  # the one-row-short quirk
        assert v.extra["tools"][:-1].tolist() == tool_rows and (v.extra["tools"][-1] == -1).all()
        assert v.extra["tool_names"] == tuple(TOOLS)
    by_id = {v.video_id: v for v in splits["train"] + splits["test"]}
    assert by_id["video13"].n_seconds == 982
    lab78 = by_id["video78"].labels.tolist()
    first = {c: lab78.index(c) for c in set(lab78)}
    assert first[CHOLEC80_PHASES.index("CleaningCoagulation")] < first[CHOLEC80_PHASES.index("GallbladderPackaging")]
    assert by_id["video41"].labels[0] == 0  # video41 starts in Preparation


def test_synthetic_by_fraction_and_phase_names(tmp_path):
    for n in range(1, 6):
        write(tmp_path / "phase_annotations" / f"video{n:02d}-phase.txt",
              phase_file([(f, "incise" if f < 50 else "suture") for f in range(75)]))
    ad = get_adapter("synthetic")(tmp_path)
    splits = ad.load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    assert [v.video_id for v in splits["test"]] == ["video05"]
    assert ad.class_names == ("incise", "suture")
    assert splits["train"][0].labels.tolist() == [0, 0, 1]
    with pytest.raises(AnnotationError, match=r"video01-phase.txt:2: unknown phase 'incise'.*phase_names.txt"):
        get_adapter("cholec80")(tmp_path, split_scheme="by_fraction").load()
    write(tmp_path / "phase_names.txt", "suture\nincise\n")
    v = get_adapter("synthetic")(tmp_path).load()["train"][0]
    assert v.class_names == ("suture", "incise") and v.labels.tolist() == [1, 1, 0]


def test_synthetic_world_written_by_unisurg_synth(tmp_path):
    synth = pytest.importorskip("unisurg.synth.generate")
    summary = synth.generate_dataset(tmp_path, n_videos=3, seconds=8, height=32, width=48, fps=5, progress=False)
    splits = get_adapter("synthetic")(tmp_path, require_media=True).load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [1, 1, 1]
    videos = {v.video_id: v for s in splits.values() for v in s}
    for info in summary["videos"]:
        v = videos[info["id"]]
        assert v.fps_source == 5.0 and v.frames.is_file() and v.class_names == tuple(CHOLEC80_PHASES)
        # reference: the generator's own segment list (frames, end exclusive); second t shows frame 5 t
        want = []
        for t in range(math.ceil(info["n_frames"] / 5)):
            seg = next(g for g in info["segments"] if g["start"] <= 5 * t < g["end"])
            want.append(CHOLEC80_PHASES.index(seg["phase"]))
        assert v.labels.tolist() == want
        assert v.extra["tools"].shape == (v.n_seconds, 7) and (v.extra["tools"] >= 0).all()


def test_m2cai16_fixture_sparse_rows_and_names(tmp_path):
    write(tmp_path / "train_dataset" / "workflow_video_01.txt",
          "Frame\tPhase\n0\tTrocarPlacement\n40\tPreparation\n60\tCalotTriangleDissection\n")
    write(tmp_path / "test_dataset" / "test_workflow_video_02.txt", "0 GallbladderRetraction\n10 CleaningCoagulation\n")
    splits = get_adapter("m2cai16")(tmp_path, split_scheme="27_14", strict=False).load()
    v = splits["train"][0]
    assert v.video_id == "workflow_video_01" and v.labels.tolist() == [0, 0, 1]  # frames 0, 25, 50
    assert splits["test"][0].labels.tolist() == [7]
    write(tmp_path / "train_dataset" / "workflow_video_01.txt", "0\tTrocarPlacement\n0\tPreparation\n")
    with pytest.raises(AnnotationError, match=r"workflow_video_01.txt:2: frame 0 follows frame 0"):
        get_adapter("m2cai16")(tmp_path, strict=False).load()


# ---------------------------------------------------------------------------------------------
# AutoLaparo, PitVis, OphNet, EgoSurgery, PmLR50
# ---------------------------------------------------------------------------------------------


def test_autolaparo_fixture_and_errors(tmp_path):
    write(tmp_path / "labels" / "label_12.txt", "Frame\tPhase\n1\t1\n2\t1\n3\t2\n4\t7\n")
    splits = get_adapter("autolaparo")(tmp_path, strict=False).load()
    v = splits["val"][0]
    assert v.video_id == "12" and v.labels.tolist() == [0, 0, 1, 6] and v.class_names[6] == "Washing"
    write(tmp_path / "labels" / "label_12.txt", "Frame\tPhase\n1\t1\n3\t1\n")
    with pytest.raises(AnnotationError, match=r"label_12.txt:3: frame 3 \(expected frame 2"):
        get_adapter("autolaparo")(tmp_path, strict=False).load()
    write(tmp_path / "labels" / "label_12.txt", "Frame\tPhase\n1\t8\n")
    with pytest.raises(AnnotationError, match=r"label_12.txt:2: phase 8"):
        get_adapter("autolaparo")(tmp_path, strict=False).load()


def test_pitvis_fixture_background_and_errors(tmp_path):
    write(tmp_path / "annotations_02.csv",
          "int_video,int_time,int_step,int_instrument1,int_instrument2\n2,0,-1,-1,-2\n2,1,1,0,-2\n2,2,14,16,8\n")
    splits = get_adapter("pitvis")(tmp_path, strict=False).load()
    v = splits["train"][0]
    assert v.video_id == "video_02" and v.labels.tolist() == [0, 1, 14]
    assert v.class_names[0] == "background" and v.extra["instrument2"].tolist() == [-2, -2, 8]
    write(tmp_path / "annotations_02.csv", "int_video,int_time,int_step\n2,0,3\n2,2,3\n")
    with pytest.raises(AnnotationError, match=r"annotations_02.csv:3: int_time 2 \(expected 1"):
        get_adapter("pitvis")(tmp_path, strict=False).load()
    write(tmp_path / "annotations_02.csv", "int_video,int_time,int_step\n5,0,3\n")
    with pytest.raises(AnnotationError, match=r"annotations_02.csv:2: int_video 5"):
        get_adapter("pitvis")(tmp_path, strict=False).load()


def test_pitvis_strict_split_tolerates_only_the_absent_video_19(tmp_path):
    for n in range(1, 26):
        if n != 19:
            write(tmp_path / f"annotations_{n:02d}.csv", f"int_video,int_time,int_step\n{n},0,-1\n{n},1,{n % 14 + 1}\n")
    splits = get_adapter("pitvis")(tmp_path).load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [15, 3, 6]
    (tmp_path / "annotations_20.csv").unlink()
    with pytest.raises(DatasetLayoutError, match="annotations_20.csv"):
        get_adapter("pitvis")(tmp_path).load()
    with pytest.raises(DatasetLayoutError, match="media not found"):
        get_adapter("pitvis")(tmp_path, require_media=True).load()


def test_pitvis_real_frames_are_jpeg_under_png_names():
    folder = real("pitvis_frames/video_01")
    frames = sorted(folder.glob("*.png"))
    assert len(frames) == 5
    for p in frames:
        assert sniff_format(p) == "jpeg"
        rgb = read_image(p)
        assert rgb.shape == (720, 1280, 3) and rgb.dtype == np.uint8
        with Image.open(p) as im:  # Pillow sniffs the content too: an independent decoder path
            assert im.format == "JPEG"
            ref = np.asarray(im.convert("RGB"), dtype=np.int16)
        assert np.abs(rgb.astype(np.int16) - ref).mean() < 1.0
        assert rgb.std() > 5  # a real picture, not a blank frame


def _ophnet_csv(rows: list[str], bom: bool = True) -> str:
    text = "video_id,start,end,split,surgery_id,phase_id\r\n" + "".join(r + "\r\n" for r in rows)
    return ("\ufeff" if bom else "") + text


def test_ophnet_fixture_bom_overlap_background(tmp_path):
    write(tmp_path / "OphNet2024_loca_challenge_phase.csv", _ophnet_csv([
        "case_0001,0,2.5,train,5,3",
        "case_0001,1.8,4,train,0,6",     # overlaps the previous one at t=2: the later-starting segment wins
        "case_0001,6,7.5,train,0,0",     # 4..6 uncovered -> background
        "case_0002,1,2,test,1,51",
    ]))
    write(tmp_path / "OphNet2024_surgery.csv", "\ufeffvideo_id,surgery\r\ncase_0001,\"62,61\"\r\n")
    ad = get_adapter("ophnet")(tmp_path, strict=False)
    splits = ad.load()
    v = splits["train"][0]
    assert v.labels.tolist() == [3, 3, 6, 6, 52, 52, 0, 0]
    assert v.extra["surgeries"] == (62, 61) and v.class_names[52] == "background"
    assert splits["test"][0].labels.tolist() == [52, 51]
    with pytest.raises(DatasetLayoutError, match="445"):
        get_adapter("ophnet")(tmp_path).load()


@pytest.mark.parametrize("row, expect", [
    ("case_0001,3,2,train,0,1", r"segment \[3.0, 2.0\]"),
    ("case_0001,0,2,val,0,1", r"video case_0001 in split 'val' \(expected 'train' as on line 2"),
    ("case_0001,0,2,train,0,52", r"phase_id 52"),
    ("case_0001,0,x,train,0,1", r"end is 'x'"),
])
def test_ophnet_malformed_rows(tmp_path, row, expect):
    write(tmp_path / "OphNet2024_loca_challenge_phase.csv", _ophnet_csv(["case_0001,0,1,train,0,1", row]))
    with pytest.raises(AnnotationError, match=r"OphNet2024_loca_challenge_phase.csv:3: " + expect):
        get_adapter("ophnet")(tmp_path, strict=False).load()


def test_ophnet_real_csv():
    folder = real("ophnet")
    splits = get_adapter("ophnet")(folder).load()  # strict: the 2024 challenge counts
    assert {s: len(v) for s, v in splits.items()} == {"train": 445, "val": 144, "test": 154}
    with open(folder / "OphNet2024_loca_challenge_phase.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len({int(r["phase_id"]) for r in rows}) == 52
    surg = read_ophnet_surgeries(folder / "OphNet2024_surgery.csv")  # starts with a BOM
    assert "case_0358" in surg and all(isinstance(k, str) and not k.startswith("\ufeff") for k in surg)
    by_id = {v.video_id: v for s in splits.values() for v in s}
    for vid in ("case_0002", "case_0118", "case_0196"):
        segs = [(float(r["start"]), float(r["end"]), int(r["phase_id"])) for r in rows if r["video_id"] == vid]
        n = math.ceil(max(e for _, e, _ in segs))
        want = []
        for t in range(n):
            inside = [(s, k, p) for k, (s, e, p) in enumerate(segs) if s <= t < e]
            want.append(max(inside)[2] if inside else 52)
        assert by_id[vid].labels.tolist() == want
    assert 52 in by_id["case_0002"].labels  # 10 s .. 11.33 s is uncovered


def test_egosurgery_fixture(tmp_path):
    d = tmp_path / "annotations"
    write(d / "01_1.csv", "Frame,Phase\n01_1_0007,disinfection\n01_1_0008,Design\n01_1_0009,2\n")
    write(d / "05_1.csv", "Frame,Phase\n0,closure\n1,dressing\n")
    splits = get_adapter("egosurgery")(tmp_path, strict=False).load()
    v = splits["train"][0]
    # 3 rows at 0.5 fps = 6 seconds; second t shows row floor(t / 2)
    assert v.video_id == "01_1" and v.labels.tolist() == [0, 0, 1, 1, 2, 2] and v.extra["first_frame"] == 7
    assert splits["val"][0].labels.tolist() == [7, 7, 8, 8]
    with pytest.raises(DatasetLayoutError, match="strict=False"):
        get_adapter("egosurgery")(tmp_path).load()
    write(d / "22_1.csv", "Frame,Phase\n0,closure\n")
    with pytest.raises(DatasetLayoutError, match="22_1.csv belongs to video 22"):
        get_adapter("egosurgery")(tmp_path, strict=False).load()
    (d / "22_1.csv").unlink()
    write(d / "05_1.csv", "Frame,Phase\n0,closure\n1,sewing\n")
    with pytest.raises(AnnotationError, match=r"05_1.csv:3: unknown phase 'sewing'"):
        get_adapter("egosurgery")(tmp_path, strict=False).load()
    write(d / "05_1.csv", "Frame,Phase\n0,closure\n2,closure\n")
    with pytest.raises(AnnotationError, match=r"05_1.csv:3: frame 2 follows 0"):
        get_adapter("egosurgery")(tmp_path, strict=False).load()


def test_pmlr50_pickles_and_unsafe_pickle(tmp_path):
    d = tmp_path / "labels_pkl"
    (d / "train").mkdir(parents=True)
    (d / "test").mkdir()
    train = {"01": [{"frame_id": i, "phase_gt": np.int64(p), "video_id": "01"} for i, p in enumerate([0, 0, 3, 4])]}
    (d / "train" / "1fpstrain.pickle").write_bytes(pickle.dumps(train, protocol=4))
    (d / "test" / "1fpstest.pickle").write_bytes(pickle.dumps({"40": [{"frame_id": 0, "phase_gt": 2}]}, protocol=2))
    splits = get_adapter("pmlr50")(tmp_path, strict=False).load()
    assert splits["train"][0].labels.tolist() == [0, 0, 3, 4] and splits["test"][0].video_id == "40"

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo unsafe",))

    (d / "test" / "1fpstest.pickle").write_bytes(pickle.dumps({"40": [Payload()]}))
    with pytest.raises(UnsafePickleError, match=r"1fpstest.pickle: refuses to load global .*system"):
        get_adapter("pmlr50")(tmp_path, strict=False).load()
    (d / "test" / "1fpstest.pickle").write_bytes(pickle.dumps({"40": [{"frame_id": 1, "phase_gt": 2}]}))
    with pytest.raises(AnnotationError, match=r"video '40' entry 0 has frame_id 1"):
        get_adapter("pmlr50")(tmp_path, strict=False).load()


# ---------------------------------------------------------------------------------------------
# CholecT50 / CholecT45
# ---------------------------------------------------------------------------------------------

T_INSTR = ["grasper", "hook"]
T_VERB = ["grasp", "dissect", "null_verb"]
T_TARGET = ["gallbladder", "liver", "null_target"]
T_TRIPLETS = ["grasper,grasp,gallbladder", "grasper,dissect,liver", "hook,dissect,gallbladder",
              "hook,dissect,liver", "grasper,null_verb,null_target", "hook,null_verb,null_target"]


def _t50_json(frames: dict) -> str:
    cats = {"instrument": dict(enumerate(T_INSTR)), "verb": dict(enumerate(T_VERB)),
            "target": dict(enumerate(T_TARGET)), "triplet": dict(enumerate(T_TRIPLETS)),
            "phase": {0: "preparation", 1: "calot-triangle-dissection"}}
    cats = {k: {str(i): n for i, n in v.items()} for k, v in cats.items()}
    return json.dumps({"video": 1, "fps": 1, "num_frames": len(frames), "categories": cats,
                       "annotations": {str(k): v for k, v in frames.items()}}, indent=1)


def _inst(trip, tool, verb, target, phase):
    return [trip, tool, 1, 0.1, 0.1, 0.2, 0.2, verb, target, 1, -1, -1, -1, -1, phase]


def test_cholect50_fixture_labels_components_phase(tmp_path):
    frames = {0: [_inst(0, 0, 0, 0, 0), _inst(3, 1, 1, 1, 0)],
              1: [_inst(-1, -1, -1, -1, 1)],
              2: [_inst(2, 1, 1, 0, 1), _inst(-1, 0, -1, -1, 1)]}
    write(tmp_path / "labels" / "VID79.json", _t50_json(frames))
    splits = get_adapter("cholect50")(tmp_path, strict=False).load()
    v = splits["test"][0]  # video 79 is in fold 1
    assert v.video_id == "VID79" and v.class_names == tuple(T_TRIPLETS)
    want = np.zeros((3, 6), np.uint8)
    want[0, [0, 3]] = 1
    want[2, 2] = 1
    assert np.array_equal(v.labels, want)
    assert v.phase.tolist() == [0, 1, 1]
    # component labels: naive max over triplets, component ids from the names
    for key, names in (("i", T_INSTR), ("v", T_VERB), ("t", T_TARGET)):
        pos = {"i": 0, "v": 1, "t": 2}[key]
        naive = np.zeros((3, len(names)), np.uint8)
        for f in range(3):
            for k, trip in enumerate(T_TRIPLETS):
                if want[f, k]:
                    naive[f, names.index(trip.split(",")[pos])] = 1
        assert np.array_equal(v.components[key], naive), key
    assert v.components["iv"][0].nonzero()[0].tolist() == [0 * 3 + 0, 1 * 3 + 1]
    assert v.components["it"][2].nonzero()[0].tolist() == [1 * 3 + 0]
    assert v.extra["instrument_column"][2].tolist() == [1, 1]  # the raw tool column keeps the lone grasper


def test_cholect50_malformed_instance_names_file_and_line(tmp_path):
    frames = {0: [_inst(0, 0, 0, 0, 0)], 1: [_inst(0, 0, 0, 0, 0)[:14]]}
    text = _t50_json(frames)
    write(tmp_path / "labels" / "VID79.json", text)
    line = text[: text.index('"1": [')].count("\n") + 1
    with pytest.raises(AnnotationError, match=rf"VID79.json:{line}: annotations\['1'\]\[0\] has 14 values"):
        get_adapter("cholect50")(tmp_path, strict=False).load()
    write(tmp_path / "labels" / "VID79.json", text[:-5])
    with pytest.raises(AnnotationError, match=r"VID79.json:\d+: invalid JSON"):
        get_adapter("cholect50")(tmp_path, strict=False).load()


def test_cholect50_crossval_validation_is_last_five_of_training(tmp_path):
    for n in (79, 92, 13, 1):
        write(tmp_path / "labels" / f"VID{n:02d}.json", _t50_json({0: [_inst(0, 0, 0, 0, 0)]}))
    s50 = get_adapter("cholect50")(tmp_path, strict=False).load()
    assert {v.video_id for v in s50["val"]} == {"VID92", "VID13", "VID01"}  # fold 1: val = 1 56 4 13 92
    assert [v.video_id for v in s50["test"]] == ["VID79"]
    s45 = get_adapter("cholect45")(tmp_path, strict=False).load()
    assert {v.video_id for v in s45["val"]} == {"VID13", "VID01"}  # CholecT45 fold 1: val = 74 1 56 4 13
    assert [v.video_id for v in s45["train"]] == []  # 92 is not in CholecT45
    with pytest.raises(DatasetLayoutError):
        get_adapter("cholect50")(tmp_path).load()


def test_cholect45_text_layout(tmp_path):
    write(tmp_path / "dict" / "triplet.txt", "".join(f"{i}:{n}\n" for i, n in enumerate(T_TRIPLETS)))
    write(tmp_path / "dict" / "instrument.txt", "".join(f"{i}:{n}\n" for i, n in enumerate(T_INSTR)))
    write(tmp_path / "dict" / "verb.txt", "".join(f"{i}:{n}\n" for i, n in enumerate(T_VERB)))
    write(tmp_path / "dict" / "target.txt", "".join(f"{i}:{n}\n" for i, n in enumerate(T_TARGET)))
    write(tmp_path / "triplet" / "VID02.txt", "0,1,0,0,0,0,0\n1,0,0,0,1,0,1\n")
    v = get_adapter("cholect45")(tmp_path, strict=False).load()["test"][0]
    assert v.labels.tolist() == [[1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 1]]
    assert v.components["i"].tolist() == [[1, 0], [0, 1]]
    write(tmp_path / "triplet" / "VID02.txt", "0,1,0,0,0,0,0\n1,0,2,0,1,0,1\n")
    with pytest.raises(AnnotationError, match=r"VID02.txt:2: label values"):
        get_adapter("cholect45")(tmp_path, strict=False).load()


def test_triplet_component_map_matches_ivtmetrics_maps_file():
    maps = np.loadtxt(real("cholect50/label_mapping_ivtmetrics_maps.txt"), delimiter=",", comments="#", dtype=int)
    instr = [f"i{k}" for k in range(6)]
    verbs = [f"v{k}" for k in range(10)]
    targets = [f"t{k}" for k in range(15)]
    names = [f"i{i},v{v},t{t}" for _, i, v, t, _, _ in maps]
    cmap = triplet_component_map(names, instr, verbs, targets)
    assert np.array_equal(cmap, maps[:, 1:])  # I, V, T, IV, IT of all 100 triplets
    rng = np.random.default_rng(1)
    ivt = (rng.random((7, 100)) < 0.05).astype(np.uint8)
    comps = components_from_triplets(ivt, cmap, {"i": 6, "v": 10, "t": 15, "iv": 60, "it": 90})
    for col, key in enumerate(("i", "v", "t", "iv", "it")):
        naive = np.zeros_like(comps[key])
        for f in range(7):
            for trip in np.nonzero(ivt[f])[0]:
                naive[f, maps[trip, col + 1]] = 1
        assert np.array_equal(comps[key], naive), key


# ---------------------------------------------------------------------------------------------
# JIGSAWS
# ---------------------------------------------------------------------------------------------


def test_jigsaws_fixture_folds_and_errors(tmp_path):
    task = tmp_path / "Suturing"
    rows = []
    for s in "BCDEFGHI":
        for k in (1, 2, 3, 4, 5):
            if (s, k) == ("H", 2):
                continue
            rows.append(f"Suturing_{s}00{k}\t\tN\t12\t\t2\t2\t2\t2\t2\t2")
    write(task / "meta_file_Suturing.txt", "\n".join(rows))  # no final newline
    write(task / "transcriptions" / "Suturing_B001.txt", "80 219 G1 \n220 370 G5 \n")
    ad = get_adapter("jigsaws")(tmp_path)
    loso = ad.folds("loso")
    louo = ad.folds("louo")
    assert len(loso) == 5 and len(louo) == 8
    for k, (train, test) in enumerate(loso, start=1):
        assert {t.trial_number for t in test} == {k} and all(t.trial_number != k for t in train)
        assert len(train) + len(test) == 39
    assert [len(test) for _, test in loso] == [8, 7, 8, 8, 8]
    assert [len(test) for _, test in louo] == [5, 5, 5, 5, 5, 5, 4, 5]
    splits = get_adapter("jigsaws")(tmp_path, split_scheme="louo_B").load()
    b1 = next(t for t in splits["test"] if t.trial_id == "Suturing_B001")
    assert b1.gestures == ((80, 219, "G1"), (220, 370, "G5")) and b1.grs == 12.0 and b1.split == "test"
    assert splits["val"] == [] and len(splits["train"]) == 34
    rows[3] = "Suturing_B004\t\tN\t13\t\t2\t2\t2\t2\t2\t2"
    write(task / "meta_file_Suturing.txt", "\n".join(rows))
    with pytest.raises(AnnotationError, match=r"meta_file_Suturing.txt:4: GRS 13 but the OSATS scores sum to 12"):
        get_adapter("jigsaws")(tmp_path).load()
    rows[3] = "Suturing_B004\t\tX\t12\t\t2\t2\t2\t2\t2\t2"
    write(task / "meta_file_Suturing.txt", "\n".join(rows))
    with pytest.raises(AnnotationError, match=r"meta_file_Suturing.txt:4: skill level 'X'"):
        get_adapter("jigsaws")(tmp_path).load()
    write(task / "transcriptions" / "Suturing_B001.txt", "80 219 G1\n200 300 G2\n")
    rows[3] = "Suturing_B004\t\tN\t12\t\t2\t2\t2\t2\t2\t2"
    write(task / "meta_file_Suturing.txt", "\n".join(rows))
    with pytest.raises(AnnotationError, match=r"Suturing_B001.txt:2: segment 200-300"):
        get_adapter("jigsaws")(tmp_path).load()


def test_jigsaws_real_meta_and_transcriptions(tmp_path):
    src = real("jigsaws")
    raw = (src / "meta_file_Suturing.txt").read_bytes()
    assert not raw.endswith(b"\n") and b"\t\t" in raw
    rows = read_meta_file(src / "meta_file_Suturing.txt")
    assert len(rows) == 39 and "Suturing_H002" not in {r["trial"] for r in rows}
    b001 = rows[0]
    assert b001["trial"] == "Suturing_B001" and b001["skill_level"] == "N"
    assert b001["grs"] == 13.0 and b001["osats"] == (3, 2, 1, 2, 2, 3)
    i005 = rows[-1]
    assert i005["trial"] == "Suturing_I005" and i005["grs"] == 19.0 and i005["osats"] == (3, 3, 3, 4, 3, 3)
    assert len(read_meta_file(src / "meta_file_Knot_Tying.txt")) == 36
    tr = read_transcription(src / "transcription_Suturing_B001.txt")
    assert tr[0] == (80, 219, "G1") and tr[-1] == (5448, 5635, "G11") and len(tr) == 29
    assert read_transcription(src / "transcription_Knot_Tying_B001.txt")[0] == (45, 85, "G12")
    (tmp_path / "Suturing" / "transcriptions").mkdir(parents=True)
    os.symlink(src / "meta_file_Suturing.txt", tmp_path / "Suturing" / "meta_file_Suturing.txt")
    for t in ("B001", "D001"):
        os.symlink(src / f"transcription_Suturing_{t}.txt", tmp_path / "Suturing" / "transcriptions" / f"Suturing_{t}.txt")
    ad = get_adapter("jigsaws")(tmp_path, split_scheme="louo_H")
    splits = ad.load()
    assert sorted(t.trial_id for t in splits["test"]) == ["Suturing_H001", "Suturing_H003", "Suturing_H004", "Suturing_H005"]
    loso = ad.folds("loso")
    assert len(loso[1][1]) == 7  # supertrial 2 lacks H002
    d001 = next(t for t in splits["train"] if t.trial_id == "Suturing_D001")
    assert d001.gestures[0] == (118, 145, "G1") and d001.surgeon == "D" and d001.trial_number == 1


# ---------------------------------------------------------------------------------------------
# clip sets: SurgicalActions160, AVOS, PolypDiag, SurgRec CSVs
# ---------------------------------------------------------------------------------------------


def test_surgicalactions160_fixed_split(tmp_path):
    names = ["abdominal_access", "injection"]
    for c in range(1, 17):
        for k in range(1, 11):
            write(tmp_path / f"{c:02d}_{names[c % 2]}" / f"{c:02d}_{k:02d}.mp4", "")
    splits = get_adapter("surgicalactions160")(tmp_path).load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [96, 32, 32]
    assert {s.clip_id for s in splits["test"] if s.label == 4} == {"05_09", "05_10"}
    assert all(s.label == int(s.clip_id[:2]) - 1 for v in splits.values() for s in v)
    next(tmp_path.glob("16_*/16_10.mp4")).unlink()
    with pytest.raises(DatasetLayoutError, match="16_10"):
        get_adapter("surgicalactions160")(tmp_path).load()


def test_polypdiag_and_avos_lists(tmp_path):
    train = "".join(f"clip{i:02d}.mp4,{i % 2}\n" for i in range(40))
    write(tmp_path / "splits" / "train.txt", train)
    write(tmp_path / "splits" / "val.txt", "v0.mp4,0\nv1.mp4,1\n")
    splits = get_adapter("polypdiag")(tmp_path).load()
    assert len(splits["val"]) == 6 and sum(s.label for s in splits["val"]) == 3  # 15% of each class
    assert len(splits["train"]) == 34 and [s.clip_id for s in splits["test"]] == ["v0", "v1"]
    again = get_adapter("polypdiag")(tmp_path).load()
    assert [s.clip_id for s in again["val"]] == [s.clip_id for s in splits["val"]]
    asis = get_adapter("polypdiag")(tmp_path, split_scheme="as_distributed").load()
    assert len(asis["train"]) == 40 and len(asis["val"]) == 2 and asis["test"] == []
    avos = get_adapter("avos")(tmp_path)
    avos.load()
    assert avos.class_names == ("class_0", "class_1")
    write(tmp_path / "splits" / "val.txt", "v0.mp4,0\nv1.mp4,2\n")
    with pytest.raises(AnnotationError, match=r"val.txt:2: label 2 \(expected a label in 0..1\)"):
        get_adapter("polypdiag")(tmp_path).load()
    write(tmp_path / "splits" / "val.txt", "v0.mp4 0\n")
    with pytest.raises(AnnotationError, match=r"val.txt:1: line 'v0.mp4 0'"):
        get_adapter("avos")(tmp_path).load()


def test_surgrec_real_split_csvs(tmp_path):
    src = real("surgrec_splits")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ad = get_adapter("surgrec")(tmp_path, split_dir=src / "cholec80")
        splits = ad.load()
    assert len(splits["train"]) == 270 and len(splits["test"]) == 273
    assert ad.val_is_test and any("same clips" in str(w.message) for w in caught)
    first = splits["train"][0]
    assert first.path == tmp_path / "cholec80/split_video/cholec80_01_1.mp4" and first.label == 0
    assert first.clip_id == "cholec80/split_video/cholec80_01_1"
    assert ad.class_names[0] == "PreparationPhase" and len(ad.class_names) == 7
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m2 = get_adapter("surgrec")(tmp_path, split_dir=src / "M2CAI16-Workflow")
        m2_splits = m2.load()
    # M2CAI16: labels 0..8 with a class "Phase" cut from the annotation header row
    assert m2.class_names[6] == "Phase" and len(m2.class_names) == 9
    assert any("header" in str(w.message) for w in caught)
    assert sum(c.label == 6 for c in m2_splits["train"]) == 27
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dropped = get_adapter("surgrec")(tmp_path, split_dir=src / "M2CAI16-Workflow", drop_labels=(6,)).load()
    assert len(dropped["train"]) == 241 - 27 and all(c.label != 6 for c in dropped["train"])
    sa = get_adapter("surgrec")(tmp_path, split_dir=src / "SurgicalActions160").load()
    assert [len(sa[s]) for s in ("train", "val", "test")] == [112, 32, 16]
    assert sorted({c.label for c in sa["test"]}) == list(range(16))
    al = get_adapter("surgrec")(tmp_path, split_dir=src / "AutoLaparo").load()
    assert {c.path.name[:8] for c in al["val"]} == {f"label_{n}" for n in (11, 12, 13, 14)}


def test_surgrec_malformed_line(tmp_path):
    write(tmp_path / "s" / "train.csv", "__DATA_ROOT__/a/b.mp4 1\n/abs/c.mp4 2\n")
    write(tmp_path / "s" / "test.csv", "__DATA_ROOT__/a/d.mp4 1\n")
    with pytest.raises(AnnotationError, match=r"train.csv:2: line '/abs/c.mp4 2'"):
        get_adapter("surgrec")(tmp_path, split_dir=tmp_path / "s", strict=False).load()


# ---------------------------------------------------------------------------------------------
# polyp segmentation, C3VD depth
# ---------------------------------------------------------------------------------------------


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 5), value, np.uint8)).save(path)


def test_read_mask_threshold_and_read_image_png(tmp_path):
    grey = np.array([[0, 127, 128], [200, 255, 1]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").tolist() == [[False, False, True], [True, True, False]]
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = grey, 255 - grey
    Image.fromarray(rgb).save(tmp_path / "named.jpg", format="PNG")  # PNG bytes under a .jpg name
    assert sniff_format(tmp_path / "named.jpg") == "png"
    assert np.array_equal(read_image(tmp_path / "named.jpg"), rgb)


def test_polyp_pranet_layout(tmp_path):
    for stem in ["1", "2", "3", "cju0abc", "cju0def", "cju0xyz", "cju1aaa", "cju1bbb", "cju1ccc", "cju1ddd", "cju1eee"]:
        _png(tmp_path / "TrainDataset" / "image" / f"{stem}.png", 100)
        _png(tmp_path / "TrainDataset" / "mask" / f"{stem}.png", 255)
    for name in ("Kvasir", "CVC-ClinicDB", "CVC-300", "CVC-ColonDB", "ETIS-LaribPolypDB"):
        _png(tmp_path / "TestDataset" / name / "images" / "x.png", 10)
        _png(tmp_path / "TestDataset" / name / "masks" / "x.png", 0)
    with pytest.raises(DatasetLayoutError, match="8 Kvasir images, PraNet's has 900"):
        get_adapter("polyp")(tmp_path).load()
    splits = get_adapter("polyp")(tmp_path, strict=False).load()
    assert len(splits["train"]) + len(splits["val"]) == 11 and len(splits["val"]) == 1  # round(0.1*8)=1, round(0.1*3)=0
    assert {s.source_dataset for s in splits["train"] if s.sample_id.isdigit()} == {"CVC-ClinicDB"}
    assert splits["val"][0].source_dataset == "Kvasir"
    assert sorted(s.source_dataset for s in splits["test"]) == sorted(
        ["Kvasir", "CVC-ClinicDB", "CVC-300", "CVC-ColonDB", "ETIS-LaribPolypDB"])
    (tmp_path / "TrainDataset" / "mask" / "2.png").unlink()
    with pytest.raises(DatasetLayoutError, match="do not pair"):
        get_adapter("polyp")(tmp_path, strict=False).load()


def test_polyp_raw_kvasir_real_masks_thresholded():
    import simplejpeg

    folder = real("kvasir_seg")
    splits = get_adapter("polyp")(folder, split_scheme="kvasir_raw_v1").load()
    samples = [s for v in splits.values() for s in v]
    assert len(samples) == 5 and {s.source_dataset for s in samples} == {"Kvasir"}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [3, 1, 1]  # at least one image in val and test
    for s in samples:
        grey = simplejpeg.decode_jpeg(s.mask.read_bytes(), colorspace="GRAY")[..., 0]
        assert len(np.unique(grey)) > 2  # lossy JPEG: not a clean 0/255 mask
        mask = read_mask(s.mask)
        assert mask.dtype == bool and mask.shape == grey.shape
        disagree = np.mean(mask != (grey >= 128))
        assert disagree < 1e-3  # two decoders, same threshold
        assert 0.01 < mask.mean() < 0.9
        img = read_image(s.image)
        assert img.shape[:2] == mask.shape


def _tiff16(path: Path, codes: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(codes.astype(np.uint16)).save(path)


@pytest.mark.filterwarnings("ignore:C3VDAdapter")
def test_c3vd_fixture_split_and_depth(tmp_path):
    codes = np.array([[0, 65535], [32768, 6553]], np.uint16)
    for seq in ("cecum_t1_a", "cecum_t3_a", "cecum_t2_a", "mystery_seq"):
        for k in range(2):
            _png(tmp_path / seq / f"{k:04d}_color.png", 50)
            _tiff16(tmp_path / seq / f"{k:04d}_depth.tiff", codes)
    with pytest.warns(UserWarning, match="mystery_seq"):
        splits = get_adapter("c3vd")(tmp_path, strict=False).load()
    assert [len(splits[s]) for s in ("train", "val", "test")] == [2, 2, 2]
    assert splits["test"][0].sample_id == "cecum_t2_a/0000" and splits["test"][0].sequence == "cecum_t2_a"
    depth = read_depth_mm(splits["test"][1].depth)
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, [[0.0, 100.0], [50.000763, 9.999237]], rtol=1e-6)
    with pytest.raises(DatasetLayoutError, match="strict=False"):
        get_adapter("c3vd")(tmp_path).load()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "eight_bit.tiff")
    with pytest.raises(ValueError, match="16-bit"):
        read_depth_mm(tmp_path / "eight_bit.tiff")
    (tmp_path / "cecum_t1_a" / "0001_depth.tiff").unlink()
    with pytest.raises(DatasetLayoutError, match="without depth"):
        get_adapter("c3vd")(tmp_path, strict=False).load()
