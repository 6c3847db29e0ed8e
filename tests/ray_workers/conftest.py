"""The Ray tests' one Ray instance per test process, and the Ray client.

The session's Ray instance is started in the test process and sized for the clusters
the tests start; clients (``_client.py``, in their own processes) and holder processes
join it by its address, so that no test pays for starting Ray again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CLIENT = Path(__file__).with_name("_client.py")
#: CPUs of the session's Ray instance: two clusters of 2 workers x 1 CPU and some to spare.
RAY_CPUS = 6


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """The address of this test process's Ray instance (started once, stopped at the end)."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
