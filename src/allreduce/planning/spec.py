"""The all-reduce spec language (pure Python).

Grammar::

    int       ::= [0-9]+
    g_int     ::= int [KkMGT]?          # K/k = 1024, M = 1024**2, ...
    alg       ::= name | name/name      # a registered algorithm or a hierarchical pair
    wire      ::= none | bf16 | fp16
    alg_spec  ::= alg [#int] [@wire]    # int >= 1: the shard count; wire: the range's compression
    spec      ::= alg_spec (:g_int:alg_spec)*

``pscpu:2k:pscpu#2:64k:xring`` sends tensors of at most 2048 *elements* to ``pscpu``,
those of at most 65536 elements to ``pscpu#2`` and larger ones to ``xring``.
``pscpu:64k:xring#2@bf16`` compresses the large tensors' hops to bfloat16 whatever the
call's ``compression=`` says (see :mod:`allreduce.graph.compression`); a range without ``@``
follows the call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from allreduce.core.validation import check_choice, check_int
from allreduce.planning.registry import get_algorithm
from allreduce.planning.wire_formats import COMPRESSIONS

__layer__ = "pure"

__all__ = [
    "check_spec",
    "AllReduceSpecTuple",
    "format_all_reduce_spec",
    "parse_all_reduce_spec",
    "parse_general_int",
    "select_spec_tuple",
    "validate_spec_tuples",
]

_SUFFIXES = {"": 1, "K": 1024, "k": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_GENERAL_INT = re.compile(r"([0-9]+)([KkMGT]?)")
_POSITIVE_INT = re.compile(r"[0-9]+")
UNLIMITED = -1


class AllReduceSpecTuple(NamedTuple):
    """One range of a spec: algorithm name, shard count, the largest element count it
    handles (``-1``: no limit, used by the last range) and its compression (``None``:
    the call's; see :mod:`allreduce.graph.compression`)."""

    alg: str
    shards: int
    limit: int
    compression: str | None = None

    def __repr__(self) -> str:
        wire = "" if self.compression is None else f", compression={self.compression!r}"
        return f"AllReduceSpecTuple(alg={self.alg!r}, shards={self.shards!r}, limit={self.limit!r}{wire})"


def parse_general_int(s: str) -> int:
    """Parses a non-negative integer with an optional binary suffix: ``32k`` is 32768.

    Raises:
        TypeError: ``s`` is not a string.
        ValueError: ``s`` is not digits followed by at most one of ``K k M G T``.
    """
    if not isinstance(s, str):
        raise TypeError(f"expected a str, got {type(s).__name__}: {s!r}")
    match = _GENERAL_INT.fullmatch(s)
    if match is None:
        raise ValueError(f"invalid integer string {s!r}: expected digits and an optional K, k, M, G or T")
    digits, suffix = match.groups()
    return int(digits) * _SUFFIXES[suffix]


def _parse_compression(spec: str, part: str) -> tuple[str, str | None]:
    """``part`` without its ``@wire`` suffix, and the wire (``None`` without one)."""
    rest, at, wire = part.partition("@")
    if not at:
        return part, None
    if wire not in COMPRESSIONS:
        raise ValueError(
            f"all_reduce_spec {spec!r} contains unknown compression {wire!r} in {part!r}; "
            f"known: {', '.join(COMPRESSIONS)}"
        )
    return rest, wire


def _parse_alg_spec(spec: str, part: str) -> tuple[str, int, str | None]:
    if not part:
        raise ValueError(f"all_reduce_spec {spec!r} has an empty algorithm part")
    part, wire = _parse_compression(spec, part)
    name, hash_mark, shards_text = part.partition("#")
    try:
        info = get_algorithm(name)
    except ValueError as err:
        raise ValueError(f"all_reduce_spec {spec!r} contains invalid algorithm {name!r}: {err}") from None
    if not hash_mark:
        return name, 1, wire
    if not shards_text:
        raise ValueError(f"all_reduce_spec {spec!r}: shard count missing after '#' in {part!r}")
    if _POSITIVE_INT.fullmatch(shards_text) is None:
        raise ValueError(f"all_reduce_spec {spec!r} contains non-integer shards {shards_text!r} in {part!r}")
    shards = int(shards_text)
    if shards < 1:
        raise ValueError(f"all_reduce_spec {spec!r}: shard count must be at least 1 in {part!r}")
    if shards > 1 and not info.takes_shards:
        raise ValueError(f"all_reduce_spec {spec!r}: algorithm {name!r} takes no shard count ({part!r})")
    return name, shards, wire


def parse_all_reduce_spec(all_reduce_spec: str) -> list[AllReduceSpecTuple]:
    """Parses a spec string into one :class:`AllReduceSpecTuple` per size range.

    The last tuple has ``limit == -1`` (no upper bound).

    Raises:
        TypeError: the spec is not a string.
        ValueError: the spec is malformed; the message names the spec and the part.
    """
    if not isinstance(all_reduce_spec, str):
        raise TypeError(f"all_reduce_spec must be a str, got {type(all_reduce_spec).__name__}")
    spec = all_reduce_spec
    if not spec:
        raise ValueError("all_reduce_spec is empty: expected e.g. 'xring' or 'pscpu:2k:xring'")
    parts = spec.split(":")
    if len(parts) % 2 == 0:
        raise ValueError(
            f"all_reduce_spec {spec!r} is not well formed: {len(parts)} ':'-separated parts, "
            "expected alg(:limit:alg)*"
        )
    result = []
    previous = None
    for i in range(0, len(parts), 2):
        alg, shards, wire = _parse_alg_spec(spec, parts[i])
        if i + 1 < len(parts):
            text = parts[i + 1]
            try:
                limit = parse_general_int(text)
            except ValueError:
                raise ValueError(f"all_reduce_spec {spec!r} contains non-integer range {text!r}") from None
            if previous is not None and limit <= previous:
                raise ValueError(
                    f"all_reduce_spec {spec!r}: range limit {text!r} ({limit}) does not exceed "
                    f"the previous limit ({previous})"
                )
            previous = limit
        else:
            limit = UNLIMITED
        result.append(AllReduceSpecTuple(alg=alg, shards=shards, limit=limit, compression=wire))
    return result


def _format_limit(limit: int) -> str:
    for suffix, factor in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("k", 1024)):
        if limit >= factor and limit % factor == 0:
            return f"{limit // factor}{suffix}"
    return str(limit)


