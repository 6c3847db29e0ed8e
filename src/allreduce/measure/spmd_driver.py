"""Measuring in SPMD mode: every worker process times the same cases and specs, in turns.

:func:`measure_worker` runs in each worker (started by :func:`allreduce.spmd.launch`).
For each case it makes this worker's inputs: device ``d`` of worker ``r`` holds the
benchmark's pattern of device ``r * K + d`` (:func:`allreduce.measure.cases.input_pattern`),
so that every sum over the cluster is exact and known. It traces each contender's step
(``spmd.all_reduce``, or ``spmd.batch_all_reduce`` for many tensors) into a
``tf.function`` and checks its first result against the exact sums, runs the warm-up
steps, then ``iters`` rounds in which the contenders take turns, so that a busy moment
of the machine hits them alike. A step is timed until every output of this worker is in
host memory (``np.asarray``); the outputs of the last timed step are checked again.
Every worker runs the same calls in the same order, as SPMD mode requires.

:func:`run_spmd` launches the workers and merges their records into the benchmark's
:class:`~allreduce.measure.driver.Result` rows, case by case as the workers finish
them: a step's time is the slowest worker's in that round, wrong elements add up over
the workers, and the elements of a worker whose results differ in bits from worker 0's
count as differing between replicas.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from allreduce.measure.cases import Case, expected_sum, input_pattern
from allreduce.measure.checks import count_wrong, drain
from allreduce.measure.contenders import LIBRARY_PACK_MAX_GROUP, OURS, PEER
from allreduce.measure.driver import Result, describe_error
from allreduce.selection.auto import is_auto
from allreduce.spmd.specs import MODE, PEER_SPEC, cluster_devices, is_spmd_capable

__all__ = [
    "PEER_NAME",
    "Plan",
    "Record",
    "SpmdContender",
    "measure_case",
    "measure_worker",
    "merge",
    "run_spmd",
    "spmd_contenders",
]

#: The peer's row: TensorFlow's ``CollectiveReduceV2`` (the op ``MultiWorkerMirroredStrategy`` uses).
PEER_NAME = "tf:CollectiveReduceV2"
#: How long :func:`run_spmd` lets the workers run at most (each op has its own timeout).
_LAUNCH_S = 7 * 24 * 3600.0
# Raised while a step is traced: the contender cannot run here (a skip, with this reason).
_CANNOT_BUILD = (ValueError, TypeError, NotImplementedError)


@dataclass(frozen=True)
class SpmdContender:
    """A row: ``spec`` all-reduced in SPMD mode, named ``name`` (the peer is the spec
    ``collective`` under :data:`PEER_NAME`)."""

    name: str
    spec: str
    kind: str = OURS
    same_as: str | None = None
    required: bool = True


def spmd_contenders(specs: Sequence[str], *, peer: bool, peer_required: bool = False) -> list[SpmdContender]:
    """The rows of ``specs`` (each required to run), then the peer unless ``peer`` is false."""
    rows = [SpmdContender(spec, spec) for spec in specs]
    if peer:
        rows.append(SpmdContender(PEER_NAME, PEER_SPEC, PEER, same_as=PEER_SPEC, required=peer_required))
    return rows


@dataclass(frozen=True)
class Plan:
    """What every worker measures: the cases, the contenders, the steps, the op timeout,
    packing for many tensors, and the folder where each case's records go (``None``:
    returned only)."""

    cases: tuple[Case, ...]
    contenders: tuple[SpmdContender, ...]
    devices_per_worker: int
    warmup: int
    iters: int
    timeout_s: float
    pack_max_bytes: int = 0
    pack_max_group: int = LIBRARY_PACK_MAX_GROUP
    folder: str | None = None


@dataclass
class Record:
    """One contender on one case on one worker: its timed steps and checks."""

    samples_s: list[float] = field(default_factory=list)
    wrong: int = 0
    local_mismatch: int = 0
    digest: str = ""
    resolved: str | None = None
    skipped: str | None = None
    error: str | None = None


class _Body:
    """A step's body as its own callable (TensorFlow counts the traces of functions
    that share code together)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn

    def __call__(self) -> Any:
        return self._fn()


