"""Run logs: a JSONL line per logged step, TensorBoard scalars, a tqdm bar and a closing summary.

Only rank 0 writes. On resume from step k, records after k (written by the killed process
past its last checkpoint) are dropped from the JSONL, and TensorBoard purges them, so the logs
hold one trajectory.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from unisurg.atomic_files import write_bytes_atomic

LOG_NAME = "log.jsonl"


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Keep only the records with ``step <= last_step`` (atomically rewritten)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        if rec.get("step", math.inf) <= last_step:
            kept.append(line)
    write_bytes_atomic(path, ("\n".join(kept) + "\n" if kept else "").encode())


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a run log (tolerates a last line cut by a kill)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _show(v, spec: str) -> str:
    """A number formatted with ``spec``; anything else (None for NaN, "inf", missing) as text."""
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


class RunLogger:
    """JSONL (+ TensorBoard, + progress bar) writer of the main process; a silent no-op elsewhere."""

    def __init__(self, out: Path, *, active: bool, total_steps: int, start_step: int, tensorboard: bool,
                 progress: bool):
        self.active = active
        self.out = out
        self.jsonl = None
        self.tb = None
        self.bar = None
        self.notes: list[str] = []
        self.history: list[dict] = []
        self.t0 = time.perf_counter()
        if not active:
            return
        out.mkdir(parents=True, exist_ok=True)
        path = out / LOG_NAME
        if start_step > 0:
            truncate_jsonl(path, start_step)
        elif path.exists():
            path.unlink()
        self.jsonl = open(path, "a", buffering=1)  # line buffered: a killed run keeps whole lines
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception as e:  # noqa: BLE001 - optional extra (pip install unisurg[tensorboard])
                self.notes.append(f"TensorBoard off: {type(e).__name__}: {e}")
            else:
                self.tb = SummaryWriter(str(out / "tb"), purge_step=start_step + 1 if start_step else None)
        if progress:
            self.bar = tqdm(total=total_steps, initial=start_step, desc="pretrain", unit="step", file=sys.stderr,
                            dynamic_ncols=True)

    def log(self, record: dict) -> None:
        """Write one step's record (``step`` = number of steps done, 1-based)."""
        if not self.active:
            return
        record = {k: _clean(v) for k, v in record.items()}
        self.history.append(record)
        self.jsonl.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"train/{k}", v, record["step"])
        if self.bar is not None:
            self.bar.set_postfix(loss=_show(record.get("loss"), ".4f"), lr=_show(record.get("lr"), ".2e"),
                                 refresh=False)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def note(self, text: str) -> None:
        if self.active:
            self.notes.append(text)
            print(f"[pretrain] {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()
            self.tb = None
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None

    def summary(self, *, steps_done: int, total_steps: int, start_step: int, checkpoint: Path | None,
                export: Path | None) -> str:
        """A few lines for the console at the end of the run."""
        elapsed = time.perf_counter() - self.t0
        lines = [f"pretrain: {steps_done - start_step} steps in {elapsed:.1f} s "
                 f"(now at step {steps_done} of {total_steps}{', resumed at ' + str(start_step) if start_step else ''})"]
        if self.history:
            last = self.history[-1]
            rates = [r["clips_per_s"] for r in self.history if isinstance(r.get("clips_per_s"), (int, float))]
            terms = ", ".join(f"{k} {last[k]:.4g}" for k in ("loss", "l_pred", "l_st", "l_var", "l_rec", "pred_std",
                                                             "target_std") if isinstance(last.get(k), (int, float)))
            lines.append(f"  last logged step {last['step']}: {terms}")
            if rates:
                lines.append(f"  throughput: {sum(rates) / len(rates):.2f} clips/s on average over logged windows")
        lines.append(f"  log: {self.out / LOG_NAME}")
        if checkpoint is not None:
            lines.append(f"  last checkpoint: {checkpoint}")
        if export is not None:
            lines.append(f"  final model: {export}  (unisurg.load_encoder / init.checkpoint)")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)
