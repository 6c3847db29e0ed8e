"""What one batch all-reduce does, decided before any op is emitted (pure Python).

A batch is ``count`` tensors per device. :func:`plan_batch` packs runs of small tensors
(:func:`allreduce.planning.ranges.plan_small_tensor_packs`), sends each pack or lone tensor to
the spec range that holds its element count, and numbers the buckets of each range so
that algorithms that pick devices round-robin spread a batch over their devices. The
emitter (:mod:`allreduce.graph.emit`) turns each :class:`Bucket` into ops, and
:func:`allreduce.explain` reads the same plan.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import NamedTuple

from allreduce.planning.ranges import plan_small_tensor_packs
from allreduce.planning.spec import AllReduceSpecTuple, select_spec_tuple

__layer__ = "pure"

__all__ = ["DEFAULT_PACK_MAX_GROUP", "Bucket", "plan_batch"]

#: The most tensors one pack holds unless ``pack_max_group`` says otherwise: packs
#: exist to cut the ops per tensor, and a pack of 256 small tensors traces in a tenth of
#: the time the same tensors take one by one.
DEFAULT_PACK_MAX_GROUP = 256


class Bucket(NamedTuple):
    """One all-reduce of a batch.

    Attributes:
        members: the indices of the tensors it carries, in order (one for a lone tensor).
        sizes: the element count of each member.
        spec: the spec range that reduces it.
        index: its position among the buckets of the same range (for round-robin choices).
    """

    members: tuple[int, ...]
    sizes: tuple[int, ...]
    spec: AllReduceSpecTuple
    index: int

    @property
    def length(self) -> int:
        """The elements it all-reduces: the sum of its members' sizes."""
        return sum(self.sizes)

    @property
    def packed(self) -> bool:
        return len(self.members) > 1


def plan_batch(
    sizes: Sequence[int],
    dtypes: Sequence[Hashable],
    itemsizes: Sequence[int],
    spec: Sequence[AllReduceSpecTuple],
    *,
    pack_max_bytes: int = 0,
    pack_max_group: int = DEFAULT_PACK_MAX_GROUP,
) -> list[Bucket]:
    """The buckets that all-reduce tensors of these element counts, dtypes and item sizes.

    Packs come first, then the lone tensors, each group in tensor order.

    Raises:
        ValueError: the three lists differ in length, or the packing options are invalid.
    """
    if not len(sizes) == len(dtypes) == len(itemsizes):
        raise ValueError(f"{len(sizes)} sizes, {len(dtypes)} dtypes and {len(itemsizes)} item sizes")
    nbytes = [size * item for size, item in zip(sizes, itemsizes)]
    packs = plan_small_tensor_packs(nbytes, dtypes, pack_max_bytes, pack_max_group)
    groups = [tuple(range(first, last + 1)) for first, last in packs.ranges]
    groups += [(i,) for i in packs.unpacked]
    used: dict[AllReduceSpecTuple, int] = {}
    buckets = []
    for members in groups:
        member_sizes = tuple(sizes[i] for i in members)
        chosen = select_spec_tuple(spec, sum(member_sizes))
        index = used.get(chosen, 0)
        used[chosen] = index + 1
        buckets.append(Bucket(members, member_sizes, chosen, index))
    return buckets
