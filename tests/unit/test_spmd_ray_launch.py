"""``spmd.launch(backend="ray")`` without actors: arguments refused before anything
starts, Ray missing named with its extra, and the driver's wait (values in task order,
the first error, a death, a peer's error traced to a death, the timeout) on a stand-in
for Ray. The actors themselves: ``tests/ray_workers/test_spmd_ray.py``."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from allreduce import WorkerError, spmd
from allreduce.cluster.ray_actors import RayWorker
from allreduce.spmd import launcher, ray_launcher
from tests.multiworker.conftest import ROOT


@pytest.fixture
def nothing_starts(monkeypatch):
    def refuse(*args, **kwargs):
        pytest.fail("a launch with bad arguments started workers")

    monkeypatch.setattr(launcher, "run_on_ray", refuse)
    monkeypatch.setattr(launcher, "_run_local", refuse)
    monkeypatch.setattr(launcher, "pickle_for_ray", refuse)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"backend": "slurm"}, ValueError, "backend must be one of \\['local', 'ray'\\], got 'slurm'"),
        ({"address": "auto"}, ValueError, "address applies to backend='ray' only, not backend='local'"),
        (
            {"gpus_per_worker": 1, "placement_strategy": "SPREAD"},
            ValueError,
            "gpus_per_worker, placement_strategy",
        ),
        ({"backend": "ray", "address": "nowhere"}, ValueError, "address must be 'auto', .*got 'nowhere'"),
        ({"backend": "ray", "cpus_per_worker": -1}, ValueError, "cpus_per_worker must be a non-negative"),
        ({"backend": "ray", "gpus_per_worker": 0.5}, TypeError, "gpus_per_worker must be an int"),
        ({"backend": "ray", "placement_strategy": "pack"}, ValueError, "placement_strategy must be one of"),
        (
            {"backend": "ray", "runtime_env": ["pip"]},
            TypeError,
            "runtime_env must be a dict or None, got list",
        ),
        ({"backend": "ray", "start_timeout_s": 0}, ValueError, "start_timeout_s must be a positive"),
        ({"backend": "ray", "timeout_s": "long"}, TypeError, "timeout_s must be a number of seconds"),
        ({"backend": "ray", "num_workers": 0}, ValueError, "num_workers must be at least 1"),
        ({"backend": "ray", "fn": "main"}, TypeError, "fn must be callable, got str"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(nothing_starts, kwargs, error, match):
    full: dict[str, Any] = {"fn": print, "num_workers": 2, **kwargs}
    env = {"env_vars": {"A": "1"}}
    if "runtime_env" not in kwargs and full.get("backend") == "ray":
        full["runtime_env"] = env
    with pytest.raises(error, match=match):
        spmd.launch(full.pop("fn"), full.pop("num_workers"), **full)
    assert env == {"env_vars": {"A": "1"}}


def test_without_ray_the_ray_backend_names_the_extra():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed
        from allreduce import spmd
        try:
            spmd.launch(print, 2, backend="ray")
        except ImportError as err:
            print(err)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert "spmd.launch(backend='ray') needs Ray" in done.stdout, done.stdout + done.stderr
    assert "pip install 'allreduce[ray]'" in done.stdout


# -- the driver's wait, on a stand-in for Ray -------------------------------------------------


class _RayError(Exception):
    pass


class _Exceptions:
    RayError = _RayError


class _Ref:
    """An object ref: ``value`` (bytes), an ``error`` to raise, or pending (neither)."""

    def __init__(self, value: bytes | None = None, error: Exception | None = None) -> None:
        self.value, self.error = value, error

    @property
    def ready(self) -> bool:
        return self.value is not None or self.error is not None


class _FakeRay:
    exceptions = _Exceptions

    def __init__(self) -> None:
        self.waited: list[float] = []

    def wait(self, refs: list[_Ref], num_returns: int, timeout: float) -> tuple[list[_Ref], list[_Ref]]:
        self.waited.append(timeout)
        ready = [r for r in refs if r.ready][:num_returns]
        return ready, [r for r in refs if r not in ready]

    def get(self, ref: _Ref, timeout: float | None = None) -> bytes:
        if ref.error is not None:
            raise ref.error
        assert ref.value is not None
        return ref.value


class _Group:
    def __init__(self, watches: list[_Ref]) -> None:
        self.ray = _FakeRay()
        self.watches = watches
        self.workers = [
            RayWorker(t, "abcdef1234567890", "10.0.0.7", 100 + t, 5000 + t) for t in range(len(watches))
        ]

    def describe(self, task: int) -> str:
        return self.workers[task].describe()


def _ok(value: Any) -> _Ref:
    return _Ref(pickle.dumps(("ok", value)))


def _raised(error: BaseException) -> _Ref:
    return _Ref(pickle.dumps(("error", (error, "Traceback: ..."))))


def _dead() -> _Ref:
    return _Ref(
        error=_RayError("The actor died unexpectedly. The actor is dead because its worker process died.")
    )


def test_values_come_back_in_task_order():
    group = _Group([_Ref(), _Ref(), _Ref()])
    assert ray_launcher._wait(group, [_ok("zero"), _ok("one"), _ok("two")], 10.0) == ["zero", "one", "two"]


def test_a_raised_error_names_the_worker_and_its_node_and_keeps_its_cause():
    group = _Group([_Ref(), _Ref()])
    with pytest.raises(WorkerError) as info:
        ray_launcher._wait(group, [_Ref(), _raised(KeyError("lost"))], 10.0)
    assert info.value.task == 1 and info.value.reason == "raised"
    assert "worker 1 (/job:worker/replica:0/task:1, node abcdef123456 at 10.0.0.7, pid 101" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)
    assert group.ray.waited == [1.0]  # a user's error waits for no death notice


def test_a_death_notice_names_the_dead_worker_with_rays_reason():
    group = _Group([_Ref(), _dead()])
    with pytest.raises(WorkerError) as info:
        ray_launcher._wait(group, [_Ref(), _Ref()], 10.0)
    assert info.value.task == 1 and info.value.reason == "exited"
    assert "died: The actor is dead because its worker process died." in str(info.value)


def test_a_call_on_a_dead_actor_names_that_worker():
    group = _Group([_Ref(), _Ref()])
    with pytest.raises(WorkerError, match=r"worker 0 .* died") as info:
        ray_launcher._wait(group, [_dead(), _Ref()], 10.0)
    assert info.value.task == 0


def test_a_peers_failed_exchange_is_blamed_on_the_worker_ray_reports_dead():
    peer_error = WorkerError("the exchange of worker 0 with task 1 failed", task=1, reason="unreachable")
    group = _Group([_Ref(), _dead()])
    with pytest.raises(WorkerError) as info:
        ray_launcher._wait(group, [_raised(peer_error), _Ref()], 10.0)
    assert info.value.task == 1 and "died" in str(info.value)


def test_a_peers_failed_exchange_without_a_death_is_raised_as_it_is():
    peer_error = WorkerError("the exchange of worker 0 with task 1 failed", task=1, reason="timeout")
    group = _Group([_Ref(), _Ref()])
    with pytest.raises(WorkerError) as info:
        ray_launcher._wait(group, [_raised(peer_error), _Ref()], 10.0)
    assert info.value.task == 0 and info.value.reason == "raised"
    assert group.ray.waited[-1] == ray_launcher._GRACE_S


def test_workers_late_past_the_timeout_are_named():
    group = _Group([_Ref(), _Ref()])
    with pytest.raises(WorkerError, match=r"workers \[1\] did not finish within 0.05 s") as info:
        ray_launcher._wait(group, [_ok(0), _Ref()], 0.05)
    assert info.value.reason == "timeout" and info.value.task is None
