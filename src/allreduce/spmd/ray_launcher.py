"""Runs one function on every worker as Ray actors: :func:`allreduce.spmd.launch` with
``backend="ray"``.

The actors are a :class:`allreduce.cluster.ray_group.RayGroup`, as the workers of
:func:`allreduce.cluster.ray_cluster` are: one placement group, one bundle and one actor
per worker. Two rounds start them: each actor reports its node's IP and a port free on
its node, then the driver sends every actor the whole cluster in its ``TF_CONFIG``
and the function, and each starts TensorFlow's collective runtime for its task and
runs it. The driver waits for the values, the first error, an actor's death (Ray's
notice names it at once) or the timeout, and then ends every actor.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

from allreduce.cluster.errors import WorkerError
from allreduce.cluster.ray_actors import GroupActor, import_ray, normal_priority, ray_reason
from allreduce.cluster.ray_group import RayGroup, RayRequest, init_ray
from allreduce.cluster.worker import JOB_NAME

__all__ = ["RayOptions", "SpmdActor", "pickle_for_ray", "run_on_ray"]

log = logging.getLogger("allreduce.spmd")

#: How long a worker's error that names a peer waits for Ray to report a dead actor instead.
_GRACE_S = 2.0
#: The longest single wait on Ray (so that a timeout is noticed).
_POLL_S = 1.0


class RayOptions(NamedTuple):
    """Where and how the actors run (see :func:`allreduce.spmd.launch`)."""

    address: str | None = None
    cpus_per_worker: float = 1
    gpus_per_worker: int = 0
    placement_strategy: str = "PACK"
    runtime_env: Any = None
    start_timeout_s: float = 60.0


class SpmdActor(GroupActor):  # pragma: no cover - runs in the Ray actor processes
    """One SPMD worker inside its Ray actor process."""

    def run(self, config: dict, devices: int, gpus: int, payload: bytes, paths: list[str]) -> bytes:
        """Starts this task's collective runtime with ``TF_CONFIG`` = ``config`` (``devices``
        logical CPUs, or the GPUs Ray gave it) and runs the pickled function; returns
        ``("ok", value)`` or ``("error", (exception, traceback))``, pickled."""
        from allreduce.spmd._child import encode

        os.environ["TF_CONFIG"] = json.dumps(config)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        normal_priority()
        sys.path.extend(p for p in paths if p not in sys.path)  # the driver's modules
        try:
            from allreduce.spmd.runtime import start

            start(devices_per_worker=None if gpus else devices)
            return encode(("ok", pickle.loads(payload)()))
        except BaseException as err:  # every failure reaches the driver, with its traceback
            return encode(("error", (err, traceback.format_exc())))


def pickle_for_ray(fn: Any) -> bytes:
    """``fn`` pickled by Ray's cloudpickle (functions of ``__main__``, lambdas and
    closures by value, functions of importable modules by name).

    Raises:
        ImportError: Ray is not installed.
        TypeError: ``fn`` cannot be pickled.
    """
    ray = import_ray("spmd.launch(backend='ray')")
    try:
        return ray.cloudpickle.dumps(fn)
    except Exception as err:
        raise TypeError(f"fn must be picklable by cloudpickle, got {fn!r}: {err}") from err


def _config(group: RayGroup, task: int) -> dict:
    return {
        "cluster": {JOB_NAME: [w.address for w in group.workers]},
        "task": {"type": JOB_NAME, "index": task},
    }


def run_on_ray(
    payload: bytes,
    num_workers: int,
    devices_per_worker: int,
    timeout_s: float,
    opts: RayOptions,
    poll: Callable[[], None] | None = None,
) -> list:
    """Runs the pickled function on ``num_workers`` Ray actors and returns the values in
    task order (see :func:`allreduce.spmd.launch`).

    Raises:
        WorkerStartError: the actors could not be placed or started within ``start_timeout_s``.
        WorkerError: the first worker that raised or died, or ``reason="timeout"``.
    """
    ray = import_ray("spmd.launch(backend='ray')")
    request = RayRequest(
        num_workers,
        devices_per_worker,
        opts.cpus_per_worker,
        opts.gpus_per_worker,
        opts.placement_strategy,
        opts.runtime_env,
    )
    owns = init_ray(ray, opts.address, request)
    group = RayGroup(ray, request, owns)
    try:
        group.start(SpmdActor, time.monotonic() + opts.start_timeout_s, opts.start_timeout_s)
        paths = [p for p in sys.path if p]
        refs = [
            actor.run.remote(_config(group, task), devices_per_worker, opts.gpus_per_worker, payload, paths)
            for task, actor in enumerate(group.actors)
        ]
        group.watch()
        log.info("launched %d Ray workers at %s", num_workers, ", ".join(w.address for w in group.workers))
        return _wait(group, refs, timeout_s, poll)
    finally:
        group.release()


def _wait(
    group: RayGroup, refs: list[Any], timeout_s: float, poll: Callable[[], None] | None = None
) -> list[Any]:
    """Each worker's value, in task order; the first error, death or the timeout raised."""
    ray = group.ray
    runs = {ref: task for task, ref in enumerate(refs)}
    watches = {ref: task for task, ref in enumerate(group.watches)}
    results: dict[int, Any] = {}
    deadline = time.monotonic() + timeout_s
    while runs:
        if poll is not None:
            poll()
        left = deadline - time.monotonic()
        if left <= 0:
            late = sorted(runs.values())
            raise WorkerError(
                f"workers {late} did not finish within {timeout_s:g} s", task=None, reason="timeout"
            )
        ready, _ = ray.wait([*runs, *watches], num_returns=1, timeout=min(left, _POLL_S))
        for ref in ready:
            if ref in watches:
                raise _death(group, watches[ref], ref)
            task = runs.pop(ref)
            try:
                kind, detail = pickle.loads(ray.get(ref))
            except ray.exceptions.RayError as err:
                raise _died(group, task, err) from None
            if kind != "ok":
                death = _first_death(group, watches) if _from_a_peer(detail[0]) else None
                raise death or _raised(group, task, detail)
            results[task] = detail
    return [results[task] for task in range(len(refs))]


def _from_a_peer(exception: BaseException) -> bool:
    """Whether a worker's error may come from another worker (a failed exchange)."""
    return isinstance(exception, WorkerError) or type(exception).__module__.startswith("tensorflow")


def _first_death(group: RayGroup, watches: dict[Any, int]) -> WorkerError | None:
    """A dead actor Ray reports within the grace period: the cause of a peer's error."""
    ready, _ = group.ray.wait(list(watches), num_returns=1, timeout=_GRACE_S)
    return _death(group, watches[ready[0]], ready[0]) if ready else None


def _death(group: RayGroup, task: int, watch: Any) -> WorkerError:
    try:
        group.ray.get(watch, timeout=0)
    except Exception as err:
        return _died(group, task, err)
    return WorkerError(f"{group.describe(task)} ended", task=task, reason="exited")


def _died(group: RayGroup, task: int, err: BaseException) -> WorkerError:
    return WorkerError(f"{group.describe(task)} died: {ray_reason(err)}", task=task, reason="exited")


def _raised(group: RayGroup, task: int, detail: Any) -> WorkerError:
    exception, trace = detail
    err = WorkerError(f"{group.describe(task)} raised {exception!r}:\n{trace}", task=task, reason="raised")
    err.__cause__ = exception
    return err
