"""How a torchrun rank's process ends (unisurg.rank_exit): exit handlers and output kept, teardown skipped.

The race it avoids (a gloo thread dropping Python tensors during finalisation, SIGABRT) is timing-bound;
the 2-process pretraining, fine-tuning and curation tests run the decorated commands under torchrun.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from unisurg.rank_exit import ends_rank, exit_status

SCRIPT = textwrap.dedent("""
    import atexit, sys
    from pathlib import Path
    from unisurg.rank_exit import ends_rank

    out = Path(sys.argv[1])

    class Teardown:
        def __del__(self):  # runs when the interpreter clears module globals at finalisation
            (out / "teardown").write_text("ran")

    keep = Teardown()

    @ends_rank
    def main(kind):
        atexit.register(lambda: (out / "atexit").write_text("ran"))
        sys.stdout.write("unflushed output")  # no newline, never flushed by the caller
        if kind == "return":
            return 3
        if kind == "exit-text":
            sys.exit("a message for the user")
        if kind == "error":
            raise ValueError("broken")
        return None

    status = main(sys.argv[2])
    print(f"returned {status}")
""")


def _run(tmp_path, kind: str, world: str | None):
    env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"}
    if world is not None:
        env["WORLD_SIZE"] = world
    script = tmp_path / "main.py"
    script.write_text(SCRIPT)
    for name in ("atexit", "teardown"):
        (tmp_path / name).unlink(missing_ok=True)
    return subprocess.run([sys.executable, str(script), str(tmp_path), kind], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize("kind, status, stderr", [("return", 3, ""), ("none", 0, ""),
                                                  ("exit-text", 1, "a message for the user"),
                                                  ("error", 1, "ValueError: broken")])
def test_a_rank_ends_inside_main_with_its_status_output_and_exit_handlers(tmp_path, kind, status, stderr):
    done = _run(tmp_path, kind, world="2")
    assert done.returncode == status, done.stderr
    assert done.stdout == "unflushed output"  # flushed; the caller's code after main() never ran
    assert stderr in done.stderr
    if kind == "error":
        assert "Traceback" in done.stderr
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "teardown").exists()  # no interpreter finalisation


@pytest.mark.parametrize("world", [None, "1", "not-a-number"])
def test_outside_torchrun_main_returns_and_the_interpreter_ends_as_usual(tmp_path, world):
    done = _run(tmp_path, "return", world=world)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "unflushed outputreturned 3\n"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "teardown").read_text() == "ran"


def test_exit_status_follows_sys_exit():
    assert exit_status(None) == 0 and exit_status(0) == 0 and exit_status(4) == 4
    assert exit_status("text") == 1


def test_in_process_call_without_torchrun_keeps_the_return_value(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert ends_rank(lambda x: x + 1)(1) == 2


HOLD = textwrap.dedent("""
    import sys, tempfile, time
    from pathlib import Path
    import torch.distributed as dist
    from unisurg.rank_exit import hold_process_group

    def gloo_threads():
        return sum((t / "comm").read_text().startswith("pt_gloo") for t in Path("/proc/self/task").iterdir())

    dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
    if sys.argv[1] == "hold":
        hold_process_group()
    group = dist.group.WORLD  # as a DDP reducer or an FSDP mesh refers to it
    deadline = time.monotonic() + 60
    while not gloo_threads() and time.monotonic() < deadline:  # the workers name themselves once started
        time.sleep(0.01)
    before = gloo_threads()
    dist.destroy_process_group()
    del group  # the last owner, freed on this (GIL-holding) thread: destroys the backend, joins its threads
    print(before, gloo_threads())
""")



@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads thread names from /proc")
@pytest.mark.parametrize("mode", ["hold", "free"])
def test_a_held_process_group_outlives_its_models_and_destroy(tmp_path, mode):
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT")}
    done = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    before, after = map(int, done.stdout.split())
    assert before >= 1
    assert after == (before if mode == "hold" else 0)  # "free": what the hold prevents
