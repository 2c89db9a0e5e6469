"""The demo's whole path at toy scale (`unisurg demo --quick`), and its reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unisurg.cli import main
from unisurg.demo import ABLATIONS, LABELS

PINNED = Path(__file__).parent / "fixtures" / "demo_quick_numbers.json"


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_repeats_exactly(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["demo", "--quick", "--out", str(a)]) == 0
    rep = a / "report"
    for f in ("report.md", "numbers.json", "table.md", "loss_curves.png"):
        assert (rep / f).is_file(), f
    assert list(rep.glob("ribbon_*.png")), "phase ribbons of the test videos"
    numbers = json.loads((rep / "numbers.json").read_text())
    assert [r["model"] for r in numbers["rows"]] == ["UniSurg", "V-JEPA (plain)", "Random init"]
    text = (rep / "report.md").read_text()
    for cmd in ("unisurg synth", "unisurg ingest", "unisurg curate leakage", "unisurg pretrain", "unisurg bench"):
        assert cmd in text, cmd
    assert json.loads((a / "runs" / "unisurg" / "corpus_check.json").read_text())["status"] == "clean"
    # a pure restructure changes no number: the same table and pretraining losses as the pinned run
    pinned = json.loads(PINNED.read_text())
    assert numbers["rows"] == pinned["rows"] and numbers["comparisons"] == pinned["comparisons"]
    # the paired statistics of the same table: one Holm family of the three comparisons per metric
    paired = numbers["paired"]
    assert [(r["a"], r["b"]) for r in paired["families"]["f1"]] == [(c["a"], c["b"]) for c in numbers["comparisons"]]
    for r, c in zip(paired["families"]["f1"], numbers["comparisons"]):
        assert r["family_size"] == 3 and r["difference"] == pytest.approx(c["difference"], abs=1e-12)
    assert "Holm-corrected over 3 comparisons" in text and "confidence intervals overlap" not in text
    for run, expected in pinned["pretraining_losses"].items():
        logged = [json.loads(line) for line in (a / "runs" / run / "log.jsonl").read_text().splitlines()]
        got = [[r["step"], r["loss"]] for r in logged if "loss" in r]
        assert [s for s, _ in got] == [s for s, _ in expected], run
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-4), run
    # same seed, same machine: the same numbers
    assert main(["demo", "--quick", "--out", str(b)]) == 0
    again = json.loads((b / "report" / "numbers.json").read_text())
    assert again["rows"] == numbers["rows"]
    # rerun in place: pretraining is reused (same command), the numbers stay
    weights = a / "runs" / "unisurg" / "final" / "weights.safetensors"
    before = weights.stat().st_mtime_ns
    assert main(["demo", "--quick", "--out", str(a)]) == 0
    assert weights.stat().st_mtime_ns == before
    assert json.loads((rep / "numbers.json").read_text())["rows"] == numbers["rows"]
    # another seed in the same folder stops at synth with a clear error, nothing mixed
    assert main(["demo", "--quick", "--out", str(a), "--seed", "1"]) == 1

def test_synth_refuses_a_folder_made_with_other_parameters(tmp_path, capsys):
    args = ["synth", "--out", str(tmp_path), "--videos", "1", "--seconds", "8", "--width", "64", "--height", "48",
            "--quiet"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args + ["--seed", "1"]) == 2
    assert "other parameters" in capsys.readouterr().err
    assert main(args + ["--seed", "1", "--overwrite"]) == 0
    assert '"seed": 1' in (tmp_path / "synth.json").read_text()


@pytest.mark.slow
def test_quick_ablate_gives_one_row_per_component(tmp_path):

    assert main(["ablate", "--quick", "--out", str(tmp_path)]) == 0
    numbers = json.loads((tmp_path / "report-ablate" / "numbers.json").read_text())
    assert [r["model"] for r in numbers["rows"]] == [LABELS[k] for k in ABLATIONS] + ["Random init"]
    configs = {k: (tmp_path / "runs" / k / "config.yaml").read_text() for k in ABLATIONS}
    assert "motion_weighting: false" in configs["no-motion-weighting"]
    assert "affinity: false" in configs["no-affinity"] and "variance: false" in configs["no-variance"]
    assert "motion_scope: topk" in configs["motion-scope-topk"] and "objective: vjepa" in configs["vjepa"]
