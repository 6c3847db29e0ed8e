"""Test-session set-up: logical devices before TensorFlow starts, Hypothesis profiles.

TensorFlow's runtime can be configured once per process, so this runs before any
test module imports TensorFlow: the CPU becomes 8 logical devices, and a single
physical GPU (if any) becomes several logical GPUs, so that every multi-device
algorithm runs on an ordinary machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
import tensorflow as tf
from hypothesis import HealthCheck, settings

NUM_LOGICAL_CPUS = 8
LOGICAL_GPUS_PER_GPU = int(os.environ.get("ALLREDUCE_TEST_LOGICAL_GPUS", "4"))
LOGICAL_GPU_MEMORY_MB = 2048


def _configure_devices() -> None:
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS
    )
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) == 1 and LOGICAL_GPUS_PER_GPU > 1:
        tf.config.set_logical_device_configuration(
            gpus[0],
            [tf.config.LogicalDeviceConfiguration(memory_limit=LOGICAL_GPU_MEMORY_MB)] * LOGICAL_GPUS_PER_GPU,
        )


_configure_devices()
tf.get_logger().setLevel("ERROR")

_common = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", max_examples=30, **_common)
settings.register_profile("ci", max_examples=60, derandomize=True, **_common)
settings.register_profile("deep", max_examples=2000, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


#: The longest test files and folders, run first (each file's tests keep their order):
#: ``make test`` hands whole files to its test processes in this order, and a long file
#: started last would keep one process busy while the other waits.
LONGEST_FIRST = (
    "tests/ray_workers/",
    "tests/spmd/",
    "tests/multiworker/",
    "tests/unit/test_doc_bench_commands.py",
    "tests/properties/test_algorithm_properties.py",
    "tests/unit/test_docs.py",
    "tests/unit/test_examples.py",
    "tests/unit/test_bench_interrupts.py",
)


def _rank(item: pytest.Item) -> int:
    path = str(item.fspath).replace(os.sep, "/")
    return next((i for i, part in enumerate(LONGEST_FIRST) if f"/{part}" in path), len(LONGEST_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Puts the longest files first (:data:`LONGEST_FIRST`); marks everything under
    tests/gpu as ``gpu`` and skips it where no GPU is visible."""
    items.sort(key=_rank)
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    skip = pytest.mark.skip(
        reason="no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty)"
    )
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.gpu)
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fails a run that collected no tests instead of letting it pass silently."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
