"""``allreduce-bench --spmd``: the sweep on ``--workers N`` local processes, each a worker
of an SPMD cluster with ``--devices K`` logical CPUs, against TensorFlow's
``CollectiveReduceV2``; or, with ``--tune``, the tuning of that cluster's shape.

The measuring is :mod:`allreduce.measure.spmd_driver`'s; this module prints each case's
rows as soon as every worker has finished it, in the table of the other modes.
TensorFlow is imported only by the workers. Ctrl-C stops the workers (none is left
behind) and the run reports the cases done so far.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from allreduce.bench.interrupts import Interrupts
from allreduce.bench.options import EXIT_FAILED, EXIT_OK, Options, UsageError
from allreduce.bench.report import format_header, format_rows
from allreduce.measure.cases import Case
from allreduce.measure.driver import Result

__all__ = ["describe_mode", "measure_spmd"]

logger = logging.getLogger(__name__)

#: How long ``--tune`` lets the workers run at most (the budget bounds the measuring).
_TUNE_S = 24 * 3600.0


def describe_mode(workers: int, devices: int) -> str:
    """How SPMD rows are labelled: ``"SPMD 4 workers x 1 CPU"``."""
    return f"SPMD {workers} workers x {devices} CPU"


def _check_tensorflow() -> str:
    """TensorFlow's version, read without importing it (the workers do).

    Raises:
        UsageError: TensorFlow is not installed (the message names the extras).
    """
    try:
        found = importlib.util.find_spec("tensorflow")
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise UsageError(
            "allreduce needs TensorFlow 2, which is not installed. Install it with the extra for your "
            "hardware: pip install 'allreduce[cpu]' (tensorflow-cpu) or pip install 'allreduce[gpu]' "
            "(tensorflow[and-cuda])."
        )
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def _title(options: Options, tf_version: str) -> str:
    return (
        f"allreduce-bench: {describe_mode(options.workers or 0, options.devices)} "
        f"({options.total_devices} devices, one process per worker), {options.workload}, {options.dtype}, "
        f"warmup {options.warmup}, iters {options.iters}, allocator {options.allocator}, "
        f"TensorFlow {tf_version}; peer: TensorFlow's CollectiveReduceV2"
    )


@dataclass(frozen=True)
class _TuneOnWorker:
    """What each worker runs for ``--tune`` (picklable; it imports the tuner in the
    worker, so that this process never imports TensorFlow)."""

    sizes: tuple[int, ...]
    settings: tuple[tuple[str, Any], ...]

    def __call__(self) -> dict[str, Any]:
        from allreduce.tuning.spmd import tune_spmd_entry

        return tune_spmd_entry(list(self.sizes), **dict(self.settings))


def _tune(options: Options, cases: Sequence[Case]) -> int:
    from allreduce import spmd
    from allreduce.bench.tuning_report import case_sizes, format_tuning
    from allreduce.selection.auto import is_auto

    settings = {
        "dtype": options.dtype,
        "budget_s": options.tune_budget,
        "specs": [s for s in options.specs or () if not is_auto(s)] or None,
        "refresh": options.retune,
        "devices_per_worker": options.devices,
        "timeout_s": options.op_timeout,
    }
    fn = _TuneOnWorker(tuple(case_sizes(cases)), tuple(settings.items()))
    entry = spmd.launch(fn, options.workers or 0, devices_per_worker=options.devices, timeout_s=_TUNE_S)[0]
    sys.stdout.write(format_tuning(entry) + "\n")
    return EXIT_OK


def measure_spmd(
    options: Options, cases: Sequence[Case] | None, interrupts: Interrupts, outcome: Any
) -> int | None:
    """Measures (or tunes) in SPMD mode into ``outcome`` (its ``results``, ``devices``
    and ``title``); the exit status of ``--tune`` or of a worker that failed, else ``None``.

    Raises:
        UsageError: TensorFlow is not installed.
        KeyboardInterrupt: Ctrl-C; ``outcome.results`` holds the cases done so far.
    """
    from allreduce.cluster.errors import WorkerError
    from allreduce.measure.spmd_driver import Plan, run_spmd, spmd_contenders
    from allreduce.spmd.specs import cluster_devices, default_spmd_specs

    tf_version = _check_tensorflow()
    assert cases is not None  # --spmd refuses --workload model
    workers = options.workers or 0
    if options.tune:
        try:
            return _tune(options, cases)
        except WorkerError as err:
            return _worker_failed(err)
    specs = options.specs or default_spmd_specs(workers, options.devices)
    contenders = spmd_contenders(specs, peer=options.peers != (), peer_required=options.peers is not None)
    plan = Plan(
        tuple(cases),
        tuple(contenders),
        options.devices,
        options.warmup,
        options.iters,
        options.op_timeout,
        options.pack_max_bytes,
        options.pack_max_group,
    )
    outcome.devices = cluster_devices(workers, options.devices)
    outcome.title = _title(options, tf_version)
    sys.stdout.write(format_header(outcome.title) + "\n")
    sys.stdout.flush()

    def on_case(rows: list[Result]) -> None:
        outcome.results += rows
        sys.stdout.write(format_rows(rows) + "\n")
        sys.stdout.flush()

    with interrupts.deferred():
        try:
            run_spmd(plan, workers, on_case=on_case, poll=interrupts.check)
        except WorkerError as err:
            return _worker_failed(err)
    return None


def _worker_failed(err: Exception) -> int:
    """Reports a worker that failed on one line (the first of its message, without the
    traceback); the exit status."""
    lines = str(err).strip().splitlines() or [repr(err)]
    sys.stderr.write(f"allreduce-bench: error: {' '.join(lines[0].split())[:500]}\n")
    return EXIT_FAILED
