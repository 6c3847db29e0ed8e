"""``allreduce.explain``: what a spec does with a batch, bucket by bucket (pure Python).

>>> print(allreduce.explain("pscpu:64k:xring#2", devices, [1000, 300_000]))  # doctest: +SKIP

For each tensor or pack the table shows the range of the spec that takes it, the
algorithm, its steps (rounds in which data crosses devices), the bytes the busiest
device sends and receives (the bytes of the emitted graph's cross-device edges; between
CPUs of one worker they are handed over without a copy) and the predicted time, from
the model fitted by the nearest cached tuning of these devices or from the defaults.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from allreduce.core.validation import check_dtype, check_int, check_sequence
from allreduce.planning.cost_model import BucketCost, Model, bucket_costs
from allreduce.planning.devices import check_device_names
from allreduce.planning.spec import AllReduceSpecTuple, format_all_reduce_spec

__layer__ = "model"

__all__ = ["Explanation", "Row", "explain"]


@dataclass(frozen=True)
class Row:
    """One all-reduce of the batch: a tensor or a pack of tensors."""

    tensors: tuple[int, ...]
    elements: int
    range: str
    algorithm: str
    steps: int | None
    sent_bytes: int | None
    received_bytes: int | None
    predicted_s: float | None


@dataclass(frozen=True)
class Explanation:
    """The plan of a batch under a spec, with the cost model's prediction; ``str()`` is a table.

    Attributes:
        spec: the spec explained (the resolved one for ``"auto"``).
        devices: the devices, one per input.
        dtype: the dtype name.
        rows: one :class:`Row` per bucket, in the order the plan runs them.
        overhead_s: the predicted seconds no algorithm changes (the call, passing tensors).
        predicted_s: the predicted seconds of the whole step (``None``: an algorithm has no formula).
        model: which parameters predicted it.
        note: how ``"auto"`` was resolved, else empty.
        calibrated: whether the parameters were fitted to measurements (a tuning); else
            the times are guesses from defaults measured on another machine.
    """

    spec: str
    devices: tuple[str, ...]
    dtype: str
    rows: tuple[Row, ...]
    overhead_s: float
    predicted_s: float | None
    model: str
    note: str = ""
    calibrated: bool = True

    def __str__(self) -> str:
        return format_explanation(self)


def _range_text(spec: Sequence[AllReduceSpecTuple], item: AllReduceSpecTuple) -> str:
    """The element counts ``item`` takes, as an interval: ``[0, 64k]``, ``(64k, 1M]``, ``(1M, inf)``."""
    index = list(spec).index(item)
    if index == 0 and item.limit == -1:
        return "all"
    low = f"({_count(spec[index - 1].limit)}" if index else "[0"
    high = "inf)" if item.limit == -1 else f"{_count(item.limit)}]"
    return f"{low}, {high}"


def _count(n: int) -> str:
    for suffix, factor in (("G", 1 << 30), ("M", 1 << 20), ("k", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{suffix}"
    return str(n)


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for suffix, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.1f} {suffix}"
    return f"{n} B"


def _seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1e3:.3f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} us"


def _row(spec: Sequence[AllReduceSpecTuple], cost: BucketCost, model: Model) -> Row:
    bucket = cost.bucket
    item = bucket.spec
    name = item.alg if item.shards == 1 else f"{item.alg}#{item.shards}"
    if getattr(item, "compression", None):
        name += f"@{item.compression}"
    schedule = cost.schedule
    return Row(
        tensors=bucket.members,
        elements=bucket.length,
        range=_range_text(spec, item),
        algorithm=name,
        steps=schedule.steps if schedule is not None else None,
        sent_bytes=max(schedule.sent().values(), default=0) if schedule is not None else None,
        received_bytes=max(schedule.received().values(), default=0) if schedule is not None else None,
        predicted_s=model.bucket_seconds(cost),
    )


def format_explanation(plan: Explanation) -> str:
    """The table of :class:`Explanation` (its ``str()``)."""
    header = (
        f"{'#':>3} {'tensors':<12} {'elements':>10} {'range':<14} {'algorithm':<16} "
        f"{'steps':>5} {'sent/dev':>10} {'recv/dev':>10} {'predicted':>11}"
    )
    lines = [
        f"spec {plan.spec!r} on {len(plan.devices)} devices, {plan.dtype}"
        + (f" ({plan.note})" if plan.note else ""),
        f"model: {plan.model}",
        header,
    ]
    for i, r in enumerate(plan.rows):
        tensors = (
            ",".join(str(t) for t in r.tensors) if len(r.tensors) <= 3 else f"{r.tensors[0]}..{r.tensors[-1]}"
        )
        steps = "-" if r.steps is None else r.steps
        line = (
            f"{i:>3} {tensors:<12} {r.elements:>10} {r.range:<14} {r.algorithm:<16} {steps:>5} "
            f"{_bytes(r.sent_bytes):>10} {_bytes(r.received_bytes):>10} {_seconds(r.predicted_s):>11}"
        )
        lines.append(line)
    guess = "" if plan.calibrated else ", an uncalibrated guess"
    lines.append(
        f"step: {_seconds(plan.predicted_s)} predicted{guess} "
        f"({_seconds(plan.overhead_s)} of it passing tensors)"
    )
    return "\n".join(lines)


def explain(
    spec: str | Sequence[AllReduceSpecTuple],
    devices: Sequence[str],
    sizes: Sequence[int],
    *,
    dtype: Any = "float32",
    pack_max_bytes: int = 0,
    worker_groups: Sequence[Sequence[int]] | None = None,
    model: Model | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Explanation:
    """The plan of all-reducing tensors of ``sizes`` elements on ``devices`` with ``spec``
    (``"auto"`` included) and the cost model's prediction, one row per tensor or pack.

    ``model`` defaults to the one fitted by the nearest cached tuning of these devices
    and dtype (:func:`allreduce.tune`), else the default parameters, which were measured
    on another machine: the explanation then says that its times are uncalibrated
    guesses (``calibrated`` is false). Safe to call from several threads.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: a malformed spec, no devices, a size below 0, an unsupported dtype,
            or an algorithm that cannot run on these devices.
    """
    from allreduce.core.tables import DTYPE_SIZES
    from allreduce.selection.auto import UNCALIBRATED, cached_model

    names, counts, dtype_name = _check(devices, sizes, dtype, pack_max_bytes)
    tuples, note = _spec(spec, names, counts, dtype_name, worker_groups, cache_dir)
    if model is None:
        model, source = cached_model(names, dtype_name, [max(c, 1) for c in counts] or [1], cache_dir)
    else:
        source = f"fitted on {model.samples} samples" if model.fitted else UNCALIBRATED
    costs = bucket_costs(
        tuples,
        names,
        counts,
        DTYPE_SIZES[dtype_name],
        pack_max_bytes=pack_max_bytes,
        worker_groups=worker_groups,
    )
    rows = tuple(_row(tuples, c, model) for c in costs)
    overhead = model.overhead(names, len(counts))
    parts = [r.predicted_s for r in rows]
    total = None if any(p is None for p in parts) else overhead + sum(parts)  # type: ignore[arg-type]
    return Explanation(
        format_all_reduce_spec(tuples),
        tuple(names),
        dtype_name,
        rows,
        overhead,
        total,
        source,
        note,
        model.fitted,
    )


def _check(devices: Any, sizes: Any, dtype: Any, pack_max_bytes: Any) -> tuple[list[str], list[int], str]:
    check_sequence("devices", devices, "device names")
    if not devices:
        raise ValueError("devices is empty: explain needs the devices the all-reduce runs on")
    names = check_device_names(devices, len(devices), "device")
    check_sequence("sizes", sizes, "element counts")
    counts = [check_int(f"sizes[{i}]", s, minimum=0) for i, s in enumerate(sizes)]
    check_int("pack_max_bytes", pack_max_bytes, minimum=0)
    return names, counts, check_dtype(dtype)


def _spec(
    spec: Any,
    names: list[str],
    counts: list[int],
    dtype: str,
    worker_groups: Sequence[Sequence[int]] | None,
    cache_dir: str | os.PathLike[str] | None,
) -> tuple[list[AllReduceSpecTuple], str]:
    """The spec tuples (``"auto"`` resolved, with a note saying how), checked against the devices."""
    from allreduce.planning.registry import get_algorithm
    from allreduce.selection.auto import resolve_spec

    tuples, note = resolve_spec(spec, names, counts, dtype, cache_dir)
    for item in tuples:
        problem = get_algorithm(item.alg).problem(names, item.shards, worker_groups)
        if problem is not None:
            raise ValueError(problem)
    return tuples, note
