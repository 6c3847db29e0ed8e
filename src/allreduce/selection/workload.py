"""A workload on a topology: its size bands and what the cost model predicts for them (pure Python)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from allreduce.planning.cost_model import BucketCost, Model, bucket_costs
from allreduce.planning.spec import parse_all_reduce_spec
from allreduce.selection.bands import bands_of

__layer__ = "model"

__all__ = ["Workload"]


class Workload:
    """The tensors of one step (``sizes``, in elements of ``itemsize`` bytes) on
    ``devices``, cut into size bands; bucket costs are computed once per spec and band."""

    def __init__(
        self,
        devices: Sequence[str],
        sizes: Sequence[int],
        itemsize: int,
        worker_groups: Sequence[Sequence[int]] | None = None,
    ) -> None:
        self.devices = tuple(devices)
        self.sizes = tuple(sizes)
        self.itemsize = itemsize
        self.worker_groups = worker_groups
        self.bands = bands_of(sizes)
        self._costs: dict[tuple[str, int | None], list[BucketCost]] = {}
        self._lock = threading.Lock()

    def costs(self, spec: str, band: int | None = None) -> list[BucketCost]:
        """The bucket costs of ``spec`` on ``band``'s tensors (``None``: every tensor)."""
        with self._lock:
            found = self._costs.get((spec, band))
        if found is None:
            sizes = self.sizes if band is None else self.bands[band]
            found = bucket_costs(
                parse_all_reduce_spec(spec),
                self.devices,
                sizes,
                self.itemsize,
                worker_groups=self.worker_groups,
            )
            with self._lock:
                self._costs[spec, band] = found
        return found

    def predict(self, model: Model, spec: str, band: int | None = None) -> float | None:
        """Predicted seconds of one step of ``spec`` on ``band`` (``None``: the whole
        workload), or ``None`` where an algorithm has no formula."""
        count = len(self.sizes if band is None else self.bands[band])
        return model.step_seconds(self.costs(spec, band), self.devices, count)

    def predictions(self, model: Model, specs: Sequence[str]) -> dict[tuple[str, int], float | None]:
        """:meth:`predict` of every spec on every band."""
        return {(spec, band): self.predict(model, spec, band) for spec in specs for band in self.bands}
