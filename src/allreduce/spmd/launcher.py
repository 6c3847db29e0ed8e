"""Runs one function on every worker of a cluster: :func:`launch`.

Local processes (``backend="local"``): one Python process per worker on
``127.0.0.1``, each with ``TF_CONFIG`` for its task, started as
:mod:`allreduce.spmd._child` (which dies with this process, as the workers of
:func:`allreduce.local_cluster` do). Ray actors (``backend="ray"``):
:mod:`allreduce.spmd.ray_launcher`. Where ``TF_CONFIG`` is already set (workers
started by Slurm, Kubernetes or by hand) it runs the function here only.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from allreduce.cluster.errors import WorkerError
from allreduce.cluster.ray_group import PLACEMENT_STRATEGIES
from allreduce.cluster.spawn import python_process
from allreduce.cluster.supervisor import BIND_FAILURE, LOOPBACK, START_ATTEMPTS, describe_exit, free_ports
from allreduce.core.validation import (
    check_callable,
    check_choice,
    check_int,
    check_optional,
    check_ray_address,
    check_ray_resources,
    check_seconds,
)
from allreduce.spmd.ray_launcher import RayOptions, pickle_for_ray, run_on_ray

__all__ = ["BACKENDS", "launch"]

log = logging.getLogger("allreduce.spmd")

#: Seconds a worker has to leave after ``SIGTERM`` before it is killed.
_STOP_S = 5.0
#: Names the script whose functions a worker must find as ``__main__``.
MAIN_ENV = "ALLREDUCE_SPMD_MAIN"
#: The ways :func:`launch` can start workers.
BACKENDS = ("local", "ray")
_POLL_S = 0.05
_STDERR_TAIL = 4000


def _check(
    fn: Any, num_workers: Any, devices_per_worker: Any, backend: Any, timeout_s: Any, poll: Any
) -> None:
    check_callable("fn", fn)
    if poll is not None:
        check_callable("poll", poll)
    check_int("num_workers", num_workers, minimum=1)
    check_int("devices_per_worker", devices_per_worker, minimum=1)
    check_choice("backend", backend, BACKENDS)
    check_seconds("timeout_s", timeout_s, allow_zero=False)


def _check_ray(backend: str, opts: RayOptions) -> RayOptions:
    """The Ray options checked; any of them set with another backend is a ``ValueError``."""
    if backend != "ray":
        changed = [name for name, value, default in zip(opts._fields, opts, RayOptions()) if value != default]
        if changed:
            raise ValueError(f"{', '.join(changed)} applies to backend='ray' only, not backend={backend!r}")
        return opts
    check_ray_address(opts.address)
    cpus, gpus = check_ray_resources(opts.cpus_per_worker, opts.gpus_per_worker)
    check_choice("placement_strategy", opts.placement_strategy, PLACEMENT_STRATEGIES)
    check_optional("runtime_env", opts.runtime_env, Mapping, "a dict")
    start_s = check_seconds("start_timeout_s", opts.start_timeout_s, allow_zero=False)
    return opts._replace(cpus_per_worker=cpus, gpus_per_worker=gpus, start_timeout_s=start_s)


def _pickle(fn: Any) -> bytes:
    try:
        return pickle.dumps(fn)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise TypeError(
            f"fn must be picklable (a function defined at module level), got {fn!r}: {err}"
        ) from err


def _run_here(fn: Callable[[], Any], num_workers: int, devices_per_worker: int) -> list[Any]:
    from allreduce.spmd.runtime import resolve, start

    worker = resolve()
    if worker.num_workers != num_workers:
        raise ValueError(f"num_workers is {num_workers} but TF_CONFIG names {worker.num_workers} workers")
    start(devices_per_worker=devices_per_worker)
    return [fn()]


class _Child:
    def __init__(self, task: int, folder: Path, config: dict, devices: int) -> None:
        self.task = task
        self.result = folder / f"result-{task}.pkl"
        self.stderr = tempfile.TemporaryFile(prefix=f"allreduce-spmd{task}-")  # noqa: SIM115
        env = dict(
            os.environ, TF_CONFIG=json.dumps(config), PYTHONPATH=os.pathsep.join(p for p in sys.path if p)
        )
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        script = sys.modules.get("__main__")
        main = getattr(script, "__file__", None)
        if main and getattr(script, "__spec__", None) is None and os.path.exists(main):
            # A function of the script being run pickles as "__main__.fn": the worker
            # loads the script as its __main__ too (without running its main block).
            env[MAIN_ENV] = os.path.abspath(main)
        args = [str(folder), str(task), str(devices), str(os.getpid())]
        self.process = python_process(
            "allreduce.spmd._child",
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.stderr,
            stderr=self.stderr,
        )

    def tail(self) -> str:
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, self.stderr.tell() - _STDERR_TAIL))
        return self.stderr.read().decode(errors="replace")

    def outcome(self) -> tuple[str, Any] | None:
        """``("ok", value)``, ``("error", (exception, traceback))``, ``("exited", text)``, or
        ``None`` while it runs."""
        if self.result.exists():
            with self.result.open("rb") as f:
                return pickle.load(f)
        code = self.process.poll()
        if code is None:
            return None
        return "exited", f"{describe_exit(code)} without a result; its output ends:\n{self.tail()}"

    def stop(self) -> None:
        """Asks the worker to leave (it runs its exit handlers first)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def close(self, wait_s: float = _STOP_S) -> None:
        """Waits up to ``wait_s`` for the worker to leave, kills it if it does not, and reaps it."""
        try:
            self.process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.stderr.close()


def _stop(children: list[_Child], clock: Callable[[], float] = time.monotonic) -> None:
    """Asks every worker to leave, and kills those still there ``_STOP_S`` later: one
    grace period for all, not one per worker."""
    for child in children:
        child.stop()
    deadline = clock() + _STOP_S
    for child in children:
        child.close(max(0.0, deadline - clock()))


