"""Who takes part in a benchmark: the library's specs, each behind the same small interface.

A contender knows whether it applies to a case (:meth:`Contender.skip_reason`) and how
to build one step (:meth:`Contender.prepare`): a callable that all-reduces the inputs
once and returns ``outputs[d][t]``, tensor ``t`` on device ``d``; the driver traces it
into a ``tf.function`` (unless :attr:`Contender.graph` is false). The driver times and
checks every contender the same way and never names an algorithm; which specs exist and
where they run comes from :mod:`allreduce.planning.registry`. Peers (numpy, ``tf.distribute``,
TensorFlow's own builders) live in :mod:`allreduce.measure.peers`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from allreduce.core.tables import BENCH_COMPRESSIONS
from allreduce.measure.cases import Case
from allreduce.planning.plan import DEFAULT_PACK_MAX_GROUP
from allreduce.planning.registry import get_algorithm
from allreduce.planning.spec import parse_all_reduce_spec
from allreduce.selection.auto import is_auto

__all__ = [
    "COMPRESSIONS",
    "FLOOR",
    "LIBRARY_PACK_MAX_GROUP",
    "OURS",
    "PEER",
    "Contender",
    "Inputs",
    "Setup",
    "SpecContender",
    "default_specs",
]

OURS = "ours"
PEER = "peer"
FLOOR = "floor"

#: ``batch_all_reduce``'s own default ``pack_max_group`` (it matters only with packing on).
LIBRARY_PACK_MAX_GROUP = DEFAULT_PACK_MAX_GROUP

#: ``--compression`` names: the library's, and ``-all`` for every hop compressed
#: (``CastWire(name, everywhere=True)``, which CPUs of one process otherwise skip).
COMPRESSIONS = BENCH_COMPRESSIONS

Step = Callable[[], Sequence[Sequence[Any]]]


@dataclass(frozen=True)
class Setup:
    """Where a benchmark runs.

    Attributes:
        devices: the full device names, one input per device.
        device_type: ``"CPU"`` or ``"GPU"``.
        workers: the number of worker processes the devices span (1: this process).
        pack_max_bytes: ``batch_all_reduce`` packing: largest tensor packed (0: none).
        pack_max_group: ``batch_all_reduce`` packing: most tensors per pack.
        witness: whether timed steps return only the first element of each output,
            taken on its device, instead of the outputs (whose transfer to this process
            would be timed too: GPU memory, other workers).
    """

    devices: tuple[str, ...]
    device_type: str
    workers: int = 1
    pack_max_bytes: int = 0
    pack_max_group: int = LIBRARY_PACK_MAX_GROUP
    witness: bool = False

    @property
    def num_devices(self) -> int:
        return len(self.devices)


@dataclass
class Inputs:
    """One case's inputs: ``host[d][t]`` numpy arrays and ``tensors[d][t]`` on ``devices[d]``."""

    case: Case
    devices: tuple[str, ...]
    host: list[list[np.ndarray]]
    tensors: list[list[Any]] = field(default_factory=list)


class Contender:
    """A row of the table: something that all-reduces a case's inputs.

    Attributes:
        name: the row label.
        kind: :data:`OURS`, :data:`PEER` or :data:`FLOOR` (a bound that does not all-reduce).
        spec: the spec string for the library's own rows, else ``None``.
        same_as: for a peer, the spec of ours that runs the same algorithm.
        graph: whether the step builds TensorFlow ops (the driver traces it once).
        required: whether the run fails when this contender is skipped (it was asked
            for by name, or is a default spec, which the defaults promise can run).
        compression: a name of :data:`COMPRESSIONS` (``"none"`` for peers).
    """

    name: str = ""
    kind: str = PEER
    spec: str | None = None
    same_as: str | None = None
    graph: bool = True
    required: bool = False
    compression: str = "none"

    def skip_reason(self, case: Case, setup: Setup) -> str | None:
        """Why this contender does not run on ``case`` here, or ``None``."""
        return None

    def resolved(self, case: Case, setup: Setup) -> str | None:
        """The spec that runs on ``case`` (:attr:`spec` unless it is resolved per case)."""
        return self.spec

    def prepare(self, inputs: Inputs, setup: Setup) -> Step:
        """A callable that all-reduces ``inputs`` once and returns ``outputs[d][t]``."""
        raise NotImplementedError

    def tolerance(self, case: Case, setup: Setup, expected: Sequence[np.ndarray]) -> list[np.ndarray] | None:
        """How far each output element may be from ``expected`` (``None``: not at all)."""
        return None


