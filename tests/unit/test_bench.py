"""allreduce-bench: a smoke run of the command, its verification, and its pure helpers.

The test session already split the CPU into 8 logical devices, so the command runs
in-process and uses the first ones (it keeps an existing split).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from allreduce.bench import cases
from allreduce.bench.cli import main
from allreduce.bench.contenders import default_specs
from allreduce.bench.driver import count_wrong
from allreduce.registry import algorithm_names, get_algorithm
from tests.oracle import exact_sum

TINY_RUN = ["--quick", "--max-bytes", "4096", "--iters", "2", "--warmup", "0", "--no-progress"]


@pytest.fixture(autouse=True)
def _keep_allocator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() sets TF_CPU_ALLOCATOR_USE_BFC for the runtime it would start; keep it local.
    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "false"))


def _rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip() and not line.startswith("#")]


def test_quick_run_prints_exact_rows_for_every_spec_and_peer(tmp_path, capsys):
    report, picture = tmp_path / "r.json", tmp_path / "r.png"
    status = main([*TINY_RUN, "--json", str(report), "--plot", str(picture)])
    out = capsys.readouterr().out
    assert status == 0, out
    rows = _rows(out)
    specs = default_specs("CPU", 4)
    names = {row[3] for row in rows}
    assert set(specs) <= names
    assert {"numpy", "tf:ReductionToOneDevice", "tf:collective", "tf-v1:ring"} <= names
    timed = [row for row in rows if row[4] != "skipped:"]
    for size, count, dtype, _name, time_us, algbw, busbw, wrong, *_ in timed:
        assert dtype == "float32" and int(size) == 4 * int(count)
        assert float(time_us) > 0 and float(busbw) == pytest.approx(float(algbw) * 1.5, rel=2e-3, abs=2e-3)
        assert wrong == "0"
    assert {int(row[0]) for row in rows} == {1024, 4096}
    assert "Fastest per size" in out and "#wrong 0" in out

    document = json.loads(report.read_text())
    assert document["ok"] is True
    assert document["options"]["iters"] == 2 and document["versions"]["tensorflow"]
    assert len(document["devices"]) == 4
    ran = [r for r in document["results"] if r["skipped"] is None]
    assert {r["name"] for r in ran} >= set(specs)
    for r in ran:
        assert r["wrong"] == 0 and r["replica_mismatch"] == 0 and r["error"] is None
        assert len(r["samples_us"]) == 2
        assert r["time_us"] == pytest.approx(float(np.median(r["samples_us"])))
    ours = [r for r in ran if r["kind"] == "ours"]
    assert all(r["vs_best_peer"] > 0 for r in ours)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_spec_that_does_not_reduce_counts_wrong_elements_and_fails(tmp_path, capsys):
    report = tmp_path / "r.json"
    argv = ["--specs", "trivial", "--no-peers", *TINY_RUN, "--max-bytes", "1024"]
    status = main([*argv, "--json", str(report)])
    out = capsys.readouterr().out
    assert status == 1
    (row,) = _rows(out)
    # Each device returns its own input: every element differs from the 4-device sum
    # wherever that input is not the whole sum.
    inputs = [cases.input_pattern(256, d).astype(np.float64) for d in range(4)]
    total = exact_sum(inputs)
    want_wrong = sum(int(np.count_nonzero(x != total)) for x in inputs)
    (result,) = json.loads(report.read_text())["results"]
    assert result["wrong"] == want_wrong > 0
    assert result["replica_mismatch"] > 0
    assert int(row[7]) == want_wrong + result["replica_mismatch"]
    assert "FAILED" in out


def test_many_small_workload_reduces_a_batch_with_packing(tmp_path, capsys):
    report = tmp_path / "r.json"
    argv = ["--workload", "many-small", "--small-tensors", "12", "--small-elements", "10"]
    argv += ["--specs", "xring,pscpu#2", "--iters", "1", "--warmup", "0", "--no-progress"]
    status = main([*argv, "--pack-max-group", "5", "--json", str(report)])
    assert status == 0, capsys.readouterr().out
    document = json.loads(report.read_text())
    assert document["options"]["pack_max_bytes"] == 64 << 10
    ours = {r["name"]: r for r in document["results"] if r["kind"] == "ours"}
    assert set(ours) == {"xring", "pscpu#2"}
    assert all(r["count"] == 120 and r["tensors"] == 12 and r["wrong"] == 0 for r in ours.values())
    peers = {r["name"]: r for r in document["results"] if r["kind"] == "peer"}
    assert peers["tf:HierarchicalCopy"]["wrong"] == 0
    assert peers["tf-v1:ring"]["skipped"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--factor", "1"],
        ["--min-bytes", "2M", "--max-bytes", "1M"],
        ["--specs", "nosuchalg"],
        ["--specs", ","],
        ["--dtype", "bfloat16", "--devices", "22"],
        ["--iters", "0"],
    ],
)
def test_bad_options_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_too_many_devices_for_this_runtime_is_an_error(capsys):
    assert main(["--devices", "64", *TINY_RUN]) == 2
    assert "64" in capsys.readouterr().err


def test_default_specs_come_from_the_registry():
    specs = default_specs("CPU", 4)
    for spec in specs:
        info = get_algorithm(spec.partition("#")[0])
        assert "CPU" in info.device_types and info.reduces
    flat = [
        n for n in algorithm_names() if "CPU" in get_algorithm(n).device_types and get_algorithm(n).reduces
    ]
    assert set(flat) <= set(specs)
    assert "trivial" not in specs and "pscpu/pscpu" in specs and "xring#2" in specs
    assert not any(s.endswith("#2") for s in default_specs("CPU", 1))


def test_sweep_sizes_step_by_the_factor_and_end_at_the_maximum():
    assert cases.sweep_sizes(1024, 16 << 20, 16) == [1024, 16 << 10, 256 << 10, 4 << 20, 16 << 20]
    assert cases.sweep_sizes(1, 8, 2) == [1, 2, 4, 8]
    made = cases.sweep_cases(2, 64, 4, "float32")
    assert [c.nbytes for c in made] == [8, 32, 64]
    assert [c.name for c in made] == ["8B", "32B", "64B"]
    with pytest.raises(ValueError, match="factor"):
        cases.sweep_sizes(1, 8, 1)
    with pytest.raises(ValueError, match="exceeds"):
        cases.sweep_sizes(8, 1, 2)
    with pytest.raises(ValueError, match="dtype"):
        cases.sweep_cases(1, 8, 2, "complex64")


@pytest.mark.parametrize("dtype", sorted(cases.DTYPE_SIZES))
def test_expected_sum_is_exact_in_every_dtype_up_to_its_device_limit(dtype):
    import tensorflow as tf

    n = min(cases.max_exact_devices(dtype), 40)
    np_dtype = tf.as_dtype(dtype).as_numpy_dtype
    inputs = [cases.input_pattern(50, d, tensor=2).astype(np_dtype) for d in range(n)]
    oracle = exact_sum([x.astype(np.float64) for x in inputs])
    expected = cases.expected_sum(50, n, tensor=2)
    np.testing.assert_array_equal(expected.astype(np.float64), oracle)
    np.testing.assert_array_equal(expected.astype(np_dtype).astype(np.float64), oracle)


def test_count_wrong_sees_one_wrong_element_and_one_differing_bit():
    case = cases.Case("t", ((2, 3),), "float32")
    want = np.arange(6, dtype=np.float32)
    good = want.reshape(2, 3)
    assert count_wrong([[good], [good.copy()]], [want], case) == (0, 0)
    bad = good.copy()
    bad[1, 2] = 99
    assert count_wrong([[good], [bad]], [want], case) == (1, 1)
    signed = good.copy()
    signed[0, 0] = -0.0  # equal to the expected 0.0, but not bitwise identical
    assert count_wrong([[good], [signed]], [want], case) == (0, 1)
    nan = good.copy()
    nan[0, 1] = np.nan
    assert count_wrong([[nan]], [want], case)[0] == 1
    assert count_wrong([[good.reshape(-1)]], [want], case) == (6, 0)
    assert count_wrong([[]], [want], case) == (6, 0)


def test_workers_without_a_cluster_module_is_a_clear_error(capsys):
    if importlib.util.find_spec("allreduce.cluster") is not None:
        pytest.skip("allreduce.cluster exists: covered by the multi-worker run")
    assert main(["--workers", "2", "--devices", "2", *TINY_RUN]) == 2
    assert "allreduce.cluster" in capsys.readouterr().err


@pytest.mark.multiworker
@pytest.mark.slow
def test_workers_run_across_a_local_cluster(tmp_path):
    if importlib.util.find_spec("allreduce.cluster") is None:
        pytest.skip("allreduce.cluster is not available")
    report = tmp_path / "r.json"
    # A process that joins a cluster cannot leave it: run the command in its own process.
    argv = ["--workers", "2", "--devices", "2", *TINY_RUN, "--no-peers", "--json", str(report)]
    done = subprocess.run(
        [sys.executable, "-m", "allreduce.bench", *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(report.read_text())
    assert document["ok"] and len(document["devices"]) == 4
    assert {"/job:worker" in d for d in document["devices"]} == {True}


@pytest.mark.parametrize("witness", [False, True])
def test_run_case_checks_full_outputs_whether_or_not_timed_steps_return_them(witness):
    from allreduce.bench.contenders import Setup, SpecContender
    from allreduce.bench.driver import run_case
    from allreduce.bench.peers import NumpyFloor

    devices = tuple(f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in range(3))
    setup = Setup(devices=devices, device_type="CPU", witness=witness)
    case = cases.Case("t", ((5, 7),), "float32")
    steps = []
    results = run_case(
        case,
        [SpecContender("xring#2"), SpecContender("trivial"), NumpyFloor()],
        setup,
        warmup=1,
        iters=3,
        tick=steps.append,
    )
    good, bad, floor = results
    assert good.ok and good.wrong == 0 and len(good.samples_s) == 3
    assert floor.ok and len(floor.samples_s) == 3
    assert bad.wrong > 0 and not bad.ok
    assert sum(steps) == 3 * (1 + 1 + 3)


def test_gpu_devices_without_a_gpu_is_a_clear_error(capsys):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible")
    assert main(["--device-type", "gpu", *TINY_RUN]) == 2
    assert "no GPU" in capsys.readouterr().err


# The graph shapes behind the measured speed on CPUs (results are covered elsewhere).

CPUS = [f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in range(4)]


def _graph_ops(build):
    import tensorflow as tf

    return tf.function(build, autograph=False).get_concrete_function().graph.get_operations()


def test_a_cpu_sum_of_more_than_two_takes_no_input_from_its_own_device():
    import tensorflow as tf

    from allreduce.algorithms.base import HOP_MIN_BYTES, sum_on

    large = HOP_MIN_BYTES // 4

    def build():
        values, small = [], []
        for device in CPUS:
            with tf.device(device):
                values.append(tf.ones([large]))
                small.append(tf.ones([large - 1]))
        return (
            sum_on(values, CPUS, CPUS[0]),
            sum_on(values[:2], CPUS[:2], CPUS[0]),
            sum_on(small, CPUS, CPUS[0]),
        )

    add_ns = {(len(op.inputs), op.inputs[0].shape[0]): op for op in _graph_ops(build) if op.type == "AddN"}
    wide, narrow, small = add_ns[4, large], add_ns[2, large], add_ns[4, large - 1]
    assert wide.device == CPUS[0]
    assert all(t.op.device != CPUS[0] for t in wide.inputs)
    hops = [t.op for t in wide.inputs if t.op.type == "EnsureShape"]
    assert len(hops) == 1 and hops[0].inputs[0].op.device == CPUS[0]
    assert not any(t.op.type == "EnsureShape" for t in [*narrow.inputs, *small.inputs])


def test_aligned_splits_cut_rows_of_a_2d_view_and_others_cut_the_vector():
    import tensorflow as tf

    from allreduce.algorithms.base import aligned_split_sizes, split_on

    assert aligned_split_sizes(64, 3, 4) == [32, 16, 16]
    assert aligned_split_sizes(65, 3, 4) == [22, 22, 21]
    assert aligned_split_sizes(64, 3, 8) == [24, 24, 16]

    def build():
        with tf.device(CPUS[0]):
            value = tf.ones([64])
        return split_on(value, CPUS[0], [32, 16, 16]), split_on(value, CPUS[0], [30, 34])

    splits = [op for op in _graph_ops(build) if op.type in ("Split", "SplitV")]
    assert sorted(op.inputs[0].shape.rank for op in splits) == [1, 2]


def test_cpus_of_one_worker_concatenate_once():
    import tensorflow as tf

    from allreduce.algorithms.base import concat_each, shares_memory

    other = "/job:worker/replica:0/task:1/device:CPU:0"
    assert shares_memory(CPUS) and not shares_memory([*CPUS, other])

    def build():
        with tf.device(CPUS[0]):
            pieces = [tf.ones([8]), tf.zeros([8])]
        return concat_each([pieces] * 4, CPUS)

    assert sum(op.type == "ConcatV2" for op in _graph_ops(build)) == 1
