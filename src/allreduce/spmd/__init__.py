"""SPMD mode: every worker runs the same program and builds only its own part.

>>> from allreduce import spmd
>>> sums = spmd.all_reduce(my_tensors, "xring")                 # doctest: +SKIP
>>> results = spmd.launch(train, num_workers=4)                  # doctest: +SKIP

Each worker passes the tensors of its own devices and gets the sums over every device
of every worker. A spec's level within a worker runs as in the one-client mode, on the
worker's devices; the level across workers runs as pairwise exchanges over 2-member
collective groups (ring ``xring``, recursive halving-doubling ``rechd``, ``torus``,
shuffle to a root worker ``pscpu``) or as TensorFlow's ``CollectiveReduceV2``
(``collective``). The worker knows the cluster from ``TF_CONFIG`` or a cluster resolver.

Modules: :mod:`~allreduce.spmd.keys` and :mod:`~allreduce.spmd.programs` (pure: the
collective keys and each worker's steps, from :mod:`allreduce.planning.schedules`),
:mod:`~allreduce.spmd.specs` (pure: which specs run in SPMD mode, and the
device names that stand for a cluster's shape), :mod:`~allreduce.spmd.emit` (the ops),
:mod:`~allreduce.spmd.runtime` (the cluster and TensorFlow's collective runtime),
:mod:`~allreduce.spmd.api` (the entry points), :mod:`~allreduce.spmd.launcher` (local
worker processes) with :mod:`~allreduce.spmd.ray_launcher` (Ray actors), and
:mod:`~allreduce.spmd.accuracy` (the error bound of compressed SPMD all-reduces).

This package may use the layers below it (the entry points, ``cluster``, ``graph``,
``selection``, ``planning``, ``core``) and TensorFlow; not ``measure``, ``tuning`` or
the bench (the contracts in ``pyproject.toml``). Names are loaded on first use:
``import allreduce.spmd`` does not import TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CAPABLE": "allreduce.spmd.specs",
    "all_reduce": "allreduce.spmd.api",
    "batch_all_reduce": "allreduce.spmd.api",
    "error_bound": "allreduce.spmd.accuracy",
    "launch": "allreduce.spmd.launcher",
    "Worker": "allreduce.spmd.runtime",
    "resolve": "allreduce.spmd.runtime",
    "start": "allreduce.spmd.runtime",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Loads a public name from its module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'allreduce.spmd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