def _inputs(
    case: Case, rank: int, devices: Sequence[str], total: int
) -> tuple[list[list[Any]], list[np.ndarray]]:
    """This worker's input tensors ``[d][t]`` and the exact sums over ``total`` devices."""
    from allreduce.core._tf import tf

    np_dtype = tf.as_dtype(case.dtype).as_numpy_dtype
    towers = []
    for d, device in enumerate(devices):
        with tf.device(device):
            towers.append(
                [
                    tf.identity(
                        tf.constant(
                            input_pattern(int(np.prod(s)), rank * len(devices) + d, t)
                            .astype(np_dtype)
                            .reshape(s)
                        )
                    )
                    for t, s in enumerate(case.shapes)
                ]
            )
    expected = [expected_sum(int(np.prod(s)), total, t).astype(np_dtype) for t, s in enumerate(case.shapes)]
    return towers, expected


def _compile(
    spec: str, towers: list[list[Any]], devices: list[str], case: Case, plan: Plan
) -> Callable[[], Any]:
    from allreduce import spmd
    from allreduce.core._tf import tf

    if not case.is_batch:
        values = [tower[0] for tower in towers]

        def body() -> list[list[Any]]:
            out = spmd.all_reduce(values, spec, devices=devices, timeout_s=plan.timeout_s)
            return [[value] for value in out]

    else:

        def body() -> list[list[Any]]:
            return spmd.batch_all_reduce(
                towers,
                spec,
                pack_max_bytes=plan.pack_max_bytes,
                pack_max_group=plan.pack_max_group,
                devices=devices,
                timeout_s=plan.timeout_s,
            )

    return tf.function(_Body(body), autograph=False)


