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

from allreduce.measure.cases import Case
from allreduce.measure.checks import Outputs, count_wrong, drain, largest_error, make_inputs
from allreduce.measure.contenders import Contender, Inputs, Setup

__all__ = [
    "Result",
    "compile_step",
    "describe_error",
    "run_case",
]

logger = logging.getLogger(__name__)

Step = Callable[[], Outputs]
Guard = Callable[[Callable[[], Any]], Any]

# Raised while a graph is built: the contender cannot run here (a skip, with this reason).
_CANNOT_BUILD = (ValueError, TypeError, NotImplementedError, ImportError)


@dataclass
class Result:
    """One row: a contender on a case.

    ``required`` marks a contender that was asked for (or a default spec, which the
    defaults promise runs): when it is skipped, the run has failed. A compressed result
    is wrong only beyond its ``bound`` (the largest over the elements; 0: exact).
    ``resolved`` is the spec that ran where it differs from ``spec`` (``"auto"``).
    """

    case: Case
    name: str
    kind: str
    num_devices: int
    spec: str | None = None
    same_as: str | None = None
    required: bool = False
    samples_s: list[float] = field(default_factory=list)
    wrong: int = 0
    replica_mismatch: int = 0
    compression: str = "none"
    max_error: float = 0.0
    bound: float = 0.0
    skipped: str | None = None
    error: str | None = None
    resolved: str | None = None

    @property
    def label(self) -> str:
        """:attr:`name`, with the spec that ran where ``spec`` was resolved (``auto=pscpu``)."""
        if self.resolved is None or self.spec is None:
            return self.name
        return self.name.replace(self.spec, f"{self.spec}={self.resolved}", 1)

    @property
    def failed(self) -> bool:
        """Wrong or differing results, an error, or a required contender that did not run."""
        return (
            self.error is not None
            or self.wrong > 0
            or self.replica_mismatch > 0
            or (self.required and self.skipped is not None)
        )

    @property
    def ok(self) -> bool:
        """Not :attr:`failed`: exact and identical everywhere, or benignly skipped."""
        return not self.failed

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


def compile_step(contender: Contender, inputs: Inputs, setup: Setup) -> tuple[Step, Step]:
    """``(full, timed)``: ``contender``'s step traced into ``tf.function``s; ``full``
    returns the outputs, ``timed`` the same or, with ``setup.witness``, the first element
    of each output taken on its device (so that no output leaves its device)."""
    build = contender.prepare(inputs, setup)
    if not contender.graph:
        return build, build
    from allreduce.core._tf import tf

    full = tf.function(_Body(build), autograph=False)
    if not setup.witness:
        return full, full
    devices = inputs.devices

    def witnesses() -> list[list[Any]]:
        out = []
        for device, tower in zip(devices, build()):
            with tf.device(device):
                out.append([tf.reshape(value, [-1])[:1] for value in tower])
        return out

    return full, tf.function(_Body(witnesses), autograph=False)


class _Body:
    """A step's body as its own callable: TensorFlow counts the traces of functions
    that share code together, and would warn of retracing after a few steps."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn

    def __call__(self) -> Any:
        return self._fn()


def describe_error(err: BaseException) -> str:
    """``"TypeName: message"`` with the whole message."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _timed(step: Step) -> tuple[Outputs, float]:
    start = time.perf_counter()
    outputs = step()
    drain(outputs)
    return outputs, time.perf_counter() - start


class _Running:
    """A contender that runs on the current case: its steps and its result."""

    def __init__(
        self, result: Result, full: Step, step: Step, guard: Guard, limits: Sequence[np.ndarray] | None
    ) -> None:
        self.result = result
        self._full = full
        self._step = step
        self._guard = guard
        self._limits = limits

    @property
    def active(self) -> bool:
        """Whether it has not failed yet."""
        return self.result.error is None

    def check(self, outputs: Outputs, expected: Sequence[np.ndarray]) -> None:
        """Counts wrong elements of ``outputs``; keeps the larger count (and error) of all checks."""
        wrong, mismatch = count_wrong(outputs, expected, self.result.case, self._limits)
        self.result.wrong = max(self.result.wrong, wrong)
        self.result.replica_mismatch = max(self.result.replica_mismatch, mismatch)
        if wrong or self._limits is not None:
            error = largest_error(outputs, expected)
            self.result.max_error = max(self.result.max_error, error, key=lambda e: (np.isnan(e), e))

    def first(self, expected: Sequence[np.ndarray]) -> None:
        """Runs the full step once (it traces the function) and checks it."""
        outputs, _ = self._guard(lambda: _timed(self._full))
        self.check(outputs, expected)

    def step(self, *, timed: bool) -> Outputs | None:
        """One step (a sample when ``timed``); ``None`` and an error once it fails."""
        try:
            outputs, elapsed = self._guard(lambda: _timed(self._step))
        except Exception as err:
            self.fail(err)
            return None
        if timed:
            self.result.samples_s.append(elapsed)
        return outputs

    def last(self, outputs: Outputs, expected: Sequence[np.ndarray]) -> None:
        """Checks the last timed step, or one more full step where timed steps return witnesses."""
        try:
            if self._step is not self._full:
                outputs, _ = self._guard(lambda: _timed(self._full))
            self.check(outputs, expected)
        except Exception as err:
            self.fail(err)

    def fail(self, err: BaseException) -> None:
        logger.debug("%s failed on %s", self.result.name, self.result.case.name, exc_info=True)
        self.result.error = describe_error(err)


