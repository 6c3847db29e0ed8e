"""What every cluster shares, without servers: the devices of one type."""

from __future__ import annotations

import pytest

from allreduce.cluster.base import Cluster

JOBS = {"worker": ["127.0.0.1:5000", "127.0.0.1:5001"]}


@pytest.fixture
def cluster():
    made = Cluster(JOBS, "worker", op_timeout_s=1.0, unresponsive_s=1.0)
    prefix = "/job:worker/replica:0/task:"
    made._devices = [
        [f"{prefix}0/device:CPU:0", f"{prefix}0/device:GPU:0", f"{prefix}0/device:GPU:1"],
        [f"{prefix}1/device:CPU:0", f"{prefix}1/device:CPU:1"],
    ]
    yield made
    made.close()


def test_devices_of_one_type_keep_one_list_per_worker_in_order(cluster):
    prefix = "/job:worker/replica:0/task:"
    assert cluster.devices_of("GPU") == [[f"{prefix}0/device:GPU:0", f"{prefix}0/device:GPU:1"], []]
    assert cluster.devices_of("CPU") == [
        [f"{prefix}0/device:CPU:0"],
        [f"{prefix}1/device:CPU:0", f"{prefix}1/device:CPU:1"],
    ]


def test_devices_of_every_type_together_are_the_devices(cluster):
    for worker, cpus, gpus in zip(cluster.devices, cluster.devices_of("CPU"), cluster.devices_of("GPU")):
        assert sorted(worker) == sorted(cpus + gpus)


def test_the_lists_returned_are_copies(cluster):
    cluster.devices_of("CPU")[0].clear()
    assert len(cluster.devices_of("CPU")[0]) == 1


@pytest.mark.parametrize(("device_type", "error"), [("TPU", ValueError), ("gpu", ValueError), (0, TypeError)])
def test_an_unknown_device_type_is_refused_naming_it(cluster, device_type, error):
    with pytest.raises(error, match="device_type must be"):
        cluster.devices_of(device_type)
