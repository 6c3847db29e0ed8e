"""``allreduce-bench --tune`` and ``--explain``: the tuner's table, and predicted against measured.

``--tune`` tunes one step made of every tensor of every case (a sweep's sizes, the
many-small tensors, a model's weights) with :func:`allreduce.tuning.tuner.tune_entry`,
which writes the cache, and prints for each size band the winner and the time of every
single spec (measured, or predicted where marked ``~``). ``--explain`` prints each
spec's plan of each case (:func:`allreduce.explain`) before measuring, and after it the
predicted time next to the measured one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from allreduce.measure.cases import Case
from allreduce.measure.driver import Result

__all__ = ["explain_cases", "format_predicted_vs_measured", "format_tuning", "tune_cases"]


def case_sizes(cases: Sequence[Case]) -> list[int]:
    """The element count of every tensor of every case, as one step."""
    return [math.prod(shape) for case in cases for shape in case.shapes]


def tune_cases(
    cases: Sequence[Case], devices: Sequence[str], dtype: str, budget_s: float, *, refresh: bool = False
) -> dict[str, Any]:
    """Tunes the tensors of ``cases`` as one step on ``devices`` (again, with ``refresh``);
    the cache entry."""
    from allreduce.tuning.tuner import tune_entry

    return tune_entry(list(devices), case_sizes(cases), dtype=dtype, budget_s=budget_s, refresh=refresh)


def _ms(seconds: float | None, predicted: bool = False) -> str:
    if seconds is None:
        return "-"
    return f"{'~' if predicted else ''}{seconds * 1e3:.2f}"


def _band_text(band: int) -> str:
    from allreduce.selection.bands import band_limit

    return "[1,1]" if band == 0 else f"({band_limit(band - 1)},{band_limit(band)}]"


def format_tuning(entry: dict[str, Any]) -> str:
    """The ``--tune`` table: per band, the winner and every single spec's milliseconds."""
    specs = list(entry["candidates"])
    where = "from the cache" if entry.get("cached") else f"in {entry['elapsed_s']:.1f} s"
    lines = [
        f"# tune: {entry['spec']!r} (base {entry['base']}), {entry['cells']} of {entry['exhaustive_cells']} "
        f"cells measured {where}, budget {entry['budget_s']:g} s",
        "# milliseconds per band probe; ~ predicted by the fitted model, - neither",
        "#   "
        + f"{'band':<18} {'tensors':>7} {'winner':<14} {'why':<9} "
        + " ".join(f"{s:>12}" for s in specs),
    ]
    for band in entry["bands"]:
        cells = band["cells"]
        values = []
        for spec in specs:
            cell = cells.get(spec, {})
            measured = cell.get("measured_s")
            values.append(_ms(measured) if measured is not None else _ms(cell.get("predicted_s"), True))
        head = f"{_band_text(band['band']):<18} {band['tensors']:>7} {band['spec']:<14}"
        lines.append(f"#   {head} {band['reason']:<9} " + " ".join(f"{v:>12}" for v in values))
    totals = entry["totals_s"]
    base = totals.get(entry["base"])
    ranked = sorted(totals.items(), key=lambda kv: kv[1])
    lines.append("# estimated step, each single spec (ms, over the base):")
    for spec, seconds in ranked:
        ratio = f" {seconds / base:.2f}x" if base else ""
        lines.append(f"#   {spec:<16} {seconds * 1e3:9.2f}{ratio}")
    return "\n".join(lines)


def explain_cases(
    specs: Sequence[str], cases: Sequence[Case], devices: Sequence[str], pack_max_bytes: int
) -> dict[tuple[str, str], Any]:
    """Each spec's :class:`~allreduce.selection.explain.Explanation` of each case, by
    ``(spec, case name)``."""
    from allreduce.selection.explain import explain

    out = {}
    for spec in specs:
        for case in cases:
            packing = pack_max_bytes if case.is_batch else 0
            sizes = [math.prod(shape) for shape in case.shapes]
            out[spec, case.name] = explain(
                spec, list(devices), sizes, dtype=case.dtype, pack_max_bytes=packing
            )
    return out


def format_predicted_vs_measured(plans: dict[tuple[str, str], Any], results: Sequence[Result]) -> str:
    """Per spec and case, the predicted step against the measured median, and the model's
    median relative error over them."""
    lines = ["# predicted against measured (median step, ms):"]
    errors = []
    for r in results:
        plan = plans.get((r.spec or "", r.case.name))
        if plan is None or not r.timed or plan.predicted_s is None:
            continue
        error = plan.predicted_s / r.time_s - 1
        errors.append(abs(error))
        lines.append(
            f"#   {r.case.name:>12} {r.name:<24} predicted {plan.predicted_s * 1e3:9.3f}  "
            f"measured {r.time_s * 1e3:9.3f}  {error:+.0%}"
        )
    if errors:
        lines.append(
            f"#   median error {statistics.median(errors):.0%} over {len(errors)} rows ({plan.model})"
        )
    return "\n".join(lines)
