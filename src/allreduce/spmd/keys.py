"""Collective keys of SPMD exchanges, derived from the schedule alone (pure Python).

Workers that run the same program compute the same keys without talking:

- A **group key** names the two tasks of a pairwise exchange (:func:`pair_group_key`),
  or all workers with their local device count for ``collective``
  (:func:`all_group_key`).
- An **instance key** names one exchange: the channel of the call, the slot the
  schedule gives the exchange, and its direction (:func:`instance_key`). Slots are
  handed out per process and channel, in the order calls are traced
  (:class:`SlotCounter`), so that workers that trace the same calls in the same order
  number them alike. A key is never handed out twice: TensorFlow remembers each
  instance's shape, and a key reused for another shape fails.

Both ranges start at :data:`KEY_BASE` (``3 * 2**29``). TensorFlow's own collectives
(``MultiWorkerMirroredStrategy``'s ``CollectiveKeys``) count group and instance keys up
from 1; this library's ``collective`` algorithm counts run-time instance keys below
``2**30`` and TensorFlow 1 graph keys up from ``2**30``. None of them reaches
``3 * 2**29`` without hundreds of millions of collectives in one process.

Instance keys must differ even between groups: TensorFlow names a sender's buffer by
instance key and ranks only (``exec_key:subdiv:src_rank:dst_rank``), not by group.
Within a call a worker sends at most once per slot and direction, so its buffers
never share a name.
"""

from __future__ import annotations

import threading

__layer__ = "pure"

__all__ = [
    "CHANNELS",
    "KEY_BASE",
    "MAX_WORKERS",
    "SLOTS_PER_CHANNEL",
    "SlotCounter",
    "all_group_key",
    "instance_key",
    "pair_group_key",
]

#: The first group and instance key of SPMD exchanges.
KEY_BASE = 3 << 29
#: Workers a pair group key can name: ``4096 * 4095 / 2`` pairs stay below ``2**23``.
MAX_WORKERS = 4096
_ALL_GROUPS = 1 << 24
#: Independent call sequences: calls on different channels may run at the same time.
CHANNELS = 16
#: Slots per channel and process; each slot has two keys, one per direction.
SLOTS_PER_CHANNEL = (1 << 29) // CHANNELS // 2


def pair_group_key(a: int, b: int) -> int:
    """The group key of tasks ``a`` and ``b`` (in either order).

    Raises:
        ValueError: ``a == b``, or a task outside ``0..MAX_WORKERS-1``.
    """
    low, high = sorted((a, b))
    if low == high or low < 0 or high >= MAX_WORKERS:
        raise ValueError(f"a pair group needs two tasks in 0..{MAX_WORKERS - 1}, got {a} and {b}")
    return KEY_BASE + high * (high - 1) // 2 + low


def all_group_key(devices_per_worker: int) -> int:
    """The group key of every worker, each with ``devices_per_worker`` members."""
    return KEY_BASE + _ALL_GROUPS + devices_per_worker


def instance_key(channel: int, slot: int, src: int, dst: int) -> int:
    """The instance key of the exchange in ``slot`` from task ``src`` to task ``dst``.

    Raises:
        ValueError: ``channel`` or ``slot`` out of range.
    """
    if not 0 <= channel < CHANNELS:
        raise ValueError(f"channel must be in 0..{CHANNELS - 1}, got {channel}")
    if not 0 <= slot < SLOTS_PER_CHANNEL:
        raise ValueError(f"slot {slot} is outside 0..{SLOTS_PER_CHANNEL - 1}")
    direction = 0 if src < dst else 1
    return KEY_BASE + (channel * SLOTS_PER_CHANNEL + slot) * 2 + direction


class SlotCounter:
    """Hands out consecutive slots per channel, in the order calls ask."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used = [0] * CHANNELS

    def reserve(self, channel: int, count: int) -> int:
        """The first of ``count`` new slots of ``channel``.

        Raises:
            ValueError: the channel's :data:`SLOTS_PER_CHANNEL` slots are used up.
        """
        with self._lock:
            first = self._used[channel]
            if first + count > SLOTS_PER_CHANNEL:
                raise ValueError(
                    f"channel {channel} has used {first} of its {SLOTS_PER_CHANNEL} exchange slots and this "
                    f"trace needs {count} more: trace fewer distinct all-reduces, or pack small tensors"
                )
            self._used[channel] = first + count
            return first