def _timed(step: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    outputs = step()
    drain(outputs)
    return outputs, time.perf_counter() - start


def _check(record: Record, outputs: Any, expected: Sequence[np.ndarray], case: Case) -> None:
    wrong, mismatch = count_wrong(outputs, expected, case)
    record.wrong = max(record.wrong, wrong)
    record.local_mismatch = max(record.local_mismatch, mismatch)
    digest = hashlib.sha256()
    for value in outputs[0] if len(outputs) else []:
        digest.update(np.ascontiguousarray(np.asarray(value)).tobytes())
    record.digest = digest.hexdigest()


def _resolved(spec: str, case: Case, num_workers: int, devices_per_worker: int) -> str:
    if not is_auto(spec):
        return spec
    from allreduce.selection.auto import resolve_with_reason

    shape = cluster_devices(num_workers, devices_per_worker)
    sizes = [int(np.prod(s)) for s in case.shapes]
    return resolve_with_reason(shape, sizes, case.dtype, mode=MODE, keep=is_spmd_capable)[0]


def _start(
    contender: SpmdContender,
    towers: Any,
    expected: Any,
    case: Case,
    plan: Plan,
    worker: Any,
    devices: list[str],
) -> tuple[Record, Callable[[], Any] | None]:
    record = Record()
    try:
        record.resolved = _resolved(contender.spec, case, worker.num_workers, plan.devices_per_worker)
        step = _compile(contender.spec, towers, devices, case, plan)
        outputs, _ = _timed(step)
        _check(record, outputs, expected, case)
    except _CANNOT_BUILD as err:
        record.skipped = describe_error(err)
        return record, None
    except Exception as err:
        raise _failed(contender, case, err) from err
    return record, step


class StepFailed(RuntimeError):
    """A step failed while it ran on this worker. The other workers wait on this one, and
    after a failed collective TensorFlow refuses every later one in the process, so the
    run ends here rather than with an error row for every later case."""


def _failed(contender: SpmdContender, case: Case, err: BaseException) -> StepFailed:
    return StepFailed(f"{contender.name} on {case.name} failed: {describe_error(err)}")


def measure_case(case: Case, plan: Plan, worker: Any, devices: list[str]) -> list[Record]:
    """This worker's records of every contender of ``plan`` on ``case`` (see the module
    docstring); ``worker`` is :func:`allreduce.spmd.start`'s, ``devices`` its devices.

    Raises:
        StepFailed: a step failed while it ran (a contender that cannot be built is a
            skipped record instead).
    """
    total = worker.num_workers * len(devices)
    towers, expected = _inputs(case, worker.rank, devices, total)
    records, running = [], []
    for contender in plan.contenders:
        record, step = _start(contender, towers, expected, case, plan, worker, devices)
        records.append(record)
        if step is not None:
            running.append((contender, record, step))
    for i in range(plan.warmup + plan.iters):
        for contender, record, step in running:
            try:
                outputs, elapsed = _timed(step)
                if i >= plan.warmup:
                    record.samples_s.append(elapsed)
                if i == plan.warmup + plan.iters - 1:
                    _check(record, outputs, expected, case)
            except Exception as err:
                raise _failed(contender, case, err) from err
    return records


def _write(path: Path, value: Any) -> None:
    partial = path.with_suffix(".part")
    partial.write_bytes(pickle.dumps(value))
    partial.rename(path)


def measure_worker(plan: Plan) -> list[list[Record]]:
    """Runs in each worker: the records of every case, in order; each case's also goes
    to ``plan.folder`` as ``case-<i>-<rank>.pkl`` as soon as it is done."""
    from allreduce import spmd

    worker = spmd.start()
    devices = [f"{worker.device_prefix}/device:CPU:{d}" for d in range(plan.devices_per_worker)]
    out = []
    for index, case in enumerate(plan.cases):
        records = measure_case(case, plan, worker, devices)
        out.append(records)
        if plan.folder is not None:
            _write(Path(plan.folder) / f"case-{index}-{worker.rank}.pkl", records)
    return out


def _first(records: Sequence[Record], attribute: str) -> str | None:
    for rank, record in enumerate(records):
        value = getattr(record, attribute)
        if value is not None:
            return value if len(records) == 1 else f"worker {rank}: {value}"
    return None


def merge(
    case: Case,
    contenders: Sequence[SpmdContender],
    per_worker: Sequence[Sequence[Record]],
    devices_per_worker: int,
) -> list[Result]:
    """The rows of one case from every worker's records (``per_worker[rank][i]``)."""
    results = []
    for i, contender in enumerate(contenders):
        records = [worker[i] for worker in per_worker]
        result = Result(
            case=case,
            name=contender.name,
            kind=contender.kind,
            num_devices=len(records) * devices_per_worker,
            spec=contender.spec if contender.kind == OURS else None,
            same_as=contender.same_as,
            required=contender.required,
        )
        result.error = _first(records, "error")
        result.skipped = None if result.error else _first(records, "skipped")
        rounds = min(len(r.samples_s) for r in records)
        result.samples_s = [max(r.samples_s[j] for r in records) for j in range(rounds)]
        result.wrong = sum(r.wrong for r in records)
        differing = sum(1 for r in records[1:] if r.digest != records[0].digest)
        result.replica_mismatch = sum(r.local_mismatch for r in records) + differing * case.count
        if records[0].resolved not in (None, contender.spec):
            result.resolved = records[0].resolved
        results.append(result)
    return results


def run_spmd(
    plan: Plan,
    num_workers: int,
    *,
    on_case: Callable[[list[Result]], None] = lambda _: None,
    poll: Callable[[], None] | None = None,
) -> list[Result]:
    """Measures ``plan`` on ``num_workers`` local worker processes; returns every row.

    ``on_case(rows)`` gets each case's rows as soon as every worker has finished it;
    ``poll()`` is called about every 50 ms (an exception from either, e.g.
    ``KeyboardInterrupt``, stops the workers and propagates: the rows given so far are
    the partial result).

    Raises:
        WorkerError: a worker died or raised.
    """
    from allreduce import spmd

    merged: dict[int, list[Result]] = {}
    with tempfile.TemporaryDirectory(prefix="allreduce-bench-spmd-") as name:
        plan = replace(plan, folder=name)

        def collect() -> None:
            for index, case in enumerate(plan.cases):
                if index in merged:
                    continue
                paths = [Path(name) / f"case-{index}-{rank}.pkl" for rank in range(num_workers)]
                if not all(path.exists() for path in paths):
                    break
                per_worker = [pickle.loads(path.read_bytes()) for path in paths]
                merged[index] = merge(case, plan.contenders, per_worker, plan.devices_per_worker)
                on_case(merged[index])
            if poll is not None:
                poll()

        fn = functools.partial(measure_worker, plan)
        spmd.launch(
            fn, num_workers, devices_per_worker=plan.devices_per_worker, timeout_s=_LAUNCH_S, poll=collect
        )
        collect()
    return [row for index in sorted(merged) for row in merged[index]]
