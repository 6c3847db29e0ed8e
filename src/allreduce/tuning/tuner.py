"""``allreduce.tune``: the fastest spec for these devices and this workload, measured and cached.

The search (:mod:`allreduce.tuning.search`) measures only where the fitted cost model
says winners may cross, at most a quarter of every candidate on every band; the rules of
:mod:`allreduce.selection.decide` turn the samples into a spec; the result and every sample
go to the cache (:mod:`allreduce.selection.cache`), where ``spec="auto"`` finds them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from allreduce.core.tables import DTYPE_SIZES
from allreduce.core.validation import (
    check_bool,
    check_dtype,
    check_int,
    check_seconds,
    check_sequence,
)
from allreduce.graph.local_devices import check_devices_exist
from allreduce.planning.cost_model import DEFAULT, Model, Sample, fit
from allreduce.planning.devices import check_device_names, group_by_worker
from allreduce.selection import cache
from allreduce.selection.bands import band_limit
from allreduce.selection.candidates import candidate_specs
from allreduce.selection.decide import Decision, Doubt, decide
from allreduce.selection.workload import Workload
from allreduce.tuning.search import Search, run

__all__ = ["DEFAULT_BUDGET_S", "tune", "tune_entry"]

logger = logging.getLogger(__name__)

DEFAULT_BUDGET_S = 60.0
#: A tuning measures at most this share of every candidate on every band.
MAX_SHARE = 0.25

_lock = threading.Lock()

#: ``measure(sizes, specs) -> {spec: step seconds or None}`` (:class:`allreduce.tuning.measure.Measurer`).
MeasureFn = Callable[[Sequence[int], Sequence[str]], Mapping[str, Sequence[float] | None]]


def _check(
    devices: Any, sizes: Any, budget_s: Any, specs: Any
) -> tuple[list[str], list[int], float, list[str]]:
    check_sequence("devices", devices, "device names")
    if not devices:
        raise ValueError("devices is empty: tune needs the devices the all-reduce runs on")
    names = check_device_names(devices, len(devices), "device")
    check_sequence("sizes", sizes, "element counts (one per tensor of a step)")
    if not sizes:
        raise ValueError("sizes is empty: give the element count of every tensor of one step")
    counts = [check_int(f"sizes[{i}]", s, minimum=1) for i, s in enumerate(sizes)]
    budget = check_seconds("budget_s", budget_s, allow_zero=False)
    chosen: list[str] = []
    if specs is not None:
        from allreduce.planning.spec import parse_all_reduce_spec

        check_sequence("specs", specs, "single specs such as 'xring#2'")
        for spec in specs:
            if len(parse_all_reduce_spec(spec)) != 1:
                raise ValueError(f"specs must be single specs without size ranges, got {spec!r}")
            chosen.append(spec)
        if not chosen:
            raise ValueError("specs is empty: give at least one spec to choose from")
    return names, counts, budget, chosen


def tune(
    devices: Sequence[str],
    sizes: Sequence[int],
    *,
    dtype: Any = "float32",
    budget_s: float = DEFAULT_BUDGET_S,
    cache_dir: str | os.PathLike[str] | None = None,
    specs: Sequence[str] | None = None,
    refresh: bool = False,
) -> str:
    """The fastest spec (size ranges and ``#k`` included) for all-reducing tensors of
    ``sizes`` elements on ``devices``, measured within about ``budget_s`` seconds.

    The result and every sample are cached under ``cache_dir`` (default:
    ``$ALLREDUCE_CACHE_DIR``, ``$XDG_CACHE_HOME/allreduce`` or ``~/.cache/allreduce``),
    keyed by the topology and the workload; a later call with the same key returns at
    once, and ``spec="auto"`` uses it; ``refresh=True`` measures again and replaces it.
    ``specs`` restricts the choice to these single specs. Every candidate is measured at
    least once, whatever the budget, so that no choice is made without measuring it
    against the others. Sizes are integral numbers (``numpy`` integers too). Safe to
    call from several threads (tunings run one at a time).

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: no devices, a device that does not exist, no sizes, a size below 1,
            a budget that is not positive, an unsupported dtype, a spec that is
            malformed or has size ranges, or no candidate that runs on these devices.
    """
    entry = tune_entry(
        devices, sizes, dtype=dtype, budget_s=budget_s, cache_dir=cache_dir, specs=specs, refresh=refresh
    )
    return entry["spec"]


def tune_entry(
    devices: Sequence[str],
    sizes: Sequence[int],
    *,
    dtype: Any = "float32",
    budget_s: float = DEFAULT_BUDGET_S,
    cache_dir: str | os.PathLike[str] | None = None,
    specs: Sequence[str] | None = None,
    measure: MeasureFn | None = None,
    refresh: bool = False,
    mode: str | None = None,
) -> dict[str, Any]:
    """As :func:`tune`, returning the whole cache entry (``cached`` says whether it was
    found rather than measured); ``measure`` replaces the benchmark driver (and the
    check that the devices exist); ``mode`` keys the tuning to that way of running
    (``"spmd"``: :func:`allreduce.tuning.spmd.tune_spmd`)."""
    names, counts, budget, chosen = _check(devices, sizes, budget_s, specs)
    dtype_name = check_dtype(dtype)
    check_bool("refresh", refresh)
    if measure is None:
        check_devices_exist(names)
    key = cache.key_of(names, dtype_name, counts, mode)
    path = cache.entry_path(cache.cache_dir(cache_dir), key)
    with _lock:
        found = None if refresh else cache.load(path, key)
        if found is not None and not cache.measured(found):
            logger.warning("tune: %s was not measured against every candidate: tuning again", path)
            found = None
        if found is not None:
            logger.info("tune: %r from the cache (%s)", found["spec"], path)
            return {**found, "cached": True}
        entry = _tune(names, counts, dtype_name, budget, chosen, measure)
        entry["key"] = key
        try:
            cache.store(path, entry)
        except OSError as err:
            logger.warning("tune: cannot write the tuning cache %s: %s", path, err)
    from allreduce.selection.auto import forget

    forget()
    return {**entry, "cached": False}


def _tune(
    devices: list[str],
    sizes: list[int],
    dtype: str,
    budget: float,
    specs: list[str],
    measure: MeasureFn | None,
) -> dict[str, Any]:
    started = time.monotonic()
    split = False
    if measure is None:
        from allreduce.tuning.measure import Measurer, logically_split

        split = logically_split(devices)
        measure = Measurer(devices, dtype)
    work = Workload(devices, sizes, DTYPE_SIZES[dtype])
    candidates = _candidates(work, specs, split)
    fitting = _Fitting(work, candidates)
    search = Search(list(candidates), list(work.bands))
    run(
        search,
        lambda band, chosen: measure(work.bands[band], chosen),
        fitting.predict,
        max_cells=max(len(candidates), int(MAX_SHARE * len(candidates) * len(work.bands))),
        deadline=started + budget,
        overhead=lambda: fitting.model.overhead(devices, 0),
        common=lambda band: fitting.model.overhead(devices, len(work.bands[band])),
    )
    model = fitting.model
    # Between equals the prior order decides: it does not move with the noise of a tuning.
    preferred = search.usable()
    overhead = model.overhead(devices, 0)
    doubt = Doubt(search.model_error(), search.common)
    decision = decide(
        preferred, list(work.bands), search.measured, search.predicted, overhead=overhead, doubt=doubt
    )
    elapsed = time.monotonic() - started
    logger.info(
        "tune: %r (base %s) from %d of %d cells in %.1f s",
        decision.spec,
        decision.base,
        search.cells,
        len(candidates) * len(work.bands),
        elapsed,
    )
    return _entry(decision, search, work, model, budget, elapsed, len(group_by_worker(devices)))


def _candidates(work: Workload, specs: list[str], split: bool) -> list[str]:
    """The given specs that run here, else the registry's candidates.

    Raises:
        ValueError: none runs here.
    """
    devices = list(work.devices)
    if specs:
        candidates = [s for s in specs if _runs(s, devices)]
    else:
        candidates = candidate_specs(devices, lambda s: work.predict(DEFAULT, s), logical_split=split)
    if not candidates:
        raise ValueError(f"no spec that reduces runs on {devices} (of {specs or 'the registry'})")
    return candidates


class _Fitting:
    """The model refitted on every measurement, and its predictions of every cell."""

    def __init__(self, work: Workload, candidates: Sequence[str]) -> None:
        self.work = work
        self.candidates = list(candidates)
        self.model: Model = DEFAULT

    def predict(
        self, measured: Mapping[tuple[str, int], Sequence[float]]
    ) -> dict[tuple[str, int], float | None]:
        samples = [Sample(s, tuple(self.work.bands[b]), _median(v)) for (s, b), v in measured.items()]
        if samples:
            # A ValueError: only algorithms without formulas were measured so far.
            with contextlib.suppress(ValueError):
                self.model = fit(samples, self.work.devices, self.work.itemsize, prior=DEFAULT)
        return self.work.predictions(self.model, self.candidates)


def _runs(spec: str, devices: Sequence[str]) -> bool:
    """Whether a single ``spec`` reduces and can run on ``devices`` (else it is left out, logged)."""
    from allreduce.planning.registry import get_algorithm
    from allreduce.planning.spec import parse_all_reduce_spec

    (item,) = parse_all_reduce_spec(spec)
    info = get_algorithm(item.alg)
    problem = info.problem(devices, item.shards) if info.reduces else f"{item.alg} does not reduce"
    if problem is not None:
        logger.warning("tune leaves out %r: %s", spec, problem)
    return problem is None


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _bands(decision: Decision, search: Search, work: Workload) -> list[dict[str, Any]]:
    """Each band's choice, and every candidate's measured and predicted seconds there."""
    bands = []
    for choice in decision.bands:
        cells = {}
        for spec in search.candidates:
            samples = search.measured.get((spec, choice.band))
            cells[spec] = {
                "measured_s": _median(samples) if samples else None,
                "predicted_s": search.predicted.get((spec, choice.band)),
            }
        bands.append(
            {
                "band": choice.band,
                "limit": band_limit(choice.band),
                "tensors": len(work.bands[choice.band]),
                "spec": choice.spec,
                "reason": choice.reason,
                "gain": choice.gain,
                "cells": cells,
            }
        )
    return bands


def _entry(
    decision: Decision,
    search: Search,
    work: Workload,
    model: Model,
    budget: float,
    elapsed: float,
    workers: int,
) -> dict[str, Any]:
    return {
        "spec": decision.spec,
        "base": decision.base,
        "candidates": search.candidates,
        "failed": search.failed,
        "bands": _bands(decision, search, work),
        "totals_s": decision.totals,
        "model": model.to_json(),
        "samples": [
            {"spec": spec, "band": band, "sizes": list(work.bands[band]), "seconds": samples}
            for (spec, band), samples in search.measured.items()
        ],
        "cells": search.cells,
        "measurements": search.measurements,
        "exhaustive_cells": len(search.candidates) * len(search.bands),
        "probes": search.probes,
        "workers": workers,
        "budget_s": budget,
        "elapsed_s": elapsed,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