def _result(contender: Contender, case: Case, setup: Setup) -> Result:
    return Result(
        case=case,
        name=contender.name,
        kind=contender.kind,
        num_devices=setup.num_devices,
        spec=contender.spec,
        same_as=contender.same_as,
        required=contender.required,
        compression=contender.compression,
    )


def _start(
    contender: Contender, inputs: Inputs, expected: Sequence[np.ndarray], setup: Setup, guard: Guard
) -> tuple[Result, _Running | None]:
    """Makes ``contender``'s result, and unless it is skipped, compiles and checks its first step."""
    result = _result(contender, inputs.case, setup)
    result.skipped = contender.skip_reason(inputs.case, setup)
    if result.skipped is not None:
        logger.info("%s: %s skipped: %s", inputs.case.name, contender.name, result.skipped)
        return result, None
    logger.info("%s: %s starts", inputs.case.name, contender.name)
    try:
        resolved = contender.resolved(inputs.case, setup)
        if resolved != contender.spec:
            result.resolved = resolved
        limits = contender.tolerance(inputs.case, setup, expected)
        if limits is not None:
            result.bound = max((float(np.max(limit)) for limit in limits if limit.size), default=0.0)
        full, step = compile_step(contender, inputs, setup)
        run = _Running(result, full, step, guard, limits)
        run.first(expected)
    except _CANNOT_BUILD as err:
        result.skipped = describe_error(err)
        logger.info("%s: %s cannot run here: %s", inputs.case.name, contender.name, result.skipped)
        return result, None
    except Exception as err:
        logger.debug("%s failed on %s", contender.name, inputs.case.name, exc_info=True)
        result.error = describe_error(err)
        return result, None
    return result, run


def _finish(result: Result) -> None:
    if result.error is not None:
        logger.info("%s: %s failed: %s", result.case.name, result.name, result.error)
    elif result.skipped is None:
        logger.info(
            "%s: %s done: median %.1f us, %d wrong, %d differing between replicas",
            result.case.name,
            result.name,
            result.time_s * 1e6,
            result.wrong,
            result.replica_mismatch,
        )


def run_case(
    case: Case,
    contenders: Sequence[Contender],
    setup: Setup,
    *,
    warmup: int,
    iters: int,
    tick: Callable[[int], None] = lambda _: None,
    guard: Guard = lambda fn: fn(),
) -> list[Result]:
    """Times every contender on ``case``; returns one :class:`Result` each, in order.

    ``tick(k)`` is called after every ``k`` steps (for a progress bar): each contender
    counts ``1 + warmup + iters`` steps, whether it runs or not. Every step runs as
    ``guard(fn)`` (e.g. a cluster's watchdog); its time is taken inside ``fn``.
    """
    rounding = any(c.compression != "none" for c in contenders)
    inputs, expected = make_inputs(case, setup.devices, rounding=rounding)
    results, running = [], []
    for contender in contenders:
        result, run = _start(contender, inputs, expected, setup, guard)
        results.append(result)
        if run is not None:
            running.append(run)
        tick(1 if run is not None else 1 + warmup + iters)
    for _ in range(warmup):
        for run in [r for r in running if r.active]:
            run.step(timed=False)
            tick(1)
    for i in range(iters):
        for run in [r for r in running if r.active]:
            outputs = run.step(timed=True)
            if outputs is not None and i == iters - 1:
                run.last(outputs, expected)
            tick(1)
    for result in results:
        _finish(result)
    del running, inputs
    gc.collect()
    return results
