"""The CPU-side steps of the one-shot GPU run: the report, the JSON gate, the script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"


def row(case: str, name: str, time_us: float | None, busbw: float | None = None, **extra) -> dict:
    base = dict(case=case, name=name, time_us=time_us, busbw_gbps=busbw, wrong=0, replica_mismatch=0)
    base.update(required=True, skipped=None, error=None, vs_best_peer=None)
    base.update(extra)
    return base


def bench_doc(rows: list[dict]) -> dict:
    return {
        "tool": "allreduce-bench",
        "created": "2026-11-29T08:00:00+00:00",
        "machine": {"platform": "Linux-test", "cpu_count": 16, "python": "3.11.7"},
        "versions": {"allreduce": "0.1.0", "tensorflow": "2.21.0"},
        "devices": [
            "/job:localhost/replica:0/task:0/device:GPU:0",
            "/job:localhost/replica:0/task:0/device:GPU:1",
        ],
        "results": rows,
    }


JUNIT_PASSED = '<testsuites><testsuite tests="5" failures="0" errors="0" skipped="1"/></testsuites>'
JUNIT_FAILED = '<testsuites><testsuite tests="5" failures="1" errors="0" skipped="0"/></testsuites>'


def run_tool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize(
    ("rows", "junit", "missed"),
    [
        ([row("1MiB", "nccl", 10.0, 9.5), row("1MiB", "tf:NcclAllReduce", 9.8, 10.0)], JUNIT_PASSED, []),
        (
            [row("1MiB", "nccl", 12.0, 8.9), row("1MiB", "tf:NcclAllReduce", 9.8, 10.0)],
            JUNIT_PASSED,
            ["below 90 %"],
        ),
        ([row("1MiB", "xring", 10.0, 1.0, wrong=3)], JUNIT_PASSED, ["3 wrong results"]),
        (
            [row("1MiB", "psgpu#8", None, error="ValueError: psgpu#8 needs 8")],
            JUNIT_PASSED,
            ["psgpu#8 needs 8"],
        ),
        ([row("1MiB", "xring", 10.0, 1.0)], JUNIT_FAILED, ["1 failed"]),
    ],
)
def test_gpu_report_writes_the_page_and_checks_the_targets(tmp_path: Path, rows, junit, missed) -> None:
    bench, tests, out = tmp_path / "bench.json", tmp_path / "tests.xml", tmp_path / "gpu-results.md"
    bench.write_text(json.dumps(bench_doc(rows)))
    tests.write_text(junit)
    done = run_tool(str(TOOLS / "gpu_report.py"), str(bench), "--tests", str(tests), "--out", str(out))
    page = out.read_text()
    assert done.returncode == (1 if missed else 0), done.stdout + done.stderr
    assert "# GPU results" in page and "2026-11-29" in page and "Linux-test" in page and "GPU:1" in page
    assert "| 1MiB | " in page and ("all met." in page) == (not missed)
    for fragment in missed:
        assert fragment in page


def test_gpu_report_refuses_other_json(tmp_path: Path) -> None:
    bench = tmp_path / "other.json"
    bench.write_text(json.dumps({"tool": "something-else"}))
    done = run_tool(str(TOOLS / "gpu_report.py"), str(bench), "--out", str(tmp_path / "x.md"))
    assert done.returncode == 2 and "not an allreduce-bench JSON document" in done.stderr


@pytest.mark.parametrize(
    ("before", "after", "status", "fragment"),
    [
        ([row("1MiB", "xring", 100.0)], [row("1MiB", "xring", 120.0)], 0, "0 slower"),
        (
            [row("1MiB", "xring", 100.0)],
            [row("1MiB", "xring", 130.0)],
            1,
            "xring at 1MiB: 130.0 us against 100.0",
        ),
        ([row("1MiB", "xring", 100.0)], [row("1MiB", "xring", None, error="boom")], 1, "fails now"),
        ([row("1MiB", "xring", 100.0)], [row("4MiB", "xring", 999.0)], 0, "0 contender-sizes compared"),
    ],
)
def test_bench_json_gate(tmp_path: Path, before, after, status: int, fragment: str) -> None:
    base, now = tmp_path / "base.json", tmp_path / "now.json"
    base.write_text(json.dumps(bench_doc(before)))
    now.write_text(json.dumps(bench_doc(after)))
    done = run_tool(str(TOOLS / "bench_json_gate.py"), str(base), str(now))
    assert done.returncode == status and fragment in done.stdout, done.stdout


def test_bench_json_gate_without_a_baseline_records_only(tmp_path: Path) -> None:
    now = tmp_path / "now.json"
    now.write_text(json.dumps(bench_doc([])))
    done = run_tool(str(TOOLS / "bench_json_gate.py"), str(tmp_path / "missing.json"), str(now))
    assert done.returncode == 0 and "recording only" in done.stdout


def test_gpu_check_script_runs_every_step_in_order() -> None:
    env = dict(os.environ, DRY_RUN="1")
    done = subprocess.run(
        ["bash", str(TOOLS / "gpu_check.sh")], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    steps = [line.split(" (at most")[0][3:] for line in done.stdout.splitlines() if line.startswith("== ")]
    assert steps == [
        "create .venv-gpu",
        "install .[gpu,test]",
        "TensorFlow sees a GPU",
        "GPU tests",
        "allreduce-bench on GPUs",
        "docs/gpu-results.md",
        "allreduce-bench baseline",
        "pytest-benchmark GPU baseline",
    ]
    assert "pytest -m gpu" in done.stdout and "--device-type gpu" in done.stdout and "-k gpu-" in done.stdout
    limits = [
        int(line.split("at most ")[1].split("s)")[0])
        for line in done.stdout.splitlines()
        if line.startswith("== ")
    ]
    assert sum(limits) <= 15 * 60  # the worst case; a run takes about 10 minutes
