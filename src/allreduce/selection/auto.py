"""``spec="auto"``: the cached tuning for these devices, else the cost model's choice (pure Python).

Resolution never measures. In order: the tuning cached for these devices, dtype and
workload; else the one of these devices and dtype whose workload is nearest
(:func:`allreduce.selection.bands.workload_distance`); else the cost model's choice with
its default parameters (:func:`allreduce.selection.decide.decide_predicted`). Each
distinct resolution is logged once at INFO, with its reason, and remembered for the
life of the process (a tuning in this process clears that memory).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from allreduce.core.tables import DTYPE_SIZES
from allreduce.planning.cost_model import DEFAULT, Model
from allreduce.planning.spec import AllReduceSpecTuple, check_spec
from allreduce.selection import cache
from allreduce.selection.bands import workload_distance
from allreduce.selection.candidates import candidate_specs
from allreduce.selection.decide import decide_predicted
from allreduce.selection.workload import Workload

__layer__ = "model"

__all__ = [
    "AUTO",
    "UNCALIBRATED",
    "cached_model",
    "forget",
    "is_auto",
    "resolve",
    "resolve_spec",
    "resolve_with_reason",
]

logger = logging.getLogger(__name__)

#: The spec string that asks for this resolution.
AUTO = "auto"

#: What explains a prediction with the default parameters.
UNCALIBRATED = (
    "default parameters, not calibrated on this machine: its times are uncalibrated guesses "
    "(no tuning cached for these devices; run allreduce.tune to calibrate)"
)

#: Which specs a mode may run (``None``: every spec), e.g. the SPMD-capable ones.
Keep = Callable[[str], bool] | None

_lock = threading.Lock()
_memo: dict[tuple[str, str], tuple[str, str]] = {}


def forget() -> None:
    """Forgets every resolution made so far (a new tuning may change them)."""
    with _lock:
        _memo.clear()


def _workload(entry: dict[str, Any]) -> dict[int, int]:
    return {int(b): int(c) for b, c in entry["key"].get("workload", {}).items()}


def _nearest(folder: Path, key: dict[str, Any]) -> tuple[dict[str, Any], Path] | None:
    topology = {k: v for k, v in key.items() if k != "workload"}
    wanted = {int(b): c for b, c in key["workload"].items()}
    found = []
    for path in cache.same_topology(folder, key):
        entry = cache.load(path, topology)
        if entry is not None and cache.measured(entry):
            found.append((workload_distance(wanted, _workload(entry)), str(path), entry))
    if not found:
        return None
    _, path, entry = min(found, key=lambda f: (f[0], f[1]))
    return entry, Path(path)


def cached_model(
    devices: Sequence[str], dtype: str, sizes: Sequence[int], cache_dir: str | os.PathLike[str] | None = None
) -> tuple[Model, str]:
    """The model fitted by the nearest cached tuning of these devices and dtype, else the
    defaults; and a line that says which."""
    key = cache.key_of(devices, dtype, sizes)
    nearest = _nearest(cache.cache_dir(cache_dir), key)
    if nearest is not None:
        try:
            model = Model.from_json(nearest[0]["model"])
            return model, f"fitted on {model.samples} samples ({nearest[1]})"
        except (KeyError, ValueError) as err:
            logger.warning("ignoring the model of %s: %s", nearest[1], err)
    return DEFAULT, UNCALIBRATED


def _model_choice(devices: Sequence[str], dtype: str, sizes: Sequence[int], keep: Keep) -> str:
    work = Workload(devices, sizes, DTYPE_SIZES[dtype])
    candidates = candidate_specs(devices, lambda s: work.predict(DEFAULT, s))
    if keep is not None:
        candidates = [c for c in candidates if keep(c)]
    predicted = work.predictions(DEFAULT, candidates)
    return decide_predicted(
        candidates, list(work.bands), predicted, overhead=DEFAULT.overhead(devices, 0)
    ).spec


def _choose(
    folder: Path, devices: Sequence[str], dtype: str, sizes: Sequence[int], mode: str | None, keep: Keep
) -> tuple[str, str]:
    key = cache.key_of(devices, dtype, sizes, mode)
    path = cache.entry_path(folder, key)
    entry = cache.load(path, key)
    if entry is not None and cache.measured(entry):
        return entry["spec"], f"tuned for this workload ({path})"
    nearest = _nearest(folder, key)
    if nearest is not None:
        return nearest[0]["spec"], f"tuned on these devices for the nearest workload ({nearest[1]})"
    spec = _model_choice(devices, dtype, sizes, keep)
    return spec, "the cost model's choice with default parameters (no tuning cached; run allreduce.tune)"


def resolve_with_reason(
    devices: Sequence[str],
    sizes: Sequence[int],
    dtype: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    mode: str | None = None,
    keep: Keep = None,
) -> tuple[str, str]:
    """The spec ``"auto"`` stands for with tensors of ``sizes`` elements and ``dtype`` on
    ``devices``, and why (see the module docstring). ``mode`` reads the tunings of that
    mode (``"spmd"``); without one, the cost model chooses among the specs ``keep``
    accepts (the caller's mode must hold ``keep`` the same for every call)."""
    folder = cache.cache_dir(cache_dir)
    workload = cache.key_of(devices, dtype, sizes)["workload"]
    memo_key = (str(folder), json.dumps([list(devices), dtype, workload, mode]))
    with _lock:
        found = _memo.get(memo_key)
    if found is not None:
        return found
    found = _choose(folder, devices, dtype, sizes, mode, keep)
    with _lock:
        first = memo_key not in _memo
        _memo[memo_key] = found
    if first:
        logger.info(
            "spec='auto' on %d devices (%s, %d tensors): %r, %s", len(devices), dtype, len(sizes), *found
        )
    return found


def resolve(
    devices: Sequence[str], sizes: Sequence[int], dtype: str, cache_dir: str | os.PathLike[str] | None = None
) -> str:
    """The spec ``"auto"`` stands for (see :func:`resolve_with_reason`)."""
    return resolve_with_reason(devices, sizes, dtype, cache_dir)[0]


def is_auto(spec: Any) -> bool:
    """Whether ``spec`` is ``"auto"``: the one test of it, for the entry points that
    resolve it later (per batch, per case)."""
    return isinstance(spec, str) and spec == AUTO


def resolve_spec(
    spec: Any,
    devices: Sequence[str],
    sizes: Sequence[int],
    dtype: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    mode: str | None = None,
    keep: Keep = None,
) -> tuple[list[AllReduceSpecTuple], str]:
    """The checked spec tuples of ``spec`` for tensors of ``sizes`` elements and ``dtype``
    on ``devices``, ``"auto"`` resolved (never measuring; ``mode`` and ``keep`` as in
    :func:`resolve_with_reason`), and a note that says how (empty for any other spec).
    Every entry point resolves a spec here.

    Raises:
        TypeError: ``spec`` is neither a str nor a list of spec tuples.
        ValueError: a malformed spec.
    """
    if not is_auto(spec):
        return check_spec(spec), ""
    counts = [max(s, 1) for s in sizes] or [1]
    chosen, reason = resolve_with_reason(devices, counts, dtype, cache_dir, mode=mode, keep=keep)
    return check_spec(chosen), f"'auto': {reason}"
