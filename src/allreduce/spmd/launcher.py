"""Runs one function on every worker of a cluster: :func:`launch`.

Local processes (``backend="local"``): one Python process per worker on
``127.0.0.1``, each with ``TF_CONFIG`` for its task, started as
:mod:`allreduce.spmd._child` (which dies with this process, as the workers of
:func:`allreduce.local_cluster` do). Where ``TF_CONFIG`` is already set (workers
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from allreduce.cluster.errors import WorkerError
from allreduce.cluster.supervisor import LOOPBACK, describe_exit, free_ports
from allreduce.core.validation import check_choice, check_int, check_seconds

__all__ = ["BACKENDS", "launch"]

log = logging.getLogger("allreduce.spmd")

#: How a worker's interpreter is started (the test suite adds ``-m coverage run ...``).
PYTHON = [sys.executable]
#: Seconds a worker has to leave after ``SIGTERM`` before it is killed.
_STOP_S = 5.0
#: Names the script whose functions a worker must find as ``__main__``.
MAIN_ENV = "ALLREDUCE_SPMD_MAIN"
#: The ways :func:`launch` can start workers.
BACKENDS = ("local",)
_POLL_S = 0.05
_STDERR_TAIL = 4000


def _check(fn: Any, num_workers: Any, devices_per_worker: Any, backend: Any, timeout_s: Any) -> bytes:
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}: {fn!r}")
    check_int("num_workers", num_workers, minimum=1)
    check_int("devices_per_worker", devices_per_worker, minimum=1)
    check_choice("backend", backend, BACKENDS)
    check_seconds("timeout_s", timeout_s, allow_zero=False)
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
        command = [*PYTHON, "-m", "allreduce.spmd._child", str(folder), str(task), str(devices)]
        command.append(str(os.getpid()))
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self.stderr,
            stderr=self.stderr,
            env=env,
            start_new_session=True,
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

    def close(self) -> None:
        """Waits briefly for the worker to leave, kills it if it does not, and reaps it."""
        try:
            self.process.wait(timeout=_STOP_S)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.stderr.close()


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
) -> list[Any]:
    """Runs ``fn()`` on ``num_workers`` workers with ``TF_CONFIG`` set and returns the
    values in task order.

    ``fn`` must be picklable (a function defined at module level, or a
    ``functools.partial`` of one) and importable by the workers; its return value must be
    picklable. Each worker has ``devices_per_worker`` logical CPUs. When ``TF_CONFIG``
    is already set, ``fn`` runs in this process only and the list holds its one value.
    ``poll()``, if given, is called in this thread about every 50 ms while the workers
    run (to report their progress); an exception it raises (``KeyboardInterrupt``
    too) stops the workers and propagates.

    Raises:
        TypeError, ValueError: bad arguments (an unknown ``backend`` is named).
        WorkerError: the first worker that raised or died (``task`` is its index; the
            message holds its traceback), or ``reason="timeout"`` when the workers did
            not finish within ``timeout_s``; the other workers are stopped.
    """
    payload = _check(fn, num_workers, devices_per_worker, backend, timeout_s)
    if os.environ.get("TF_CONFIG"):
        return _run_here(fn, num_workers, devices_per_worker)
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
            for child in children:
                child.stop()
            for child in children:
                child.close()
