"""Turning results into the table, the summary and the JSON document."""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from allreduce.bench.contenders import FLOOR, OURS, PEER
from allreduce.bench.driver import Result

__all__ = ["best_peer", "format_summary", "format_table", "peer_ratio", "to_json"]

_HEADER = (
    f"{'size(B)':>12} {'count':>11} {'type':>8}  {'name':<24} {'time(us)':>11} "
    f"{'algbw(GB/s)':>11} {'busbw(GB/s)':>11} {'#wrong':>7} {'vs-peer':>8}"
)


def best_peer(results: Sequence[Result]) -> Result | None:
    """The fastest correct TensorFlow peer among ``results`` (one case), if any."""
    peers = [r for r in results if r.kind == PEER and r.timed and r.ok]
    return min(peers, key=lambda r: r.time_s, default=None)


def peer_ratio(result: Result, results: Sequence[Result]) -> float:
    """``result``'s median time over the fastest peer's on the same case (NaN if none)."""
    peer = best_peer(results)
    if peer is None or not result.timed:
        return float("nan")
    return result.time_s / peer.time_s


def _by_case(results: Sequence[Result]) -> list[list[Result]]:
    groups: dict[Any, list[Result]] = {}
    for r in results:
        groups.setdefault(r.case, []).append(r)
    return list(groups.values())


def _fmt(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def format_table(results: Sequence[Result], *, title: str = "") -> str:
    """The nccl-tests style table: one row per contender and case."""
    lines = []
    if title:
        lines.append(f"# {title}")
    lines.append("#")
    lines.append("# " + _HEADER)
    for group in _by_case(results):
        for r in group:
            case = r.case
            head = f"  {case.nbytes:>12} {case.count:>11} {case.dtype:>8}  {r.name:<24}"
            if r.skipped is not None:
                lines.append(f"{head} {'skipped:':>11} {r.skipped}")
                continue
            if r.error is not None and not r.timed:
                lines.append(f"{head} {'ERROR:':>11} {r.error}")
                continue
            ratio = peer_ratio(r, group) if r.kind == OURS else float("nan")
            ratio_text = "-" if math.isnan(ratio) else f"{ratio:.2f}x"
            wrong = r.wrong + r.replica_mismatch
            row = (
                f"{head} {_fmt(r.time_s * 1e6, '11.1f')} {_fmt(r.algbw, '11.3f')} "
                f"{_fmt(r.busbw, '11.3f')} {wrong:>7} {ratio_text:>8}"
            )
            if r.error is not None:
                row += f"  ERROR: {r.error}"
            lines.append(row)
    return "\n".join(lines)


def _fastest(results: Sequence[Result], kind: str) -> Result | None:
    timed = [r for r in results if r.kind == kind and r.timed and r.ok]
    return min(timed, key=lambda r: r.time_s, default=None)


def format_summary(results: Sequence[Result]) -> str:
    """The fastest spec and peer per case, and each same-algorithm pairing."""
    lines = ["#", "# Fastest per size (median time; ratios are time over time, below 1 is faster):"]
    for group in _by_case(results):
        case = group[0].case
        ours, peer, floor = (_fastest(group, k) for k in (OURS, PEER, FLOOR))
        parts = [f"{case.name:>12}"]
        if ours is not None:
            parts.append(f"ours: {ours.name} {ours.time_s * 1e6:.1f} us")
        if peer is not None:
            parts.append(f"best peer: {peer.name} {peer.time_s * 1e6:.1f} us")
            if ours is not None:
                parts.append(f"ours/peer {ours.time_s / peer.time_s:.2f}x")
        if floor is not None and ours is not None:
            parts.append(f"ours/{floor.name} {ours.time_s / floor.time_s:.2f}x")
        lines.append("#   " + " | ".join(parts))
    pairs = []
    for group in _by_case(results):
        by_spec = {r.spec: r for r in group if r.kind == OURS and r.timed and r.ok}
        for r in group:
            mine = by_spec.get(r.same_as) if r.same_as else None
            if r.timed and r.ok and mine is not None:
                ratio = mine.time_s / r.time_s
                pairs.append(f"#   {group[0].case.name:>12} {mine.name:>10} / {r.name:<16} {ratio:6.2f}x")
    if pairs:
        lines.append("# Same algorithm as TensorFlow's builder (ours / theirs, median time):")
        lines.extend(pairs)
    failed = [r for r in results if not r.ok]
    if failed:
        lines.append(f"# FAILED: {len(failed)} row(s) with wrong results or errors")
    else:
        lines.append("# All results exact and identical on every device (#wrong 0).")
    return "\n".join(lines)


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def to_json(results: Sequence[Result], *, options: dict[str, Any], devices: Sequence[str]) -> dict[str, Any]:
    """A JSON-ready document: machine, versions, options, devices and every sample."""
    import numpy as np

    from allreduce import __version__
    from allreduce._tf import tf

    rows = []
    for group in _by_case(results):
        for r in group:
            rows.append(
                {
                    "case": r.case.name,
                    "size_bytes": r.case.nbytes,
                    "count": r.case.count,
                    "tensors": len(r.case.shapes),
                    "dtype": r.case.dtype,
                    "name": r.name,
                    "kind": r.kind,
                    "spec": r.spec,
                    "same_as": r.same_as,
                    "num_devices": r.num_devices,
                    "time_us": _number(r.time_s * 1e6),
                    "algbw_gbps": _number(r.algbw),
                    "busbw_gbps": _number(r.busbw),
                    "wrong": r.wrong,
                    "replica_mismatch": r.replica_mismatch,
                    "vs_best_peer": _number(peer_ratio(r, group)) if r.kind == OURS else None,
                    "skipped": r.skipped,
                    "error": r.error,
                    "samples_us": [s * 1e6 for s in r.samples_s],
                }
            )
    return {
        "tool": "allreduce-bench",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "versions": {"allreduce": __version__, "tensorflow": tf.__version__, "numpy": np.__version__},
        "options": options,
        "devices": list(devices),
        "results": rows,
        "ok": all(r.ok for r in results),
    }
