"""One run of ``allreduce-bench`` once its options are checked: devices, contenders,
measuring case by case with each case's rows printed as soon as it is done, and the
summary, JSON and plot at the end (also after Ctrl-C, with the cases measured so far).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, TextIO

from allreduce.bench.cases import Case, shapes_case
from allreduce.bench.contenders import Contender, Setup, SpecContender, default_specs
from allreduce.bench.driver import Guard, Result, describe_error, run_case
from allreduce.bench.options import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, Options
from allreduce.bench.preflight import check_memory, check_model_name
from allreduce.bench.quiet import import_tensorflow
from allreduce.bench.report import format_header, format_rows, format_summary, to_json

__all__ = ["make_contenders", "model_cases", "run"]

logger = logging.getLogger(__name__)

# How much device memory each logical GPU gets when one GPU is split.
_GPU_MEMORY_ENV = "ALLREDUCE_BENCH_GPU_MEMORY_MB"


def model_cases(options: Options, tf: Any) -> list[Case]:
    """The one case of ``--workload model``: the trainable weights' shapes of the model.

    Raises:
        UsageError: the model is not in ``tf.keras.applications``.
    """
    check_model_name(options.model, tf)
    model = getattr(tf.keras.applications, options.model)(weights=None)
    shapes = [tuple(int(d) for d in w.shape) for w in model.trainable_weights]
    del model
    return [shapes_case(options.model, shapes, options.dtype)]


def _enter_devices(options: Options, stack: ExitStack) -> tuple[list[str], int, Guard]:
    """The devices, the number of workers, and how to call a step (a cluster's watchdog).

    Raises:
        RuntimeError: the devices cannot be made, or the cluster cannot start.
    """
    device_type = options.device_type.upper()
    if options.workers is None:
        from allreduce.local_devices import logical_devices

        memory = int(os.environ.get(_GPU_MEMORY_ENV, "4096"))
        try:
            return logical_devices(options.devices, device_type, gpu_memory_mb=memory), 1, lambda fn: fn()
        except RuntimeError as err:
            raise RuntimeError(f"--devices {options.devices}: {err}") from None
    from allreduce.cluster import local_cluster

    cluster = stack.enter_context(
        local_cluster(options.workers, options.devices, op_timeout_s=options.op_timeout)
    )
    return [d for worker in cluster.devices for d in worker], options.workers, cluster.run


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
    from allreduce.bench.peers import default_peers

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
    cases: Sequence[Case], contenders: Sequence[Contender], setup: Setup, options: Options, guard: Guard
) -> tuple[list[Result], bool]:
    """Runs every case, printing its rows when it is done; ``(results, interrupted)``."""
    results: list[Result] = []
    steps = len(cases) * len(contenders) * (1 + options.warmup + options.iters)
    case = None
    with _bar(steps, options.progress) as bar:
        try:
            for case in cases:
                bar.describe(case.name)
                group = run_case(
                    case,
                    contenders,
                    setup,
                    warmup=options.warmup,
                    iters=options.iters,
                    tick=bar.tick,
                    guard=guard,
                )
                results += group
                bar.print(format_rows(group), sys.stdout)
        except KeyboardInterrupt:
            logger.info("interrupted during %s", case.name if case else "the first case")
            return results, True
    return results, False


def _title(options: Options, setup: Setup, tf_version: str) -> str:
    workers = f" over {setup.workers} workers" if setup.workers > 1 else ""
    witness = "; timed steps return one element per output" if setup.witness else ""
    return (
        f"allreduce-bench: {setup.num_devices} x {setup.device_type}{workers}, {options.workload}, "
        f"{options.dtype}, warmup {options.warmup}, iters {options.iters}, allocator {options.allocator}, "
        f"TensorFlow {tf_version}{witness}"
    )


def _write_outputs(
    options: Options, results: Sequence[Result], devices: Sequence[str], title: str, interrupted: bool
) -> None:
    if options.json:
        import numpy as np

        from allreduce import __version__
        from allreduce._tf import tf

        versions = {"allreduce": __version__, "tensorflow": tf.__version__, "numpy": np.__version__}
        document = to_json(
            results, options=options.as_dict(), devices=devices, versions=versions, interrupted=interrupted
        )
        with open(options.json, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1)
            f.write("\n")
    if options.plot:
        from allreduce.bench.plot import plot_busbw

        plot_busbw(results, options.plot, title=title)


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


def run(options: Options, cases: Sequence[Case] | None = None) -> int:
    """Runs the benchmark ``options`` describe (``cases``: those of a sweep or many-small
    workload, already checked); returns the exit status.

    Raises:
        UsageError: an unknown ``--model``, or a model too large for this machine's memory.
        RuntimeError: the devices cannot be made.
    """
    tf = import_tensorflow(options.verbose > 0)
    if cases is None:
        cases = model_cases(options, tf)
        check_memory(cases, options)
    with ExitStack() as stack:
        devices, workers, guard = _enter_devices(options, stack)
        setup = Setup(
            devices=tuple(devices),
            device_type=options.device_type.upper(),
            workers=workers,
            pack_max_bytes=options.pack_max_bytes,
            pack_max_group=options.pack_max_group,
            witness=workers > 1 or options.device_type != "cpu",
        )
        split = workers == 1 and len(tf.config.list_physical_devices(setup.device_type)) < len(devices)
        contenders = make_contenders(options, setup, logical_split=split)
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
        plans = _explain(options, contenders, cases, devices)
        title = _title(options, setup, tf.__version__)
        sys.stdout.write(format_header(title) + "\n")
        sys.stdout.flush()
        results, interrupted = _measure(cases, contenders, setup, options, guard)
    sys.stdout.write(format_summary(results, interrupted=interrupted) + "\n")
    if plans:
        from allreduce.bench.tuning_report import format_predicted_vs_measured

        sys.stdout.write(format_predicted_vs_measured(plans, results) + "\n")
    sys.stdout.flush()
    status = EXIT_FAILED if any(r.failed for r in results) else EXIT_OK
    try:
        _write_outputs(options, results, devices, title, interrupted)
    except (OSError, ValueError, ImportError, RuntimeError) as err:
        sys.stderr.write(f"allreduce-bench: error: cannot write the results: {describe_error(err)}\n")
        status = EXIT_FAILED
    return EXIT_INTERRUPTED if interrupted else status
