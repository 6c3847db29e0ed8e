"""``ray_cluster``'s arguments are checked before Ray is imported, and without Ray the
cluster module imports and ``ray_cluster`` names the extra to install (no Ray needed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from allreduce.cluster import ray_cluster
from tests.multiworker.conftest import ROOT


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_workers": 0}, ValueError, "num_workers must be at least 1, got 0"),
        ({"num_workers": 2.0}, TypeError, "num_workers must be an int, got float: 2.0"),
        ({"devices_per_worker": 0}, ValueError, "devices_per_worker must be at least 1"),
        ({"cpus_per_worker": "1"}, TypeError, "cpus_per_worker must be a number, got str: '1'"),
        ({"cpus_per_worker": -1}, ValueError, "cpus_per_worker must be a non-negative finite number, got -1"),
        ({"gpus_per_worker": 0.5}, TypeError, "gpus_per_worker must be an int, got float: 0.5"),
        ({"cpus_per_worker": 0}, ValueError, "both 0"),
        ({"placement_strategy": "pack"}, ValueError, "placement_strategy must be one of .*got 'pack'"),
        ({"address": 6379}, TypeError, "address must be a Ray address str or None, got int: 6379"),
        ({"address": "nowhere"}, ValueError, "address must be 'auto', .*got 'nowhere'"),
        ({"runtime_env": ["pip"]}, TypeError, "runtime_env must be a dict or None, got list"),
        ({"op_timeout_s": 0}, ValueError, "op_timeout_s must be a positive"),
        ({"unresponsive_s": float("nan")}, ValueError, "unresponsive_s must be a positive"),
        ({"start_timeout_s": "soon"}, TypeError, "start_timeout_s must be a number of seconds"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(kwargs, error, match):
    full = {"num_workers": 2, **kwargs}
    env = {"env_vars": {"A": "1"}}
    if "runtime_env" not in kwargs:
        full["runtime_env"] = env
    with pytest.raises(error, match=match), ray_cluster(**full):
        pytest.fail("a cluster started with bad arguments")
    assert env == {"env_vars": {"A": "1"}}


def test_without_ray_the_module_imports_and_ray_cluster_names_the_extra():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed
        import allreduce.cluster as cluster
        assert "ray" not in [m for m in sys.modules if sys.modules[m] is not None]
        try:
            with cluster.ray_cluster(1):
                pass
        except ImportError as err:
            print(err)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert "pip install 'allreduce[ray]'" in done.stdout, done.stdout + done.stderr
