"""``unisurg vlm`` end to end on tiny random checkpoints of five families (made offline by vlm_tiny.py
and loaded the way a real checkpoint is) and a toy synthetic dataset: the report, SurgRec-format output,
batching, resuming a killed run, merging shards, and the input modes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import vlm_tiny
from conftest import bench_cli as cli
from conftest import write_video

from unisurg.synth.generate import generate_dataset
from unisurg.vlm.answers import read_answers
from unisurg.vlm.config import load_vlm_config
from unisurg.vlm.families import ModelLoadError, torchvision_available
from unisurg.vlm.inputs import evenly_spaced
from unisurg.vlm.parsing import parse_strict, parse_surgrec
from unisurg.vlm.prompts import build_prompt
from unisurg.vlm.runner import StudyError, merge_study, run_study

PROMPTS = ["baseline", "stability_v1", "baseline@rev"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):

    root = tmp_path_factory.mktemp("vlm")
    generate_dataset(root / "synth", n_videos=10, seconds=12, height=64, width=96, fps=5, seed=0, progress=False)
    models = {name: build(root / name) for name, build in vlm_tiny.BUILDERS.items()}
    return {"root": root, "synth": root / "synth", "cache": root / "cache", "models": models}


def overrides(world, *extra: str) -> list[str]:
    return [f"cache_dir={world['cache']}", "stride=3", "bootstrap_n=50", "max_new_tokens=5", "batch_size=4",
            f"prompts={json.dumps(PROMPTS)}", *extra]


def study(world, out: Path, family: str = "qwen2_5_vl", *extra: str, **kw) -> dict:
    cfg = load_vlm_config(overrides(world, *extra))
    return run_study(world["models"][family], "synthetic", world["synth"], out, cfg, log=lambda m: None, **kw)


@pytest.fixture(scope="module")
def reference(world):
    out = world["root"] / "reference"
    res = study(world, out)
    assert res["pending"] == 0 and res["report"] is not None
    return out


def _answers(out: Path) -> dict:
    return {k: v["answer"] for k, v in read_answers(out).items()}


@pytest.mark.parametrize("family", sorted(vlm_tiny.BUILDERS))
def test_cli_end_to_end(world, family, tmp_path):
    out = tmp_path / "out"
    rc = cli("vlm", "--model", str(world["models"][family]), "--dataset", "synthetic", "--root", str(world["synth"]),
             "--out", str(out), "--prompts", *PROMPTS, "--quiet", *overrides(world)[:-1])
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    samples = json.loads((out / "samples.json").read_text())
    assert run["family"] == family and list(run["prompts"]) == PROMPTS
    # 2 test videos of 12 s (60/20/20 split of 10), every 3rd labelled second, its own frame (middle of a 1-frame clip)
    assert len({s["group"] for s in samples}) == 2 and len(samples) == 8
    for s in samples:
        assert s["key"].endswith(f"@{s['indices'][0]}") and int(s["key"].split("@")[1]) % 3 == 0
    answers = _answers(out)
    assert set(answers) == {(s["key"], p) for s in samples for p in PROMPTS}
    results = json.loads((out / "results.json").read_text())
    labels = {s["key"]: s["label"] for s in samples}
    for p in PROMPTS:  # the accuracies, recomputed from the raw answers with the parsers applied by hand
        prompt = build_prompt(p, run["class_names"])
        for parser, fn in (("surgrec", parse_surgrec), ("strict", parse_strict)):
            preds = [fn(answers[(s["key"], p)], prompt).label for s in samples]
            acc = sum(pr == labels[s["key"]] for pr, s in zip(preds, samples)) / len(samples)
            m = results["parsers"][parser]["prompts"][p]
            assert m["accuracy"]["value"] == pytest.approx(acc)
            assert m["parse_failure_rate"]["value"] == pytest.approx(sum(pr is None for pr in preds) / len(samples))
        # SurgRec's files: the keys their compare_prompt_sensitivity.py reads, consistent with the predictions
        meta = json.loads((out / "surgrec" / p.replace("@", "_") / "synthetic" / "meta.json").read_text())
        preds = json.loads((out / "surgrec" / p.replace("@", "_") / "synthetic" / "predictions.json").read_text())
        assert isinstance(meta["total"], int) and meta["total"] == len(samples) == len(preds)
        assert meta["prompt_variant"] == p and set(meta["label_map"]) == {str(i) for i in range(len(run["class_names"]))}
        assert meta["correct"] == sum(x["ok"] for x in preds)
        assert meta["accuracy"] == pytest.approx(results["parsers"]["surgrec"]["prompts"][p]["accuracy"]["value"])
        assert meta["valid_count"] == sum(x["pred_label"] is not None for x in preds)
        assert all(x["raw_output"] == answers[(x["sample"], p)] for x in preds)
    report = (out / "report.md").read_text()
    assert "## Prompt sensitivity" in report and "McNemar" in report and "SurgRec's sensitivity number" in report
    assert (out / "sensitivity.png").stat().st_size > 1000


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "llava_next", "internvl"])
def test_batched_answers_equal_one_by_one(world, family, tmp_path):
    study(world, tmp_path / "b4", family)
    study(world, tmp_path / "b1", family, "batch_size=1")
    a4, a1 = _answers(tmp_path / "b4"), _answers(tmp_path / "b1")
    assert a4 == a1
    assert len(set(a4.values())) > 1  # the random model does not say one thing only


def test_killed_run_resumes(world, reference, tmp_path):
    out = tmp_path / "out"
    first = study(world, out, limit=5)  # stopped after 5 answers (one full batch of 4, then 1)
    assert first == {"answered": 5, "pending": 19, "report": None}
    log = out / "answers.jsonl"
    assert len(log.read_text().splitlines()) == 5
    with open(log, "ab") as f:  # a write cut short by the kill
        f.write(b'{"sample": "video0')
    with pytest.warns(UserWarning, match="incomplete last line"):
        second = study(world, out)
    assert second["answered"] == 19 and second["pending"] == 0 and second["report"] is not None
    assert _answers(out) == _answers(reference)
    assert len(log.read_text().splitlines()) == 24
    assert study(world, out)["answered"] == 0  # nothing left to do
    ref, res = (json.loads((d / "results.json").read_text())["parsers"] for d in (reference, out))
    assert res == ref


def test_two_shards_merge_into_the_one_run_result(world, reference, tmp_path):
    out = tmp_path / "out"
    r0 = study(world, out, shard=(0, 2))
    assert r0["pending"] == 0 and r0["report"] is None
    with pytest.raises(StudyError, match="answers missing"):
        merge_study(out, bootstrap_n=50, log=lambda m: None)
    study(world, out, shard=(1, 2))
    assert sorted(p.name for p in out.glob("answers*.jsonl")) == ["answers.shard-0-of-2.jsonl", "answers.shard-1-of-2.jsonl"]
    assert cli("vlm-merge", str(out)) == 0  # default 1000 resamples: compare with the reference's own bootstrap_n
    merge_study(out, bootstrap_n=50, log=lambda m: None)
    ref, res = (json.loads((d / "results.json").read_text()) for d in (reference, out))
    assert res["parsers"] == ref["parsers"]
    assert (out / "predictions.jsonl").read_text() == (reference / "predictions.jsonl").read_text()


def test_other_settings_in_the_same_folder_are_refused(world, reference):
    with pytest.raises(StudyError, match="other settings"):
        study(world, reference, "qwen2_5_vl", "stride=2")


def test_prompts_can_be_added_to_a_finished_run(world, reference, tmp_path):

    out = tmp_path / "out"
    shutil.copytree(reference, out)
    res = study(world, out, "qwen2_5_vl", f"prompts={json.dumps(PROMPTS + ['para_short'])}")
    assert res["answered"] == 8 and res["pending"] == 0
    assert "para_short" in json.loads((out / "results.json").read_text())["parsers"]["surgrec"]["prompts"]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_ov", "llava_next"])
def test_several_frames_as_images(world, family, tmp_path):
    res = study(world, tmp_path / "out", family, "input=frames", "frames=3", "stride=6")
    assert res["pending"] == 0
    samples = json.loads((tmp_path / "out" / "samples.json").read_text())
    for s in samples:  # 3 seconds centred on the labelled one (clamped at the ends of the video)
        t = int(s["key"].split("@")[1])
        assert s["indices"] == [max(t - 1, 0), t, min(t + 1, 11)]


def test_video_input_needs_a_video_family(world, tmp_path):
    with pytest.raises(ModelLoadError, match="takes no video"):
        study(world, tmp_path / "a", "llava_next", "input=video", "frames=2")
    if not torchvision_available():
        with pytest.raises(ModelLoadError, match="torchvision"):
            study(world, tmp_path / "b", "qwen2_5_vl", "input=video", "frames=2")


def test_probe_rows_in_the_report(world, reference, tmp_path):
    bench = {"runs": {"synthetic/UniSurg": {"dataset": "synthetic", "task": "phase", "backbone": {"label": "UniSurg"},
                                            "honest": {"metrics": {"accuracy": {"value": 0.45, "ci_low": 0.4, "ci_high": 0.5},
                                                                   "f1": {"value": 0.4, "ci_low": 0.3, "ci_high": 0.5}}}}}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(bench))
    merge_study(reference, probe_results=path, bootstrap_n=50, log=lambda m: None)
    assert "| probe: UniSurg (phase protocol) | 45.0 [40.0, 50.0] |" in (reference / "report.md").read_text()
    bench["runs"]["synthetic/UniSurg"]["dataset"] = "cholec80"
    path.write_text(json.dumps(bench))
    with pytest.raises(FileNotFoundError, match="no probe run on dataset 'synthetic'"):
        merge_study(reference, probe_results=path, bootstrap_n=50, log=lambda m: None)


def test_surgrec_split_clips_use_their_middle_frame(world, tmp_path):
    """A dataset in SurgRec's split-CSV format (their 16 datasets): one trimmed clip per line, names from label_map.json."""

    root = tmp_path / "data"
    for k in range(4):  # 2 s clips at 10 fps -> 8 frames in the 4 fps store; the middle one is frame 4
        write_video(root / "clips" / f"c{k}.mp4", n_frames=20, fps=10, size=(64, 96), seed=k)
    (root / "splits").mkdir()
    lines = {"train": ["c0 0", "c1 1"], "val": ["c2 1"], "test": ["c2 1", "c3 0"]}
    for split, rows in lines.items():
        (root / "splits" / f"{split}.csv").write_text(
            "".join(f"__DATA_ROOT__/clips/{name}.mp4 {lab}\n" for name, lab in (r.split() for r in rows)))
    (root / "splits" / "label_map.json").write_text(json.dumps({"index_to_label": {"0": "no_polyp", "1": "polyp"}}))
    cfg = load_vlm_config([f"cache_dir={world['cache']}", "bootstrap_n=20", "max_new_tokens=4", 'prompts=["baseline"]'])
    res = run_study(world["models"]["llava_next"], "surgrec", root, tmp_path / "out", cfg, log=lambda m: None)
    assert res["pending"] == 0
    samples = json.loads((tmp_path / "out" / "samples.json").read_text())
    assert [(s["key"], s["label"], s["indices"]) for s in samples] == [("clips/c2", 1, [4]), ("clips/c3", 0, [4])]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["class_names"] == ["no_polyp", "polyp"]
    assert run["prompts"]["baseline"]["text"].endswith("A. no polyp\nB. polyp")