def validate_spec_tuples(tuples: Iterable[AllReduceSpecTuple | Sequence]) -> list[AllReduceSpecTuple]:
    """Checks spec tuples against the parser's rules and returns them as
    :class:`AllReduceSpecTuple`.

    Raises:
        TypeError: a tuple is not a sequence of three fields (or four, with a compression).
        ValueError: the tuples do not describe a valid spec (unknown algorithm, a shard
            count below 1, limits that do not increase, a last limit other than -1, or
            an unknown compression).
    """
    items = []
    for t in tuples:
        if isinstance(t, str) or not isinstance(t, Sequence) or len(t) not in (3, 4):
            raise TypeError(f"a spec tuple must be (alg, shards, limit), got {t!r}")
        items.append(AllReduceSpecTuple(*t))
    if not items:
        raise ValueError("a spec needs at least one (alg, shards, limit) tuple, got none")
    for i, (alg, shards, limit, wire) in enumerate(items):
        info = get_algorithm(alg)
        if wire is not None:
            check_choice(f"the compression of spec tuple {items[i]}", wire, COMPRESSIONS)
        check_int(f"the shards of spec tuple {items[i]}", shards, minimum=1)
        if shards > 1 and not info.takes_shards:
            raise ValueError(f"spec tuple {items[i]}: algorithm {alg!r} takes no shard count")
        if i == len(items) - 1:
            if limit != UNLIMITED:
                raise ValueError(f"spec tuple {items[i]}: the last limit must be -1 (no limit)")
            continue
        check_int(f"the limit of spec tuple {items[i]}", limit, minimum=0)
        if i > 0 and limit <= items[i - 1].limit:
            raise ValueError(f"spec tuple {items[i]}: limits must increase")
    return items


def format_all_reduce_spec(tuples: Iterable[AllReduceSpecTuple | Sequence]) -> str:
    """Formats spec tuples as a string that :func:`parse_all_reduce_spec` reads back.

    Raises:
        TypeError, ValueError: as :func:`validate_spec_tuples`.
    """
    pieces = []
    for alg, shards, limit, wire in validate_spec_tuples(tuples):
        text = alg if shards == 1 else f"{alg}#{shards}"
        pieces.append(text if wire is None else f"{text}@{wire}")
        if limit != UNLIMITED:
            pieces.append(_format_limit(limit))
    return ":".join(pieces)


def select_spec_tuple(spec: Sequence[AllReduceSpecTuple], num_elements: int) -> AllReduceSpecTuple:
    """The tuple whose range holds a tensor of ``num_elements`` elements."""
    for item in spec:
        if item.limit == UNLIMITED or num_elements <= item.limit:
            return item
    raise ValueError(f"spec {list(spec)} has no range for {num_elements} elements")


def check_spec(spec: Any) -> list[Any]:
    """The spec tuples of ``spec``: a spec string or a sequence of spec tuples.

    Raises:
        TypeError: ``spec`` is neither.
        ValueError: the spec is malformed.
    """
    if isinstance(spec, str):
        return parse_all_reduce_spec(spec)
    if not isinstance(spec, Sequence):
        raise TypeError(
            f"spec must be a str or a list of AllReduceSpecTuple, got {type(spec).__name__}: {spec!r}"
        )
    return validate_spec_tuples(spec)
