"""Exact resume: a run killed with SIGKILL after a checkpoint continues the uninterrupted trajectory.

Deterministic on CPU: one thread, DataLoader workers = 0, clips and masks keyed by (seed, epoch,
sample position). The uninterrupted run is done in this process; the killed and the resumed runs
are `python -m unisurg.train.command` subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unisurg.train import load_pretrain_config, read_jsonl, train
from conftest import synth_store

torch.set_num_threads(1)
STEPS = 24  # 4 epochs x 6 steps; checkpoints every 5 steps (mid-epoch)


def _overrides(store: Path, out: Path) -> list[str]:
    return [f"data.stores=[{store}]", f"run.out={out}", "run.progress=false", "schedule.epochs=4",
            "schedule.iterations_per_epoch=6", "run.checkpoint_every=5", "run.keep_last=2",
            "model.encoder.drop_path_rate=0.1"]  # stochastic depth: the restored torch RNG matters too


def _latest_step(out: Path) -> int:
    try:
        return json.loads((out / "checkpoints" / "latest.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


def test_sigkill_then_resume_follows_the_same_trajectory(tmp_path):
    store = synth_store(tmp_path, seed=1)
    ref = train(load_pretrain_config("tiny", _overrides(store, tmp_path / "ref")))
    assert ref.steps == STEPS

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "unisurg.train.command", "--config", "tiny", *_overrides(store, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    while proc.poll() is None and _latest_step(out) < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-way: rc={proc.returncode} {err[-2000:]!r}"
    killed_at = _latest_step(out)
    assert 5 <= killed_at < STEPS

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed at {killed_at}" in done.stdout

    a = {r["step"]: r for r in read_jsonl(tmp_path / "ref" / "log.jsonl")}
    b = {r["step"]: r for r in read_jsonl(out / "log.jsonl")}
    assert sorted(b) == sorted(a) == list(range(1, STEPS + 1))  # one record per step, none duplicated
    for step in a:
        for key in ("loss", "l_pred", "l_st", "l_var", "pred_std", "target_std", "lr", "ema_momentum"):
            assert b[step][key] == pytest.approx(a[step][key], abs=1e-6), (step, key)
    wa = load_file(str(tmp_path / "ref" / "final" / "weights.safetensors"))
    wb = load_file(str(out / "final" / "weights.safetensors"))
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-6