class SpecContender(Contender):
    """One spec of the library: ``all_reduce`` for one tensor, ``batch_all_reduce`` for many,
    with ``compression`` (a name of :data:`COMPRESSIONS`)."""

    kind = OURS

    def __init__(self, spec: str, *, required: bool = True, compression: str = "none") -> None:
        self.spec = spec
        self.compression = compression
        self.name = spec if compression == "none" else f"{spec} ({compression})"
        self.required = required
        # "auto" is resolved by the library for each case's tensors (docs/tuning.md).
        self._algorithms = (
            [] if is_auto(spec) else [get_algorithm(t.alg) for t in parse_all_reduce_spec(spec)]
        )

    def _wire(self) -> Any:
        from allreduce.graph.compression import CastWire

        name, _, everywhere = self.compression.partition("-")
        return CastWire(name, everywhere=True) if everywhere else name

    def tolerance(self, case: Case, setup: Setup, expected: Sequence[np.ndarray]) -> list[np.ndarray] | None:
        """:func:`allreduce.error_bound` of each element: the inputs are non-negative, so
        ``sum|x_i|`` is the expected sum, and no input exceeds the largest sum."""
        if self.compression == "none":
            return None
        from allreduce.planning.accuracy import error_bound
        from allreduce.planning.devices import group_by_worker

        groups = group_by_worker(setup.devices) if setup.workers > 1 else None
        name = self.compression.partition("-")[0]
        bound = error_bound(
            self.resolved(case, setup), setup.num_devices, name, dtype=case.dtype, worker_groups=groups
        )
        largest = max((float(np.max(want)) for want in expected if want.size), default=0.0)
        return [bound.limit(want.astype(np.float64), largest) for want in expected]

    @property
    def reduces(self) -> bool:
        """Whether every algorithm of the spec really all-reduces (not the baseline)."""
        return all(info.reduces for info in self._algorithms)

    def skip_reason(self, case: Case, setup: Setup) -> str | None:
        for info in self._algorithms:
            if setup.device_type not in info.device_types:
                return f"{info.name} runs on {'/'.join(sorted(info.device_types))} only"
        return None

    def resolved(self, case: Case, setup: Setup) -> str:
        """The spec this contender runs on ``case``: ``"auto"`` resolved as the library
        resolves it for the case's tensors (never measuring), any other spec as it is."""
        if not is_auto(self.spec):
            return self.spec
        from allreduce.selection.auto import resolve

        return resolve(setup.devices, [math.prod(shape) for shape in case.shapes], case.dtype)

    def prepare(self, inputs: Inputs, setup: Setup) -> Step:
        from allreduce.api import all_reduce, batch_all_reduce

        devices, towers, wire = list(inputs.devices), inputs.tensors, self._wire()
        spec = self.resolved(inputs.case, setup)
        if not inputs.case.is_batch:
            values = [tower[0] for tower in towers]

            def step() -> list[list[Any]]:
                return [[out] for out in all_reduce(values, spec, devices=devices, compression=wire)]

        else:

            def step() -> list[list[Any]]:
                return batch_all_reduce(
                    towers,
                    spec,
                    pack_max_bytes=setup.pack_max_bytes,
                    pack_max_group=setup.pack_max_group,
                    devices=devices,
                    compression=wire,
                )

        return step


def default_specs(devices: Sequence[str], *, logical_split: bool = False) -> list[str]:
    """The specs that run on ``devices``: every registered algorithm that all-reduces,
    the documented hierarchical pairs, and (on two devices or more) ``#2`` of each flat
    one that takes a shard count, each kept only where the registry finds no problem
    with these devices.

    ``logical_split``: the devices were split from fewer physical ones, so algorithms
    that need a physical device per input are left out.
    """
    from allreduce.planning.registry import algorithm_names

    specs = []
    for name in algorithm_names(hierarchical=True):
        info = get_algorithm(name)
        if not info.reduces or (logical_split and info.physical_devices):
            continue
        if info.problem(devices) is None:
            specs.append(name)
        flat_with_shards = info.takes_shards and not info.is_hierarchical and len(devices) > 1
        if flat_with_shards and info.problem(devices, 2) is None:
            specs.append(f"{name}#2")
    return specs
