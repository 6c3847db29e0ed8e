"""Which cells to measure: where the model says the winners may cross (pure Python).

A cell is one candidate spec on one size band (a probe: the workload's tensors of that
band, all-reduced in one step). The search starts from the prior model's predictions,
measures the likeliest winners on the smallest, middle and largest band to calibrate,
refits the model after every probe, and then measures, band by band, only candidates that
the model (within its own error) says could beat the current base spec by
:data:`~allreduce.selection.decide.GAIN`, or could become the base, always side by side
with the base. A candidate without a cost formula is measured wherever the budget
allows. The calibration and a first cell of every candidate (on the heaviest band, side
by side with the base) are measured whatever the deadline: a choice is never made
without measuring it against every candidate. It stops when no cell could change the
decision, or at ``max_cells`` measured cells, or at the deadline; then it measures
again, side by side, the closest single specs on the heaviest bands, for as long as the
decision between them is close and the budget lasts, and every band switch it would
make, so that noise in one probe decides nothing.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from allreduce.selection.decide import (
    GAIN,
    STEP_GAIN,
    TIE,
    Decision,
    Doubt,
    decide,
    estimate,
    total_ratio_interval,
    totals,
)

__layer__ = "model"

__all__ = ["MIN_ERROR", "Search", "next_probe"]

logger = logging.getLogger(__name__)

#: The smallest relative error the search grants the model when choosing what to measure.
MIN_ERROR = 0.1
#: The most alternatives measured next to the base in one probe.
PER_PROBE = 3
#: Single specs this much (beyond :data:`~allreduce.selection.decide.TIE`) above the best are measured again.
REFINE_MARGIN = 0.05
#: The refinement measures the heaviest bands that make up this share of the step.
HEAVY_SHARE = 0.8
#: How many times the refinement runs at least, and at most while the decision is close.
REFINE_ROUNDS = 2
MAX_REFINE_ROUNDS = 12
#: The most band switches measured again before they are decided.
MAX_CONFIRMATIONS = 3

#: ``measure(band, specs) -> {spec: step seconds, or None when it cannot run}``.
Measure = Callable[[int, Sequence[str]], Mapping[str, Sequence[float] | None]]
#: ``predict(measured) -> {(spec, band): seconds or None}``, refitted on what was measured.
Predict = Callable[[Mapping[tuple[str, int], Sequence[float]]], Mapping[tuple[str, int], float | None]]


@dataclass
class Search:
    """The state of one tuning: what was measured, what is predicted, what it cost."""

    candidates: list[str]
    bands: list[int]
    measured: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    predicted: Mapping[tuple[str, int], float | None] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    common: Mapping[int, float] = field(default_factory=dict)
    seen: set[tuple[str, int]] = field(default_factory=set)
    measurements: int = 0
    probes: int = 0

    @property
    def cells(self) -> int:
        """Distinct cells measured (or tried): what the quarter of an exhaustive sweep counts."""
        return len(self.seen)

    def usable(self) -> list[str]:
        return [c for c in self.candidates if c not in self.failed]

    def model_error(self) -> float:
        """The median relative error of the predictions on measured cells (at least :data:`MIN_ERROR`)."""
        errors = []
        for (spec, band), samples in self.measured.items():
            guess = self.predicted.get((spec, band))
            if guess:
                actual = statistics.median(samples)
                errors.append(abs(guess - actual) / actual)
        return max(MIN_ERROR, statistics.median(errors)) if errors else 0.5

    def decide(self, overhead: float) -> Decision:
        """The decision the measurements and predictions so far make."""
        doubt = Doubt(self.model_error(), self.common)
        return decide(
            self.usable(), self.bands, self.measured, self.predicted, overhead=overhead, doubt=doubt
        )

    def record(self, band: int, results: Mapping[str, Sequence[float] | None]) -> None:
        for spec, samples in results.items():
            self.seen.add((spec, band))
            self.measurements += 1
            if samples:
                self.measured.setdefault((spec, band), []).extend(samples)
            else:
                self.failed.setdefault(spec, "did not run or gave a wrong result")
        self.probes += 1


def _calibration(search: Search) -> list[tuple[int, list[str]]]:
    """The first probes: the prior's likeliest winners on the smallest and largest band
    (with every candidate without a formula: only measuring can rank those), and its two
    likeliest on the middle band, so that the first fit sees every regime of sizes."""
    bands = search.bands
    probes = []
    for band, count in ((bands[0], PER_PROBE + 1), (bands[-1], PER_PROBE + 1), (bands[len(bands) // 2], 2)):
        if any(band == b for b, _ in probes):
            continue
        ranked = sorted(
            (c for c in search.usable() if search.predicted.get((c, band)) is not None),
            key=lambda c: search.predicted[c, band],  # type: ignore[return-value,index]
        )
        unknown = [c for c in search.usable() if search.predicted.get((c, band)) is None]
        if count < PER_PROBE + 1:
            unknown = []
        probes.append((band, unknown + ranked[: max(2, count - len(unknown))]))
    return probes


def _scores(search: Search, base: str, error: float) -> dict[tuple[str, int], float]:
    """How much of the step measuring each unmeasured cell could save: its predicted
    saving over the base plus the model's error on its own part of the band (the time
    no algorithm changes, ``search.common``, is not uncertain), kept where that could
    reach :data:`~allreduce.selection.decide.GAIN` of the band and ``STEP_GAIN`` of the step.
    Single specs that could undercut the base on the whole workload score by that error
    alone, so that the heaviest bands are measured first."""
    usable = search.usable()
    base_parts = {b: estimate(base, b, search.measured, search.predicted) or 0.0 for b in search.bands}
    step = sum(base_parts.values()) or 1.0
    decision_totals = totals(usable, search.bands, search.measured, search.predicted, 0.0)
    challengers = _challengers(search, base, error, decision_totals) if base in decision_totals else set()
    found = {}
    for band in search.bands:
        mine = base_parts[band]
        for spec in usable:
            if spec == base or (spec, band) in search.measured:
                continue
            theirs = search.predicted.get((spec, band))
            if theirs is None:
                found[spec, band] = mine / step
                continue
            doubt = error * max(theirs - search.common.get(band, 0.0), 0.0)
            saving = mine - theirs + doubt
            if saving >= max(GAIN * mine, STEP_GAIN * step):
                found[spec, band] = saving / step
            elif spec in challengers and doubt > 0:
                found[spec, band] = doubt / step / len(search.bands)
    return found


def _challengers(search: Search, base: str, error: float, found: Mapping[str, float]) -> set[str]:
    """Single specs whose workload estimate could, within the model's error, undercut the base."""
    limit = found[base] * (1 + TIE + error)
    return {s for s, t in found.items() if s != base and t <= limit}


