"""One run of ``allreduce-bench`` once its options are checked: devices, contenders,
measuring case by case with each case's rows printed as soon as it is done, and the
summary, JSON and plot at the end (also after Ctrl-C, with the cases measured so far).

Ctrl-C is never lost (:mod:`allreduce.bench.interrupts`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from allreduce.bench.interrupts import Interrupts
from allreduce.bench.options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    RAY_LOCAL,
    Options,
    UsageError,
    connect_spec,
)
from allreduce.bench.preflight import check_memory, check_model_name
from allreduce.bench.report import format_header, format_rows, format_summary, to_json
from allreduce.bench.spmd_session import measure_spmd
from allreduce.core.quiet import import_tensorflow
from allreduce.measure.cases import Case, max_exact_devices, shapes_case
from allreduce.measure.contenders import Contender, Setup, SpecContender, default_specs
from allreduce.measure.driver import Guard, Result, describe_error, run_case

__all__ = ["make_contenders", "model_cases", "open_cluster", "run"]

if TYPE_CHECKING:
    from allreduce.cluster.base import Cluster

logger = logging.getLogger(__name__)

# How much device memory each logical GPU gets when one GPU is split.
_GPU_MEMORY_ENV = "ALLREDUCE_BENCH_GPU_MEMORY_MB"


def model_cases(options: Options, tf: Any) -> list[Case]:
    """The one case of ``--workload model``: the trainable weights' shapes of the model
    (building it starts TensorFlow's runtime: make the devices first).

    Raises:
        UsageError: the model is not in ``tf.keras.applications``.
    """
    check_model_name(options.model, tf)
    model = getattr(tf.keras.applications, options.model)(weights=None)
    shapes = [tuple(int(d) for d in w.shape) for w in model.trainable_weights]
    del model
    return [shapes_case(options.model, shapes, options.dtype)]


def open_cluster(options: Options, stack: ExitStack) -> Cluster | None:
    """The cluster the options measure on, open until ``stack`` closes: local worker
    processes (``--workers``) or servers started elsewhere (``--connect``); ``None``
    for this process's own devices.

    Raises:
        UsageError: ``connect`` refuses the ``--connect`` spec.
        RuntimeError: the cluster cannot start or a worker does not answer.
    """
    if options.ray is not None:
        return _open_ray(options, stack)
    if options.workers is not None:
        from allreduce.cluster import local_cluster

        return stack.enter_context(
            local_cluster(options.workers, options.devices, op_timeout_s=options.op_timeout)
        )
    if options.connect is not None:
        from allreduce.cluster import connect

        spec = connect_spec(options.connect)
        try:
            return stack.enter_context(connect(spec, op_timeout_s=options.op_timeout))
        except ValueError as err:  # e.g. remote workers and no address of this process
            raise UsageError(f"--connect: {err}") from None
    return None


def _open_ray(options: Options, stack: ExitStack) -> Cluster:
    """``--workers`` Ray actors with ``--devices`` logical CPUs each (``--ray``).

    Raises:
        UsageError: Ray is not installed.
    """
    from allreduce.cluster import ray_cluster

    address = None if options.ray == RAY_LOCAL else options.ray
    try:
        return stack.enter_context(
            ray_cluster(options.workers, options.devices, address=address, op_timeout_s=options.op_timeout)
        )
    except ImportError as err:
        raise UsageError(f"--ray: {err}") from None


def _enter_devices(options: Options, stack: ExitStack) -> tuple[list[str], int, Guard]:
    """The devices, the number of workers, and how to call a step (a cluster's watchdog).

    Raises:
        UsageError: more devices than sums are exact for.
        RuntimeError: the devices cannot be made, or the cluster cannot start.
    """
    device_type = options.device_type.upper()
    cluster = open_cluster(options, stack)
    if cluster is None:
        from allreduce.graph.local_devices import logical_devices

        memory = int(os.environ.get(_GPU_MEMORY_ENV, "4096"))
        try:
            return logical_devices(options.devices, device_type, gpu_memory_mb=memory), 1, lambda fn: fn()
        except RuntimeError as err:
            raise RuntimeError(f"--devices {options.devices}: {err}") from None
    devices = [d for worker in cluster.devices_of(device_type) for d in worker]
    if not devices:
        raise RuntimeError(f"the cluster's workers have no {device_type} device")
    limit = max_exact_devices(options.dtype, rounding=options.compression != ("none",))
    if len(devices) > limit:
        raise UsageError(
            f"{len(devices)} devices: sums in {options.dtype} are exact for at most {limit} devices"
        )
    return devices, len(cluster.devices), cluster.run


def make_contenders(options: Options, setup: Setup, *, logical_split: bool = False) -> list[Contender]:
    """The specs (given, or every default one), each with every ``--compression``, then
    the peers kept by the options.

    Specs are required to run; so are peers chosen by name. ``logical_split``: the
    devices were split from fewer physical ones (see :func:`default_specs`).
    """
    specs = options.specs or default_specs(setup.devices, logical_split=logical_split)
    contenders: list[Contender] = [
        SpecContender(spec, compression=compression) for spec in specs for compression in options.compression
    ]
    if options.peers == ():
        return contenders
    from allreduce.measure.peers import default_peers

    peers = default_peers(setup)
    if options.peers is not None:
        peers = [p for p in peers if p.name in options.peers]
        for peer in peers:
            peer.required = True
    return contenders + peers


class _Bar:
    """A progress bar on stderr (tqdm, where it is installed and stderr is a terminal)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._tqdm: Any = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._tqdm = tqdm(total=total, file=sys.stderr, unit="step", leave=False, disable=None)

    def describe(self, text: str) -> None:
        if self._tqdm is not None:
            self._tqdm.set_description(text)

    def tick(self, steps: int) -> None:
        if self._tqdm is not None:
            self._tqdm.update(steps)

    def print(self, text: str, out: TextIO) -> None:
        """Writes ``text`` and a newline to ``out`` without tearing the bar."""
        if self._tqdm is not None:
            self._tqdm.write(text, file=out)
        else:
            out.write(text + "\n")
        out.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()


@contextmanager
def _bar(total: int, enabled: bool) -> Iterator[_Bar]:
    bar = _Bar(total, enabled)
    try:
        yield bar
    finally:
        bar.close()


def _measure(
    cases: Sequence[Case],
    contenders: Sequence[Contender],
    setup: Setup,
    options: Options,
    guard: Guard,
    interrupts: Interrupts,
    results: list[Result],
) -> None:
    """Runs every case, adding its results to ``results`` and printing its rows when it
    is done.

    Raises:
        KeyboardInterrupt: Ctrl-C; ``results`` holds the cases done so far.
    """
    steps = len(cases) * len(contenders) * (1 + options.warmup + options.iters)
    with _bar(steps, options.progress) as bar, interrupts.deferred():

        def tick(count: int) -> None:
            bar.tick(count)
            interrupts.check()

        for case in cases:
            bar.describe(case.name)
            logger.info("measuring %s", case.name)
            group = run_case(
                case, contenders, setup, warmup=options.warmup, iters=options.iters, tick=tick, guard=guard
            )
            results += group
            bar.print(format_rows(group), sys.stdout)


def _title(options: Options, setup: Setup, tf_version: str) -> str:
    workers = f" over {setup.workers} workers" if setup.workers > 1 else ""
    witness = "; timed steps return one element per output" if setup.witness else ""
    return (
        f"allreduce-bench: {setup.num_devices} x {setup.device_type}{workers}, {options.workload}, "
        f"{options.dtype}, warmup {options.warmup}, iters {options.iters}, allocator {options.allocator}, "
        f"TensorFlow {tf_version}{witness}"
    )


@dataclass
class _Outcome:
    """What a run has to report, as far as it got."""

    results: list[Result] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    title: str = ""
    plans: dict[Any, Any] = field(default_factory=dict)
    interrupted: bool = False


def _write_outputs(options: Options, outcome: _Outcome) -> None:
    if options.json:
        import numpy as np

        from allreduce import __version__

        # TensorFlow may not have finished loading when Ctrl-C came.
        tf_version = getattr(sys.modules.get("tensorflow"), "__version__", "not loaded")
        versions = {"allreduce": __version__, "tensorflow": tf_version, "numpy": np.__version__}
        document = to_json(
            outcome.results,
            options=options.as_dict(),
            devices=outcome.devices,
            versions=versions,
            interrupted=outcome.interrupted,
        )
        with open(options.json, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1)
            f.write("\n")
    if options.plot:
        from allreduce.bench.plot import plot_busbw

        plot_busbw(outcome.results, options.plot, title=outcome.title)


def _explain(
    options: Options, contenders: Sequence[Contender], cases: Sequence[Case], devices: Sequence[str]
) -> dict[Any, Any]:
    """With ``--explain``, prints each spec's plan of each case; the plans by ``(spec, case)``."""
    if not options.explain:
        return {}
    from allreduce.bench.tuning_report import explain_cases

    specs = list(dict.fromkeys(c.spec for c in contenders if c.spec is not None))
    plans = explain_cases(specs, cases, devices, options.pack_max_bytes)
    for plan in plans.values():
        sys.stdout.write(f"{plan}\n\n")
    return plans


def _tensorflow(verbose: bool) -> Any:
    """TensorFlow, imported quietly.

    Raises:
        UsageError: TensorFlow is not installed (the message names the extras).
    """
    try:
        return import_tensorflow(verbose)
    except ImportError as err:
        raise UsageError(" ".join(str(err).split())) from None


def _contenders(
    options: Options, tf: Any, devices: Sequence[str], workers: int
) -> tuple[Setup, list[Contender]]:
    setup = Setup(
        devices=tuple(devices),
        device_type=options.device_type.upper(),
        workers=workers,
        pack_max_bytes=options.pack_max_bytes,
        pack_max_group=options.pack_max_group,
        witness=workers > 1 or options.device_type != "cpu" or options.connect is not None,
    )
    split = (
        workers == 1
        and options.connect is None
        and len(tf.config.list_physical_devices(setup.device_type)) < len(devices)
    )
    return setup, make_contenders(options, setup, logical_split=split)


def _run(
    options: Options, cases: Sequence[Case] | None, interrupts: Interrupts, outcome: _Outcome
) -> int | None:
    """Makes the devices and measures into ``outcome``; the exit status of ``--tune``, else ``None``."""
    tf = _tensorflow(options.verbose > 0)
    if cases is None:
        check_model_name(options.model, tf)
    with ExitStack() as stack:
        devices, workers, guard = _enter_devices(options, stack)
        outcome.devices = list(devices)
        if cases is None:
            # Only now: building the model starts the runtime, which fixes the devices.
            cases = model_cases(options, tf)
            check_memory(cases, options)
        setup, contenders = _contenders(options, tf, devices, workers)
        logger.info("devices: %s", ", ".join(devices))
        logger.info("cases: %s", ", ".join(c.name for c in cases))
        logger.info("contenders: %s", ", ".join(c.name for c in contenders))
        if options.tune:
            from allreduce.bench.tuning_report import format_tuning, tune_cases

            sys.stdout.write(
                format_tuning(
                    tune_cases(cases, devices, options.dtype, options.tune_budget, refresh=options.retune)
                )
                + "\n"
            )
            return EXIT_OK
        outcome.plans = _explain(options, contenders, cases, devices)
        outcome.title = _title(options, setup, tf.__version__)
        sys.stdout.write(format_header(outcome.title) + "\n")
        sys.stdout.flush()
        _measure(cases, contenders, setup, options, guard, interrupts, outcome.results)
    return None


def _report(options: Options, outcome: _Outcome) -> int:
    """Prints the summary, writes ``--json`` and ``--plot``; the exit status."""
    sys.stdout.write(format_summary(outcome.results, interrupted=outcome.interrupted) + "\n")
    if outcome.plans and outcome.results:
        from allreduce.bench.tuning_report import format_predicted_vs_measured

        sys.stdout.write(format_predicted_vs_measured(outcome.plans, outcome.results) + "\n")
    sys.stdout.flush()
    status = EXIT_FAILED if any(r.failed for r in outcome.results) else EXIT_OK
    try:
        _write_outputs(options, outcome)
    except (OSError, ValueError, ImportError, RuntimeError) as err:
        sys.stderr.write(f"allreduce-bench: error: cannot write the results: {describe_error(err)}\n")
        status = EXIT_FAILED
    return EXIT_INTERRUPTED if outcome.interrupted else status


def run(options: Options, cases: Sequence[Case] | None = None) -> int:
    """Runs the benchmark ``options`` describe (``cases``: those of a sweep or many-small
    workload, already checked); returns the exit status. After Ctrl-C, at any point, the
    summary, ``--json`` and ``--plot`` hold the cases measured so far, and the status is
    :data:`EXIT_INTERRUPTED`.

    Raises:
        UsageError: TensorFlow is missing, an unknown ``--model``, or a model too large
            for this machine's memory.
        RuntimeError: the devices cannot be made.
    """
    outcome = _Outcome()
    with Interrupts() as interrupts:
        try:
            status = (measure_spmd if options.spmd else _run)(options, cases, interrupts, outcome)
            interrupts.check()  # one that a finalizer swallowed after the last check
        except KeyboardInterrupt:
            logger.info("interrupted after %d results", len(outcome.results))
            outcome.interrupted = True
        else:
            if status is not None:
                return status
        return _report(options, outcome)
