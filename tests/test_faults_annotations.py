"""Fault injection: hostile or damaged annotation files.

Each case is checked in both modes: strict (default) fails with an AnnotationError naming the file
(and line where the format has lines); lenient repairs the entry and records the repair.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import BB_A, bench_cli

from unisurg.datasets import AnnotationError, get_adapter
from unisurg.evaluation.bench_config import load_bench_config
from unisurg.evaluation.tasks import make_task
from unisurg.synth.generate import generate_dataset

T_INSTR = ["grasper", "hook"]
T_VERB = ["grasp", "dissect", "null_verb"]
T_TARGET = ["gallbladder", "liver", "null_target"]
T_TRIPLETS = ["grasper,grasp,gallbladder", "grasper,dissect,liver", "hook,dissect,gallbladder",
              "hook,dissect,liver", "grasper,null_verb,null_target", "hook,null_verb,null_target"]
PHASES = ["Preparation", "CalotTriangleDissection", "ClippingCutting", "GallbladderDissection",
          "GallbladderPackaging", "CleaningCoagulation", "GallbladderRetraction"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- CholecT50 ---------------------------------------------------------------------------------------

def _inst(trip, tool, verb, target, phase):
    return [trip, tool, 1, 0.1, 0.1, 0.2, 0.2, verb, target, 1, -1, -1, -1, -1, phase]


def _t50(root: Path, annotations_text: str) -> Path:
    """VID79.json (fold-1 test video) with the annotations object given as raw JSON text."""
    cats = {"instrument": T_INSTR, "verb": T_VERB, "target": T_TARGET, "triplet": T_TRIPLETS,
            "phase": ["preparation", "calot"]}
    cats = {k: {str(i): n for i, n in enumerate(v)} for k, v in cats.items()}
    text = '{"video": 79, "fps": 1, "categories": ' + json.dumps(cats) + ',\n"annotations": {\n' + annotations_text + "\n}}"
    return write(root / "labels" / "VID79.json", text)


def _t50_load(root: Path, lenient: bool):
    ad = get_adapter("cholect50")(root, strict=False, lenient=lenient)
    return ad.load()["test"][0], ad.repairs.entries


GOOD = [f'"{f}": [{json.dumps(_inst(0, 0, 0, 0, 0))}]' for f in range(3)]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "2.5"])
def test_cholect50_non_finite_or_fractional_ids(tmp_path, token):
    bad = json.dumps(_inst(0, 0, 0, 0, 0)).replace("[0, 0,", f"[{token}, 0,", 1)
    _t50(tmp_path, ",\n".join(GOOD + [f'"3": [{bad}, {json.dumps(_inst(2, 1, 1, 0, 1))}]']))
    shown = repr(float(token))
    with pytest.raises(AnnotationError, match=rf"VID79.json:6: annotations\['3'\]\[0\] has ids \[{shown}, 0"):
        _t50_load(tmp_path, lenient=False)
    v, repairs = _t50_load(tmp_path, lenient=True)
    assert v.labels.shape == (4, 6) and v.labels[3].tolist() == [0, 0, 1, 0, 0, 0]  # the other instance kept
    assert len(repairs) == 1 and repairs[0].line == 6 and repairs[0].repair == "drop this instance"


@pytest.mark.parametrize("key", ["100000000000", "10000000"])
def test_cholect50_implausible_frame_key(tmp_path, key):
    _t50(tmp_path, ",\n".join(GOOD + [f'"{key}": [{json.dumps(_inst(1, 0, 1, 1, 0))}]']))
    with pytest.raises(AnnotationError, match=rf"VID79.json:6: frame key '{key}' lies .* hours\) into a 1-fps video"):
        _t50_load(tmp_path, lenient=False)
    v, repairs = _t50_load(tmp_path, lenient=True)
    assert v.labels.shape == (3, 6)  # not a 10M-row label vector
    assert [r.repair for r in repairs] == ["drop this frame"]


def test_cholect50_missing_frame_keys_are_not_read_as_no_triplet(tmp_path):
    rows = [f'"{f}": [{json.dumps(_inst(0, 0, 0, 0, 0))}]' for f in (0, 1, 5, 6, 9)]
    _t50(tmp_path, ",\n".join(rows))
    with pytest.raises(AnnotationError, match=r"VID79.json: 5 of 10 frame keys missing \(frames 2-4, 7-8\)"):
        _t50_load(tmp_path, lenient=False)
    v, repairs = _t50_load(tmp_path, lenient=True)
    assert v.extra["labelled"].tolist() == [True, True, False, False, False, True, True, False, False, True]
    assert repairs[0].repair.startswith("leave the missing frames unlabelled")

    task = make_task("triplet", v.class_names, load_bench_config("tiny"), [v])
    assert task._labelled(v).tolist() == [0, 1, 5, 6, 9]  # neither trained on nor scored


def test_cholect50_duplicate_frame_key(tmp_path):
    _t50(tmp_path, ",\n".join(GOOD + [f'"1": [{json.dumps(_inst(3, 1, 1, 1, 0))}]']))
    with pytest.raises(AnnotationError, match=r"VID79.json:6: key '1' appears twice"):
        _t50_load(tmp_path, lenient=False)
    v, repairs = _t50_load(tmp_path, lenient=True)
    assert v.labels[1].tolist() == [1, 0, 0, 0, 0, 0] and repairs[0].repair == "keep its first value"


# -- OphNet ------------------------------------------------------------------------------------------

HEADER = "video_id,start,end,split,surgery_id,phase_id\n"


def test_ophnet_end_in_milliseconds(tmp_path):
    write(tmp_path / "OphNet2024_loca_challenge_phase.csv",
          HEADER + "case_0001,0,12.5,train,0,1\ncase_0001,12.5,3600000,train,0,2\ncase_0002,0,8,test,0,3\n")
    with pytest.raises(AnnotationError, match=r"phase.csv:3: segment end 3.6e\+06 s \(1000.0 hours\) .*milliseconds"):
        get_adapter("ophnet")(tmp_path, strict=False).load()
    ad = get_adapter("ophnet")(tmp_path, strict=False, lenient=True)
    v = ad.load()["train"][0]
    assert v.n_seconds == 13 and (ad.repairs.entries[0].line, ad.repairs.entries[0].repair) == (3, "drop this row")


def test_ophnet_duplicate_rows(tmp_path):
    write(tmp_path / "OphNet2024_loca_challenge_phase.csv",
          HEADER + "case_0001,0,10,train,0,1\ncase_0001,10,20,train,0,2\ncase_0001,0,10,train,0,1\n")
    with pytest.raises(AnnotationError, match=r"phase.csv:4: row repeats line 2"):
        get_adapter("ophnet")(tmp_path, strict=False).load()
    ad = get_adapter("ophnet")(tmp_path, strict=False, lenient=True)
    assert ad.load()["train"][0].labels.tolist() == [1] * 10 + [2] * 10
    assert [r.line for r in ad.repairs.entries] == [4]


def test_ophnet_surgery_table_lists_a_video_twice(tmp_path):
    write(tmp_path / "OphNet2024_loca_challenge_phase.csv", HEADER + "case_0001,0,10,train,0,1\n")
    write(tmp_path / "OphNet2024_surgery.csv", "video_id,surgery\ncase_0001,62\ncase_0001,\"61,62\"\n")
    with pytest.raises(AnnotationError, match=r"OphNet2024_surgery.csv:3: video case_0001 listed again \(first on line 2\)"):
        get_adapter("ophnet")(tmp_path, strict=False).load()
    ad = get_adapter("ophnet")(tmp_path, strict=False, lenient=True)
    assert ad.load()["train"][0].extra["surgeries"] == (62,) and len(ad.repairs.entries) == 1


# -- PmLR50 ------------------------------------------------------------------------------------------

def _pmlr(root: Path, phases: list) -> Path:
    d = root / "labels_pkl" / "test"
    d.mkdir(parents=True, exist_ok=True)
    (d / "1fpstest.pickle").write_bytes(pickle.dumps({"40": [{"frame_id": i, "phase_gt": p} for i, p in enumerate(phases)]}))
    return d / "1fpstest.pickle"


@pytest.mark.parametrize("bad", [2.9, float("nan"), np.float64(1.5), "2"])
def test_pmlr50_non_integer_phase_is_not_truncated(tmp_path, bad):
    _pmlr(tmp_path, [0, 1, bad, 3])
    with pytest.raises(AnnotationError, match=r"1fpstest.pickle: video '40' frame 2 has phase_gt .* \(not an integer\)"):
        get_adapter("pmlr50")(tmp_path, strict=False).load()
    ad = get_adapter("pmlr50")(tmp_path, strict=False, lenient=True)
    assert ad.load()["test"][0].labels.tolist() == [0, 1, -1, 3]
    assert ad.repairs.entries[0].repair == "mark this second unlabelled (-1)"


def test_pmlr50_unreadable_pickle_names_the_file(tmp_path, capsys):
    f = _pmlr(tmp_path, [0, 1, 2])
    f.write_bytes(f.read_bytes()[:20])
    with pytest.raises(AnnotationError, match=rf"{f}: not a readable pickle"):
        get_adapter("pmlr50")(tmp_path, strict=False).load()


# -- Cholec80: phase vs tool file ---------------------------------------------------------------------

def _cholec(root: Path, n_frames: int, tool_rows: int) -> tuple[Path, Path]:
    phase = write(root / "phase_annotations" / "video41-phase.txt",
                  "Frame\tPhase\n" + "".join(f"{f}\t{PHASES[min(f // 60, 6)]}\n" for f in range(n_frames)))
    tool = write(root / "tool_annotations" / "video41-tool.txt",
                 "Frame\t" + "\t".join(["Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag"])
                 + "\n" + "".join(f"{r * 25}\t1\t0\t0\t0\t0\t0\t0\n" for r in range(tool_rows)))
    return phase, tool


def test_cholec80_phase_file_cut_at_a_row_boundary(tmp_path):
    _cholec(tmp_path, 250, 9)  # as distributed: ceil(250 / 25) - 1 tool rows
    assert get_adapter("cholec80")(tmp_path, strict=False).load()["test"][0].n_seconds == 10
    _cholec(tmp_path, 250, 9)
    phase = tmp_path / "phase_annotations" / "video41-phase.txt"
    phase.write_text("".join(phase.read_text().splitlines(keepends=True)[:1 + 150]))  # header + frames 0..149
    with pytest.raises(AnnotationError, match=r"video41-phase.txt: ends at frame 149, but video41-tool.txt has tool "
                                              r"rows up to frame 200 .*looks cut"):
        get_adapter("cholec80")(tmp_path, strict=False).load()
    ad = get_adapter("cholec80")(tmp_path, strict=False, lenient=True)
    v = ad.load()["test"][0]
    assert v.n_seconds == 6 and v.extra["tools"].shape == (6, 7) and len(ad.repairs.entries) == 1


def test_cholec80_tool_file_cut_at_a_row_boundary(tmp_path):
    _cholec(tmp_path, 250, 6)
    with pytest.raises(AnnotationError, match=r"video41-tool.txt: 6 tool rows leave 4 of 10 seconds unannotated"):
        get_adapter("cholec80")(tmp_path, strict=False).load()
    ad = get_adapter("cholec80")(tmp_path, strict=False, lenient=True)
    tools = ad.load()["test"][0].extra["tools"]
    assert tools[:6, 0].tolist() == [1] * 6 and (tools[6:] == -1).all()


# -- JIGSAWS: meta file vs trial list ------------------------------------------------------------------

def _jigsaws(root: Path, drop_last: int = 0, transcriptions: bool = True) -> None:
    rows = [f"Suturing_{s}00{k}\t\tN\t12\t\t2\t2\t2\t2\t2\t2" for s in "BCDEFGHI" for k in range(1, 6)
            if (s, k) != ("H", 2)]
    write(root / "Suturing" / "meta_file_Suturing.txt", "\n".join(rows[: len(rows) - drop_last]))
    if transcriptions:
        for r in rows:
            write(root / "Suturing" / "transcriptions" / f"{r.split()[0]}.txt", "80 219 G1 \n")


def test_jigsaws_meta_file_cut_at_a_row_boundary(tmp_path):
    _jigsaws(tmp_path)
    assert len(get_adapter("jigsaws")(tmp_path).trials()) == 39
    _jigsaws(tmp_path, drop_last=2)
    with pytest.raises(AnnotationError, match=r"meta_file_Suturing.txt: no row for trial\(s\) Suturing_I004, "
                                              r"Suturing_I005, which have files .*looks cut"):
        get_adapter("jigsaws")(tmp_path, strict=False).trials()
    ad = get_adapter("jigsaws")(tmp_path, strict=False, lenient=True)
    assert len(ad.trials()) == 37 and len(ad.repairs.entries) == 1


def test_jigsaws_meta_file_cut_without_other_files_is_caught_by_the_release_count(tmp_path):
    _jigsaws(tmp_path, drop_last=1, transcriptions=False)
    with pytest.raises(AnnotationError, match=r"38 trial rows; the JIGSAWS release has 39"):
        get_adapter("jigsaws")(tmp_path).trials()
    assert len(get_adapter("jigsaws")(tmp_path, strict=False).trials()) == 38  # a subset, on purpose


# -- through the benchmark command -------------------------------------------------------------------

def test_bench_lenient_records_every_repair_in_results(tmp_path, capsys):
    root = tmp_path / "synth"
    generate_dataset(root, n_videos=4, seconds=12, height=32, width=48, fps=5, seed=0, progress=False)
    tool = root / "tool_annotations" / "video02-tool.txt"  # rows every 25 frames = 5 s at 5 fps
    lines = tool.read_text().splitlines(keepends=True)
    tool.write_text("".join(lines[:-1]))  # cut at a row boundary: seconds 10 and 11 lose their row
    args = ["bench", "--backbone", BB_A, "--dataset", "synthetic", "--root", str(root), "--config", "tiny",
            f"cache_dir={tmp_path / 'cache'}", "--quiet", "report.bootstrap_n=20", "report.figures=false"]
    assert bench_cli(*args, "--out", str(tmp_path / "strict")) == 2
    assert f"{tool}: " in capsys.readouterr().err
    assert bench_cli(*args, "--out", str(tmp_path / "lenient"), "--lenient") == 0
    assert "annotation repair (lenient)" in capsys.readouterr().out
    run = next(iter(json.loads((tmp_path / "lenient" / "results.json").read_text())["runs"].values()))
    assert [r["file"] for r in run["annotation_repairs"]] == [str(tool)]
    assert run["config"]["lenient"] is True


# -- M2CAI16: a frame index with extra digits as the last row ---------------------------------------

def test_m2cai16_implausible_last_frame(tmp_path):
    rows = "Frame\tPhase\n0\tTrocarPlacement\n250\tPreparation\n10000000\tPreparation\n"
    write(tmp_path / "test_dataset" / "test_workflow_video_01.txt", rows)
    with pytest.raises(AnnotationError, match=r"test_workflow_video_01.txt:4: frame 10000000 lies 400000 s "
                                              r"\(111.1 hours\) into the video at 25 fps"):
        get_adapter("m2cai16")(tmp_path, strict=False).load()
    ad = get_adapter("m2cai16")(tmp_path, strict=False, lenient=True)
    v = ad.load()["test"][0]
    assert v.n_seconds == 11 and v.labels.tolist() == [0] * 10 + [1]  # not 400,000 seconds
    assert ad.repairs.entries[0].repair == "drop the rows from here on"
