"""Which specs run in SPMD mode, and the devices that name an SPMD cluster's shape (pure Python).

The benchmark and the tuner check specs here before TensorFlow starts; the entry points
(:mod:`allreduce.spmd.api`) check them again. An SPMD cluster's shape (workers, devices
per worker, device type) is written as the device names of the one-client mode,
``/job:worker/replica:0/task:<rank>/device:CPU:<d>``, so that the cost model, the spec
checks and the tuning cache read it as they read any topology; :data:`MODE` in a
tuning's key keeps SPMD tunings apart from one-client tunings of the same names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from allreduce.planning.registry import algorithm_names, get_algorithm
from allreduce.planning.spec import parse_all_reduce_spec
from allreduce.spmd.programs import ALGORITHMS

__layer__ = "pure"

__all__ = [
    "CAPABLE",
    "MODE",
    "PEER_SPEC",
    "check_spmd_spec",
    "cluster_devices",
    "default_spmd_specs",
    "is_spmd_capable",
]

#: The algorithms that can run across workers in SPMD mode.
CAPABLE = (*ALGORITHMS, "collective")
#: The ``mode`` of SPMD tunings in the tuning cache.
MODE = "spmd"
#: TensorFlow's ``CollectiveReduceV2``: the benchmark's peer, never one of its default specs.
PEER_SPEC = "collective"


def check_spmd_spec(
    specs: Sequence[Any], capable: Sequence[str] = CAPABLE, compression: str = "none"
) -> None:
    """Checks that the across-workers level of every range of a parsed spec is one of
    ``capable`` (a flat name is its own across-workers level), and that a range that
    compresses (its own ``@wire``, else ``compression``) runs pairwise exchanges across
    workers: ``collective`` sums inside TensorFlow's kernel, where no wire reaches.

    Raises:
        ValueError: a range whose algorithm has no SPMD form, named with the choices; one
            with ``collective`` within the worker under another algorithm across workers
            (every worker would take the same collective group); or one that compresses
            with ``collective`` across workers.
    """
    for spec in specs:
        info = get_algorithm(spec.alg)
        lower, upper = info.levels if info.levels else (info.name, info.name)
        if upper not in capable:
            raise ValueError(
                f"spec {spec.alg!r}: {upper!r} cannot run across workers in SPMD mode; "
                f"use one of {', '.join(capable)} (or A/B with one of them as B)"
            )
        if lower == "collective" and upper != "collective":
            raise ValueError(
                f"spec {spec.alg!r}: 'collective' cannot be the within-worker level A of A/B in "
                f"SPMD mode (every worker would join the same collective group); use another A, "
                f"e.g. 'pscpu/{upper}', or 'collective' alone"
            )
        wire = spec.compression if spec.compression is not None else compression
        if wire != "none" and upper not in ALGORITHMS:
            raise ValueError(
                f"spec {spec.alg!r}: compression ({wire!r}) needs pairwise exchanges across workers "
                f"({', '.join(ALGORITHMS)}), not {upper!r}"
            )


def is_spmd_capable(spec: str) -> bool:
    """Whether the spec string parses and every range of it can run in SPMD mode."""
    try:
        check_spmd_spec(parse_all_reduce_spec(spec))
    except ValueError:
        return False
    return True


def cluster_devices(num_workers: int, devices_per_worker: int, device_type: str = "CPU") -> list[str]:
    """The device names that stand for an SPMD cluster of this shape, worker by worker."""
    return [
        f"/job:worker/replica:0/task:{rank}/device:{device_type}:{d}"
        for rank in range(num_workers)
        for d in range(devices_per_worker)
    ]


def default_spmd_specs(num_workers: int, devices_per_worker: int) -> list[str]:
    """The specs the benchmark measures by default in SPMD mode: every registered
    algorithm that reduces and runs across workers in SPMD mode (but the peer,
    :data:`PEER_SPEC`), ``#2`` of each flat one that takes a shard count, and, with
    more than one device per worker, the documented pairs ``A/B`` whose ``B`` runs in
    SPMD mode, each kept where the registry finds no problem with these devices."""
    devices = cluster_devices(num_workers, devices_per_worker)
    specs = []
    for name in algorithm_names(hierarchical=True):
        info = get_algorithm(name)
        if not info.reduces or name == PEER_SPEC or not is_spmd_capable(name):
            continue
        if info.is_hierarchical and devices_per_worker == 1:
            continue  # A would sum one device: the flat name does the same
        if info.problem(devices) is None:
            specs.append(name)
        if info.takes_shards and not info.is_hierarchical and info.problem(devices, 2) is None:
            specs.append(f"{name}#2")
    return specs
