"""SurgRec split folders: every format variant of the release on fixtures made here (quoted paths with spaces,
both label-map formats, class names from folders / file names / the source dataset), val == test flagged in
the run's record, the re-split by video, and the real split files in ../shared (skipped when absent)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from conftest import SHARED, write_video

from unisurg.datasets import get_adapter
from unisurg.datasets.base import DatasetLayoutError
from unisurg.datasets.surgrec import SURGREC_FOLDERS, video_of
from unisurg.evaluation.runner import run_benchmark

R = "__DATA_ROOT__"


def _folder(root: Path, name: str, rows: dict[str, list[str]], label_map: dict | None = None,
            map_name: str = "label_map.json") -> Path:
    d = root / "splits" / name
    d.mkdir(parents=True, exist_ok=True)
    for split, lines in rows.items():
        (d / f"{split}.csv").write_text("".join(line + "\n" for line in lines))
    if label_map is not None:
        (d / map_name).write_text(json.dumps(label_map))
    return d


def _load(root, name, scheme=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ad = get_adapter(f"surgrec-{name}")(root, scheme)
        splits = ad.load()
    return ad, splits, [str(w.message) for w in caught]


def test_quoted_paths_with_spaces_and_folder_class_names(tmp_path):
    rows = [f'"{R}/kvasir-capsule/videos/Ileocecal valve/04a78ef00c5245e0_1-2.mp4" 0',
            f'"{R}/kvasir-capsule/videos/blood-fresh/131368cc17e44240_3-4.mp4" 1']
    _folder(tmp_path, "kvasir-capsule", {"train": rows, "val": rows[::-1], "test": rows})
    ad, splits, warned = _load(tmp_path, "kvasir-capsule")
    first = splits["train"][0]
    assert first.path == tmp_path / "kvasir-capsule/videos/Ileocecal valve/04a78ef00c5245e0_1-2.mp4"
    assert ad.class_names == ("Ileocecal valve", "blood-fresh") and ad.flags["class_names"].endswith("(folder names)")
    # val lists the test clips in another order: still val == test
    assert ad.val_is_test and "val_is_test" in ad.flags and any("same clips" in w for w in warned)


def test_both_label_map_formats(tmp_path):
    rows = [f"{R}/c1k/case_1_segment_01_incision_0.0-1.0.mp4 1", f"{R}/c1k/case_2_segment_02_rhexis_1.0-2.0.mp4 0"]
    _folder(tmp_path, "cataract-1k-phase", {"train": rows, "val": rows[:1], "test": rows[1:]},
            {"rhexis": 0, "incision": 1, "incision_alias": 1})  # flat {name: id}; first name of an id wins
    ad, _, _ = _load(tmp_path, "cataract-1k-phase")
    assert ad.class_names == ("rhexis", "incision") and not ad.val_is_test
    _folder(tmp_path, "AlxSuture", {"train": [f"{R}/a/D94Z.mp4 0", f"{R}/a/Z49D.mp4 1"], "val": [f"{R}/a/F32Q.mp4 0"],
                                    "test": [f"{R}/a/X88U.mp4 1"]},
            {"index_to_label": {"0": "beginner", "1": "intermediate"}, "label_to_index": {"novice": 0}})
    ad, _, _ = _load(tmp_path, "AlxSuture")
    assert ad.class_names == ("beginner", "intermediate") and ad.flags["class_names"] == "from label_map.json"


def test_class_names_from_file_words_and_known_names(tmp_path):
    mb = [f"{R}/mb/split_videos/bern/phase/BBP01/BBP01_phase_001_preparation_000332-034298.mp4 1",
          f"{R}/mb/split_videos/bern/phase/BBP02/BBP02_phase_004_preparation_000001-000100.mp4 1",
          f"{R}/mb/split_videos/bern/phase/BBP01/BBP01_phase_002_out_of_body_001339-001894.mp4 0",
          f"{R}/mb/split_videos/bern/phase/BBP02/BBP02_phase_003_out_of_body_000001-000002.mp4 0"]
    _folder(tmp_path, "MultiBypass140", {"train": mb, "val": mb[:1], "test": mb[2:]})
    ad, _, _ = _load(tmp_path, "MultiBypass140")
    assert ad.class_names == ("out_of_body", "preparation")
    jig = [f"{R}/J/videos/Suturing_B001_capture1_0.5_5.63_G1.mp4 0", f"{R}/J/videos/Knot_Tying_C002_capture2_1_2_G1.mp4 0",
           f"{R}/J/videos/Suturing_B001_capture2_6_7_G12.mp4 1", f"{R}/J/videos/Suturing_D003_capture1_8_9_G12.mp4 1"]
    _folder(tmp_path, "JIGSAWS", {"train": jig, "val": jig, "test": jig})
    ad, _, _ = _load(tmp_path, "JIGSAWS")
    assert ad.class_names == ("G1", "Suturing_G12")  # words every clip of the label shares (real: Knot_Tying_G12)
    al = [f"{R}/AutoLaparo/split_video/label_{v:02d}_{k}.mp4 {k}" for v in (1, 2) for k in range(7)]
    _folder(tmp_path, "AutoLaparo", {"train": al[:7], "val": al[7:], "test": al[7:]})
    ad, _, _ = _load(tmp_path, "AutoLaparo")
    assert ad.class_names[0] == "Preparation" and len(ad.class_names) == 7
    assert ad.flags["class_names"] == "known names of the source dataset"
    _folder(tmp_path, "LDPolyVideo", {"train": [f"{R}/L/v/0_1_2_3.mp4 0", f"{R}/L/v/1_4_5_6.mp4 1"],
                                      "val": [f"{R}/L/v/0_7_8_9.mp4 0"], "test": [f"{R}/L/v/0_7_8_9.mp4 0"]})
    ad, _, warned = _load(tmp_path, "LDPolyVideo")  # nothing names the classes
    assert ad.class_names == ("class_0", "class_1") and any("class_<k>" in w for w in warned)


def test_video_val_resplit_keeps_videos_together(tmp_path):
    rows = [f"{R}/cholec80/split_video/cholec80_{v:02d}_{k}.mp4 {k % 3}" for v in range(1, 11) for k in range(1, 4)]
    test = [f"{R}/cholec80/split_video/cholec80_{v:02d}_1.mp4 0" for v in (41, 42)]
    _folder(tmp_path, "cholec80", {"train": rows, "val": test, "test": test})
    ad, splits, warned = _load(tmp_path, "cholec80", "video_val")
    vid = lambda c: c.path.name[:11]  # noqa: E731  cholec80_NN
    assert {vid(c) for c in splits["val"]} and not {vid(c) for c in splits["val"]} & {vid(c) for c in splits["train"]}
    assert len({vid(c) for c in splits["val"]}) == 2 and len(splits["val"]) == 6  # 20% of 10 videos, all their clips
    assert [c.path.name for c in splits["test"]] == ["cholec80_41_1.mp4", "cholec80_42_1.mp4"]
    assert all(c.split == "val" for c in splits["val"]) and "video_val" in ad.flags
    assert not ad.val_is_test and "val_is_test" not in ad.flags and not any("same clips" in w for w in warned)
    again = _load(tmp_path, "cholec80", "video_val")[1]
    assert [c.clip_id for c in again["val"]] == [c.clip_id for c in splits["val"]]
    _folder(tmp_path, "SurgicalActions160", {"train": [f"{R}/S/01_a/01_08.mp4 0"], "val": [f"{R}/S/01_a/01_05.mp4 0"],
                                             "test": [f"{R}/S/01_a/01_02.mp4 0"]})
    with pytest.raises(DatasetLayoutError, match="do not identify their source video"):
        _load(tmp_path, "SurgicalActions160", "video_val")


def test_video_of_patterns_by_hand():
    assert set(video_of(["a/case_12_training_0012.mp4", "b/case_3_x.mp4"]).values()) == {"case_12", "case_3"}
    assert video_of(["v/Needle_Passing_E001_capture2_0.5_5.63_G1.mp4"])["v/Needle_Passing_E001_capture2_0.5_5.63_G1.mp4"] \
        == "Needle_Passing_E001"
    assert video_of(["x/m2cai16w_test_dataset_test_workflow_video_02_Preparation.mp4"]) == \
        {"x/m2cai16w_test_dataset_test_workflow_video_02_Preparation.mp4": "m2cai16w_test_dataset_test_workflow_video_02"}
    assert video_of(["a/D94Z.mp4"]) is None


def test_val_is_test_is_flagged_in_the_run_record(tmp_path):

    clips = []
    for i in range(8):
        rel = f"ds/split_video/{'ab'[i % 2]}/video_{i // 2:02d}_clip{i}.mp4"
        write_video(tmp_path / rel, n_frames=8, fps=4, seed=i)
        clips.append(f"{R}/{rel} {i % 2}")
    _folder(tmp_path, "SAR-RARP50", {"train": clips[:6], "val": clips[6:], "test": clips[6:]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_benchmark(["random:tiny@0?embed_dim=32&depth=1&num_heads=2"], "surgrec-sar-rarp50", tmp_path,
                            out=tmp_path / "o", config="tiny",
                            overrides=[f"cache_dir={tmp_path / 'c'}", "report.bootstrap_n=20", "report.figures=false"],
                            log=lambda s: None)
    run = next(iter(res["runs"].values()))
    assert "val_is_test" in run["dataset_flags"] and run["class_names"] == ["a", "b"]
    assert "WARNING val == test" in (tmp_path / "o" / "table.md").read_text()


REAL = SHARED / "real-data" / "surgrec_splits"


@pytest.mark.skipif(not REAL.is_dir(), reason="shared real-data/surgrec_splits not present")
def test_every_real_split_folder_loads_with_real_class_names(tmp_path):
    expected = {"cholec80": ([270, 273, 273], True), "M2CAI16-Workflow": ([241, 113, 113], True),
                "AutoLaparo": ([77, 26, 62], False), "SurgicalActions160": ([112, 32, 16], False)}
    folders = sorted(p.name for p in REAL.iterdir() if p.is_dir())
    assert folders and set(folders) <= set(SURGREC_FOLDERS)
    (tmp_path / "splits").symlink_to(REAL)
    for name in folders:
        ad, splits, _ = _load(tmp_path, name)
        counts = [len(splits[s]) for s in ("train", "val", "test")]
        if name in expected:
            assert (counts, ad.val_is_test) == expected[name], name
        assert not any(n.startswith("class_") for n in ad.class_names), (name, ad.class_names)
        assert ad.val_is_test == ("val_is_test" in ad.flags)
    ad, _, _ = _load(tmp_path, "SurgicalActions160")
    assert ad.class_names[0] == "01_abdominal_access" and len(ad.class_names) == 16
    ad, splits, _ = _load(tmp_path, "cholec80", "video_val")
    assert len(splits["test"]) == 273 and len(splits["train"]) + len(splits["val"]) == 270
