"""``ray_cluster`` without connecting this process: a placement group Ray cannot place, a
worker that fails to start, and workers gone after their driver is killed with
``SIGKILL`` (arguments and Ray missing: ``tests/unit/test_ray_cluster_arguments.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from allreduce.cluster import WorkerStartError, ray_cluster
from tests.multiworker.conftest import ROOT, process_gone, wait_gone

from .conftest import RAY_CPUS

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.multiworker, pytest.mark.timeout(300)]

#: The documented bound: no server of a cluster whose driver was killed is left after 30 s.
ORPHAN_BOUND_S = 30.0


def _groups_left() -> list[str]:
    return [g for g, info in ray.util.placement_group_table().items() if info["state"] != "REMOVED"]


def _free_cpus(back_to: float = 0.0, bound_s: float = 20.0) -> float:
    """Ray's free CPUs, once at least ``back_to`` (or after ``bound_s``)."""
    deadline = time.monotonic() + bound_s
    while ray.available_resources().get("CPU", 0) < back_to and time.monotonic() < deadline:
        time.sleep(0.1)
    return ray.available_resources().get("CPU", 0)


@pytest.mark.parametrize(
    ("kwargs", "asked"),
    [
        ({"num_workers": 3, "cpus_per_worker": 4}, "3 workers x {4 CPU, 0 GPU} (12 CPU, 0 GPU in all"),
        ({"num_workers": 1, "gpus_per_worker": 1}, "1 workers x {1 CPU, 1 GPU} (1 CPU, 1 GPU in all"),
    ],
)
def test_placement_group_that_cannot_be_placed_names_asked_and_available(ray_address, kwargs, asked):
    before = set(_groups_left())  # another test's driver may hold a group meanwhile
    with pytest.raises(WorkerStartError) as info, ray_cluster(**kwargs, start_timeout_s=1.0):
        pytest.fail("the cluster started")
    message = str(info.value)
    assert asked in message
    assert f"the Ray cluster has {RAY_CPUS} CPU, 0 GPU" in message
    assert (info.value.task, info.value.reason) == (None, "start failed")
    assert set(_groups_left()) <= before
    assert ray.is_initialized()  # a Ray the caller started stays


def test_worker_that_cannot_start_sends_its_error_to_the_driver(ray_address, tmp_path):
    broken = tmp_path / "tensorflow"
    broken.mkdir()
    (broken / "__init__.py").write_text('raise RuntimeError("tensorflow is broken on this node")\n')
    env = {"env_vars": {"PYTHONPATH": f"{tmp_path}:{ROOT / 'src'}"}}
    groups, free = set(_groups_left()), _free_cpus()
    with (
        pytest.raises(WorkerStartError, match=r"worker \d .* could not start") as info,
        ray_cluster(2, runtime_env=env, start_timeout_s=120),
    ):
        pytest.fail("the cluster started")
    assert "tensorflow is broken on this node" in str(info.value)
    assert "tensorflow is broken on this node" in info.value.stderr
    assert info.value.reason == "start failed" and info.value.task in (0, 1)
    assert set(_groups_left()) <= groups
    assert _free_cpus(back_to=free) >= free  # the actors are gone


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from allreduce.cluster import ray_cluster
    address = sys.argv[1] if len(sys.argv) > 1 else None
    with ray_cluster(1, 1, address=address, start_timeout_s=120) as cluster:
        print(" ".join(map(str, cluster.pids)), flush=True)
        time.sleep(600)
    """
)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture(scope="module")
def holders(ray_address):
    """Two drivers holding a 1-worker cluster: one joined to this process's Ray, one with its own."""
    started = {
        "joined": subprocess.Popen(
            [sys.executable, "-c", _HOLDER, ray_address], cwd=ROOT, stdout=subprocess.PIPE, text=True
        ),
        "own Ray": subprocess.Popen(
            [sys.executable, "-c", _HOLDER], cwd=ROOT, stdout=subprocess.PIPE, text=True
        ),
    }
    yield started
    for holder in started.values():
        holder.kill()
        holder.wait()
        holder.stdout.close()


@pytest.mark.parametrize("which", ["joined", "own Ray"])
def test_no_server_outlives_a_driver_killed_with_sigkill(holders, which):
    holder = holders[which]
    line = holder.stdout.readline()
    assert line, f"the {which} holder did not start its cluster"
    servers = [int(p) for p in line.split()]
    # With its own Ray, everything the driver started (GCS, raylet, the actors) must end.
    processes = _descendants(holder.pid) if which == "own Ray" else servers
    assert set(servers) <= set(processes)
    assert not any(process_gone(p) for p in servers)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    assert wait_gone(processes, ORPHAN_BOUND_S) == [], f"left running after the {which} driver was killed"
