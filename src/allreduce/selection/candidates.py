"""The single specs a tuning may choose from, read from the registry (pure Python).

Every registered algorithm that reduces and runs on the devices, ``#2`` of each that
takes a shard count, and across workers the hierarchical pairs ``A/B`` whose lower
level ``A`` has a reducer (the documented pairs always). Algorithms whose failure
affects the whole process (a ``failure_note``, e.g. collectives, which TensorFlow
cancels for good once one fails) are measured only when asked for by name, and so are
algorithms that need a physical device per input on logically split devices. The
candidates are ordered by the prior model's estimate of the workload, which is also the
order of preference between equal ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from allreduce.planning.devices import group_by_worker
from allreduce.planning.registry import NAMED_HIERARCHICAL, AlgorithmInfo, algorithm_names, get_algorithm

__layer__ = "model"

__all__ = ["MAX_PAIRS", "candidate_specs"]

#: The most hierarchical pairs beyond the documented ones (the prior model's best).
MAX_PAIRS = 6


def _runs(info: AlgorithmInfo, devices: Sequence[str], shards: int, logical_split: bool) -> bool:
    if not info.reduces or info.failure_note is not None:
        return False
    if logical_split and info.physical_devices:
        return False
    return info.problem(devices, shards) is None


def _flat(devices: Sequence[str], logical_split: bool) -> list[str]:
    specs = []
    for name in algorithm_names():
        info = get_algorithm(name)
        if _runs(info, devices, 1, logical_split):
            specs.append(name)
        if info.takes_shards and len(devices) > 1 and _runs(info, devices, 2, logical_split):
            specs.append(f"{name}#2")
    return specs


def _pairs(devices: Sequence[str], logical_split: bool) -> list[str]:
    lowers = [n for n in algorithm_names() if get_algorithm(n).reducer and get_algorithm(n).composable]
    uppers = [n for n in algorithm_names() if get_algorithm(n).composable and get_algorithm(n).reduces]
    names = dict.fromkeys([*NAMED_HIERARCHICAL, *(f"{a}/{b}" for a in lowers for b in uppers)])
    return [n for n in names if _runs(get_algorithm(n), devices, 1, logical_split)]


def candidate_specs(
    devices: Sequence[str],
    estimate: Callable[[str], float | None],
    *,
    logical_split: bool = False,
) -> list[str]:
    """The candidate single specs for ``devices``, best first by ``estimate`` (a spec's
    predicted workload seconds; ``None`` without a formula sorts last, by registry order)."""
    flat = _flat(devices, logical_split)
    pairs = _pairs(devices, logical_split) if len(group_by_worker(devices)) > 1 else []

    def key(spec: str) -> tuple[int, float]:
        value = estimate(spec)
        return (1, 0.0) if value is None else (0, value)

    named = [p for p in pairs if p in NAMED_HIERARCHICAL]
    others = sorted((p for p in pairs if p not in NAMED_HIERARCHICAL), key=key)[:MAX_PAIRS]
    return sorted(dict.fromkeys([*flat, *named, *others]), key=key)
