"""The generic part of the benchmark: inputs, timing and verification.

For each case the driver makes the inputs once, then for every contender traces its
step into a ``tf.function`` (:func:`compile_step`), runs it once and checks that
result, runs the warm-up steps, and times ``iters`` steps. Timed steps go round-robin
over the contenders (step 1 of each, then step 2 of each, ...) so that a change in
background load hits all of them alike. Each timed step ends when every output has
been drained with ``np.asarray`` (no copy for a CPU tensor of this process); the
outputs of the last timed step are checked again after its timer stopped. Where
outputs live elsewhere (GPUs, other workers) a timed step returns only the first
element of each output, taken on its device, and one more full step is checked after
the timed ones.
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from allreduce.bench.cases import Case, expected_sum, input_pattern
from allreduce.bench.contenders import Contender, Inputs, Setup

__all__ = ["Result", "compile_step", "count_wrong", "drain", "make_inputs", "run_case"]

logger = logging.getLogger(__name__)

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


@dataclass
class Result:
    """One row: a contender on a case."""

    case: Case
    name: str
    kind: str
    num_devices: int
    spec: str | None = None
    same_as: str | None = None
    samples_s: list[float] = field(default_factory=list)
    wrong: int = 0
    replica_mismatch: int = 0
    skipped: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Ran, and every checked output was exact and bitwise identical across replicas."""
        return self.error is None and self.wrong == 0 and self.replica_mismatch == 0

    @property
    def timed(self) -> bool:
        return self.skipped is None and self.error is None and bool(self.samples_s)

    @property
    def time_s(self) -> float:
        """The median of the timed steps, in seconds (NaN if none)."""
        return statistics.median(self.samples_s) if self.samples_s else float("nan")

    @property
    def algbw(self) -> float:
        """Bytes per device over time, in GB/s."""
        return self.case.nbytes / self.time_s / 1e9 if self.timed else float("nan")

    @property
    def busbw(self) -> float:
        """``algbw * 2 (n - 1) / n``: what each device's links carry in a ring all-reduce."""
        n = self.num_devices
        return self.algbw * 2 * (n - 1) / n


def make_inputs(case: Case, devices: Sequence[str]) -> tuple[Inputs, list[np.ndarray]]:
    """The inputs of ``case`` on ``devices`` and the exact expected sum of each tensor."""
    from allreduce._tf import tf

    np_dtype = tf.as_dtype(case.dtype).as_numpy_dtype
    n = len(devices)
    host = [
        [
            input_pattern(int(np.prod(shape)), d, t).astype(np_dtype).reshape(shape)
            for t, shape in enumerate(case.shapes)
        ]
        for d in range(n)
    ]
    tensors = []
    for device, tower in zip(devices, host):
        with tf.device(device):
            tensors.append([tf.identity(tf.constant(h)) for h in tower])
    expected = [
        expected_sum(int(np.prod(shape)), n, t).astype(np_dtype) for t, shape in enumerate(case.shapes)
    ]
    return Inputs(case=case, devices=tuple(devices), host=host, tensors=tensors), expected


def drain(outputs: Sequence[Sequence[Any]]) -> None:
    """Waits for every output the same way for every contender (``np.asarray``)."""
    for tower in outputs:
        for value in tower:
            np.asarray(value)


def count_wrong(
    outputs: Sequence[Sequence[Any]], expected: Sequence[np.ndarray], case: Case
) -> tuple[int, int]:
    """Compares every output on every device with the exact sums.

    Returns:
        ``(wrong, replica_mismatch)``: elements, over all devices and tensors, that differ
        from the expected value (a missing or misshapen tensor counts in full), and
        elements whose bits differ from the first device's result.
    """
    wrong = mismatch = 0
    first: list[np.ndarray | None] = [None] * len(expected)
    for tower in outputs:
        for t, want in enumerate(expected):
            if t >= len(tower):
                wrong += want.size
                continue
            got = np.asarray(tower[t])
            if got.shape != tuple(case.shapes[t]) or got.dtype != want.dtype:
                wrong += want.size
                continue
            flat = got.reshape(-1)
            wrong += int(np.count_nonzero(flat != want))
            bits = flat.view(_UINT[flat.dtype.itemsize])
            if first[t] is None:
                first[t] = bits
            else:
                mismatch += int(np.count_nonzero(bits != first[t]))
    if len(outputs) == 0:
        wrong += sum(e.size for e in expected)
    return wrong, mismatch


Step = Callable[[], Sequence[Sequence[Any]]]


