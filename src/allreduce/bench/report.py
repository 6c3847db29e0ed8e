"""Turning results into the table, the summary and the JSON document.

The table is made one case at a time (:func:`format_rows`), so that the command can
print each case's rows as soon as it is measured. A row keeps a skip or error reason to
one compact line; the summary lists every failure with its whole message.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from allreduce.measure.contenders import FLOOR, OURS, PEER
from allreduce.measure.driver import Result

__all__ = [
    "format_failures",
    "format_header",
    "format_number",
    "format_rows",
    "format_summary",
    "format_table",
    "peer_ratio",
    "to_json",
]

_HEADER = (
    f"{'size(B)':>12} {'count':>11} {'type':>8}  {'name':<24} {'compression':<11} {'time(us)':>11} "
    f"{'algbw(GB/s)':>11} {'busbw(GB/s)':>11} {'max-err':>9} {'bound':>9} {'#wrong':>7} {'vs-peer':>8}"
)
# The longest skip or error reason a row shows; the summary has the whole text.
_ROW_REASON_CHARS = 100


def format_number(value: float, decimals: int = 3) -> str:
    """``value`` with ``decimals`` decimals from 1 up, 3 significant digits below 1
    (``0.0123``, ``0.000419``, ``4.19e-05``), so that a small bandwidth never shows as
    ``0.000``; ``-`` for NaN."""
    if math.isnan(value):
        return "-"
    if value == 0 or abs(value) >= 1:
        return f"{value:.{decimals}f}"
    return f"{value:.3g}"


def _fastest(results: Sequence[Result], kind: str) -> Result | None:
    timed = [r for r in results if r.kind == kind and r.timed and r.ok]
    return min(timed, key=lambda r: r.time_s, default=None)


def peer_ratio(result: Result, results: Sequence[Result]) -> float:
    """``result``'s median time over the fastest peer's on the same case (NaN if none)."""
    peer = _fastest(results, PEER)
    if peer is None or not result.timed:
        return float("nan")
    return result.time_s / peer.time_s


def _by_case(results: Sequence[Result]) -> list[list[Result]]:
    groups: dict[Any, list[Result]] = {}
    for r in results:
        groups.setdefault(r.case, []).append(r)
    return list(groups.values())


def _compact(reason: str) -> str:
    lines = reason.strip().splitlines() or [""]
    text = lines[0]
    if len(text) > _ROW_REASON_CHARS or len(lines) > 1:
        text = text[:_ROW_REASON_CHARS].rstrip() + " ..."
    return text


def format_header(title: str = "") -> str:
    """The title and column header lines of the table."""
    lines = [f"# {title}"] if title else []
    return "\n".join([*lines, "#", "# " + _HEADER])


def _row(r: Result, group: Sequence[Result]) -> str:
    case = r.case
    # A spec's row names the spec; its compression has a column of its own.
    name = r.spec if r.kind == OURS and r.spec else r.name
    if r.resolved is not None:
        name = f"{name}={r.resolved}"
    head = f"  {case.nbytes:>12} {case.count:>11} {case.dtype:>8}  {name:<24} {r.compression:<11}"
    if r.skipped is not None:
        mark = "NOT RUN:" if r.failed else "skipped:"
        return f"{head} {mark:>11} {_compact(r.skipped)}"
    if r.error is not None and not r.timed:
        return f"{head} {'ERROR:':>11} {_compact(r.error)}"
    ratio = peer_ratio(r, group) if r.kind == OURS else float("nan")
    ratio_text = "-" if math.isnan(ratio) else f"{ratio:.2f}x"
    row = (
        f"{head} {format_number(r.time_s * 1e6, 1):>11} {format_number(r.algbw):>11} "
        f"{format_number(r.busbw):>11} {r.max_error:>9.3g} {r.bound:>9.3g} "
        f"{r.wrong + r.replica_mismatch:>7} {ratio_text:>8}"
    )
    if r.error is not None:
        row += f"  ERROR: {_compact(r.error)}"
    return row


def format_rows(group: Sequence[Result]) -> str:
    """The table rows of one case's results."""
    return "\n".join(_row(r, group) for r in group)


def format_table(results: Sequence[Result], *, title: str = "") -> str:
    """The nccl-tests style table: one row per contender and case."""
    return "\n".join([format_header(title), *(format_rows(g) for g in _by_case(results))])


def _fastest_lines(results: Sequence[Result]) -> list[str]:
    lines = ["#", "# Fastest per size (median time; ratios are time over time, below 1 is faster):"]
    for group in _by_case(results):
        ours, peer, floor = (_fastest(group, k) for k in (OURS, PEER, FLOOR))
        parts = [f"{group[0].case.name:>12}"]
        if ours is not None:
            parts.append(f"ours: {ours.label} {ours.time_s * 1e6:.1f} us")
        if peer is not None:
            parts.append(f"best peer: {peer.name} {peer.time_s * 1e6:.1f} us")
            if ours is not None:
                parts.append(f"ours/peer {ours.time_s / peer.time_s:.2f}x")
        if floor is not None and ours is not None:
            parts.append(f"ours/{floor.name} {ours.time_s / floor.time_s:.2f}x")
        if len(parts) == 1:
            parts.append("no correct timed row")
        lines.append("#   " + " | ".join(parts))
    return lines