def next_probe(search: Search, overhead: float) -> tuple[int, list[str]] | None:
    """The next band to measure and the specs to measure on it (the base first), or ``None``."""
    decision = search.decide(overhead)
    scores = _scores(search, decision.base, search.model_error())
    if not scores:
        return None
    by_band: dict[int, list[tuple[float, str]]] = {}
    for (spec, band), score in scores.items():
        by_band.setdefault(band, []).append((score, spec))
    band = max(by_band, key=lambda b: sum(s for s, _ in by_band[b]))
    ranked = [spec for _, spec in sorted(by_band[band], key=lambda x: -x[0])][:PER_PROBE]
    return band, [decision.base, *ranked]


def _refinement(search: Search, overhead: float) -> list[tuple[int, list[str]]]:
    """Probes that measure again, side by side, the single specs whose workload estimates
    lie within :data:`REFINE_MARGIN` of the best, with the base, on the bands that make up
    most of the step: noise there is what could still change the base."""
    decision = search.decide(overhead)
    best = min(decision.totals.values())
    close = sorted((t, s) for s, t in decision.totals.items() if t <= best * (1 + TIE + REFINE_MARGIN))
    others = [s for _, s in close if s != decision.base]
    contenders = [decision.base, *others][: PER_PROBE + 1]
    if len(contenders) < 2:
        return []
    parts = {b: estimate(decision.base, b, search.measured, search.predicted) or 0.0 for b in search.bands}
    heavy, covered = [], 0.0
    for band in sorted(parts, key=lambda b: -parts[b]):
        heavy.append((band, contenders))
        covered += parts[band]
        if covered >= HEAVY_SHARE * sum(parts.values()):
            break
    return heavy


def _close(search: Search, overhead: float) -> bool:
    """Whether the measurements leave the base undecided against a close single spec: a
    bootstrap interval of their workload ratio holds 1 and reaches beyond :data:`TIE`."""
    decision = search.decide(overhead)
    base = decision.base
    for spec, total in decision.totals.items():
        if spec == base or total > decision.totals[base] * (1 + TIE + REFINE_MARGIN):
            continue
        low, high = total_ratio_interval(
            spec, base, search.bands, search.measured, search.predicted, overhead
        )
        if low <= 1.0 <= high and (low < 1 - TIE or high > 1 + TIE):
            return True
    return False