def _error(task: int, kind: str, detail: Any) -> WorkerError:
    if kind == "error":
        exception, trace = detail
        err = WorkerError(f"worker {task} raised {exception!r}:\n{trace}", task=task, reason="raised")
        err.__cause__ = exception
        return err
    return WorkerError(f"worker {task} {detail}", task=task, reason="exited")


def _wait(children: list[_Child], timeout_s: float, poll: Callable[[], None] | None) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    results: dict[int, Any] = {}
    while len(results) < len(children):
        if poll is not None:
            poll()
        for child in children:
            if child.task in results:
                continue
            outcome = child.outcome()
            if outcome is None:
                continue
            kind, detail = outcome
            if kind != "ok":
                raise _error(child.task, kind, detail)
            results[child.task] = detail
        if time.monotonic() > deadline:
            late = [c.task for c in children if c.task not in results]
            raise WorkerError(
                f"workers {late} did not finish within {timeout_s:g} s", task=None, reason="timeout"
            )
        time.sleep(_POLL_S)
    return [results[i] for i in range(len(children))]


def launch(
    fn: Callable[[], Any],
    num_workers: int,
    *,
    devices_per_worker: int = 1,
    backend: str = "local",
    timeout_s: float = 300.0,
    poll: Callable[[], None] | None = None,
    address: str | None = None,
    cpus_per_worker: float = 1,
    gpus_per_worker: int = 0,
    placement_strategy: str = "PACK",
    runtime_env: Mapping[str, Any] | None = None,
    start_timeout_s: float = 60.0,
) -> list[Any]:
    """Runs ``fn()`` on ``num_workers`` workers with ``TF_CONFIG`` set and returns the
    values in task order.

    ``backend="local"``: one process per worker on this machine; ``fn`` must be picklable
    (a function defined at module level, or a ``functools.partial`` of one). A port that
    another program takes between its choice and a worker's bind starts every worker
    again on new ports (up to 3 attempts). ``backend="ray"``:
    one Ray actor per worker, each in its own bundle (``cpus_per_worker`` CPUs,
    ``gpus_per_worker`` GPUs) of one placement group (``placement_strategy``), at its
    node's IP; ``fn`` is pickled by cloudpickle (lambdas and closures too). With
    ``address=None`` and Ray not initialised, a local Ray sized for the request is started
    and shut down at the end; a Ray the caller initialised, or one at ``address``, is
    left running (as for :func:`allreduce.cluster.ray_cluster`). Each worker has
    ``devices_per_worker`` logical CPUs (or, with GPUs, the GPUs Ray gave it). The return
    value must be picklable. When ``TF_CONFIG`` is already set, ``fn`` runs in this
    process only and the list holds its one value.
    ``poll()``, if given, is called in this thread about every 50 ms while the workers
    run (to report their progress); an exception it raises (``KeyboardInterrupt``
    too) stops the workers and propagates.

    Raises:
        TypeError, ValueError: bad arguments (an unknown ``backend`` is named; a Ray
            option with another backend), before anything starts.
        ImportError: ``backend="ray"`` without Ray (``pip install 'allreduce[ray]'``).
        WorkerStartError: (Ray) the actors were not placed or started within
            ``start_timeout_s``.
        WorkerError: the first worker that raised or died (``task`` is its index; the
            message holds its traceback, and its node with Ray), or ``reason="timeout"``
            when the workers did not finish within ``timeout_s``; the other workers are
            stopped.
    """
    _check(fn, num_workers, devices_per_worker, backend, timeout_s, poll)
    ray = _check_ray(
        backend,
        RayOptions(
            address, cpus_per_worker, gpus_per_worker, placement_strategy, runtime_env, start_timeout_s
        ),
    )
    payload = _pickle(fn) if backend == "local" else b""
    if os.environ.get("TF_CONFIG"):
        return _run_here(fn, num_workers, devices_per_worker)
    if backend == "ray":
        return run_on_ray(pickle_for_ray(fn), num_workers, devices_per_worker, timeout_s, ray, poll)
    return _run_local(payload, num_workers, devices_per_worker, timeout_s, poll)


def _run_local(
    payload: bytes,
    num_workers: int,
    devices_per_worker: int,
    timeout_s: float,
    poll: Callable[[], None] | None,
) -> list[Any]:
    """Runs the pickled function on local worker processes; a port that another program
    took between its choice and the worker's bind is retried with new ports (up to
    :data:`~allreduce.cluster.supervisor.START_ATTEMPTS` attempts in all)."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _run_local_once(payload, num_workers, devices_per_worker, timeout_s, poll)
        except WorkerError as err:
            if BIND_FAILURE not in str(err) or attempt == START_ATTEMPTS:
                raise
            log.info("a worker port was taken meanwhile; starting the workers again with new ports")
    raise AssertionError("unreachable")  # pragma: no cover


def _run_local_once(
    payload: bytes,
    num_workers: int,
    devices_per_worker: int,
    timeout_s: float,
    poll: Callable[[], None] | None,
) -> list[Any]:
    addresses = [f"{LOOPBACK}:{port}" for port in free_ports(num_workers)]
    with tempfile.TemporaryDirectory(prefix="allreduce-spmd-") as name:
        folder = Path(name)
        (folder / "fn.pkl").write_bytes(payload)
        children = []
        try:
            for task in range(num_workers):
                config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": task}}
                children.append(_Child(task, folder, config, devices_per_worker))
            log.info("launched %d workers at %s", num_workers, ", ".join(addresses))
            return _wait(children, timeout_s, poll)
        finally:
            _stop(children)