def _pair_lines(results: Sequence[Result]) -> list[str]:
    pairs = []
    for group in _by_case(results):
        by_spec = {
            r.spec: r for r in group if r.kind == OURS and r.timed and r.ok and r.compression == "none"
        }
        for r in group:
            mine = by_spec.get(r.same_as) if r.same_as else None
            if r.timed and r.ok and mine is not None:
                ratio = mine.time_s / r.time_s
                pairs.append(f"#   {group[0].case.name:>12} {mine.name:>10} / {r.name:<16} {ratio:6.2f}x")
    if pairs:
        pairs.insert(0, "# Same algorithm as TensorFlow's builder (ours / theirs, median time):")
    return pairs


def _failure_reason(r: Result) -> str:
    if r.error is not None:
        return f"error: {r.error}"
    if r.skipped is not None:
        return f"asked for, did not run: {r.skipped}"
    if r.compression != "none":
        return (
            f"{r.wrong} element(s) beyond the error bound (largest error {r.max_error:g}, bound up to "
            f"{r.bound:g}), {r.replica_mismatch} differing between replicas"
        )
    return f"{r.wrong} wrong element(s), {r.replica_mismatch} differing between replicas"


def format_failures(results: Sequence[Result]) -> list[str]:
    """Each failed contender once, with the cases it failed on and the whole reason."""
    seen: dict[tuple[str, str], list[str]] = {}
    for r in results:
        if r.failed:
            seen.setdefault((r.name, _failure_reason(r)), []).append(r.case.name)
    lines = []
    for (name, reason), case_names in seen.items():
        text = reason.strip().splitlines() or [""]
        lines.append(f"#   {name} ({', '.join(case_names)}): {text[0]}")
        lines.extend(f"#       {line}" for line in text[1:])
    return lines


def format_summary(results: Sequence[Result], *, interrupted: bool = False) -> str:
    """The fastest spec and peer per case, each same-algorithm pairing, and the verdict:
    every failure with its whole reason, or that every result was exact."""
    lines = _fastest_lines(results) + _pair_lines(results)
    if interrupted:
        lines.append("# INTERRUPTED: the table holds the sizes measured before Ctrl-C.")
    failures = format_failures(results)
    if failures:
        contenders = len({r.name for r in results if r.failed})
        lines.append(
            f"# FAILED: {contenders} contender(s) with wrong results, errors, or asked for and not run:"
        )
        lines.extend(failures)
    elif not any(r.timed for r in results):
        lines.append("# Nothing was measured.")
    elif any(r.compression != "none" for r in results):
        lines.append(
            "# All results exact, compressed ones within their error bound, and identical on every "
            "device (#wrong 0)."
        )
    else:
        lines.append("# All results exact and identical on every device (#wrong 0).")
    return "\n".join(lines)


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _json_row(r: Result, group: Sequence[Result]) -> dict[str, Any]:
    return {
        "case": r.case.name,
        "size_bytes": r.case.nbytes,
        "count": r.case.count,
        "tensors": len(r.case.shapes),
        "dtype": r.case.dtype,
        "name": r.name,
        "kind": r.kind,
        "spec": r.spec,
        "resolved": r.resolved or r.spec,
        "same_as": r.same_as,
        "required": r.required,
        "ok": r.ok,
        "num_devices": r.num_devices,
        "time_us": _number(r.time_s * 1e6),
        "algbw_gbps": _number(r.algbw),
        "busbw_gbps": _number(r.busbw),
        "compression": r.compression,
        "wrong": r.wrong,
        "replica_mismatch": r.replica_mismatch,
        "max_error": _number(r.max_error),
        "bound": r.bound,
        "vs_best_peer": _number(peer_ratio(r, group)) if r.kind == OURS else None,
        "skipped": r.skipped,
        "error": r.error,
        "samples_us": [s * 1e6 for s in r.samples_s],
    }


def to_json(
    results: Sequence[Result],
    *,
    options: dict[str, Any],
    devices: Sequence[str],
    versions: dict[str, str],
    interrupted: bool = False,
) -> dict[str, Any]:
    """A JSON-ready document: machine, versions, options, devices and every sample."""
    return {
        "tool": "allreduce-bench",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "versions": versions,
        "options": options,
        "devices": list(devices),
        "results": [_json_row(r, group) for group in _by_case(results) for r in group],
        "interrupted": interrupted,
        "ok": not interrupted and all(r.ok for r in results),
    }
