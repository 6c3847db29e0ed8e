"""Fails when an ``allreduce-bench --json`` run is slower than a stored baseline.

    python tools/bench_json_gate.py BASELINE.json NOW.json [--max-slowdown 25]

Each contender at each size present in both runs with a median time is compared: the
gate fails (exit 1) when any is more than ``--max-slowdown`` percent slower than in the
baseline, or when a contender that ran in the baseline no longer runs. Without the
baseline file it prints a warning and exits 0 (commit NOW.json as the baseline to turn
the gate on). Bad input exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _times(doc: dict[str, Any]) -> dict[tuple[str, str], float | None]:
    return {
        (row["case"], row["name"]): row.get("time_us")
        for row in doc.get("results", [])
        if not row.get("skipped")
    }


def compare(baseline: dict[str, Any], now: dict[str, Any], max_slowdown: float) -> list[str]:
    """One line per regression (empty: none)."""
    before, after = _times(baseline), _times(now)
    regressions = []
    for key, old in sorted(before.items()):
        if old is None or key not in after:
            continue
        new = after[key]
        if new is None:
            regressions.append(f"{key[1]} at {key[0]}: ran in the baseline ({old:.1f} us), fails now")
        elif new > old * (1 + max_slowdown / 100):
            regressions.append(
                f"{key[1]} at {key[0]}: {new:.1f} us against {old:.1f} us (+{100 * (new / old - 1):.0f} %)"
            )
    return regressions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("now", type=Path)
    parser.add_argument("--max-slowdown", type=float, default=25.0, help="percent (default 25)")
    args = parser.parse_args(argv)
    if not args.baseline.exists():
        print(f"::warning::no baseline at {args.baseline}: recording only; commit {args.now} there to gate")
        return 0
    try:
        baseline, now = (json.loads(p.read_text()) for p in (args.baseline, args.now))
    except (OSError, ValueError) as err:
        print(f"bench_json_gate: {err}", file=sys.stderr)
        return 2
    regressions = compare(baseline, now, args.max_slowdown)
    for line in regressions:
        print(f"slower: {line}")
    compared = len(set(_times(baseline)) & set(_times(now)))
    print(f"{compared} contender-sizes compared, {len(regressions)} slower than {args.max_slowdown:g} %")
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
