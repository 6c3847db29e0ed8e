"""Tuning per SPMD cluster: :func:`tune_spmd`, called on every worker, and
:func:`tune_on_local_workers`, which starts local workers to call it.

Every worker of the cluster calls :func:`tune_spmd` with the same arguments. Worker 0
runs the tuner (:func:`allreduce.tuning.tuner.tune_entry`, the search and the rules of
docs/tuning.md); each probe it asks for is sent to every worker, all of them measure
it side by side (:func:`allreduce.measure.spmd_driver.measure_case`: the specs in
turns, each result checked against the exact sums), and a probe's step time is the
slowest worker's. A spec that does not run, or is not exact, on any worker is never
chosen. The tuning is cached under a key naming the cluster's shape (workers, devices
per worker, device type) and ``mode="spmd"``, on every worker, so that
``spmd.all_reduce(..., spec="auto")`` on a cluster of that shape uses it. Worker 0's
messages travel as sums over the cluster (the others add zeros), so no other channel
is needed.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from allreduce.core.tables import DTYPE_SIZES
from allreduce.core.validation import check_bool, check_dtype, check_int, check_seconds, check_sequence
from allreduce.measure.cases import Case
from allreduce.measure.spmd_driver import Plan, SpmdContender, measure_case
from allreduce.planning.cost_model import DEFAULT
from allreduce.planning.registry import get_algorithm
from allreduce.planning.spec import parse_all_reduce_spec
from allreduce.selection import cache
from allreduce.selection.candidates import candidate_specs
from allreduce.selection.workload import Workload
from allreduce.spmd.specs import MODE, cluster_devices, is_spmd_capable

__all__ = ["spmd_candidates", "tune_on_local_workers", "tune_spmd", "tune_spmd_entry"]

logger = logging.getLogger(__name__)

#: Steps per probe: untimed, then timed (as the one-client tuner's).
_WARMUP, _ITERS = 2, 7
_SHARE_SPEC = "xring"


class _Cluster:
    """This worker, its devices and the op timeout: what every exchange needs."""

    def __init__(self, worker: Any, devices: list[str], timeout_s: float) -> None:
        self.worker = worker
        self.devices = devices
        self.timeout_s = timeout_s

    @property
    def lead(self) -> bool:
        return self.worker.rank == 0

    def total(self, array: np.ndarray) -> np.ndarray:
        """The sum over the workers of ``array`` (each worker's own, on its first device)."""
        from allreduce import spmd
        from allreduce.core._tf import tf

        tensors = []
        for d, device in enumerate(self.devices):
            with tf.device(device):
                tensors.append(tf.constant(array if d == 0 else np.zeros_like(array)))
        out = spmd.all_reduce(tensors, _SHARE_SPEC, devices=self.devices, timeout_s=self.timeout_s)
        return np.asarray(out[0])

    def share(self, message: Any = None) -> Any:
        """Worker 0's ``message`` (JSON-ready) on every worker."""
        data = json.dumps(message).encode() if self.lead else b""
        length = int(self.total(np.array([len(data)], np.int32))[0])
        padded = np.zeros(1 << max(6, (length - 1).bit_length()), np.int32)
        if self.lead:
            padded[:length] = np.frombuffer(data, np.uint8)
        return json.loads(self.total(padded)[:length].astype(np.uint8).tobytes())


def _probe(cluster: _Cluster, sizes: Sequence[int], specs: Sequence[str], dtype: str) -> dict[str, Any]:
    """Every worker measures ``specs`` on tensors of ``sizes``; each spec's step times
    (the slowest worker's per step), or ``None`` where it failed on any worker."""
    case = Case(f"{len(sizes)} tensors", tuple((int(s),) for s in sizes), dtype)
    rows = tuple(SpmdContender(s, s, required=False) for s in specs)
    plan = Plan((case,), rows, len(cluster.devices), _WARMUP, _ITERS, cluster.timeout_s)
    records = measure_case(case, plan, cluster.worker, cluster.devices)
    mine = np.full((cluster.worker.num_workers, len(specs), _ITERS), 0.0)
    for i, record in enumerate(records):
        good = not (record.error or record.skipped or record.wrong or record.local_mismatch)
        mine[cluster.worker.rank, i] = record.samples_s if good and len(record.samples_s) == _ITERS else -1.0
    every = cluster.total(mine)
    out: dict[str, Any] = {}
    for i, spec in enumerate(specs):
        column = every[:, i, :]
        out[spec] = None if (column < 0).any() else [float(v) for v in column.max(axis=0)]
    return out


def spmd_candidates(
    devices_per_worker: int, devices: Sequence[str], sizes: Sequence[int], dtype: str
) -> list[str]:
    """The single specs an SPMD tuning chooses from: the registry's candidates
    (:func:`allreduce.selection.candidates.candidate_specs`) that run in SPMD mode, best
    first by the prior model; pairs ``A/B`` only with more than one device per worker."""
    work = Workload(devices, sizes, DTYPE_SIZES[dtype])
    found = candidate_specs(devices, lambda s: work.predict(DEFAULT, s))
    return [
        spec
        for spec in found
        if is_spmd_capable(spec)
        and (devices_per_worker > 1 or not get_algorithm(parse_all_reduce_spec(spec)[0].alg).is_hierarchical)
    ]


def _local_devices(worker: Any, devices_per_worker: int | None) -> list[str]:
    from allreduce.core._tf import tf

    if devices_per_worker is not None:
        check_int("devices_per_worker", devices_per_worker, minimum=1)
        return [f"{worker.device_prefix}/device:CPU:{d}" for d in range(devices_per_worker)]
    prefix = worker.device_prefix + "/"
    return [d.name for d in tf.config.list_logical_devices("CPU") if d.name.startswith(prefix)]


def _lead(cluster: _Cluster, key: dict, path: Any, counts: list[int], dtype: str, settings: dict) -> dict:
    """Worker 0: the cached tuning, or a new one (every probe measured by every worker)."""
    from allreduce.tuning.tuner import tune_entry

    found = None if settings["refresh"] else cache.load(path, key)
    if found is not None and cache.measured(found):
        cluster.share({"entry": found})
        return {**found, "cached": True}
    cluster.share({"tune": True})
    devices = key["devices"]
    specs = settings["specs"] or spmd_candidates(len(cluster.devices), devices, counts, dtype)

    def measure(sizes: Sequence[int], chosen: Sequence[str]) -> dict[str, Any]:
        cluster.share({"probe": [list(map(int, sizes)), list(chosen)]})
        return _probe(cluster, sizes, chosen, dtype)

    try:
        entry = tune_entry(
            devices,
            counts,
            dtype=dtype,
            budget_s=settings["budget_s"],
            cache_dir=settings["cache_dir"],
            specs=specs,
            measure=measure,
            refresh=True,
            mode=MODE,
        )
    except Exception as err:
        cluster.share({"error": f"{type(err).__name__}: {err}"})
        raise
    cluster.share({"entry": {k: v for k, v in entry.items() if k != "cached"}})
    return entry


def _follow(cluster: _Cluster, path: Any, dtype: str) -> dict:
    """Workers but 0: measure each probe worker 0 asks for; store its tuning."""
    from allreduce.selection.auto import forget

    message = cluster.share()
    cached = "tune" not in message
    while True:
        if "tune" in message:
            pass
        elif "probe" in message:
            _probe(cluster, *message["probe"], dtype)
        elif "error" in message:
            raise RuntimeError(f"the tuning on worker 0 failed: {message['error']}")
        else:
            entry = {k: v for k, v in message["entry"].items() if k not in ("format", "cached")}
            try:
                cache.store(path, entry)
            except OSError as err:
                logger.warning("tune_spmd: cannot write the tuning cache %s: %s", path, err)
            forget()
            return {**entry, "cached": cached}
        message = cluster.share()


def tune_spmd_entry(
    sizes: Sequence[int],
    *,
    dtype: Any = "float32",
    budget_s: float = 60.0,
    cache_dir: str | os.PathLike[str] | None = None,
    specs: Sequence[str] | None = None,
    refresh: bool = False,
    devices_per_worker: int | None = None,
    cluster: Any = None,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """As :func:`tune_spmd`, returning the whole cache entry (``cached``: found, not measured)."""
    from allreduce import spmd

    check_sequence("sizes", sizes, "element counts (one per tensor of a step)")
    if not sizes:
        raise ValueError("sizes is empty: give the element count of every tensor of one step")
    counts = [check_int(f"sizes[{i}]", s, minimum=1) for i, s in enumerate(sizes)]
    dtype_name = check_dtype(dtype)
    check_seconds("budget_s", budget_s, allow_zero=False)
    check_bool("refresh", refresh)
    for spec in specs or ():
        if not is_spmd_capable(spec):
            raise ValueError(f"spec {spec!r} cannot run in SPMD mode")
    worker = spmd.start(cluster)
    here = _Cluster(
        worker,
        _local_devices(worker, devices_per_worker),
        check_seconds("timeout_s", timeout_s, allow_zero=False),
    )
    devices = cluster_devices(worker.num_workers, len(here.devices))
    key = cache.key_of(devices, dtype_name, counts, MODE)
    path = cache.entry_path(cache.cache_dir(cache_dir), key)
    if not here.lead:
        return _follow(here, path, dtype_name)
    settings = {"budget_s": budget_s, "cache_dir": cache_dir, "specs": list(specs or []), "refresh": refresh}
    return _lead(here, key, path, counts, dtype_name, settings)


def tune_spmd(sizes: Sequence[int], **kwargs: Any) -> str:
    """The fastest SPMD spec for all-reducing tensors of ``sizes`` elements on this
    cluster's shape, measured by every worker and cached on every worker.

    Call it on every worker, after :func:`allreduce.spmd.start` or instead of it, with
    the same arguments: ``dtype``, ``budget_s`` (default 60), ``cache_dir``, ``specs``
    (single specs that run in SPMD mode; default: the registry's candidates that do),
    ``refresh`` (measure again), ``devices_per_worker`` (default: this worker's
    logical CPUs), ``cluster`` (as :func:`allreduce.spmd.start`) and ``timeout_s`` (per
    exchange). Later, ``spmd.all_reduce(..., spec="auto")`` on a cluster of this shape
    uses the tuning. The rules of docs/tuning.md hold: every candidate is measured,
    an entry that was not is never used, ``refresh`` replaces it.

    Raises:
        TypeError, ValueError: bad arguments, or no candidate runs here.
        RuntimeError: (workers but 0) the tuning on worker 0 failed.
        WorkerError, tf.errors.OpError: an exchange failed or timed out.
    """
    return tune_spmd_entry(sizes, **kwargs)["spec"]


def tune_on_local_workers(
    num_workers: int, devices_per_worker: int, sizes: Sequence[int], **kwargs: Any
) -> dict:
    """Starts ``num_workers`` local worker processes with ``devices_per_worker`` logical
    CPUs each (:func:`allreduce.spmd.launch`), tunes on them (:func:`tune_spmd_entry`,
    ``kwargs`` passed on) and returns worker 0's cache entry.

    Raises:
        WorkerError: a worker failed (its message holds the reason).
    """
    from allreduce import spmd

    fn = functools.partial(
        tune_spmd_entry, [int(s) for s in sizes], devices_per_worker=devices_per_worker, **kwargs
    )
    return spmd.launch(fn, num_workers, devices_per_worker=devices_per_worker, timeout_s=24 * 3600.0)[0]
