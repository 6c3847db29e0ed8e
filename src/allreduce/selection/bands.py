"""Size bands: the ranges a tuned spec may switch algorithm at (pure Python).

Band ``k`` holds element counts in ``(4**(k-1), 4**k]`` (band 0: one element), so every
boundary is a power of four that a spec writes plainly (``256``, ``4k``, ``1M``). A
workload is described by how many tensors fall in each band, counts rounded to a power
of two (:func:`workload_bucket`), so that near-identical workloads share a tuning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__layer__ = "model"

__all__ = ["FACTOR", "band_limit", "band_of", "bands_of", "workload_bucket", "workload_distance"]

#: Neighbouring band limits differ by this factor.
FACTOR = 4


def band_of(size: int) -> int:
    """The band of a tensor of ``size`` elements (``size >= 1``)."""
    band, limit = 0, 1
    while limit < size:
        band, limit = band + 1, limit * FACTOR
    return band


def band_limit(band: int) -> int:
    """The largest element count of ``band``."""
    return FACTOR**band


def bands_of(sizes: Sequence[int]) -> dict[int, list[int]]:
    """The sizes of each band that holds any, by band, in ascending order."""
    out: dict[int, list[int]] = {}
    for size in sizes:
        out.setdefault(band_of(size), []).append(size)
    return dict(sorted(out.items()))


def workload_bucket(sizes: Sequence[int]) -> dict[int, int]:
    """``{band: log2 of its tensor count, rounded}``: what a tuning's cache key keeps of a workload."""
    return {band: round(math.log2(len(members))) for band, members in bands_of(sizes).items()}


def workload_distance(a: Mapping[int, int], b: Mapping[int, int]) -> float:
    """How far apart two workload buckets are: the bands one has and the other lacks
    count 2, each step of a count's logarithm counts 1."""
    distance = 0.0
    for band in set(a) | set(b):
        if band in a and band in b:
            distance += abs(a[band] - b[band])
        else:
            distance += 2
    return distance
