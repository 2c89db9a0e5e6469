"""Stopping a diverged run with a message that says what to do, and never checkpointing NaN weights.

The loss is checked at every log step (the one host sync of the loop); the weights are checked
again before each checkpoint, because a run may diverge between two log steps: a checkpoint
written then would hold NaN and a later ``--resume`` would continue from garbage.
"""

from __future__ import annotations

import math
from pathlib import Path


class TrainingDiverged(FloatingPointError):
    """The loss or the weights became NaN / inf; the message names the last good checkpoint."""


def _advice(last_checkpoint: Path | None) -> str:
    where = (f"the last good checkpoint is {last_checkpoint} (start a new run from it with "
             f"init.checkpoint={last_checkpoint}, or --resume after changing the settings)"
             if last_checkpoint is not None else "no checkpoint was written before it")
    return f"{where}; lower optim.lr or set optim.grad_clip"


def check_loss(loss: float, step: int, last_checkpoint: Path | None) -> None:
    """Raise :class:`TrainingDiverged` if the logged loss of ``step`` is NaN or inf."""
    if not math.isfinite(loss):
        raise TrainingDiverged(f"training diverged: loss is {loss} at step {step}; {_advice(last_checkpoint)}")


def check_weights(bad: list[str], step: int, last_checkpoint: Path | None) -> None:
    """Raise :class:`TrainingDiverged` if ``bad`` (non-finite tensors) is not empty: the checkpoint of
    ``step`` is not written."""
    if bad:
        shown = ", ".join(bad[:5]) + (f", ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise TrainingDiverged(f"training diverged: non-finite weights at step {step} ({shown}); the checkpoint of "
                               f"step {step} is not written; {_advice(last_checkpoint)}")
