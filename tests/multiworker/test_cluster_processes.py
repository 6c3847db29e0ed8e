"""local_cluster's processes: start, names, kill, the watchdog of run(), clean-up on every path.

These tests start servers without connecting this pytest process to them
(``connect=False``), so its eager context and its 8 logical CPUs stay as they are.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest
import tensorflow as tf

from allreduce.cluster import (
    LocalCluster,
    WorkerError,
    WorkerStartError,
    connection,
    local_cluster,
    supervisor,
)

from .conftest import ROOT, process_gone, wait_gone

pytestmark = [pytest.mark.multiworker, pytest.mark.timeout(180)]


def _wait_on(event: threading.Event, bound_s: float = 120.0) -> str:
    event.wait(bound_s)
    return "woken"


@pytest.fixture(scope="module")
def healthy():
    """One 2x3 cluster for the tests that leave it healthy."""
    with local_cluster(2, 3, connect=False) as cluster:
        yield cluster


def test_local_cluster_names_its_devices_and_addresses(healthy):
    assert isinstance(healthy, LocalCluster)
    assert healthy.devices == [
        [f"/job:worker/replica:0/task:{t}/device:CPU:{c}" for c in range(3)] for t in range(2)
    ]
    assert healthy.workers == 2
    assert all(a.startswith("127.0.0.1:") for a in healthy.addresses)
    assert healthy.cluster_spec == {"worker": healthy.addresses}
    assert len(set(healthy.pids)) == 2
    assert not any(process_gone(p) for p in healthy.pids)
    assert "open" in repr(healthy)


def test_run_returns_the_result_and_passes_on_the_callers_own_errors(healthy):
    assert healthy.run(lambda a, b=0: a + b, 40, b=2) == 42
    with pytest.raises(KeyError, match="mine"):
        healthy.run(lambda: {}["mine"])
    with pytest.raises(tf.errors.InvalidArgumentError):
        # A TensorFlow error with every worker healthy is the caller's own.
        healthy.run(tf.debugging.assert_equal, tf.constant(1), tf.constant(2))
    assert healthy.run(lambda: "still usable") == "still usable"
    healthy.check()


def test_kill_and_run_check_their_arguments(healthy):
    with pytest.raises(ValueError, match=r"task must be 0\.\.1, got 2"):
        healthy.kill(2)
    with pytest.raises(ValueError, match="timeout_s must be a positive"):
        healthy.run(lambda: None, timeout_s=0)


def test_worker_killed_during_a_call_is_named():
    with local_cluster(2, 1, connect=False) as cluster:
        release = threading.Event()
        threading.Timer(0.5, cluster.kill, args=(1,)).start()
        with pytest.raises(WorkerError, match=r"worker 1 \(/job:worker/replica:0/task:1.*SIGKILL") as info:
            cluster.run(_wait_on, release)
        release.set()
        assert info.value.task == 1
        assert info.value.reason == "exited"
        assert process_gone(cluster.pids[1])
        assert not process_gone(cluster.pids[0])
        with pytest.raises(WorkerError) as again:
            cluster.run(lambda: None)  # a fault is final for this cluster
        assert again.value is info.value
        pids = cluster.pids
    assert all(process_gone(p) for p in pids)


def test_frozen_worker_is_named_and_fenced():
    with local_cluster(2, 1, op_timeout_s=60, connect=False) as cluster:
        release = threading.Event()
        threading.Timer(0.5, cluster.kill, args=(0, signal.SIGSTOP)).start()
        with pytest.raises(WorkerError, match=r"worker 0 .* stopped .*killed it") as info:
            cluster.run(_wait_on, release)
        release.set()
        assert (info.value.task, info.value.reason) == (0, "stopped")
        # The watchdog killed the frozen worker, so that calls waiting on it fail.
        assert wait_gone([cluster.pids[0]], bound_s=10) == []
        assert not process_gone(cluster.pids[1])
        pids = cluster.pids
    assert all(process_gone(p) for p in pids)


def test_silent_heartbeat_means_unresponsive(monkeypatch):
    # Without /proc (other systems), a frozen worker is found by its missing heartbeat.
    monkeypatch.setattr(supervisor, "process_state", lambda pid: None)
    with local_cluster(2, 1, unresponsive_s=1.0, connect=False) as cluster:
        release = threading.Event()
        threading.Timer(0.2, cluster.kill, args=(1, signal.SIGSTOP)).start()
        with pytest.raises(WorkerError, match="no heartbeat") as info:
            cluster.run(_wait_on, release)
        release.set()
        assert (info.value.task, info.value.reason) == (1, "unresponsive")
        pids = cluster.pids
    assert all(process_gone(p) for p in pids)


def test_call_past_its_deadline_raises_without_blaming_a_worker():
    with local_cluster(1, 1, connect=False) as cluster:
        release = threading.Event()
        with pytest.raises(WorkerError, match=r"did not finish within 0\.3 s") as info:
            cluster.run(_wait_on, release, timeout_s=0.3)
        release.set()
        assert (info.value.task, info.value.reason) == (None, "timeout")
        pids = cluster.pids
    assert all(process_gone(p) for p in pids)
    assert "closed" in repr(cluster)
    cluster.close()  # a second close is harmless
    with pytest.raises(RuntimeError, match="closed"):
        cluster.run(lambda: None)


def test_tensorflow_error_from_a_lost_worker_names_it():
    with local_cluster(2, 1, connect=False) as cluster:

        def lose_worker():
            cluster.kill(1)
            raise tf.errors.UnavailableError(None, None, "Socket closed")

        with pytest.raises(WorkerError, match="worker 1") as info:
            cluster.run(lose_worker)
        assert isinstance(info.value.__cause__, tf.errors.UnavailableError)


def test_worker_that_cannot_start_reports_its_error_output():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with (
            pytest.raises(WorkerStartError, match=r"worker 0 .* could not start") as info,
            local_cluster(1, 1, connect=False, ports=[taken.getsockname()[1]]),
        ):
            pytest.fail("the cluster started on a port that is taken")
    finally:
        taken.close()
    assert info.value.task == 0
    assert info.value.reason == "start failed"
    assert "Could not start gRPC server" in info.value.stderr
    assert "Could not start gRPC server" in str(info.value)


def test_port_taken_after_it_was_picked_is_retried(monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    picks = []
    real = supervisor.free_ports

    def pick(count):
        picks.append(count)
        return [taken.getsockname()[1]] if len(picks) == 1 else real(count)

    monkeypatch.setattr(supervisor, "free_ports", pick)
    try:
        with local_cluster(1, 1, connect=False) as cluster:
            assert cluster.addresses != [f"127.0.0.1:{taken.getsockname()[1]}"]
            assert cluster.run(lambda: "up") == "up"
    finally:
        taken.close()
    assert picks == [1, 1]


def test_start_timeout_reports_the_late_worker(real_processes):
    with (
        pytest.raises(WorkerStartError, match=r"worker \d .* not ready after"),
        local_cluster(1, 1, connect=False, start_timeout_s=0.01),
    ):
        pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"workers": 0}, ValueError, "workers must be at least 1"),
        ({"workers": True}, TypeError, "workers must be an int"),
        ({"devices_per_worker": "2"}, TypeError, "devices_per_worker must be an int"),
        ({"op_timeout_s": 0}, ValueError, "op_timeout_s must be a positive"),
        ({"unresponsive_s": -1}, ValueError, "unresponsive_s"),
        ({"start_timeout_s": "soon"}, TypeError, "start_timeout_s"),
        ({"ports": [5000]}, ValueError, "ports must be 2 distinct"),
        ({"ports": [5000, 5000]}, ValueError, "ports must be 2 distinct"),
        ({"ports": [0, 5000]}, ValueError, "ports must be 2 distinct"),
        ({"ports": ["5000", "5001"]}, TypeError, r"ports\[0\] must be an int, got str"),
        ({"ports": [5000.0, 5001]}, TypeError, r"ports\[0\] must be an int, got float"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(kwargs, error, match):
    full = {"workers": 2, "devices_per_worker": 1, **kwargs}
    with pytest.raises(error, match=match), local_cluster(connect=False, **full):
        pass


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from allreduce.cluster import local_cluster
    with local_cluster(1, 1, connect=False) as cluster:
        print(" ".join(map(str, cluster.pids)), flush=True)
        time.sleep(600)
    """
)


