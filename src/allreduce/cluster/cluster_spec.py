"""The cluster spec :func:`allreduce.cluster.connect` takes, checked, and the JSON forms
(``--cluster-spec``, ``TF_CONFIG``) the command-line tools read it from (pure Python)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["check_address", "check_cluster_spec", "parse_json_spec", "parse_tf_config"]


def _describe(value: Any) -> str:
    return f"{type(value).__name__}: {value!r}"[:200]


def check_address(job: str, address: Any) -> str:
    """``address`` if it is a ``"host:port"`` string with a port in 1..65535.

    Raises:
        TypeError: ``address`` is not a str.
        ValueError: it is not ``host:port``.
    """
    if not isinstance(address, str):
        raise TypeError(f"addresses of job {job!r} must be 'host:port' strings, got {_describe(address)}")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r} of job {job!r} is not 'host:port' with a port in 1..65535")
    return address


def _tasks(job: str, tasks: Any) -> list[str]:
    if isinstance(tasks, Mapping):  # a sparse job of tf.train.ClusterSpec: {task index: address}
        if sorted(tasks) != list(range(len(tasks))):
            raise ValueError(f"job {job!r} must number its tasks 0..n-1, got task indices {sorted(tasks)}")
        tasks = [tasks[i] for i in range(len(tasks))]
    if isinstance(tasks, (str, bytes)) or not isinstance(tasks, Sequence):
        raise TypeError(f"job {job!r} must list its 'host:port' addresses, got {_describe(tasks)}")
    if not tasks:
        raise ValueError(f"job {job!r} has no tasks")
    return [check_address(job, a) for a in tasks]


def check_cluster_spec(
    cluster_spec: Any, job_name: Any, client_job: str
) -> tuple[dict[str, list[str]], str | None]:
    """The jobs of ``cluster_spec`` without ``client_job``, and the one address of ``client_job``.

    ``cluster_spec`` is ``{job: ["host:port", ...]}``, anything with ``as_dict()`` (a
    ``tf.train.ClusterSpec``) or anything with ``cluster_spec()`` (a
    ``tf.distribute.cluster_resolver.ClusterResolver``: its spec is taken).

    Raises:
        TypeError: ``cluster_spec`` is none of these, ``job_name`` is not a str, or a job does
            not list string addresses.
        ValueError: ``job_name`` is not one of its jobs, a job is empty, an address is
            not ``host:port``, an address appears twice, or ``client_job`` has more than
            one task.
    """
    if not isinstance(job_name, str):
        raise TypeError(f"job_name must be a str, got {_describe(job_name)}")
    if callable(getattr(cluster_spec, "cluster_spec", None)):  # a ClusterResolver
        cluster_spec = cluster_spec.cluster_spec()
    raw = cluster_spec.as_dict() if callable(getattr(cluster_spec, "as_dict", None)) else cluster_spec
    if not isinstance(raw, Mapping):
        raise TypeError(
            f"cluster_spec must be a dict {{job: ['host:port', ...]}}, a tf.train.ClusterSpec or a "
            f"ClusterResolver, "
            f"got {_describe(cluster_spec)}"
        )
    jobs: dict[str, list[str]] = {}
    for name, tasks in raw.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"cluster_spec's job names must be non-empty strings, got {_describe(name)}")
        jobs[name] = _tasks(name, tasks)
    if job_name == client_job or job_name not in jobs:
        raise ValueError(f"job_name {job_name!r} is not a worker job of cluster_spec (jobs: {sorted(jobs)})")
    every = [a for tasks in jobs.values() for a in tasks]
    twice = sorted({a for a in every if every.count(a) > 1})
    if twice:
        raise ValueError(f"address {twice[0]!r} appears more than once in cluster_spec")
    client = jobs.pop(client_job, None)
    if client is not None and len(client) != 1:
        raise ValueError(f"job {client_job!r} is this process: give it one address, got {client}")
    return jobs, client[0] if client else None


def parse_json_spec(text: str, what: str) -> Any:
    """The JSON value of ``text``, read from ``what`` (an option or variable, for messages).

    Raises:
        ValueError: ``text`` is not JSON, naming ``what`` and where it stops parsing.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} is not JSON ({err.msg} at character {err.pos}): {text[:80]!r}") from None


def parse_tf_config(text: str) -> tuple[Any, str | None, int | None]:
    """The cluster, task type and task index of a ``TF_CONFIG`` value (type and index
    ``None`` when it names no task), in the format of TensorFlow's ``TFConfigClusterResolver``.

    Raises:
        ValueError: not JSON, no ``"cluster"`` object, or a task without a string
            ``"type"`` and an integer ``"index"``.
    """
    config = parse_json_spec(text, "TF_CONFIG")
    if not isinstance(config, Mapping) or not isinstance(config.get("cluster"), Mapping):
        raise ValueError(f'TF_CONFIG must be an object with a "cluster" object, got {text[:80]!r}')
    task = config.get("task")
    if task is None:
        return config["cluster"], None, None
    kind, index = (task.get("type"), task.get("index")) if isinstance(task, Mapping) else (None, None)
    if not isinstance(kind, str) or not isinstance(index, int) or isinstance(index, bool):
        raise ValueError(f'TF_CONFIG\'s "task" must be {{"type": JOB, "index": N}}, got {_describe(task)}')
    return config["cluster"], kind, index
