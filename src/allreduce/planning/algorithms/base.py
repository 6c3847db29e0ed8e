"""What every algorithm's declaration shares: device types, shard rules and :class:`AlgorithmInfo`.

Pure Python: :mod:`allreduce.planning.registry` lists the declarations, one module per
algorithm beside this one; ``allreduce.graph.algorithms`` binds their builders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from allreduce.planning.devices import gather_candidates, group_by_worker, parse_device_name
from allreduce.planning.roundings import RoundingsRule

__layer__ = "pure"

__all__ = [
    "BOTH",
    "CPU",
    "GPU",
    "GPU_ONLY",
    "SHARDS_ANY",
    "SHARDS_DIVIDE",
    "SHARDS_GATHER",
    "AlgorithmInfo",
]

CPU = "CPU"
GPU = "GPU"
#: The device types of an algorithm that runs anywhere, and of one that runs on GPUs only.
BOTH = frozenset({CPU, GPU})
GPU_ONLY = frozenset({GPU})

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
            ``None`` for a built-in one, whose builder ``allreduce.graph.algorithms``
            binds to its name (builders need TensorFlow, which this layer may not use).
        device_types: the device types its inputs may sit on.
        shards: what ``#k`` means for it, or ``None`` when it takes no shard count.
        composable: whether it may be a level of a hierarchical ``A/B`` spec.
        reduces: ``False`` only for the no-reduction baseline ``trivial``.
        distinct_devices: whether every input must sit on a different device.
        levels: the two level names of a hierarchical algorithm, else ``()``.
        reducer: optional function that leaves one sum on one device (an algorithm
            registered at run time), or ``True`` where ``allreduce.graph.algorithms``
            binds one to the name (a built-in one); ``None``: it has none.
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
            returns the schedule its builder emits (see there); ``None``: tuning
            measures it and never predicts it.
        level_infos: the two levels' entries of a hierarchical algorithm, else ``()``
            (the registry fills it in; not compared).
    """

    name: str
    summary: str
    builder: Callable[..., Any] | None
    device_types: frozenset[str]
    shards: str | None = None
    composable: bool = True
    reduces: bool = True
    distinct_devices: bool = False
    levels: tuple[str, ...] = ()
    reducer: Callable[..., Any] | bool | None = None
    shard_rule: str = SHARDS_ANY
    gather_type: str | None = None
    physical_devices: bool = False
    emulable: bool = True
    failure_note: str | None = None
    roundings: RoundingsRule | None = None
    reducer_roundings: RoundingsRule | None = None
    cost: Callable[..., Any] | None = None
    level_infos: tuple[AlgorithmInfo, ...] = field(default=(), compare=False, repr=False)

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
        lower, upper = self.level_infos
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