def _start_holder() -> tuple[subprocess.Popen, list[int]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = holder.stdout.readline()
    if not line:
        holder.kill()
        pytest.fail(f"the holder process failed: {holder.communicate(timeout=30)[1][-4000:]}")
    return holder, [int(p) for p in line.split()]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_workers_exit_when_their_parent_is_killed_or_interrupted(sig):
    holder, pids = _start_holder()
    try:
        assert not any(process_gone(p) for p in pids)
        holder.send_signal(sig)
        holder.wait(timeout=60)
        assert wait_gone(pids, bound_s=60) == []
    finally:
        holder.kill()
        holder.wait()


def test_stopped_worker_dies_with_its_killed_parent():
    # The worker is stopped, so it reads neither its pipe nor its parent's pid; the
    # parent is stopped first, so its own watchdog cannot end the worker either. Only
    # the kernel's parent-death signal (PR_SET_PDEATHSIG) can.
    holder, pids = _start_holder()
    try:
        holder.send_signal(signal.SIGSTOP)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        holder.kill()
        holder.wait(timeout=60)
        assert wait_gone(pids, bound_s=10) == [], "a stopped worker outlived its parent"
    finally:
        for pid in wait_gone(pids, bound_s=0):
            os.kill(pid, signal.SIGKILL)
        holder.kill()
        holder.wait()


def test_connecting_twice_in_one_process_is_refused(monkeypatch):
    # The check comes before any server starts, so this needs no connection.
    monkeypatch.setattr(connection, "_owner", "another cluster")
    with pytest.raises(RuntimeError, match="already connected to 'another cluster'"), local_cluster(1, 1):
        pass


def test_connect_must_be_a_bool():
    with pytest.raises(TypeError, match="connect must be a bool, got int: 1"), local_cluster(1, 1, connect=1):
        pass


def _blocked_signals(thread: threading.Thread) -> set[int]:
    """The signals ``thread`` blocks, from ``/proc/self/task/<tid>/status``."""
    with open(f"/proc/self/task/{thread.native_id}/status") as status:
        mask = int(next(line for line in status if line.startswith("SigBlk:")).split()[1], 16)
    return {s for s in range(1, 65) if mask & (1 << (s - 1))}


def test_the_librarys_threads_leave_ctrl_c_to_the_main_thread():
    # Linux hands a process's SIGINT to any thread that does not block it, and a main
    # thread in time.sleep wakes only for one delivered to it: Ctrl-C then waited for the
    # sleep to end. Every thread the library starts blocks SIGINT and SIGTERM.
    with local_cluster(1, 1, connect=False) as cluster:
        cluster.run(lambda: None)
        ours = [t for t in threading.enumerate() if t.name.startswith("allreduce") and t.is_alive()]
        blocked = {t.name: _blocked_signals(t) for t in ours}
    assert {"allreduce-worker0-heartbeat", "allreduce-watchdog"} <= set(blocked), sorted(blocked)
    for name, signals in blocked.items():
        assert {signal.SIGINT, signal.SIGTERM} <= signals, f"{name} blocks only {sorted(signals)}"
