"""torchrun on CPU (gloo): 2 processes x 2 clips give the parameters of 1 process x 4 clips.

The global batch is the same, the sampler hands rank r the draw's entries r, r+2, ..., and masks are
keyed by each sample's position in the draw, so both runs see the same clips with the same masks.
The objective is plain V-JEPA with a fixed mask ratio: the per-rank mean over equally many target
tokens, averaged by DDP, equals the global mean. UniSurg's batch-level terms (L_var over the batch)
are computed per rank, as in any data-parallel run, so they are not used here.

Tolerance: 1e-5 absolute on every parameter of encoder, EMA target and predictor after 3 AdamW steps
(float32 gradient all-reduce sums in another order than one process; observed ~2e-7). FSDP2
(fully_shard) is exercised by resuming the DDP run's checkpoint under FSDP2 for the last step.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import synth_store, torchrun
from safetensors.torch import load_file

from unisurg.train import load_pretrain_config, read_jsonl, train

TOL = 1e-5


def _overrides(store: Path, out: Path) -> list[str]:
    return [f"data.stores=[{store}]", f"run.out={out}", "run.progress=false", "schedule.epochs=1",
            "schedule.iterations_per_epoch=3", "run.checkpoint_every=2", "loss.objective=vjepa",
            "mask.ratio=[0.75,0.75]", "schedule.global_batch_size=4"]


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    return torchrun("-m", "unisurg.train.command", "--config", "tiny", *args, timeout=400)


def _max_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "weights.safetensors")), load_file(str(b / "weights.safetensors"))
    assert wa.keys() == wb.keys() and any(k.startswith("target_encoder.") for k in wa)
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.mark.slow
def test_two_process_ddp_and_fsdp_match_one_process(tmp_path):
    store = synth_store(tmp_path, seed=2)
    one = train(load_pretrain_config("tiny", _overrides(store, tmp_path / "one")))
    assert one.steps == 3

    # DDP for 2 steps (checkpoint at step 2), then the last step resumed under FSDP2 (fully_shard)
    _torchrun(_overrides(store, tmp_path / "two") + ["schedule.max_steps=2"])
    ckpt2 = "checkpoints/step_00000002"
    assert _max_diff(tmp_path / "one" / ckpt2, tmp_path / "two" / ckpt2) <= TOL
    done = _torchrun(_overrides(store, tmp_path / "two") + ["run.strategy=fsdp", "--resume"])
    assert "resumed at 2" in done.stdout
    assert _max_diff(tmp_path / "one" / "final", tmp_path / "two" / "final") <= TOL
    a = read_jsonl(tmp_path / "one" / "log.jsonl")
    b = read_jsonl(tmp_path / "two" / "log.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3]
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], abs=1e-6)
    assert [r["grad_norm"] for r in b] == pytest.approx([r["grad_norm"] for r in a], rel=1e-4)
