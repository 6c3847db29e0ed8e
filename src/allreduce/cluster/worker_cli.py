"""``allreduce-worker``: one worker's TensorFlow server, on a host that a person, Slurm or
Kubernetes started, for a client to :func:`allreduce.cluster.connect` to.

The cluster and this worker's task come from ``--cluster-spec JSON --task-index N``
(job ``--job-name``, default ``worker``) or else from ``TF_CONFIG``; the server has
``--devices N`` logical CPUs, or one CPU and every GPU TensorFlow sees with ``--gpus``.
It logs its address and devices, then serves until ``SIGTERM`` or ``SIGINT``.

Exit status: 0 after ``SIGTERM`` or ``SIGINT``; 1 when the server cannot start (its port
is taken); 2 on bad arguments, with one line on stderr. Every bad argument except
``--gpus`` on a host without a GPU is found before TensorFlow is imported.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from allreduce.cluster.cluster_spec import check_cluster_spec, parse_json_spec, parse_tf_config
from allreduce.cluster.connection import CLIENT_JOB
from allreduce.cluster.worker import JOB_NAME, start_server

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "PROG", "Task", "UsageError", "main", "resolve_task"]

log = logging.getLogger("allreduce.worker")

PROG = "allreduce-worker"
EXIT_OK = 0
#: The server could not start.
EXIT_FAILED = 1
#: Bad arguments: nothing started.
EXIT_USAGE = 2
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class UsageError(ValueError):
    """Arguments that cannot run: the command exits with :data:`EXIT_USAGE`."""


@dataclass(frozen=True)
class Task:
    """The cluster (without the client's ``localhost`` job) and this worker's place in it."""

    cluster: dict[str, list[str]]
    job: str
    index: int

    @property
    def address(self) -> str:
        return self.cluster[self.job][self.index]

    @property
    def prefix(self) -> str:
        return f"/job:{self.job}/replica:0/task:{self.index}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _index(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a task index 0, 1, ..., got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``allreduce-worker``."""
    p = _Parser(
        prog=PROG,
        description="Run one worker's TensorFlow server (tf.distribute.Server) until SIGTERM or SIGINT. "
        "The cluster comes from --cluster-spec and --task-index, or else from TF_CONFIG. Exit status: "
        "0 stopped by a signal, 1 the server could not start, 2 bad arguments.",
    )
    p.add_argument(
        "--cluster-spec", metavar="JSON", help='the cluster, e.g. \'{"worker": ["h0:2222", "h1:2222"]}\''
    )
    p.add_argument("--task-index", metavar="N", type=_index, help="this worker's task in --cluster-spec")
    p.add_argument(
        "--job-name", help=f"this worker's job (default {JOB_NAME}; with TF_CONFIG: its task type)"
    )
    devices = p.add_mutually_exclusive_group()
    devices.add_argument("--devices", metavar="N", type=_count, default=1, help="logical CPUs (default 1)")
    devices.add_argument("--gpus", action="store_true", help="serve every GPU TensorFlow sees (and one CPU)")
    return p


def _from_tf_config(environ: Mapping[str, str], job_name: str | None) -> tuple[object, str, int]:
    if "TF_CONFIG" not in environ:
        raise UsageError("no cluster: give --cluster-spec JSON --task-index N, or set TF_CONFIG")
    raw, kind, index = parse_tf_config(environ["TF_CONFIG"])
    if kind is None or index is None:
        raise UsageError('TF_CONFIG names no task: add "task": {"type": "worker", "index": N}')
    if job_name is not None and job_name != kind:
        raise UsageError(f"--job-name {job_name} differs from TF_CONFIG's task type {kind!r}")
    return raw, kind, index


def resolve_task(args: argparse.Namespace, environ: Mapping[str, str]) -> Task:
    """This worker's :class:`Task` from the parsed arguments, else from ``TF_CONFIG``.

    Raises:
        UsageError: no cluster, one of ``--cluster-spec``/``--task-index`` without the
            other, a bad spec or ``TF_CONFIG``, or a task that is not in the cluster.
    """
    try:
        if args.cluster_spec is not None:
            if args.task_index is None:
                raise UsageError("--cluster-spec needs --task-index N")
            raw = parse_json_spec(args.cluster_spec, "--cluster-spec")
            job, index = args.job_name or JOB_NAME, args.task_index
        elif args.task_index is not None:
            raise UsageError("--task-index needs --cluster-spec JSON")
        else:
            raw, job, index = _from_tf_config(environ, args.job_name)
        jobs, _ = check_cluster_spec(raw, job, CLIENT_JOB)
    except UsageError:
        raise
    except (TypeError, ValueError) as err:
        raise UsageError(str(err)) from None
    if index >= len(jobs[job]):
        raise UsageError(f"task index {index} is not in job {job!r}, which has tasks 0..{len(jobs[job]) - 1}")
    return Task(jobs, job, index)


def _gpu_count(tf: Any) -> int:
    gpus = len(tf.config.list_physical_devices("GPU"))
    if not gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise UsageError(f"--gpus: TensorFlow sees no GPU on this host{where}")
    return gpus


def _serve(task: Task, args: argparse.Namespace) -> int:  # pragma: no cover - in worker processes
    """Starts the server, logs it, waits for a stop signal and ends the process; returns
    only the status of a failed start.

    Raises:
        UsageError: ``--gpus`` on a host without a GPU.
    """
    from allreduce.core.quiet import import_tensorflow

    tf = import_tensorflow(verbose=False)  # without TensorFlow's start-up notices
    gpus = _gpu_count(tf) if args.gpus else 0
    cpus = 1 if args.gpus else args.devices
    try:
        start_server(task.cluster, task.index, cpus, task.job)
    except Exception as err:  # TensorFlow's error when the port is taken
        sys.stderr.write(
            f"{PROG}: error: cannot start the server at {task.address}: {' '.join(str(err).split())}\n"
        )
        return EXIT_FAILED
    names = [f"{task.prefix}/device:CPU:{i}" for i in range(cpus)]
    names += [f"{task.prefix}/device:GPU:{i}" for i in range(gpus)]
    port = task.address.rsplit(":", 1)[1]
    log.info("serving %s at %s (port %s open on every interface)", task.prefix, task.address, port)
    log.info("devices: %s", ", ".join(names))
    received = signal.sigwait(_STOP_SIGNALS)
    log.info("%s: stopping", signal.Signals(received).name)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(EXIT_OK)  # the server has no clean shutdown: leave rather than wait on its threads


def _usage(err: UsageError) -> int:
    sys.stderr.write(f"{PROG}: error: {' '.join(str(err).split())}\n")
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``allreduce-worker``; returns the exit status of bad arguments or a
    failed start (after a stop signal the process ends with status 0)."""
    try:
        args = build_parser().parse_args(argv)
        task = resolve_task(args, os.environ)
    except UsageError as err:
        return _usage(err)
    except SystemExit as done:  # --help
        return int(done.code or 0)
    # Taken by sigwait only: pending until the server is up, and no thread of
    # TensorFlow's (they inherit this mask) ends the process on one.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {PROG}: %(message)s", stream=sys.stderr)
    try:
        return _serve(task, args)
    except UsageError as err:
        return _usage(err)
