"""``allreduce-bench --ray ADDRESS --workers N --devices K`` measures and tunes on Ray
actors, joined to the test process's Ray, as ``--workers`` does on local processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.multiworker, pytest.mark.timeout(600)]

SMALL = ["--min-bytes", "4K", "--max-bytes", "4K", "--warmup", "0", "--iters", "2", "--no-progress"]


def _bench(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ALLREDUCE_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "allreduce.bench", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)


def test_bench_measures_exact_sums_on_ray_actors(ray_address: str, tmp_path: Path) -> None:
    args = ["--ray", ray_address, "--workers", "2", "--devices", "2", "--specs", "pscpu/pscpu,xring"]
    result = _bench([*args, "--no-peers", "--json", str(tmp_path / "out.json"), *SMALL], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads((tmp_path / "out.json").read_text())
    rows = document["results"]
    assert {r["name"] for r in rows} == {"pscpu/pscpu", "xring"}
    assert all(r["ok"] and r["wrong"] == 0 and r["replica_mismatch"] == 0 for r in rows), rows
    assert [d.rpartition("/task:")[2] for d in document["devices"]] == [
        "0/device:CPU:0",
        "0/device:CPU:1",
        "1/device:CPU:0",
        "1/device:CPU:1",
    ]


def test_bench_tunes_on_ray_actors(ray_address: str, tmp_path: Path) -> None:
    args = ["--ray", ray_address, "--workers", "2", "--devices", "1", "--tune", "--tune-budget", "20"]
    result = _bench([*args, "--specs", "pscpu/pscpu,xring", *SMALL], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pscpu/pscpu" in result.stdout or "xring" in result.stdout
