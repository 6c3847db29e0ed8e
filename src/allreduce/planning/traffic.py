"""What an all-reduce moves and computes, round by round, before any op exists (pure Python).

A :class:`Schedule` is a list of :class:`Round` s. A round holds the hops that run at
the same time (``src`` device sends ``nbytes`` to ``dst``), the additions (``inputs``
tensors of ``nbytes`` each added on a device) and the local copies (concatenations, and
splits that cannot share their input's buffer). The per-algorithm schedules in
:mod:`allreduce.planning.cost` follow their builders op by op, so that the bytes a schedule says
a device sends are the bytes the emitted graph moves across devices.

From a schedule, :func:`features` derives the terms of the latency-bandwidth-reduction
model: per link class, the rounds that use it (``alpha``) and the bytes on the critical
path (``beta``: per round, the most any device sends or receives over that class);
per device class, the bytes reduced on the critical path (``gamma``), the memory the
adds and copies touch in all (``memory``: devices that share a processor pay for it
together), and the op count.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from allreduce.planning.devices import parse_device_name

__layer__ = "model"

__all__ = [
    "LINK_CLASSES",
    "LINK_LOCAL",
    "LINK_REMOTE",
    "LINK_SHARED",
    "Add",
    "Copy",
    "Hop",
    "Round",
    "Schedule",
    "device_class",
    "features",
    "link_class",
]

#: CPUs of one worker: they share memory, so a hop hands over a buffer and copies nothing.
LINK_SHARED = "shared"
#: Other devices of one worker (GPU to GPU, GPU to CPU).
LINK_LOCAL = "local"
#: Devices of different workers.
LINK_REMOTE = "remote"
LINK_CLASSES = (LINK_SHARED, LINK_LOCAL, LINK_REMOTE)


def link_class(src: str, dst: str) -> str:
    """The class of the link from ``src`` to ``dst`` (:data:`LINK_SHARED`, ``LOCAL`` or ``REMOTE``)."""
    a, b = parse_device_name(src), parse_device_name(dst)
    if a.worker != b.worker:
        return LINK_REMOTE
    if a.device_type == b.device_type == "CPU":
        return LINK_SHARED
    return LINK_LOCAL


def device_class(device: str) -> str:
    """The device type of ``device`` (``CPU``, ``GPU``; ``CPU`` when the name has none)."""
    return parse_device_name(device).device_type or "CPU"


class Hop(NamedTuple):
    """``nbytes`` that leave ``src`` for ``dst``; ``tensor`` names the value when the same
    value may be sent to the same device twice (TensorFlow sends it once)."""

    src: str
    dst: str
    nbytes: int
    tensor: Hashable | None = None


class Add(NamedTuple):
    """``inputs`` tensors of ``nbytes`` each summed on ``device`` (one ``add_n`` or ``add``)."""

    device: str
    inputs: int
    nbytes: int


class Copy(NamedTuple):
    """``nbytes`` written by a local copy on ``device`` (a concatenation, a copying split)."""

    device: str
    nbytes: int


@dataclass
class Round:
    """What happens at the same time: hops, additions and local copies."""

    hops: list[Hop] = field(default_factory=list)
    adds: list[Add] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)

    def hop(self, src: str, dst: str, nbytes: int, tensor: Hashable | None = None) -> None:
        """Records a hop, unless ``src`` and ``dst`` are the same device (no edge then)."""
        if src != dst:
            self.hops.append(Hop(src, dst, nbytes, tensor))

    def add(self, device: str, inputs: int, nbytes: int) -> None:
        if inputs > 1:
            self.adds.append(Add(device, inputs, nbytes))

    def copy(self, device: str, nbytes: int) -> None:
        self.copies.append(Copy(device, nbytes))

    @property
    def empty(self) -> bool:
        return not (self.hops or self.adds or self.copies)


_uids = itertools.count()


@dataclass
class Schedule:
    """The rounds of one all-reduce (or of one reduction to one device, then ``root`` is
    where the sum is left). ``results`` names, where known, the value each device ends
    with (see :class:`Hop`); ``uid`` tells this schedule's values from another's."""

    rounds: list[Round] = field(default_factory=list)
    root: str | None = None
    results: dict[str, Hashable] = field(default_factory=dict)
    uid: int = field(default_factory=lambda: next(_uids))

    def at(self, index: int) -> Round:
        """Round ``index``, made (with any before it) if missing."""
        while len(self.rounds) <= index:
            self.rounds.append(Round())
        return self.rounds[index]

    def next(self) -> Round:
        """A new round after every existing one."""
        return self.at(len(self.rounds))

    def then(self, other: Schedule) -> Schedule:
        """Appends ``other``'s rounds after this one's; returns ``self``."""
        self.rounds.extend(r for r in other.rounds if not r.empty)
        return self

    def alongside(self, others: Iterable[Schedule], *, in_step: bool = False) -> Schedule:
        """Runs ``others`` at the same time, after this one's rounds; returns ``self``.
        Empty rounds are left out, unless ``in_step``: then round ``i`` of each of
        ``others`` lands in the same round (schedules of one shape, run round by round)."""
        start = len(self.rounds)
        for other in others:
            for i, r in enumerate(x for x in other.rounds if in_step or not x.empty):
                target = self.at(start + i)
                target.hops += r.hops
                target.adds += r.adds
                target.copies += r.copies
        return self

    def moves(self) -> Iterator[list[Hop]]:
        """Each round's hops, without a value sent again to a device that already has it."""
        seen: set[tuple[Hashable, str]] = set()
        for r in self.rounds:
            kept = []
            for h in r.hops:
                if h.tensor is not None:
                    if (h.tensor, h.dst) in seen:
                        continue
                    seen.add((h.tensor, h.dst))
                kept.append(h)
            yield kept

    @property
    def steps(self) -> int:
        """Rounds in which data crosses devices."""
        return sum(1 for hops in self.moves() if hops)

    def sent(self) -> dict[str, int]:
        """Bytes each device sends to other devices, over all rounds."""
        out: dict[str, int] = defaultdict(int)
        for hops in self.moves():
            for h in hops:
                out[h.src] += h.nbytes
        return dict(out)

    def received(self) -> dict[str, int]:
        """Bytes each device receives from other devices, over all rounds."""
        out: dict[str, int] = defaultdict(int)
        for hops in self.moves():
            for h in hops:
                out[h.dst] += h.nbytes
        return dict(out)