def _coverage(search: Search, overhead: float) -> list[tuple[int, list[str]]]:
    """Probes that give every candidate not yet measured a cell: on the heaviest band,
    side by side with the base."""
    seen = {spec for spec, _ in search.seen}
    missing = [c for c in search.usable() if c not in seen]
    if not missing:
        return []
    try:
        base = search.decide(overhead).base
    except ValueError:  # nothing measured or predicted on every band yet
        base = next((c for c in search.usable() if c in seen), missing[0])
    parts = {b: estimate(base, b, search.measured, search.predicted) or 0.0 for b in search.bands}
    heaviest = max(search.bands[::-1], key=lambda b: parts[b])
    missing = [c for c in missing if c != base]
    return [(heaviest, [base, *missing[i : i + PER_PROBE]]) for i in range(0, len(missing), PER_PROBE)]


def _confirmations(search: Search, overhead: float) -> list[tuple[int, list[str]]]:
    """Probes that measure each band switch the decision would make once more, side by
    side with the base: a switch that noise made weakens as samples pool, a real one
    holds."""
    decision = search.decide(overhead)
    switches = sorted((c for c in decision.bands if c.reason == "measured"), key=lambda c: -c.gain)
    return [(c.band, [decision.base, c.spec]) for c in switches[:MAX_CONFIRMATIONS]]


def _within(search: Search, band: int, specs: Sequence[str], max_cells: int) -> list[str]:
    """``specs`` that have not failed, without new cells beyond ``max_cells`` distinct ones."""
    kept, fresh = [], max_cells - search.cells
    for spec in dict.fromkeys(specs):
        if spec in search.failed:
            continue
        if (spec, band) not in search.seen:
            if fresh <= 0:
                continue
            fresh -= 1
        kept.append(spec)
    return kept


def run(
    search: Search,
    measure: Measure,
    predict: Predict,
    *,
    max_cells: int,
    deadline: float,
    overhead: Callable[[], float],
    common: Callable[[int], float] = lambda band: 0.0,
    clock: Callable[[], float] = time.monotonic,
) -> Search:
    """Measures the calibration and a first cell of every candidate (whatever the
    deadline), then probes from :func:`next_probe` until nothing could change the
    decision, ``max_cells`` distinct cells were measured, or ``clock()`` passes
    ``deadline``; refits the predictions (and ``common(band)``, the seconds of a band's
    probe no algorithm changes) after each probe. Then, within the deadline, measures
    the closest single specs again on the heaviest bands (:func:`_refinement`),
    :data:`REFINE_ROUNDS` times and up to :data:`MAX_REFINE_ROUNDS` while the decision
    is close (:func:`_close`), and each band switch once more (:func:`_confirmations`)."""
    search.predicted = predict(search.measured)
    search.common = {b: common(b) for b in search.bands}
    spent: list[float] = []

    def probe(band: int, specs: Sequence[str]) -> None:
        started = clock()
        search.record(band, measure(band, specs))
        spent.append((clock() - started) / max(len(specs), 1))
        search.predicted = predict(search.measured)
        search.common = {b: common(b) for b in search.bands}

    for band, specs in _calibration(search):
        probe(band, [s for s in dict.fromkeys(specs) if s not in search.failed])
    while True:  # a spec that fails in a coverage probe leaves its place to the others
        queue = _coverage(search, overhead())
        if not queue or not search.usable():
            break
        probe(*queue[0])
    _explore(search, probe, spent, max_cells, deadline, overhead, clock)
    return search


def _explore(
    search: Search,
    probe: Callable[[int, Sequence[str]], None],
    spent: list[float],
    max_cells: int,
    deadline: float,
    overhead: Callable[[], float],
    clock: Callable[[], float],
) -> None:
    """The probes the deadline bounds: exploring, then refining and confirming."""
    stages: list[Callable[[Search, float], list[tuple[int, list[str]]]]] = [_refinement] * REFINE_ROUNDS
    stages.append(_confirmations)
    extra = MAX_REFINE_ROUNDS - REFINE_ROUNDS
    queue: list[tuple[int, list[str]]] = []
    exploring = True
    while True:
        next_one = queue.pop(0) if queue else next_probe(search, overhead()) if exploring else None
        while next_one is None and stages:
            exploring = False
            stage = stages.pop(0)
            if stage is _confirmations and extra > 0 and _close(search, overhead()):
                extra -= 1  # the decision is close: the budget goes to measuring it again
                stages.insert(0, stage)
                stage = _refinement
            queue = stage(search, overhead())
            next_one = queue.pop(0) if queue else None
        if next_one is None:
            break
        band, specs = next_one
        specs = _within(search, band, specs, max_cells)
        expected = statistics.median(spent) * len(specs) if spent else 0.0
        if clock() + expected > deadline:
            logger.info("tuning stops: %d cells measured, %.1f s left", search.cells, deadline - clock())
            break
        if len(specs) < 2:  # no new cell allowed: exploring is over
            exploring = False
            continue
        probe(band, specs)
