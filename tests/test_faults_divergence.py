"""Fault injection: a run that diverges to NaN stops with the intended message naming the last good
checkpoint (not a TypeError from the progress bar), and never writes a checkpoint of NaN weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import synth_store

from unisurg.train import trainer as trainer_mod
from unisurg.train.divergence import TrainingDiverged
from unisurg.train.pretrain_config import load_pretrain_config
from unisurg.train.trainer import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return synth_store(tmp_path_factory.mktemp("diverge_store"))


def _nan_loss_from(step: int, monkeypatch) -> None:
    """From the given step on, the step's metrics (loss first) come back NaN, as after an overflow."""
    real = trainer_mod.train_step
    calls = {"n": 0}

    def step_fn(*a, **k):
        calls["n"] += 1
        vec = real(*a, **k)
        return vec * float("nan") if calls["n"] >= step else vec

    monkeypatch.setattr(trainer_mod, "train_step", step_fn)


@pytest.mark.parametrize("progress", [True, False])
def test_nan_loss_stops_with_the_last_good_checkpoint_named(store, tmp_path, monkeypatch, progress):
    _nan_loss_from(3, monkeypatch)
    cfg = load_pretrain_config("tiny", [f"data.stores=[{store}]", f"run.out={tmp_path / 'r'}",
                                        f"run.progress={str(progress).lower()}"])
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 3; the last good checkpoint is "
                                              r".*checkpoints/step_00000002"):
        train(cfg)
    assert (tmp_path / "r" / "log.jsonl").read_text().count("\n") == 3  # the NaN step is logged too


def test_nan_weights_are_never_checkpointed(store, tmp_path, monkeypatch):
    real = trainer_mod.train_step
    calls = {"n": 0}

    def poisoning_step(task, *a, **k):  # step 3 leaves a NaN weight; the loss is logged only at the end
        calls["n"] += 1
        vec = real(task, *a, **k)
        if calls["n"] == 3:
            with torch.no_grad():
                next(trainer_mod.unwrap(task.student).encoder.parameters()).view(-1)[0] = float("nan")
        return vec

    monkeypatch.setattr(trainer_mod, "train_step", poisoning_step)
    cfg = load_pretrain_config("tiny", [f"data.stores=[{store}]", f"run.out={tmp_path / 'r'}", "run.progress=false",
                                        "run.log_every=100"])
    with pytest.raises(TrainingDiverged, match=r"non-finite weights at step 4 .*the checkpoint of step 4 is not "
                                              r"written; the last good checkpoint is .*step_00000002"):
        train(cfg)
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").glob("step_*")) == ["step_00000002"]


def test_the_command_line_reports_divergence_without_a_traceback(store, tmp_path):
    """Through ``unisurg pretrain``: a learning rate that overflows at once, exit status 3, one message."""
    cmd = [sys.executable, "-m", "unisurg.train.command", "--config", "tiny", f"data.stores=[{store}]",
           f"run.out={tmp_path / 'r'}", "optim.lr=1e38", "optim.start_lr=1e38", "optim.final_lr=1e38"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "unisurg pretrain: error: training diverged: loss is" in done.stderr
    assert "Traceback" not in done.stderr