def _critical_bytes(hops: Sequence[Hop]) -> dict[str, int]:
    """Per link class, the most bytes one device sends or receives over it in a round."""
    load: dict[tuple[str, str, str], int] = defaultdict(int)
    for h in hops:
        kind = link_class(h.src, h.dst)
        load[kind, "out", h.src] += h.nbytes
        load[kind, "in", h.dst] += h.nbytes
    worst: dict[str, int] = defaultdict(int)
    for (kind, _, _), nbytes in load.items():
        worst[kind] = max(worst[kind], nbytes)
    return worst


def features(schedule: Schedule) -> dict[str, float]:
    """The model's terms of ``schedule`` (see the module docstring); absent terms are 0.

    Keys: ``alpha:<link>``, ``beta:<link>``, ``volume:<link>`` (bytes over all hops of
    that class: links whose ends share processors pay for every byte, both ways),
    ``gamma:<device>``, ``memory:<device>``, ``ops``.
    """
    out: dict[str, float] = defaultdict(float)
    for r, hops in zip(schedule.rounds, schedule.moves()):
        for kind in {link_class(h.src, h.dst) for h in hops}:
            out[f"alpha:{kind}"] += 1
        for kind, nbytes in _critical_bytes(hops).items():
            out[f"beta:{kind}"] += nbytes
        for h in hops:
            out[f"volume:{link_class(h.src, h.dst)}"] += h.nbytes
        reduced: dict[str, int] = defaultdict(int)
        for a in r.adds:
            reduced[a.device] += (a.inputs - 1) * a.nbytes
            out[f"memory:{device_class(a.device)}"] += (a.inputs + 1) * a.nbytes
        for device_type in {device_class(d) for d in reduced}:
            out[f"gamma:{device_type}"] += max(
                n for d, n in reduced.items() if device_class(d) == device_type
            )
        for c in r.copies:
            out[f"memory:{device_class(c.device)}"] += 2 * c.nbytes
        out["ops"] += len(hops) + len(r.adds) + len(r.copies)
    return dict(out)
