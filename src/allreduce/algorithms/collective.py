"""TensorFlow collective all-reduce (``collective``): ``CollectiveReduceV2``.

Works within one process and across workers of a cluster. Each launch gets a fresh
instance key; devices share a group key per device set. Each device's collectives are
ordered by a per-device resource token, so that a ``tf.function`` does not chain the
members of one collective one after another (which would deadlock).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Sequence

from allreduce._tf import tf
from allreduce.algorithms._graph import call_in_graph, clear_cache
from allreduce.algorithms.base import BuildContext
from allreduce.runtime_hooks import on_context_change

_lock = threading.Lock()
_group_keys: dict[tuple[str, ...], int] = {}
_next_group_keys = itertools.count(1)
_instance_keys = itertools.count(1)
_tokens: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def group_key(devices: Sequence[str]) -> int:
    """A stable group key for this set of devices (the same key in every call until
    :func:`forget_groups`)."""
    members = tuple(sorted(devices))
    with _lock:
        key = _group_keys.get(members)
        if key is None:
            key = _group_keys[members] = next(_next_group_keys)
        return key


@on_context_change
def forget_groups() -> None:
    """Gives every device set a new, never used group key from the next call on.

    TensorFlow remembers each group's devices with their incarnations; once the eager
    context changes (connecting to or leaving a cluster) an old key names stale
    devices and its collectives abort. The cached ``tf.function``s that hold old keys
    are dropped too.
    """
    with _lock:
        _group_keys.clear()
    clear_cache()


def _next_instance_key() -> int:
    with _lock:
        return next(_instance_keys)


def _ordering_token(device: str) -> tf.Tensor:
    graph = tf.compat.v1.get_default_graph()
    per_graph = _tokens.setdefault(graph, {})
    token = per_graph.get(device)
    if token is None:
        with tf.device(device), tf.name_scope("allreduce_token"):
            token = tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="", container="")
        per_graph[device] = token
    return token


def build(values: Sequence[tf.Tensor], devices: Sequence[str], timeout_s: float = 0.0) -> list[tf.Tensor]:
    """Emits one ``CollectiveReduceV2`` per device (graph mode only)."""
    size = len(values)
    key = group_key(devices)
    instance = _next_instance_key()
    out = []
    for value, device in zip(values, devices):
        with tf.device(device):
            out.append(
                tf.raw_ops.CollectiveReduceV2(
                    input=value,
                    group_size=tf.constant(size),
                    group_key=tf.constant(key),
                    instance_key=tf.constant(instance),
                    ordering_token=[_ordering_token(device)],
                    merge_op="Add",
                    final_op="Id",
                    communication_hint="auto",
                    timeout_seconds=float(timeout_s),
                )
            )
    return out


def all_reduce(values: Sequence[tf.Tensor], devices: Sequence[str], ctx: BuildContext) -> list[tf.Tensor]:
    """Collective all-reduce of 1-D ``values``."""
    key = ("collective", tuple(devices), values[0].shape[0], values[0].dtype, ctx.timeout_s)
    return call_in_graph(key, lambda vs: build(vs, devices, ctx.timeout_s), values, devices)
