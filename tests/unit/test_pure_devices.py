"""Device names: every accepted form, the printed form, worker prefixes, grouping and errors."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from allreduce.planning.devices import (
    DeviceName,
    build_all_reduce_device_prefixes,
    check_device_names,
    group_by_worker,
    group_device_names,
    other_cpu_of_worker,
    parse_device_name,
    shares_memory,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("/job:worker/replica:1/task:3/device:GPU:2", DeviceName("worker", 1, 3, "GPU", 2)),
        ("/job:ps/task:0/device:CPU:0", DeviceName("ps", None, 0, "CPU", 0)),
        ("job:ps/task:1", DeviceName("ps", None, 1)),
        ("/job:localhost/replica:0/task:0/", DeviceName("localhost", 0, 0)),
        ("/device:GPU:*", DeviceName(device_type="GPU")),
        ("/gpu:*", DeviceName(device_type="GPU")),
        ("/gpu:7", DeviceName(device_type="GPU", index=7)),
        ("/device:cpu:3", DeviceName(device_type="CPU", index=3)),
        ("/device:XLA_CPU:1", DeviceName(device_type="XLA_CPU", index=1)),
        ("/job:X", DeviceName(job="X")),
        ("/job:a-b_9", DeviceName(job="a-b_9")),
        ("/task:12", DeviceName(task=12)),
        ("/", DeviceName()),
        ("//", DeviceName()),
        ("", DeviceName()),
    ],
)
def test_parse_device_name_accepts_each_form(name: str, expected: DeviceName) -> None:
    assert parse_device_name(name) == expected


@pytest.mark.parametrize(
    "name",
    ["X", "/X/", "/job:", "/job:a b", "/replica:x", "/task:-1", "/device:GPU", "/gpu", "/cpu:1:2", "cpu:0/x"],
)
def test_parse_device_name_rejects_malformed_names_naming_them(name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"invalid device name {name!r}")):
        parse_device_name(name)


@pytest.mark.parametrize(("value", "kind"), [(None, "NoneType"), (0, "int"), (b"/cpu:0", "bytes")])
def test_parse_device_name_rejects_non_strings_with_type_error(value: object, kind: str) -> None:
    with pytest.raises(TypeError, match=re.escape(f"device name must be a str, got {kind}: {value!r}")):
        parse_device_name(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "printed"),
    [
        ("/job:worker/replica:0/task:1/device:GPU:3", "/job:worker/replica:0/task:1/device:GPU:3"),
        ("/cpu:0", "/device:CPU:0"),
        ("/gpu:*", "/device:GPU:*"),
        ("/job:ps/task:2", "/job:ps/task:2"),
        ("/replica:4", "/replica:4"),
        ("", ""),
    ],
)
def test_str_prints_the_canonical_name(name: str, printed: str) -> None:
    assert str(parse_device_name(name)) == printed


names = st.builds(
    DeviceName,
    job=st.none() | st.sampled_from(["worker", "ps", "localhost", "chief-1"]),
    replica=st.none() | st.integers(0, 9),
    task=st.none() | st.integers(0, 99),
    device_type=st.none() | st.sampled_from(["CPU", "GPU", "TPU"]),
    index=st.none() | st.integers(0, 15),
).filter(lambda d: d.device_type is not None or d.index is None)


@given(names)
def test_str_and_parse_invert_each_other(device: DeviceName) -> None:
    assert parse_device_name(str(device)) == device


def test_worker_defaults_to_the_in_process_worker() -> None:
    assert parse_device_name("/cpu:0").worker == ("localhost", 0, 0)
    assert parse_device_name("/job:ps/task:2/device:CPU:0").worker == ("ps", 0, 2)
    assert parse_device_name("/job:w/replica:3/task:1").worker == ("w", 3, 1)


def test_worker_prefix_holds_only_the_known_parts() -> None:
    assert (
        parse_device_name("/job:w/replica:0/task:1/device:GPU:0").worker_prefix == "/job:w/replica:0/task:1"
    )
    assert parse_device_name("/job:w/task:1/device:GPU:0").worker_prefix == "/job:w/task:1"
    assert parse_device_name("/replica:2/gpu:0").worker_prefix == "/replica:2"
    assert parse_device_name("/gpu:0").worker_prefix == ""


def test_with_device_names_another_device_of_the_same_worker() -> None:
    gpu = parse_device_name("/job:worker/replica:0/task:1/device:GPU:3")
    assert gpu.with_device("CPU", 0) == "/job:worker/replica:0/task:1/device:CPU:0"
    assert parse_device_name("/gpu:1").with_device("CPU", 2) == "/device:CPU:2"
    assert parse_device_name(gpu.with_device("CPU", 5)).worker == gpu.worker


def test_device_prefixes_per_task() -> None:
    assert build_all_reduce_device_prefixes("worker", 3) == [
        "/job:worker/task:0",
        "/job:worker/task:1",
        "/job:worker/task:2",
    ]
    assert build_all_reduce_device_prefixes("localhost", 1) == ["/job:localhost"]


@pytest.mark.parametrize(
    ("job", "tasks", "error", "message"),
    [
        ("worker", True, TypeError, "num_tasks must be an int, got bool: True"),
        ("worker", 2.0, TypeError, "num_tasks must be an int, got float: 2.0"),
        ("worker", "2", TypeError, "num_tasks must be an int, got str: '2'"),
        ("worker", 0, ValueError, "num_tasks must be at least 1, got 0"),
        ("worker", -3, ValueError, "num_tasks must be at least 1, got -3"),
        ("localhost", 2, ValueError, "job 'localhost' has exactly one task, got num_tasks=2"),
    ],
)
def test_device_prefixes_reject_bad_task_counts(job: str, tasks: object, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        build_all_reduce_device_prefixes(job, tasks)  # type: ignore[arg-type]


def test_group_device_names_examples() -> None:
    devices = ["a", "b", "c", "d", "e"]
    assert group_device_names(devices, 1) == [["a"], ["b"], ["c"], ["d"], ["e"]]
    assert group_device_names(devices, 5) == [devices]
    assert group_device_names(devices, 2) == [["a", "d"], ["b", "e"], ["c", "a"]]
    assert devices == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("size", "error", "message"),
    [
        (True, TypeError, "group_size must be an int, got bool: True"),
        (2.0, TypeError, "group_size must be an int, got float: 2.0"),
        ("2", TypeError, "group_size must be an int, got str: '2'"),
        (0, ValueError, "group_size must be at least 1, got 0"),
        (4, ValueError, "group_size=4 exceeds the 3 devices ['a', 'b', 'c']"),
    ],
)
def test_group_device_names_rejects_bad_sizes(size: object, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        group_device_names(["a", "b", "c"], size)  # type: ignore[arg-type]


def test_group_by_worker_keeps_first_seen_order() -> None:
    devices = [
        "/job:worker/task:1/device:CPU:0",
        "/job:worker/task:0/device:CPU:0",
        "/job:worker/task:1/device:CPU:1",
        "/job:worker/replica:0/task:0/device:CPU:1",
        "/job:ps/task:1/device:CPU:0",
    ]
    assert group_by_worker(devices) == [[0, 2], [1, 3], [4]]
    # Short names all belong to the in-process worker.
    assert group_by_worker(["/cpu:0", "/job:localhost/replica:0/task:0/device:CPU:1", "/gpu:0"]) == [
        [0, 1, 2]
    ]
    assert group_by_worker([]) == []


def test_gather_candidates_are_the_inputs_of_that_type_in_order_without_repeats() -> None:
    from allreduce.planning.devices import gather_candidates

    names = [
        f"/job:w/replica:0/task:0/device:{kind}:{i}"
        for kind, i in [("CPU", 1), ("GPU", 0), ("CPU", 1), ("CPU", 0)]
    ]
    assert gather_candidates(names, "CPU") == [names[0], names[3]]
    assert gather_candidates(names, "GPU") == [names[1]]


def test_gpu_inputs_gather_on_cpu0_of_each_worker_that_has_no_cpu_input() -> None:
    from allreduce.planning.devices import gather_candidates

    names = [
        "/job:w/replica:0/task:0/device:GPU:0",
        "/job:w/replica:0/task:1/device:GPU:0",
        "/job:w/replica:0/task:1/device:GPU:1",
        "/job:w/replica:0/task:2/device:CPU:3",
        "/job:w/replica:0/task:2/device:GPU:0",
    ]
    assert gather_candidates(names, "CPU") == [
        "/job:w/replica:0/task:2/device:CPU:3",
        "/job:w/replica:0/task:0/device:CPU:0",
        "/job:w/replica:0/task:1/device:CPU:0",
    ]
    assert gather_candidates([], "CPU") == []


def test_other_cpu_of_worker_is_the_first_other_cpu_of_the_same_worker() -> None:
    w0 = "/job:w/replica:0/task:0/device:"
    w1 = "/job:w/replica:0/task:1/device:"
    devices = [f"{w0}GPU:0", f"{w1}CPU:1", f"{w0}CPU:0", f"{w0}CPU:2", f"{w0}CPU:3"]
    assert other_cpu_of_worker(f"{w0}CPU:0", devices) == f"{w0}CPU:2"
    assert other_cpu_of_worker(f"{w0}CPU:3", devices) == f"{w0}CPU:0"
    # The target itself and another worker's CPU never count.
    assert other_cpu_of_worker(f"{w0}CPU:0", [f"{w0}CPU:0", f"{w1}CPU:0"]) is None
    assert other_cpu_of_worker(f"{w0}GPU:0", devices) is None
    assert other_cpu_of_worker(f"{w0}CPU:0", []) is None


def test_shares_memory_means_cpus_of_one_worker() -> None:
    w0 = "/job:w/replica:0/task:0/device:"
    assert shares_memory([f"{w0}CPU:0", f"{w0}CPU:1"])
    assert not shares_memory([])  # no worker at all
    assert not shares_memory([f"{w0}CPU:0", f"{w0}GPU:0"])
    assert not shares_memory([f"{w0}CPU:0", "/job:w/replica:0/task:1/device:CPU:0"])


def test_check_device_names_returns_a_new_list_of_the_names() -> None:
    names = ("/job:w/task:0/device:CPU:0", "/gpu:1", "/cpu:2")
    checked = check_device_names(names, 3, "tower")
    assert checked == list(names) and type(checked) is list
    given_list = list(names)
    copy = check_device_names(given_list, 3, "tower")
    assert copy == given_list and copy is not given_list
    assert given_list == list(names)


@pytest.mark.parametrize(("count", "what"), [(2, "tower"), (4, "tensor"), (0, "device")])
def test_check_device_names_rejects_another_count_naming_both(count: int, what: str) -> None:
    names = ["/cpu:0", "/cpu:1", "/cpu:2"]
    message = f"devices must list one device per {what}: {count}, got 3: {names!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_device_names(names, count, what)
    assert names == ["/cpu:0", "/cpu:1", "/cpu:2"]


@pytest.mark.parametrize(("value", "kind"), [("/cpu:0", "str"), (None, "NoneType"), ({"/cpu:0": 1}, "dict")])
def test_check_device_names_rejects_a_non_list_naming_it(value: object, kind: str) -> None:
    message = f"devices must be a list of device names, got {kind}: {value!r}"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        check_device_names(value, 1, "tower")


@pytest.mark.parametrize("bad", [0, 1, 2])
def test_check_device_names_parses_every_name(bad: int) -> None:
    names: list[object] = ["/cpu:0", "/cpu:1", "/cpu:2"]
    names[bad] = "/cpu:1:2"
    with pytest.raises(ValueError, match="^" + re.escape("invalid device name '/cpu:1:2'")):
        check_device_names(names, 3, "tower")
    names[bad] = None
    with pytest.raises(TypeError, match=f"^{re.escape('device name must be a str, got NoneType: None')}$"):
        check_device_names(names, 3, "tower")
