"""Run a command's independent work items (videos, embedding shards) as Ray tasks or on Ray actors.

The engine behind ``--engine ray [--address ADDR]`` of ``unisurg ingest``, ``curate embed``,
``curate dedup`` and ``extract`` (docs/distributed.md). Generic on purpose: each command passes its
own picklable function; this module knows nothing about videos or models.

Contract, the same for every command:

* **One writer of the bookkeeping.** A task writes only its own output file (a frame pack, an
  embedding shard), atomically under a temporary name unique to the attempt
  (:func:`unisurg.atomic_files.temp_name`), and returns what the driver records. The driver,
  the only writer of the manifest / cache, commits each result as it arrives. A task killed
  mid-write leaves at most a temporary file, never a row; its retry rewrites the same target
  (the rename is atomic, so the last complete attempt wins and nothing is duplicated).
* **Retries.** A task whose worker or node dies is resubmitted up to ``max_retries`` times (Ray's
  ``max_retries`` for tasks, ``max_restarts`` / ``max_task_retries`` for actors). Exceptions the
  function raises are not retried: they are the command's errors and reach the driver.
* **Back-pressure.** At most ``max_in_flight`` tasks are submitted at once (default two per CPU
  of the cluster, or two per actor), so a list of 10^5 videos never sits in the object store
  and the driver commits while the cluster works.
* **GPU actors.** Model forwards run in long-lived actors (one model load per actor), one GPU
  each when the cluster has GPUs (``num_gpus=1``: Ray sets ``CUDA_VISIBLE_DEVICES``), else one CPU
  each.

Ray is an optional dependency (``pip install 'unisurg[ray]'``), imported only here and only when
asked for. A killed driver resumes like the local engine: committed rows are skipped on rerun.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

ENGINES = ("local", "ray")


class RayUnavailableError(RuntimeError):
    """``--engine ray`` without Ray installed."""


@dataclass(frozen=True)
class RayOptions:
    """``address``: the cluster to join (``None``: ``RAY_ADDRESS`` or a new local Ray;
    ``"auto"``: the cluster this node belongs to; ``"HOST:6379"`` or ``"ray://HOST:10001"``).
    ``max_in_flight``: submitted-but-unfinished tasks (``None``: 2 per cluster CPU, or 2 per
    actor). ``max_retries``: resubmissions of a task whose worker died. ``num_cpus``: CPUs per
    task or actor. ``num_gpus``: GPUs per actor (``None``: 1 when the cluster has GPUs, else 0).
    ``actors``: number of actors (``None``: one per GPU, else one per CPU)."""

    address: str | None = None
    max_in_flight: int | None = None
    max_retries: int = 3
    num_cpus: float = 1.0
    num_gpus: float | None = None
    actors: int | None = None

    def __post_init__(self):
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"max_in_flight={self.max_in_flight} must be >= 1")
        if self.max_retries < 0:
            raise ValueError(f"max_retries={self.max_retries} must be >= 0")


def add_engine_arguments(parser, what: str = "work items") -> None:
    """``--engine local|ray``, ``--address``, ``--max-in-flight``, ``--max-retries`` on a command's parser."""
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help=f"local: this machine's process pool (default); ray: {what} as Ray tasks on a cluster "
                             "(pip install 'unisurg[ray]'; docs/distributed.md)")
    parser.add_argument("--address", default=None,
                        help="--engine ray: cluster to join (auto, HOST:6379 or ray://HOST:10001; default RAY_ADDRESS or a local Ray)")
    parser.add_argument("--max-in-flight", type=int, default=None, help="--engine ray: tasks submitted at once (default 2 per CPU)")
    parser.add_argument("--max-retries", type=int, default=3, help="--engine ray: retries of a task whose worker died (default 3)")


def ray_options_from(args) -> RayOptions:
    """The :class:`RayOptions` of parsed :func:`add_engine_arguments` flags."""
    return RayOptions(address=args.address, max_in_flight=args.max_in_flight, max_retries=args.max_retries)


def check_engine(engine: str, setting: str = "--engine") -> None:
    if engine not in ENGINES:
        raise ValueError(f"{setting}={engine!r}; use one of {ENGINES}")


def import_ray():
    """The ``ray`` module, or an error that names the extra to install."""
    try:
        return importlib.import_module("ray")
    except ImportError as e:
        raise RayUnavailableError("--engine ray needs Ray, which is not installed: pip install 'unisurg[ray]' "
                                  "(or run with the default --engine local)") from e


