"""The GPU suite (benchmarks/gpu/suite.py) in its CPU dry run: every part runs and reports consistent numbers.

Its numbers mean nothing on a CPU at tiny sizes; this keeps the script working until a GPU runs it.
Checked against independent arithmetic: the pretraining MFU is FLOPs / step time / the measured
matmul peak, clips/s is batch / step time, the probe step's FLOPs equal 20 x one probe's (counted
for one probe on its own), and the loader's worker choice is the fewest workers that cover the
fastest step.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from unisurg.evaluation.probe import MultiProbe, ProbeSpec

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "suite.py"


def _load_suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_suite"] = mod  # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    return mod


def _one_probe_flops(suite, tokens: int, dim: int, heads: int, batch: int) -> float:
    """FLOPs of one probe's forward + backward, counted on its own (the suite steps 20 stacked probes)."""
    m = MultiProbe(ProbeSpec("attentive", dim, 7, dim, depth=4, heads=heads), 1)
    x = torch.randn(batch, tokens, dim)
    return suite.count_flops(lambda: m(x).sum().backward())[0]


def test_gpu_suite_dry_run(tmp_path):
    suite = _load_suite()
    out = tmp_path / "suite.json"
    report = suite.main(["--dry-run", "--out", str(out), "--budget-s", "300"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    parts = report["parts"]
    assert set(parts) == {"pretrain", "loader", "probes", "ddp"}
    for name, part in parts.items():
        assert "error" not in part, (name, part.get("traceback"))

    peak = report["matmul_peak_tflop_per_s"] * 1e12
    variants = parts["pretrain"]["variants"]
    assert [v["variant"] for v in variants] == [f"act_checkpoint={a},compile={c}" for c in (False, True)
                                                 for a in (False, True)]
    for v in variants:
        assert v["gflop_per_step"] > 0 and v["step_s"] > 0
        assert v["clips_per_s"] == pytest.approx(v["batch"] / v["step_s"], rel=0.02)
        assert v["mfu_vs_measured_matmul"] == pytest.approx(v["gflop_per_step"] * 1e9 / v["step_s"] / peak, rel=0.05,
                                                            abs=1e-4)
    assert len({v["gflop_per_step"] for v in variants}) == 1  # same arithmetic in every variant

    probes = parts["probes"]
    want = 20 * _one_probe_flops(suite, probes["tokens"], probes["dim"], suite.DRY.probe_heads, probes["batch"])
    assert probes["gflop_per_step"] == pytest.approx(want / 1e9, rel=1e-3, abs=1e-3)

    loader = parts["loader"]
    rates = {int(k): v for k, v in loader["clips_per_s_by_workers"].items()}
    assert rates and all(r > 0 for r in rates.values())
    need = max(v["clips_per_s"] for v in variants)
    enough = [w for w, r in rates.items() if r >= need]
    assert loader["workers_needed"] == (min(enough) if enough else None)

    ddp = parts["ddp"]
    assert ddp["backend"] == "gloo" and ddp["world"] == 2 and ddp["clips_per_s_total"] > 0


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_gpu_suite_keeps_finished_variants_when_a_later_one_dies(tmp_path, monkeypatch, failure):
    """A run killed (or failing) in the third pretraining variant still has the first two in its JSON file."""
    suite = _load_suite()
    real, calls = suite.timed, []

    def timed(fn, warmup, steps, dev):
        calls.append(1)
        if len(calls) == 3:
            raise failure("stopped in the third variant")
        return real(fn, warmup, steps, dev)

    monkeypatch.setattr(suite, "timed", timed)
    out = tmp_path / "suite.json"
    argv = ["--dry-run", "--out", str(out), "--parts", "pretrain"]
    if failure is KeyboardInterrupt:
        with pytest.raises(KeyboardInterrupt):
            suite.main(argv)
    else:
        suite.main(argv)
    part = json.loads(out.read_text())["parts"]["pretrain"]
    assert [v["variant"] for v in part["variants"]] == ["act_checkpoint=False,compile=False",
                                                        "act_checkpoint=True,compile=False"]
    assert all(v["step_s"] > 0 for v in part["variants"])
    if failure is KeyboardInterrupt:
        assert part["unfinished"] is True and "error" not in part
    else:
        assert "unfinished" not in part and "stopped in the third variant" in part["error"]
