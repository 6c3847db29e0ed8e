"""The latency-bandwidth-reduction model of a whole step, and its fit (pure Python and numpy).

A step of :func:`allreduce.batch_all_reduce` costs a fixed ``call``, ``tensor`` per
tensor and device (passing it in and out), and for each bucket of its plan the terms of
the bucket's schedule (:func:`allreduce.planning.traffic.features`: ``alpha`` per link class,
``beta`` per link class, ``gamma`` and ``memory`` per device class, ``ops``), each
times its parameter. :func:`fit` finds the parameters of one topology from measured
steps by non-negative least squares on relative errors; an algorithm whose own steps
stay off by more than :data:`OUTLIER_RATIO` keeps a factor of its own (a collective
runs a ring, but in its own runtime). :data:`DEFAULT` holds rough parameters measured on
a 2-core machine, for a topology that was never tuned.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from allreduce.planning.cost import Job, schedule_of
from allreduce.planning.devices import parse_device_name
from allreduce.planning.plan import Bucket, plan_batch
from allreduce.planning.registry import get_algorithm
from allreduce.planning.spec import AllReduceSpecTuple
from allreduce.planning.traffic import Schedule, device_class, features

__layer__ = "model"

__all__ = [
    "DEFAULT",
    "FEATURES",
    "OUTLIER_RATIO",
    "BucketCost",
    "Model",
    "Sample",
    "bucket_costs",
    "fit",
    "overhead_terms",
]

#: Every term of the model, in a fixed order.
FEATURES = (
    "call",
    "tensor",
    "call:remote",
    "tensor:remote",
    "ops",
    "alpha:shared",
    "alpha:local",
    "alpha:remote",
    "beta:shared",
    "beta:local",
    "beta:remote",
    "volume:shared",
    "volume:local",
    "volume:remote",
    "gamma:CPU",
    "gamma:GPU",
    "memory:CPU",
    "memory:GPU",
)

#: An algorithm whose measured steps stay this far off the shared fit gets its own factor.
OUTLIER_RATIO = 1.3

#: Seconds per unit of each term, for a topology never measured: 4 logical CPUs of a
#: 2-core machine (TensorFlow 2.21), loopback gRPC between workers, and textbook GPU links.
_DEFAULT_PARAMS = {
    "call": 3e-4,
    "tensor": 6e-6,
    "call:remote": 5e-3,
    "tensor:remote": 8e-4,
    "ops": 2e-6,
    "alpha:shared": 1e-6,
    "alpha:local": 1e-5,
    "alpha:remote": 3e-4,
    "beta:shared": 0.0,
    "beta:local": 1 / 20e9,
    "beta:remote": 1 / 2e9,
    "volume:shared": 0.0,
    "volume:local": 0.0,
    "volume:remote": 1 / 1.4e9,
    "gamma:CPU": 3e-11,
    "gamma:GPU": 1e-12,
    "memory:CPU": 2.5e-11,
    "memory:GPU": 1e-12,
}


class Sample(NamedTuple):
    """One measured step: ``spec`` all-reducing tensors of ``sizes`` elements, ``seconds``
    (the median of its timed steps)."""

    spec: str
    sizes: tuple[int, ...]
    seconds: float


def overhead_terms(devices: Sequence[str], tensors: int) -> dict[str, float]:
    """The terms of a step that no algorithm changes: one call, and each tensor passed in
    and out on each device; ``:remote`` where devices live in other processes (a job
    other than ``localhost``), whose calls and tensors cost far more."""
    remote = sum(1 for d in devices if parse_device_name(d).job not in (None, "localhost"))
    return {
        "call:remote" if remote else "call": 1.0,
        "tensor": float(tensors * (len(devices) - remote)),
        "tensor:remote": float(tensors * remote),
    }


class BucketCost(NamedTuple):
    """One bucket of a plan, its schedule (``None`` without a formula) and its terms."""

    bucket: Bucket
    schedule: Schedule | None
    terms: dict[str, float]


def bucket_costs(
    spec: Sequence[AllReduceSpecTuple],
    devices: Sequence[str],
    sizes: Sequence[int],
    itemsize: int,
    *,
    pack_max_bytes: int = 0,
    worker_groups: Sequence[Sequence[int]] | None = None,
) -> list[BucketCost]:
    """The plan of ``sizes`` under ``spec`` and each bucket's schedule and terms (a pack
    adds the copies that join and split its members on every device)."""
    groups = tuple(tuple(g) for g in worker_groups) if worker_groups else None
    buckets = plan_batch(
        sizes, [0] * len(sizes), [itemsize] * len(sizes), spec, pack_max_bytes=pack_max_bytes
    )
    out = []
    for bucket in buckets:
        info = get_algorithm(bucket.spec.alg)
        job = Job(info, tuple(devices), bucket.length, itemsize, bucket.spec.shards, bucket.index, groups)
        schedule = schedule_of(job) if bucket.length else Schedule()
        terms = features(schedule) if schedule is not None else {}
        if bucket.packed:
            for device in devices:
                kind = f"memory:{device_class(device)}"
                terms[kind] = terms.get(kind, 0.0) + 4 * bucket.length * itemsize
            terms["ops"] = terms.get("ops", 0.0) + 2 * len(devices)
        out.append(BucketCost(bucket, schedule, terms))
    return out


@dataclass(frozen=True)
class Model:
    """Parameters (seconds per unit of each term), per-algorithm factors, and how many
    samples fitted them (0: the defaults)."""

    params: Mapping[str, float]
    factors: Mapping[str, float] = field(default_factory=dict)
    samples: int = 0

    @property
    def fitted(self) -> bool:
        return self.samples > 0

    def bucket_seconds(self, cost: BucketCost) -> float | None:
        """Predicted seconds of one bucket (``None``: no formula)."""
        if cost.schedule is None:
            return None
        total = sum(self.params.get(k, 0.0) * v for k, v in cost.terms.items())
        return total * self.factors.get(cost.bucket.spec.alg, 1.0)

    def overhead(self, devices: Sequence[str], tensors: int) -> float:
        """Seconds of a step that no algorithm changes: the call and passing tensors."""
        return sum(self.params.get(k, 0.0) * v for k, v in overhead_terms(devices, tensors).items())

    def step_seconds(self, costs: Sequence[BucketCost], devices: Sequence[str], tensors: int) -> float | None:
        """Predicted seconds of a whole step, or ``None`` if a bucket has no formula."""
        parts = [self.bucket_seconds(c) for c in costs]
        if any(p is None for p in parts):
            return None
        return self.overhead(devices, tensors) + sum(parts)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return {"params": dict(self.params), "factors": dict(self.factors), "samples": self.samples}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Model:
        """Reads :meth:`to_json`'s output.

        Raises:
            ValueError: a field is missing, or a number is negative or not finite.
        """
        try:
            params = {str(k): float(v) for k, v in data["params"].items()}
            factors = {str(k): float(v) for k, v in data.get("factors", {}).items()}
            samples = int(data.get("samples", 0))
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise ValueError(f"not a cost model: {err}") from None
        if any(not math.isfinite(v) or v < 0 for v in [*params.values(), *factors.values()]):
            raise ValueError("a cost model's parameters must be finite and non-negative")
        return cls(params, factors, samples)


DEFAULT = Model(_DEFAULT_PARAMS)


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int = 200) -> np.ndarray:
    """``argmin ||a x - b||`` subject to ``x >= 0`` (Lawson and Hanson's active set)."""
    n = a.shape[1]
    passive = np.zeros(n, dtype=bool)
    x = np.zeros(n)
    for _ in range(max_iter):
        w = a.T @ (b - a @ x)
        if passive.all() or (w[~passive] <= 1e-12).all():
            break
        passive[int(np.argmax(np.where(passive, -np.inf, w)))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            shrinking = passive & (z <= 0)
            step = np.min(x[shrinking] / (x[shrinking] - z[shrinking]))
            x = x + step * (z - x)
            passive &= x > 1e-15
    return x


def _terms(
    sample: Sample, devices: Sequence[str], itemsize: int, groups: Any
) -> tuple[str, dict[str, float]]:
    from allreduce.planning.spec import check_spec

    spec = check_spec(sample.spec)
    costs = bucket_costs(spec, devices, sample.sizes, itemsize, worker_groups=groups)
    if any(c.schedule is None for c in costs) or len({c.bucket.spec.alg for c in costs}) != 1:
        return "", {}
    terms = overhead_terms(devices, len(sample.sizes))
    for c in costs:
        for k, v in c.terms.items():
            terms[k] = terms.get(k, 0.0) + v
    return costs[0].bucket.spec.alg, terms


#: How strongly a fit is pulled towards the prior's parameters (relative to one sample).
PRIOR_WEIGHT = 1e-3


def _solve(rows: Sequence[dict[str, float]], seconds: Sequence[float], prior: Model) -> dict[str, float]:
    """Non-negative least squares on relative errors, each parameter pulled lightly
    towards the prior's (so that a few samples cannot send unpinned terms anywhere)."""
    a = np.array([[r.get(k, 0.0) for k in FEATURES] for r in rows])
    b = np.asarray(seconds, dtype=float)
    weights = 1.0 / b  # relative errors: a 100 us step counts as much as a 100 ms one
    a, b = a * weights[:, None], b * weights
    pulled = [i for i, k in enumerate(FEATURES) if prior.params.get(k, 0.0) > 0]
    rows_prior = np.zeros((len(pulled), len(FEATURES)))
    for row, i in enumerate(pulled):
        rows_prior[row, i] = PRIOR_WEIGHT**0.5 / prior.params[FEATURES[i]]
    a = np.vstack([a, rows_prior])
    b = np.concatenate([b, np.full(len(pulled), PRIOR_WEIGHT**0.5)])
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    x = nnls(a / scale, b) / scale
    return dict(zip(FEATURES, (float(v) for v in x)))


def fit(
    samples: Sequence[Sample],
    devices: Sequence[str],
    itemsize: int,
    *,
    worker_groups: Sequence[Sequence[int]] | None = None,
    prior: Model = DEFAULT,
) -> Model:
    """The model of ``devices`` fitted to ``samples`` (each of one algorithm with a
    formula; others are left out). With fewer samples than terms in use, the terms the
    samples do not pin down keep ``prior``'s values.

    Raises:
        ValueError: no usable sample.
    """
    usable = [(s, *_terms(s, devices, itemsize, worker_groups)) for s in samples if s.seconds > 0]
    usable = [u for u in usable if u[1]]
    if not usable:
        raise ValueError("no sample of an algorithm with a cost formula to fit")
    outliers: dict[str, float] = {}
    params = dict(prior.params)
    for _ in range(3):
        kept = [u for u in usable if u[1] not in outliers]
        if kept:
            params = _solve([u[2] for u in kept], [u[0].seconds for u in kept], prior)
            params = _keep_unused(params, [u[2] for u in kept], prior)
        found = _outliers(usable, params, devices)
        if set(found) == set(outliers):
            break
        outliers = found
    return Model(params, _outliers(usable, params, devices), len(usable))


def _outliers(
    usable: Sequence[tuple[Sample, str, dict[str, float]]],
    params: Mapping[str, float],
    devices: Sequence[str],
) -> dict[str, float]:
    """Algorithms whose measured steps (two or more) are, by their median, more than
    :data:`OUTLIER_RATIO` off the shared fit, each with the least-squares factor of its
    own part of the step (between 0.2 and 5)."""
    parts: dict[str, list[tuple[float, float, float]]] = {}
    for sample, alg, terms in usable:
        fixed = overhead_terms(devices, len(sample.sizes))
        own = sum(params.get(k, 0.0) * v for k, v in terms.items() if k not in fixed)
        rest = sum(params.get(k, 0.0) * v for k, v in fixed.items())
        parts.setdefault(alg, []).append((sample.seconds, rest, own))
    found = {}
    for alg, rows in parts.items():
        ratio = statistics.median(seconds / (rest + own) for seconds, rest, own in rows if rest + own > 0)
        weight = sum(own * own / seconds**2 for seconds, _, own in rows)
        if len(rows) < 2 or 1 / OUTLIER_RATIO <= ratio <= OUTLIER_RATIO or weight == 0:
            continue
        factor = sum(own * (seconds - rest) / seconds**2 for seconds, rest, own in rows) / weight
        found[alg] = min(max(factor, 0.2), 5.0)
    return found


def _keep_unused(
    params: dict[str, float], rows: Sequence[dict[str, float]], prior: Model
) -> dict[str, float]:
    """Terms no sample uses keep the prior's value (they cannot be fitted)."""
    used = {k for r in rows for k, v in r.items() if v}
    return {k: (v if k in used else prior.params.get(k, 0.0)) for k, v in params.items()}
