"""Running graph-only builders (collectives, NCCL) from eager code."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

from allreduce._tf import tf

_CACHE_SIZE = 64
_cache: OrderedDict[Hashable, Callable[..., list[tf.Tensor]]] = OrderedDict()
_lock = threading.Lock()


def call_in_graph(
    key: Hashable,
    build: Callable[[Sequence[tf.Tensor]], list[tf.Tensor]],
    values: Sequence[tf.Tensor],
    devices: Sequence[str],
) -> list[tf.Tensor]:
    """Calls ``build(values)`` directly when tracing, else through a cached ``tf.function``.

    Ops such as collectives must be launched together; a ``tf.function`` runs them
    concurrently where eager execution would run them one at a time and deadlock.
    ``key`` must determine the graph ``build`` makes. Eager results are copied onto
    ``devices`` so that their ``.device`` is where they live.
    """
    if not tf.executing_eagerly():
        return build(values)
    with _lock:
        function = _cache.get(key)
        if function is None:
            function = tf.function(lambda *args: build(args), autograph=False, reduce_retracing=False)
            _cache[key] = function
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
        else:
            _cache.move_to_end(key)
    out = function(*values)
    placed = []
    for value, device in zip(out, devices):
        with tf.device(device):
            placed.append(tf.identity(value))
    return placed


def clear_cache() -> None:
    """Drops every cached ``tf.function`` (they are traced again on their next call)."""
    with _lock:
        _cache.clear()
