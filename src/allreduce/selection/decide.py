"""From measurements and predictions to one spec (pure Python).

The rules decide only on real differences:

* the base spec is the fastest single spec by estimated workload time (measured where
  measured, predicted elsewhere) or within the measured noise of it: the first, in
  order of preference, that the measurements cannot tell slower (the lower end of a
  bootstrap interval of the ratio of workload times, :func:`total_ratio_low`, is at
  most 1), preferring one measured on the band that takes the most time;
* a band switches from the base to another algorithm only when both were measured there
  side by side, the other's median is at least :data:`GAIN` lower, the time it saves is
  at least :data:`STEP_GAIN` of the whole step, a bootstrap interval of the ratio of
  medians (:func:`ratio_interval`) lies below 1, and the model, within its error, says
  such a saving is possible there (:class:`Doubt`);
* neighbouring bands with the same choice merge into one range; bands without tensors
  join their neighbours.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from allreduce.planning.spec import AllReduceSpecTuple, format_all_reduce_spec, parse_all_reduce_spec
from allreduce.selection.bands import band_limit

__layer__ = "model"

__all__ = [
    "GAIN",
    "STEP_GAIN",
    "TIE",
    "BandChoice",
    "Doubt",
    "Decision",
    "compose",
    "decide",
    "decide_predicted",
    "ratio_interval",
    "within_noise",
]

#: The least gain, as a fraction of the base's band time, that makes a band switch.
GAIN = 0.05
#: The least time a switch must save, as a fraction of the base's whole step.
STEP_GAIN = 0.03
#: Single specs whose workload estimates are this close count as equal.
TIE = 0.05
#: The confidence of the bootstrap intervals.
CONFIDENCE = 0.95
_RESAMPLES = 400


def ratio_interval(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> tuple[float, float]:
    """A bootstrap interval (:data:`CONFIDENCE`) of ``median(a) / median(b)``.

    Raises:
        ValueError: either sequence is empty.
    """
    if not a or not b:
        raise ValueError("ratio_interval needs samples on both sides")
    rng = np.random.default_rng(seed)
    ratios = np.sort(_resampled_medians(a, rng) / _resampled_medians(b, rng))
    tail = (1 - CONFIDENCE) / 2
    return float(ratios[int(tail * (_RESAMPLES - 1))]), float(ratios[int((1 - tail) * (_RESAMPLES - 1))])


def _resampled_medians(samples: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """The medians of :data:`_RESAMPLES` resamples (with replacement) of ``samples``."""
    values = np.asarray(samples, dtype=np.float64)
    return np.median(values[rng.integers(0, len(values), size=(_RESAMPLES, len(values)))], axis=1)


class BandChoice(NamedTuple):
    """What one band runs and why: ``reason`` says ``base``, ``measured`` (a switch) or
    ``no data`` (the base, unmeasured)."""

    band: int
    spec: str
    reason: str
    gain: float = 0.0


class Decision(NamedTuple):
    """The chosen spec, its base single spec, each band's choice and each single spec's
    estimated workload seconds."""

    spec: str
    base: str
    bands: list[BandChoice]
    totals: dict[str, float]


Cells = Mapping[tuple[str, int], Sequence[float]]
Predictions = Mapping[tuple[str, int], float | None]


def estimate(spec: str, band: int, measured: Cells, predicted: Predictions) -> float | None:
    """The measured median of a cell, else its prediction (``None`` if neither)."""
    samples = measured.get((spec, band))
    if samples:
        return statistics.median(samples)
    return predicted.get((spec, band))


def totals(
    candidates: Sequence[str], bands: Sequence[int], measured: Cells, predicted: Predictions, overhead: float
) -> dict[str, float]:
    """Each candidate's estimated workload seconds: its bands' estimates, less the
    per-call ``overhead`` that every band's probe paid and one step pays once; a
    candidate with a band it has no estimate for is left out."""
    out = {}
    for spec in candidates:
        parts = [estimate(spec, b, measured, predicted) for b in bands]
        if all(p is not None for p in parts):
            out[spec] = sum(parts) - overhead * (len(bands) - 1)  # type: ignore[arg-type]
    return out


def total_ratio_low(
    a: str, b: str, bands: Sequence[int], measured: Cells, predicted: Predictions, overhead: float
) -> float:
    """The lower end of :func:`total_ratio_interval`."""
    return total_ratio_interval(a, b, bands, measured, predicted, overhead)[0]


def total_ratio_interval(
    a: str, b: str, bands: Sequence[int], measured: Cells, predicted: Predictions, overhead: float
) -> tuple[float, float]:
    """A bootstrap interval (:data:`CONFIDENCE`) of ``a``'s estimated workload time over
    ``b``'s: measured cells resampled, predicted ones held fixed."""
    rng = np.random.default_rng(0)

    def totals(spec: str) -> np.ndarray:
        out = np.full(_RESAMPLES, -overhead * (len(bands) - 1))
        for band in bands:
            samples = measured.get((spec, band))
            if samples:
                out += _resampled_medians(samples, rng)
            else:
                out += predicted.get((spec, band)) or 0.0
        return out

    ratios = np.sort(totals(a) / totals(b))
    tail = (1 - CONFIDENCE) / 2
    return float(ratios[int(tail * (_RESAMPLES - 1))]), float(ratios[int((1 - tail) * (_RESAMPLES - 1))])


def _base(candidates: Sequence[str], found: Mapping[str, float], measured_on: Sequence[str] = ()) -> str:
    """The first candidate within :data:`TIE` of the best total, among those measured on
    the heaviest band (``measured_on``) when any of them is that close."""
    best = min(found.values())
    close = [c for c in candidates if c in found and found[c] <= best * (1 + TIE)]
    return next((c for c in close if c in measured_on), close[0])