def test_cli_errors_are_clear(world, tmp_path, capsys):
    args = ["--dataset", "synthetic", "--root", str(world["synth"]), "--out", str(tmp_path / "o"), "--quiet",
            f"cache_dir={world['cache']}"]
    assert cli("vlm", "--model", str(tmp_path), *args) == 2
    assert "no config.json" in capsys.readouterr().err
    assert cli("vlm", "--model", str(world["models"]["qwen2_5_vl"]), *args, "--prompts", "baseline@sideways") == 2
    assert "option order 'sideways'" in capsys.readouterr().err
    assert cli("vlm", "--model", str(world["models"]["qwen2_5_vl"]), *args, "--shard", "2/2") == 2
    assert "0 <= i < n" in capsys.readouterr().err
    assert cli("vlm", "--model", str(world["models"]["qwen2_5_vl"]), *args, "temperature=0.7") == 2
    assert "unknown config key 'temperature'" in capsys.readouterr().err


def test_evenly_spaced_subsample():

    assert evenly_spaced(10, 3).tolist() == [1, 5, 8]
    assert evenly_spaced(4, 0).tolist() == [0, 1, 2, 3] and evenly_spaced(4, 9).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("family", sorted(vlm_tiny.BUILDERS))
def test_bfloat16_path(world, family, tmp_path):
    """The GPU default (bf16 weights, pixels cast to bf16) runs on CPU too; run.json records the dtype."""
    res = study(world, tmp_path / "out", family, "dtype=bfloat16", 'prompts=["baseline"]', "max_samples=4")
    assert res["pending"] == 0
    assert json.loads((tmp_path / "out" / "run.json").read_text())["dtype"] == "bfloat16"
    assert len(read_answers(tmp_path / "out")) == 4
