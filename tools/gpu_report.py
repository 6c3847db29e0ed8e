"""Writes ``docs/gpu-results.md`` from an ``allreduce-bench --device-type gpu --json`` run.

    python tools/gpu_report.py bench.json [--tests junit.xml] [--out docs/gpu-results.md]

The page holds the machine, the date, the versions, the devices, the GPU tests' outcome
(from pytest's JUnit XML) and the benchmark table, and checks the targets of a GPU run:

- every GPU test passes;
- every contender's results are exact on every device (``#wrong`` 0) and nothing that
  had to run failed;
- ``nccl``'s bus bandwidth is within 10 % of the NCCL peer's (``tf:NcclAllReduce``) at
  every size where both ran.

It exits 1 when a target is missed (the page is written either way), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

NCCL_TOLERANCE = 0.10


def tests_outcome(path: Path | None) -> tuple[str, bool]:
    """A line on the JUnit XML's counts, and whether every test passed (or was skipped)."""
    if path is None:
        return "GPU tests: not run", False
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    totals = {
        key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")
    }
    passed = totals["tests"] - totals["failures"] - totals["errors"] - totals["skipped"]
    ok = totals["failures"] == 0 and totals["errors"] == 0 and passed > 0
    line = (
        f"GPU tests: {passed} passed, {totals['failures']} failed, {totals['errors']} errors, "
        f"{totals['skipped']} skipped"
    )
    return line, ok


def _wrong(row: dict[str, Any]) -> int:
    return int(row.get("wrong") or 0) + int(row.get("replica_mismatch") or 0)


def check_rows(rows: list[dict[str, Any]]) -> list[str]:
    """The targets a benchmark's rows miss, one line each (empty when all are met)."""
    missed = []
    for row in rows:
        if _wrong(row):
            missed.append(f"{row['name']} at {row['case']}: {_wrong(row)} wrong results")
        if row.get("error") or (row.get("required") and row.get("skipped")):
            missed.append(f"{row['name']} at {row['case']}: {row.get('error') or row.get('skipped')}")
    by_case: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["name"]] = row
    for case, named in by_case.items():
        ours, peer = named.get("nccl", {}), named.get("tf:NcclAllReduce", {})
        mine, theirs = ours.get("busbw_gbps"), peer.get("busbw_gbps")
        if mine and theirs and mine < (1 - NCCL_TOLERANCE) * theirs:
            missed.append(
                f"nccl at {case}: busbw {mine:.3g} GB/s, below 90 % of the NCCL peer's {theirs:.3g}"
            )
    return missed


def _cell(value: Any, spec: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def render(doc: dict[str, Any], tests_line: str, missed: list[str]) -> str:
    """The Markdown page."""
    machine, versions = doc.get("machine", {}), doc.get("versions", {})
    lines = [
        "# GPU results",
        "",
        f"Run of {doc.get('created', '?')} on {machine.get('platform', '?')} "
        f"({machine.get('cpu_count', '?')} CPUs), Python {machine.get('python', '?')}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ".",
        "",
        f"Devices: {', '.join(doc.get('devices', []))}.",
        "",
        tests_line + ".",
        "",
        "Targets: " + ("all met." if not missed else "missed:"),
    ]
    lines += [f"- {m}" for m in missed]
    lines += [
        "",
        "| size | name | time (us) | busbw (GB/s) | #wrong | vs best peer |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in doc.get("results", []):
        if row.get("skipped"):
            continue
        time_us = _cell(row.get("time_us"), ".1f") if not row.get("error") else "error"
        lines.append(
            f"| {row['case']} | {row['name']} | {time_us} | {_cell(row.get('busbw_gbps'))} | "
            f"{_wrong(row)} | {_cell(row.get('vs_best_peer'), '.2f')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="allreduce-bench --json output of a GPU run")
    parser.add_argument("--tests", type=Path, default=None, help="pytest --junitxml output of pytest -m gpu")
    parser.add_argument("--out", type=Path, default=Path("docs/gpu-results.md"))
    args = parser.parse_args(argv)
    try:
        doc = json.loads(args.bench.read_text())
        tests_line, tests_ok = tests_outcome(args.tests)
    except (OSError, ValueError, ElementTree.ParseError) as err:
        print(f"gpu_report: {err}", file=sys.stderr)
        return 2
    if doc.get("tool") != "allreduce-bench":
        print(f"gpu_report: {args.bench} is not an allreduce-bench JSON document", file=sys.stderr)
        return 2
    missed = check_rows(doc.get("results", []))
    if not tests_ok:
        missed.insert(0, tests_line)
    args.out.write_text(render(doc, tests_line, missed))
    print(f"wrote {args.out}: " + ("every target met" if not missed else f"{len(missed)} target(s) missed"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