def within_noise(
    spec: str,
    fastest: str,
    bands: Sequence[int],
    measured: Cells,
    predicted: Predictions,
    overhead: float,
) -> bool:
    """Whether the measurements cannot tell ``spec`` slower than ``fastest`` on the workload."""
    return spec == fastest or total_ratio_low(spec, fastest, bands, measured, predicted, overhead) <= 1.0


def _noise_base(
    candidates: Sequence[str],
    bands: Sequence[int],
    measured: Cells,
    predicted: Predictions,
    overhead: float,
    found: Mapping[str, float],
) -> str:
    """The first candidate within the measured noise of the fastest total, among those
    measured on the heaviest band when any is; else the fastest."""
    fastest = min(found, key=lambda c: found[c])
    heaviest = max(bands, key=lambda b: estimate(fastest, b, measured, predicted) or 0.0)
    equal = [
        c for c in candidates if c in found and within_noise(c, fastest, bands, measured, predicted, overhead)
    ]
    return next((c for c in equal if measured.get((c, heaviest))), equal[0])


class Doubt(NamedTuple):
    """What the model leaves uncertain: its relative ``error`` on the part of each band's
    probe an algorithm changes (``common[band]``: the seconds no algorithm changes)."""

    error: float
    common: Mapping[int, float]

    def possible(self, base: str, spec: str, band: int, predicted: Predictions, step: float) -> bool:
        """Whether the model, within its error, lets ``spec`` save :data:`STEP_GAIN` of
        the step over ``base`` on ``band`` (always, where either has no prediction)."""
        mine, theirs = predicted.get((base, band)), predicted.get((spec, band))
        if mine is None or theirs is None:
            return True
        own = max(theirs - self.common.get(band, 0.0), 0.0) + max(mine - self.common.get(band, 0.0), 0.0)
        return mine - theirs + self.error * own >= STEP_GAIN * step


def _switch(
    base: str,
    band: int,
    candidates: Sequence[str],
    measured: Cells,
    step: float,
    check: Callable[[str], bool] = lambda spec: True,
) -> BandChoice:
    mine = measured.get((base, band))
    if not mine:
        return BandChoice(band, base, "no data")
    best = None
    for spec in candidates:
        theirs = measured.get((spec, band))
        if spec == base or not theirs:
            continue
        saved = statistics.median(mine) - statistics.median(theirs)
        gain = saved / statistics.median(mine)
        if gain < GAIN or saved < STEP_GAIN * step or not check(spec):
            continue
        if ratio_interval(theirs, mine, seed=band)[1] >= 1:
            continue
        if best is None or gain > best.gain:
            best = BandChoice(band, spec, "measured", gain)
    return best or BandChoice(band, base, "base")


def compose(choices: Sequence[BandChoice]) -> str:
    """The spec of per-band choices (ascending bands): equal neighbours merged, each
    range's limit the last band's limit, the last range unlimited.

    Raises:
        ValueError: no choices.
    """
    if not choices:
        raise ValueError("no band to compose a spec from")
    tuples: list[AllReduceSpecTuple] = []
    for i, choice in enumerate(choices):
        if i + 1 < len(choices) and choices[i + 1].spec == choice.spec:
            continue
        (item,) = parse_all_reduce_spec(choice.spec)
        limit = band_limit(choice.band) if i + 1 < len(choices) else -1
        tuples.append(item._replace(limit=limit))
    return format_all_reduce_spec(tuples)


def decide(
    candidates: Sequence[str],
    bands: Sequence[int],
    measured: Cells,
    predicted: Predictions,
    *,
    overhead: float = 0.0,
    doubt: Doubt | None = None,
) -> Decision:
    """The spec for a workload of ``bands`` from ``measured`` samples and ``predicted``
    seconds per ``(spec, band)`` (see the module docstring); ``candidates`` are single
    specs in order of preference. With ``doubt``, a band switches only where the model,
    within its error, says it could pay (:meth:`Doubt.possible`): on bands where every
    algorithm is predicted alike, a measured difference is noise.

    Raises:
        ValueError: no candidate has an estimate for every band.
    """
    found = totals(candidates, bands, measured, predicted, overhead)
    if not found:
        raise ValueError("no candidate spec was measured or predicted on every band")
    base = _noise_base(candidates, bands, measured, predicted, overhead, found)
    choices = []
    for band in sorted(bands):

        def check(spec: str, band: int = band) -> bool:
            return doubt is None or doubt.possible(base, spec, band, predicted, found[base])

        choices.append(_switch(base, band, candidates, measured, found[base], check))
    return Decision(compose(choices), base, choices, found)


def decide_predicted(
    candidates: Sequence[str], bands: Sequence[int], predicted: Predictions, *, overhead: float = 0.0
) -> Decision:
    """The cost model's choice without measurements: the best single spec by predicted
    workload time, and a band switched only where another is predicted at least twice
    :data:`GAIN` faster (the model's error leaves less to trust).

    Raises:
        ValueError: no candidate has a prediction for every band.
    """
    found = totals(candidates, bands, {}, predicted, overhead)
    if not found:
        raise ValueError("no candidate spec has a cost formula for every band")
    base = _base(candidates, found)
    choices = []
    for band in sorted(bands):
        mine = predicted[base, band] or 0.0
        best = BandChoice(band, base, "base")
        for spec in candidates:
            theirs = predicted.get((spec, band))
            gain = 1 - theirs / mine if theirs is not None and mine else 0.0
            if gain >= 2 * GAIN and gain > best.gain:
                best = BandChoice(band, spec, "predicted", gain)
        choices.append(best)
    return Decision(compose(choices), base, choices, found)
