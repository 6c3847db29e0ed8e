"""Packing small gradients into flat tensors and splitting gradients by size.

Works on tower lists: ``tower_grads[d]`` is the list of ``(grad, var)`` pairs of
device ``d``. Plans come from :mod:`allreduce.planning.ranges`; this module only emits ops.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from allreduce.core._tf import tf
from allreduce.planning.ranges import plan_small_tensor_packs

__all__ = [
    "PACKED_VAR_PLACEHOLDER",
    "GradPackTuple",
    "pack_range",
    "pack_small_tensors",
    "split_grads_by_size",
    "unpack_grad_tuple",
    "unpack_small_tensors",
    "validate_tower_grads",
]

logger = logging.getLogger(__name__)

#: The "variable" paired with a packed tensor.
PACKED_VAR_PLACEHOLDER = "packing_var_placeholder"

TowerGrads = Sequence[Sequence[Any]]
Packing = dict[str, "GradPackTuple"]


class GradPackTuple(NamedTuple):
    """What :func:`unpack_grad_tuple` needs to undo one pack: the original indices,
    variables and shapes of its members."""

    indices: range
    vars: list[Any]
    shapes: list[tf.TensorShape]


def _static_elements(grad: Any, where: str) -> int:
    count = grad.shape.num_elements()
    if count is None:
        raise ValueError(f"{where} has shape {grad.shape}, which is not fully defined")
    return count


def validate_tower_grads(tower_grads: TowerGrads) -> None:
    """Checks that every tower holds ``(grad, var)`` pairs of the same shapes and dtypes.

    Raises:
        TypeError: an entry is not a ``(grad, var)`` pair or a grad is not a tensor.
        ValueError: the towers are empty or disagree in length, shape or dtype.
    """
    if not isinstance(tower_grads, Sequence) or isinstance(tower_grads, str):
        raise TypeError(
            f"tower_grads must be a list of lists of (grad, var), got {type(tower_grads).__name__}"
        )
    if len(tower_grads) == 0:
        raise ValueError("tower_grads is empty: expected one list of (grad, var) pairs per device")
    first = tower_grads[0]
    for d, tower in enumerate(tower_grads):
        if not isinstance(tower, Sequence) or isinstance(tower, str):
            raise TypeError(f"tower_grads[{d}] must be a list of (grad, var) pairs")
        if len(tower) != len(first):
            raise ValueError(
                f"tower_grads[{d}] has {len(tower)} gradients but tower_grads[0] has {len(first)}"
            )
        for i, pair in enumerate(tower):
            if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
                raise TypeError(f"tower_grads[{d}][{i}] must be a (grad, var) pair, got {pair!r}")
            grad, ref = pair[0], first[i][0]
            if grad is None:
                raise ValueError(f"tower_grads[{d}][{i}] has no gradient (None)")
            if not tf.is_tensor(grad):
                raise TypeError(f"tower_grads[{d}][{i}][0] must be a tensor, got {type(grad).__name__}")
            if grad.dtype != ref.dtype:
                raise ValueError(
                    f"tower_grads[{d}][{i}] has dtype {grad.dtype.name} but tower_grads[0][{i}] "
                    f"has {ref.dtype.name}"
                )
            if not grad.shape.is_compatible_with(ref.shape) or grad.shape.rank != ref.shape.rank:
                raise ValueError(
                    f"tower_grads[{d}][{i}] has shape {grad.shape} but tower_grads[0][{i}] has {ref.shape}"
                )


def split_grads_by_size(
    threshold_size: int, device_grads: TowerGrads
) -> tuple[list[list[list[Any]]], list[list[list[Any]]]]:
    """Splits each tower's ``(grad, var)`` pairs by element count.

    Returns:
        ``(small, large)``: per tower, the pairs with at most ``threshold_size``
        elements and those with more, as ``[grad, var]`` lists in their original
        order. A tower with no pair on one side is left out of that side.

    Raises:
        ValueError: a gradient's shape is not fully defined.
    """
    small_grads, large_grads = [], []
    for d, tower in enumerate(device_grads):
        small, large = [], []
        for i, (grad, var) in enumerate(tower):
            size = _static_elements(grad, f"device_grads[{d}][{i}]")
            (small if size <= threshold_size else large).append([grad, var])
        if small:
            small_grads.append(small)
        if large:
            large_grads.append(large)
    return small_grads, large_grads


#: Held while packing or unpacking runs eagerly: TensorFlow 2.21's eager ops that take a
#: shape argument (``tf.reshape``, ``tf.split``) are not safe in several threads at once.
_eager_ops = threading.Lock()


@contextlib.contextmanager
def _one_thread_when_eager() -> Iterator[None]:
    if not tf.executing_eagerly():
        yield
        return
    with _eager_ops:
        yield


def _device_scope(tensor: Any, device: str | None = None) -> Any:
    return tf.device(device or getattr(tensor, "device", "") or None)


def pack_range(
    key: str,
    packing: Packing,
    grad_vars: Sequence[Any],
    rng: Sequence[int],
    *,
    device: str | None = None,
) -> tf.Tensor:
    """Concatenates the flattened grads ``grad_vars[rng[0]..rng[1]]`` into one tensor.

    Records how to undo it in ``packing[key]``. The pack is built on ``device``, by
    default the device of its first member.
    """
    first, last = rng
    members = grad_vars[first : last + 1]
    flat = []
    with _one_thread_when_eager(), tf.name_scope("pack"):
        for grad, _ in members:
            with _device_scope(grad, device):
                flat.append(tf.reshape(grad, [-1]))
        packing[key] = GradPackTuple(
            indices=range(first, last + 1),
            vars=[var for _, var in members],
            shapes=[grad.shape for grad, _ in members],
        )
        with _device_scope(members[0][0], device):
            return tf.concat(flat, axis=0)


def unpack_grad_tuple(gv: Sequence[Any], gpt: GradPackTuple) -> list[tuple[tf.Tensor, Any]]:
    """Splits a packed ``(grad, var)`` back into the ``(grad, var)`` pairs it holds."""
    widths = [shape.num_elements() for shape in gpt.shapes]
    with _one_thread_when_eager(), _device_scope(gv[0]), tf.name_scope("unpack"):
        pieces = tf.split(gv[0], widths, axis=0, num=len(widths))
        return [(tf.reshape(piece, shape), var) for piece, shape, var in zip(pieces, gpt.shapes, gpt.vars)]


def pack_small_tensors(
    tower_grads: TowerGrads,
    max_bytes: int = 0,
    max_group: int = 10,
    *,
    devices: Sequence[str] | None = None,
) -> tuple[list[list[Any]], Packing | None]:
    """Concatenates runs of small gradients of one dtype into flat packs.

    A gradient is small when it holds at most ``max_bytes`` bytes (0 packs nothing).
    Each maximal run of consecutive small gradients of the same dtype becomes packs of
    at most ``max_group`` gradients (a leftover single stays unpacked). Each returned
    tower lists the packs first, then the unpacked pairs in their original order.
    A pack is built on ``devices[d]`` when given, else on its members' device.

    Returns:
        ``(new_tower_grads, packing)`` for :func:`unpack_small_tensors`, or
        ``(tower_grads, None)`` when nothing is packed.

    Raises:
        ValueError: the towers disagree, a shape is not fully defined, ``max_bytes``
            is negative or ``max_group`` below 1.
    """
    validate_tower_grads(tower_grads)
    first = tower_grads[0]
    sizes = [_static_elements(g, f"tower_grads[0][{i}]") * g.dtype.size for i, (g, _) in enumerate(first)]
    plan = plan_small_tensor_packs(sizes, [g.dtype for g, _ in first], max_bytes, max_group)
    if not plan.ranges:
        return tower_grads, None  # type: ignore[return-value]
    logger.debug(
        "packing %d of %d gradients into %d packs (max_bytes=%d, max_group=%d)",
        len(first) - len(plan.unpacked),
        len(first),
        len(plan.ranges),
        max_bytes,
        max_group,
    )
    packing: Packing = {}
    new_tower_grads = []
    for d, tower in enumerate(tower_grads):
        new_tower: list[Any] = [
            (
                pack_range(f"{d}:{p}", packing, tower, rng, device=devices[d] if devices else None),
                PACKED_VAR_PLACEHOLDER,
            )
            for p, rng in enumerate(plan.ranges)
        ]
        new_tower.extend(tower[i] for i in plan.unpacked)
        new_tower_grads.append(new_tower)
    return new_tower_grads, packing


def unpack_small_tensors(tower_grads: TowerGrads, packing: Packing | None) -> list[list[Any]]:
    """Undoes :func:`pack_small_tensors`: splits the packs and restores the order.

    Raises:
        ValueError: ``tower_grads`` does not have the layout ``packing`` describes.
    """
    if not packing:
        return tower_grads  # type: ignore[return-value]
    result = []
    for d, tower in enumerate(tower_grads):
        keys = [f"{d}:{p}" for p in range(len(tower)) if f"{d}:{p}" in packing]
        if not keys:
            raise ValueError(f"packing has no entry for tower {d}: was it made for these towers?")
        total = len(tower) - len(keys) + sum(len(packing[k].indices) for k in keys)
        restored: list[Any] = [None] * total
        for p, key in enumerate(keys):
            gpt = packing[key]
            for index, pair in zip(gpt.indices, unpack_grad_tuple(tower[p], gpt)):
                restored[index] = pair
        free = (i for i, pair in enumerate(restored) if pair is None)
        for pair in tower[len(keys) :]:
            restored[next(free)] = pair
        result.append(restored)
    return result
