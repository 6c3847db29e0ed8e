"""The one list of all-reduce algorithms that the spec language names (pure Python).

Each algorithm lives in its own module under ``allreduce.graph.algorithms``; this table
holds what the spec parser and the benchmark need to know about it without importing
TensorFlow. Adding an algorithm means one new module and one :func:`register` line.

An entry names its builder as ``"module:function"`` in ``allreduce.graph.algorithms``. A
builder takes ``(values, devices, ctx)``: ``values`` are 1-D tensors of one length and
dtype, at least two of them, ``values[i]`` on ``devices[i]``, and ``ctx`` an
``allreduce.graph.algorithms.base.BuildContext``; it returns their elementwise sums,
``result[i]`` on ``devices[i]``, bitwise identical. An entry may also name a
``reducer`` with the same arguments that returns ``(sum, device)``: one sum left on
one device, which a hierarchical algorithm's first level uses instead of a full
all-reduce.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from allreduce.planning import roundings
from allreduce.planning.devices import gather_candidates, group_by_worker, parse_device_name
from allreduce.planning.roundings import Roundings, RoundingsRule

__layer__ = "pure"

__all__ = [
    "CPU",
    "GPU",
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

CPU = "CPU"
GPU = "GPU"
HIERARCHY_SEPARATOR = "/"

#: ``#k`` may be any count of at least 1.
SHARDS_ANY = "any"
#: ``#k`` may not exceed the distinct devices the algorithm sums on (see ``gather_type``).
SHARDS_GATHER = "gather"
#: ``#k`` must divide the device count; ``#1`` (or no ``#k``) lets the algorithm choose.
SHARDS_DIVIDE = "divides"


@dataclass(frozen=True)
class AlgorithmInfo:
    """What the library knows about one algorithm name.

    Attributes:
        name: the name in a spec (``xring``, ``nccl/xring``).
        summary: one line for the README and ``allreduce-bench --help``.
        builder: the function that builds it (an algorithm registered at run time), or
            ``"module:function"`` in ``allreduce.graph.algorithms`` (the built-in ones,
            whose builders need TensorFlow and so are imported on first use).
        device_types: the device types its inputs may sit on.
        shards: what ``#k`` means for it, or ``None`` when it takes no shard count.
        composable: whether it may be a level of a hierarchical ``A/B`` spec.
        reduces: ``False`` only for the no-reduction baseline ``trivial``.
        distinct_devices: whether every input must sit on a different device.
        levels: the two level names of a hierarchical algorithm, else ``()``.
        reducer: optional function (or ``"module:function"``) that leaves one sum on one
            device.
        shard_rule: which ``#k`` it accepts: :data:`SHARDS_ANY`, :data:`SHARDS_GATHER`
            or :data:`SHARDS_DIVIDE`.
        gather_type: for :data:`SHARDS_GATHER`, the device type it sums on.
        physical_devices: whether every input must sit on its own physical device
            (logical devices split from one GPU do not do).
        emulable: whether its graph still runs when every op is soft-placed onto one
            CPU (a TensorFlow 1 graph built for absent GPUs); ``False`` for ops that
            need their real devices (NCCL) or peers running at once (collectives).
        failure_note: what a user should know when a call using it fails while it
            runs; added to the error of an eager call.
        roundings: ``(n, shards) -> Roundings``, the roundings on the longest path from
            an input to the result of its all-reduce of ``n >= 2`` inputs; ``None``
            leaves its error unbounded (:func:`allreduce.error_bound` refuses it). An
            all-reduce whose hops round publishes its result through the wire, so the
            result is a wire value.
        reducer_roundings: the same for its ``reducer`` (whose result ends with an
            addition, not on the wire).
        cost: its cost formula: a function of a :class:`allreduce.planning.cost.Job` that
            returns the schedule its builder emits (see there), or the name of one in
            :mod:`allreduce.planning.cost`; ``None``: tuning measures it and never
            predicts it.
    """

    name: str
    summary: str
    builder: str | Callable[..., Any]
    device_types: frozenset[str]
    shards: str | None = None
    composable: bool = True
    reduces: bool = True
    distinct_devices: bool = False
    levels: tuple[str, ...] = ()
    reducer: str | Callable[..., Any] | None = None
    shard_rule: str = SHARDS_ANY
    gather_type: str | None = None
    physical_devices: bool = False
    emulable: bool = True
    failure_note: str | None = None
    roundings: RoundingsRule | None = None
    reducer_roundings: RoundingsRule | None = None
    cost: str | Callable[..., Any] | None = None

    @property
    def is_hierarchical(self) -> bool:
        return bool(self.levels)

    @property
    def takes_shards(self) -> bool:
        return self.shards is not None

    def problem(
        self, devices: Sequence[str], shards: int = 1, worker_groups: Sequence[Sequence[int]] | None = None
    ) -> str | None:
        """Why this algorithm cannot all-reduce inputs on ``devices`` with ``#shards``,
        or ``None`` when it can. Pure: looks at device names only."""
        if self.levels:
            return self._hierarchical_problem(devices, shards, worker_groups)
        parsed = [parse_device_name(d) for d in devices]
        for name, p in zip(devices, parsed):
            if p.device_type not in self.device_types:
                hint = " (try 'xring', 'rechd' or 'pscpu' on CPUs)" if p.device_type == CPU else ""
                kinds = "/".join(sorted(self.device_types))
                return (
                    f"algorithm {self.name!r} runs on {kinds} devices only, but an input is on {name!r}{hint}"
                )
        if self.distinct_devices and len(set(parsed)) != len(parsed):
            repeated = sorted({d for d, p in zip(devices, parsed) if parsed.count(p) > 1})
            return (
                f"{self.name} needs every input on a different device, but {repeated} "
                "hold more than one; use e.g. 'xring' or 'pscpu' instead"
            )
        return self._shard_problem(devices, shards)

    def _shard_problem(self, devices: Sequence[str], shards: int) -> str | None:
        if shards == 1 or self.shard_rule == SHARDS_ANY:
            return None
        if self.shard_rule == SHARDS_DIVIDE:
            if len(devices) % shards:
                return f"{self.name}#{shards}: {shards} does not divide the {len(devices)} devices"
            return None
        candidates = gather_candidates(devices, self.gather_type or CPU)
        if shards > len(candidates):
            return (
                f"{self.name}#{shards} needs {shards} distinct {self.gather_type} gather "
                f"devices but the inputs offer {len(candidates)}: {candidates}"
            )
        return None

    def _hierarchical_problem(
        self, devices: Sequence[str], shards: int, worker_groups: Sequence[Sequence[int]] | None
    ) -> str | None:
        lower, upper = (get_algorithm(name) for name in self.levels)
        groups = worker_groups or group_by_worker(devices)
        for group in groups:
            found = lower.problem([devices[i] for i in group])
            if found:
                return f"{self.name} within a worker: {found}"
        if len(groups) == 1:
            return None
        # The lower level leaves each worker's sum on a CPU of it when it gathers on CPUs.
        sums = [
            gather_candidates([devices[i] for i in group], CPU)[0]
            if lower.gather_type == CPU
            else devices[group[0]]
            for group in groups
        ]
        found = upper.problem(sums, shards)
        return f"{self.name} across workers: {found}" if found else None

    def load_builder(self) -> Callable[..., Any]:
        """Imports and returns the builder function (this needs TensorFlow)."""
        return _resolve(self.builder)

    def load_reducer(self) -> Callable[..., Any] | None:
        """Imports and returns the reducer function, or ``None`` if there is none."""
        return _resolve(self.reducer) if self.reducer else None


def _resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(target):
        return target
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(f"allreduce.graph.algorithms.{module}"), function)


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
    return AlgorithmInfo(
        name=name,
        summary=f"{lower.name} within each worker, {upper.name} across workers, then broadcast",
        builder="hierarchical:all_reduce",
        device_types=lower.device_types,
        shards=f"{upper.shards} of the across-worker level" if upper.shards else None,
        composable=False,
        distinct_devices=lower.distinct_devices,
        levels=(lower.name, upper.name),
        shard_rule=upper.shard_rule,
        gather_type=upper.gather_type,
        physical_devices=lower.physical_devices or upper.physical_devices,
        emulable=lower.emulable and upper.emulable,
        failure_note=lower.failure_note or upper.failure_note,
        cost="hierarchical" if lower.cost and upper.cost else None,
    )


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


_BOTH = frozenset({CPU, GPU})
_GPU_ONLY = frozenset({GPU})

register(
    AlgorithmInfo(
        "xring",
        "ring all-reduce: reduce-scatter then all-gather around the devices",
        "ring:all_reduce",
        _BOTH,
        shards="independent subchunk rings",
        roundings=roundings.ring_roundings,
        cost="ring",
    )
)
register(
    AlgorithmInfo(
        "rechd",
        "recursive halving-doubling, for any device count",
        "halving_doubling:all_reduce",
        _BOTH,
        roundings=roundings.halving_doubling_roundings,
        cost="halving_doubling",
    )
)
register(
    AlgorithmInfo(
        "pscpu",
        "shuffle: each shard summed on a CPU of the workers and copied back",
        "shuffle:all_reduce_on_cpus",
        _BOTH,
        shards="gather devices per tensor",
        reducer="shuffle:reduce_on_cpus",
        shard_rule=SHARDS_GATHER,
        gather_type=CPU,
        roundings=roundings.gather_roundings,
        reducer_roundings=roundings.sum_reducer_roundings,
        cost="shuffle",
    )
)
register(
    AlgorithmInfo(
        "psgpu",
        "shuffle: each shard summed on one of the GPUs and copied back",
        "shuffle:all_reduce_on_gpus",
        _GPU_ONLY,
        shards="gather GPUs per tensor",
        reducer="shuffle:reduce_on_gpus",
        shard_rule=SHARDS_GATHER,
        gather_type=GPU,
        roundings=roundings.gather_roundings,
        reducer_roundings=roundings.sum_reducer_roundings,
        cost="shuffle",
    )
)
register(
    AlgorithmInfo(
        "nccl",
        "NVIDIA NCCL all-reduce (tf.raw_ops.NcclAllReduce)",
        "nccl:all_reduce",
        _GPU_ONLY,
        distinct_devices=True,
        physical_devices=True,
        emulable=False,
        roundings=roundings.native_roundings,
        cost="native_ring",
    )
)
register(
    AlgorithmInfo(
        "collective",
        "TensorFlow collective ops (CollectiveReduceV2), also across workers",
        "collective:all_reduce",
        _BOTH,
        distinct_devices=True,
        emulable=False,
        failure_note=(
            "once a collective fails, TensorFlow cancels every later collective of this process "
            "('Function was cancelled before it was started'); only a new process runs 'collective' "
            "again, while every other algorithm keeps working here (see docs/concurrency.md)"
        ),
        roundings=roundings.native_roundings,
        cost="native_ring",
    )
)
register(
    AlgorithmInfo(
        "simple",
        "one add_n on the first device, copied to every device",
        "simple:simple",
        _BOTH,
        reducer="simple:simple_reduce",
        roundings=roundings.gather_roundings,
        reducer_roundings=roundings.sum_reducer_roundings,
        cost="simple",
    )
)
register(
    AlgorithmInfo(
        "better",
        "copy-based aggregation, the summing device chosen round-robin per tensor",
        "simple:better",
        _BOTH,
        reducer="simple:better_reduce",
        roundings=roundings.gather_roundings,
        reducer_roundings=roundings.sum_reducer_roundings,
        cost="better",
    )
)
register(
    AlgorithmInfo(
        "trivial",
        "no reduction: returns each input unchanged (a baseline, not an all-reduce)",
        "simple:trivial",
        _BOTH,
        composable=False,
        reduces=False,
        cost="trivial",
    )
)

register(
    AlgorithmInfo(
        "torus",
        "2-D torus: reduce-scatter along rows, all-reduce down columns, all-gather along rows",
        "torus:all_reduce",
        _BOTH,
        shards="rows of the torus (dividing the device count; default: the largest divisor up to sqrt(n))",
        shard_rule=SHARDS_DIVIDE,
        roundings=roundings.torus_roundings,
        cost="torus",
    )
)

#: Hierarchical pairs with a documented meaning (any A/B of composable names is valid).
NAMED_HIERARCHICAL = ("nccl/xring", "nccl/rechd", "nccl/pscpu", "pscpu/pscpu")