def connect(address: str | None):
    """Join (or start) Ray once per driver process; later calls reuse the connection."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=True, configure_logging=False)
    return ray


def _drain(ray, pending: dict, block_for: int) -> Iterator[tuple[int, Any]]:
    """Wait until ``block_for`` of the pending refs are done; yield ``(position, result)`` for each."""
    done, _ = ray.wait(list(pending), num_returns=block_for)
    for ref in done:
        pos = pending.pop(ref)
        yield pos, ray.get(ref)


def ray_map(fn: Callable[[Any], Any], items: Iterable[Any], options: RayOptions = RayOptions()) -> Iterator[tuple[int, Any]]:
    """``fn(item)`` for every item as Ray tasks; yields ``(position in items, result)`` as they finish.

    ``fn`` must be importable on the workers (a module-level function of an installed package).
    """
    pending: dict = {}
    remote = limit = None
    for pos, item in enumerate(items):
        if remote is None:  # joined on the first item: nothing to do never starts Ray
            ray = connect(options.address)
            remote = ray.remote(fn).options(num_cpus=options.num_cpus, max_retries=options.max_retries, retry_exceptions=False)
            limit = options.max_in_flight or max(1, 2 * int(ray.cluster_resources().get("CPU", 1)))
        pending[remote.remote(item)] = pos
        if len(pending) >= limit:
            yield from _drain(ray, pending, 1)
    while pending:
        yield from _drain(ray, pending, 1)


class RayExecutor:
    """A ``concurrent.futures``-style executor over Ray tasks: ``submit(fn, *args) -> Future``.

    For drivers that schedule their own work (``unisurg ingest`` claims each video before it submits it):
    the driver keeps at most :attr:`max_in_flight` submissions outstanding, and each result comes back as
    an ordinary :class:`concurrent.futures.Future`."""

    def __init__(self, options: RayOptions = RayOptions()):
        self.options = options
        self._ray = connect(options.address)
        self.max_in_flight = options.max_in_flight or max(1, 2 * int(self._ray.cluster_resources().get("CPU", 1)))
        self._remote: dict = {}

    def submit(self, fn: Callable[..., Any], *args):
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self._ray.remote(fn).options(
                num_cpus=self.options.num_cpus, max_retries=self.options.max_retries, retry_exceptions=False)
        return remote.remote(*args).future()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass  # tasks finish on the cluster; the driver stays connected for the next command


class _Host:
    """An actor holding ``factory()`` (e.g. a model loaded once) and applying it to items."""

    def __init__(self, factory: Callable[[], Callable[[Any], Any]]):
        self.fn = factory()

    def run(self, item: Any) -> Any:
        return self.fn(item)


def actor_resources(ray, options: RayOptions) -> tuple[int, float]:
    """``(number of actors, GPUs per actor)`` for this cluster (see :class:`RayOptions`)."""
    res = ray.cluster_resources()
    gpus = options.num_gpus if options.num_gpus is not None else (1.0 if res.get("GPU", 0) >= 1 else 0.0)
    if options.actors is not None:
        return max(1, int(options.actors)), gpus
    if gpus > 0:
        return max(1, int(res.get("GPU", 0) // gpus)), gpus
    return max(1, int(res.get("CPU", 1) // max(options.num_cpus, 1e-9))), gpus


def ray_actor_map(factory: Callable[[], Callable[[Any], Any]], items: Iterable[Any],
                  options: RayOptions = RayOptions()) -> Iterator[tuple[int, Any]]:
    """``factory()(item)`` for every item, on actors that each build ``factory()`` once; yields
    ``(position, result)`` as they finish. Each actor has at most two items queued (it works on one
    while the next one's request is already there); an actor that dies is restarted and its items
    are retried (``max_retries``)."""
    items = list(items)
    if not items:
        return
    ray = connect(options.address)
    n_actors, gpus = actor_resources(ray, options)
    n_actors = max(1, min(n_actors, len(items)))
    Host = ray.remote(_Host).options(num_cpus=options.num_cpus, num_gpus=gpus, max_restarts=options.max_retries,
                                     max_task_retries=options.max_retries)
    actors = [Host.remote(factory) for _ in range(n_actors)]
    per_actor = max(1, (options.max_in_flight or 2 * n_actors) // n_actors)
    load = [0] * n_actors
    pending: dict = {}  # ref -> position
    owner: dict = {}  # ref -> actor number
    try:
        queue = iter(enumerate(items))
        for pos, item in queue:
            a = min(range(n_actors), key=load.__getitem__)
            while load[a] >= per_actor:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    load[owner.pop(ref)] -= 1
                    yield pending.pop(ref), ray.get(ref)
                a = min(range(n_actors), key=load.__getitem__)
            ref = actors[a].run.remote(item)
            pending[ref], owner[ref] = pos, a
            load[a] += 1
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                load[owner.pop(ref)] -= 1
                yield pending.pop(ref), ray.get(ref)
    finally:
        for actor in actors:
            ray.kill(actor)


__all__ = ["ENGINES", "RayOptions", "RayUnavailableError", "actor_resources", "add_engine_arguments", "check_engine", "connect", "import_ray",
           "ray_actor_map", "ray_map", "ray_options_from"]
