"""Eager calls: each distinct all-reduce traced once into a ``tf.function``, cached.

The cache is bounded (least recently used entries are dropped) and shared by every
thread; a ``tf.function`` may be called from several threads at once. Each entry wraps
its own callable object, so that TensorFlow counts its traces apart from the others'
and never warns about retracing in a user's eager loop. Entries are dropped when the
eager context changes (:mod:`allreduce.core.runtime_hooks`), since their graphs name the
old devices.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from allreduce.core._tf import tf
from allreduce.core.runtime_hooks import on_context_change
from allreduce.planning.devices import parse_device_name

__all__ = ["CACHE_SIZE", "cache_size", "call", "clear"]

#: The most traced all-reduces kept at once.
CACHE_SIZE = 64

Build = Callable[[Sequence[Sequence[tf.Tensor]]], list[list[tf.Tensor]]]

_lock = threading.Lock()
_cache: OrderedDict[Hashable, Any] = OrderedDict()


class _Traced:
    """The body of one cached ``tf.function``: flat tensors in, flat results out."""

    def __init__(self, build: Build, counts: Sequence[int]) -> None:
        self._build = build
        self._counts = list(counts)

    def __call__(self, *flat: tf.Tensor) -> list[tf.Tensor]:
        towers, start = [], 0
        for count in self._counts:
            towers.append(list(flat[start : start + count]))
            start += count
        return [t for tower in self._build(towers) for t in tower]


def _function(key: Hashable, build: Build, counts: Sequence[int]) -> Any:
    with _lock:
        function = _cache.get(key)
        if function is not None:
            _cache.move_to_end(key)
            return function
    # Built outside the lock: two threads may make one each; the second is dropped.
    function = tf.function(_Traced(build, counts), autograph=False, reduce_retracing=False)
    with _lock:
        function = _cache.setdefault(key, function)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return function


def traceable(build: Build, counts: Sequence[int]) -> Any:
    """A ``tf.function`` of ``build`` over towers of ``counts`` tensors, outside the cache."""
    return tf.function(_Traced(build, counts), autograph=False, reduce_retracing=False)


def call(
    key: Hashable, towers: Sequence[Sequence[tf.Tensor]], devices: Sequence[str], build: Build
) -> list[list[tf.Tensor]]:
    """``build(towers)`` through the cached ``tf.function`` of ``key``, with the results of
    tower ``d`` placed on ``devices[d]`` (function outputs report the caller's device)."""
    return call_function(_function(key, build, [len(tower) for tower in towers]), towers, devices)


def call_function(
    function: Any, towers: Sequence[Sequence[tf.Tensor]], devices: Sequence[str]
) -> list[list[tf.Tensor]]:
    """Calls a function of :func:`traceable` and places tower ``d``'s results on ``devices[d]``."""
    counts = [len(tower) for tower in towers]
    flat = function(*[t for tower in towers for t in tower])
    out, start = [], 0
    for device, count in zip(devices, counts):
        out.append([_place(r, device) for r in flat[start : start + count]])
        start += count
    return out


def _place(result: tf.Tensor, device: str) -> tf.Tensor:
    if parse_device_name(result.device) == parse_device_name(device):
        return result
    with tf.device(device):
        return tf.identity(result)


def cache_size() -> int:
    """How many traced all-reduces the cache holds."""
    with _lock:
        return len(_cache)


@on_context_change
def clear() -> None:
    """Drops every cached ``tf.function`` (each is traced again on its next call)."""
    with _lock:
        _cache.clear()
