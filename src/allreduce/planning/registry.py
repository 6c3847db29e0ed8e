"""The one list of all-reduce algorithms that the spec language names (pure Python).

Each built-in algorithm is declared in its own module under
:mod:`allreduce.planning.algorithms` (an :class:`AlgorithmInfo` with its schedule, rounding
rules and cost formula, as objects) and built by the module of the same name under
``allreduce.graph.algorithms``, which binds each name to its builder. This module lists
the declarations (:data:`BUILT_IN`), keeps the table and answers the spec parser and the
benchmark without importing TensorFlow. :func:`register` adds an algorithm at run time.

A builder takes ``(values, devices, ctx)``: ``values`` are 1-D tensors of one length and
dtype, at least two of them, ``values[i]`` on ``devices[i]``, and ``ctx`` an
``allreduce.graph.algorithms.base.BuildContext``; it returns their elementwise sums,
``result[i]`` on ``devices[i]``, bitwise identical. An algorithm may also have a
``reducer`` with the same arguments that returns ``(sum, device)``: one sum left on
one device, which a hierarchical algorithm's first level uses instead of a full
all-reduce.
"""

from __future__ import annotations

from allreduce.planning.algorithms import collective, halving_doubling, nccl, ring, shuffle, simple, torus
from allreduce.planning.algorithms.base import (
    CPU,
    GPU,
    SHARDS_ANY,
    SHARDS_DIVIDE,
    SHARDS_GATHER,
    AlgorithmInfo,
)
from allreduce.planning.algorithms.hierarchical import hierarchical
from allreduce.planning.roundings import Roundings

__layer__ = "pure"

__all__ = [
    "BUILT_IN",
    "CPU",
    "GPU",
    "NAMED_HIERARCHICAL",
    "SHARDS_ANY",
    "SHARDS_DIVIDE",
    "SHARDS_GATHER",
    "AlgorithmInfo",
    "Roundings",
    "algorithm_names",
    "get_algorithm",
    "register",
    "unregister",
]

HIERARCHY_SEPARATOR = "/"

_REGISTRY: dict[str, AlgorithmInfo] = {}


def register(info: AlgorithmInfo) -> AlgorithmInfo:
    """Adds a flat (non-hierarchical) algorithm to the registry.

    Raises:
        ValueError: the name is taken or contains a spec delimiter.
    """
    if info.name in _REGISTRY:
        raise ValueError(f"algorithm {info.name!r} is already registered")
    if any(c in info.name for c in ":#/") or not info.name:
        raise ValueError(f"invalid algorithm name {info.name!r}: it may not contain ':', '#' or '/'")
    _REGISTRY[info.name] = info
    return info


def unregister(name: str) -> AlgorithmInfo:
    """Removes a flat algorithm that :func:`register` added, and returns its entry.

    Raises:
        ValueError: ``name`` is not a registered flat algorithm.
    """
    if name not in _REGISTRY:
        raise ValueError(f"algorithm {name!r} is not registered")
    return _REGISTRY.pop(name)


def _hierarchical(name: str) -> AlgorithmInfo | None:
    parts = name.split(HIERARCHY_SEPARATOR)
    if len(parts) != 2:
        return None
    lower, upper = (_REGISTRY.get(p) for p in parts)
    if lower is None or upper is None or not (lower.composable and upper.composable):
        return None
    return hierarchical(lower, upper)


def get_algorithm(name: str) -> AlgorithmInfo:
    """Returns the entry for ``name``, a flat name or a hierarchical ``A/B`` pair.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: ``name`` is not an algorithm.
    """
    if not isinstance(name, str):
        raise TypeError(f"an algorithm name must be a str, got {type(name).__name__}: {name!r}")
    info = _REGISTRY.get(name) or _hierarchical(name)
    if info is None:
        raise ValueError(
            f"unknown all-reduce algorithm {name!r}; known: {', '.join(algorithm_names())}, "
            "or A/B for two of them (e.g. 'nccl/xring', 'pscpu/pscpu')"
        )
    return info


def algorithm_names(*, hierarchical: bool = False) -> list[str]:
    """Registered flat names, plus the named hierarchical pairs if asked."""
    names = list(_REGISTRY)
    if hierarchical:
        names += list(NAMED_HIERARCHICAL)
    return names


#: The built-in algorithms, one line each, in the order the spec language lists them.
BUILT_IN = (
    ring.XRING,
    halving_doubling.RECHD,
    shuffle.PSCPU,
    shuffle.PSGPU,
    nccl.NCCL,
    collective.COLLECTIVE,
    simple.SIMPLE,
    simple.BETTER,
    simple.TRIVIAL,
    torus.TORUS,
)
for _info in BUILT_IN:
    register(_info)
del _info

#: Hierarchical pairs with a documented meaning (any A/B of composable names is valid).
NAMED_HIERARCHICAL = ("nccl/xring", "nccl/rechd", "nccl/pscpu", "pscpu/pscpu")
