"""How a ``torchrun`` rank ends: its exit handlers run, then the process leaves without teardown.

A gloo backend's worker threads release each finished collective a moment after the caller's
``wait()`` returns, and what they release may own Python objects (tensors Python created, the
caller's thread-local state); dropping those takes the GIL. Two ways this kills a finished job:

- The backend is destroyed -- its threads joined -- by the last reference to the process group going
  away on the main thread (a DDP module freed, ``destroy_process_group``), which holds the GIL: a
  worker waiting for the GIL is never joined. The rank hangs (core: ``~Reducer -> ~ProcessGroupGloo
  -> thread::join`` against ``runLoop -> ~ThreadLocalState -> take_gil``; 3 of 10 runs of the GPU
  suite's 2-rank CPU dry run).
- The main thread is already in interpreter finalisation: the worker's GIL acquire unwinds it, the
  C++ runtime calls ``std::terminate``, the rank dies with SIGABRT after its work is written, and
  ``torchrun`` fails the job (core: ``runLoop -> ~AsyncBarrierWork -> ~AsyncBroadcastWork ->
  decref_pyobject -> take_gil -> pthread_exit -> terminate``; 4 of 85 FSDP resumes of the CI test
  under load; upstream pytorch/pytorch#179291, abandoned).

So a rank holds its default process group for the life of the process (:func:`hold_process_group`,
called where the group is joined): nothing the program frees can be its last owner. And a rank
does what finalisation would have done for it -- flushes its output, runs the ``atexit`` handlers
(temporary folders, loggers) -- then ``os._exit``s with its status (:func:`ends_rank` on each
command's ``main``). Outside ``torchrun`` (no ``WORLD_SIZE`` above 1) nothing changes. A script of
one's own that trains under torchrun should end the same way: ``leave_rank(0)``.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import traceback
from collections.abc import Callable

import torch.distributed as dist

_HELD: list = []  # process groups referenced until the process ends (module doc)


def hold_process_group() -> None:
    """Keep the default process group alive until the process ends, so that no free on a GIL-holding
    thread (a model, ``destroy_process_group``) can destroy its backend and join its threads."""
    if dist.is_available() and dist.is_initialized() and dist.group.WORLD not in _HELD:
        _HELD.append(dist.group.WORLD)


def is_torchrun_rank() -> bool:
    """True in a process that is one of several ranks (``WORLD_SIZE`` > 1, as torchrun sets it)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def exit_status(code) -> int:
    """The process status of ``sys.exit(code)``: None is 0, an int itself, anything else is printed and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed or replaced by the caller
            pass


def leave_rank(status: int) -> None:
    """End this rank now with ``status``: flush, run the exit handlers, skip finalisation (module doc)."""
    _flush_output()
    atexit._run_exitfuncs()
    _flush_output()  # what the handlers printed
    os._exit(status)


def ends_rank(main: Callable[..., int | None]) -> Callable[..., int]:
    """Decorate a command's ``main``: under torchrun the process ends inside it (see :func:`leave_rank`),
    with the status ``main`` returned, raised with ``SystemExit``, or 1 and the traceback for an error."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        if not is_torchrun_rank():
            return main(*args, **kwargs)
        try:
            status = exit_status(main(*args, **kwargs))
        except SystemExit as e:
            status = exit_status(e.code)
        except BaseException:  # noqa: BLE001 -- printed as the interpreter would, then status 1
            traceback.print_exc()
            status = 1
        leave_rank(status)

    return wrapper