def compile_step(contender: Contender, inputs: Inputs, setup: Setup) -> tuple[Step, Step]:
    """``(full, timed)``: ``contender``'s step traced into ``tf.function``s; ``full``
    returns the outputs, ``timed`` the same or, with ``setup.witness``, the first element
    of each output taken on its device (so that no output leaves its device)."""
    build = contender.prepare(inputs, setup)
    if not contender.graph:
        return build, build
    from allreduce._tf import tf

    full = tf.function(build, autograph=False)
    if not setup.witness:
        return full, full
    devices = inputs.devices

    def witnesses() -> list[list[Any]]:
        out = []
        for device, tower in zip(devices, build()):
            with tf.device(device):
                out.append([tf.reshape(value, [-1])[:1] for value in tower])
        return out

    return full, tf.function(witnesses, autograph=False)


@dataclass
class _Running:
    contender: Contender
    result: Result
    step: Step
    full: Step


def run_case(
    case: Case,
    contenders: Sequence[Contender],
    setup: Setup,
    *,
    warmup: int,
    iters: int,
    tick: Callable[[int], None] = lambda _: None,
    guard: Callable[[Callable[[], Any]], Any] = lambda fn: fn(),
) -> list[Result]:
    """Times every contender on ``case``; returns one :class:`Result` each, in order.

    ``tick(k)`` is called after every ``k`` steps (for a progress bar): each contender
    counts ``1 + warmup + iters`` steps, whether it runs or not. Every step runs as
    ``guard(fn)`` (e.g. a cluster's watchdog); its time is taken inside ``fn``.
    """
    per_contender = 1 + warmup + iters
    inputs, expected = make_inputs(case, setup.devices)
    results: list[Result] = []
    running: list[_Running] = []
    for contender in contenders:
        result = Result(
            case=case,
            name=contender.name,
            kind=contender.kind,
            num_devices=setup.num_devices,
            spec=contender.spec,
            same_as=contender.same_as,
        )
        results.append(result)
        result.skipped = contender.skip_reason(case, setup)
        if result.skipped is None:
            try:
                full, step = compile_step(contender, inputs, setup)
                outputs, _ = guard(lambda full=full: _timed(full))
                result.wrong, result.replica_mismatch = count_wrong(outputs, expected, case)
                del outputs
                running.append(_Running(contender, result, step, full))
            except (ValueError, TypeError, NotImplementedError, ImportError) as err:
                # Raised while the graph is built: this contender cannot run here.
                result.skipped = f"{type(err).__name__}: {_first_line(err)}"
            except Exception as err:
                logger.debug("%s failed on %s", contender.name, case.name, exc_info=True)
                result.error = f"{type(err).__name__}: {_first_line(err)}"
        tick(1 if running and running[-1].result is result else per_contender)
    for _ in range(warmup):
        for run in list(running):
            _call(run, running, lambda outputs: None, guard)
            tick(1)
    for i in range(iters):
        last = i == iters - 1
        for run in list(running):

            def check(outputs: Sequence[Sequence[Any]], run: _Running = run, last: bool = last) -> None:
                if last:
                    if run.step is not run.full:
                        outputs, _ = guard(lambda: _timed(run.full))
                    wrong, mismatch = count_wrong(outputs, expected, case)
                    run.result.wrong = max(run.result.wrong, wrong)
                    run.result.replica_mismatch = max(run.result.replica_mismatch, mismatch)

            _call(run, running, check, guard, timed=True)
            tick(1)
    del running, inputs
    gc.collect()
    return results


def _call(
    run: _Running,
    running: list[_Running],
    check: Callable[[Sequence[Sequence[Any]]], None],
    guard: Callable[[Callable[[], Any]], Any],
    *,
    timed: bool = False,
) -> None:
    if run not in running:
        return
    try:
        outputs, elapsed = guard(lambda: _timed(run.step))
    except Exception as err:
        logger.debug("%s failed", run.contender.name, exc_info=True)
        run.result.error = f"{type(err).__name__}: {_first_line(err)}"
        running.remove(run)
        return
    if timed:
        run.result.samples_s.append(elapsed)
    try:
        check(outputs)
    except Exception as err:
        logger.debug("%s failed", run.contender.name, exc_info=True)
        run.result.error = f"{type(err).__name__}: {_first_line(err)}"
        running.remove(run)


def _timed(step: Callable[[], Sequence[Sequence[Any]]]) -> tuple[Sequence[Sequence[Any]], float]:
    start = time.perf_counter()
    outputs = step()
    drain(outputs)
    return outputs, time.perf_counter() - start


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""
