"""allreduce-bench in this process: runs, their verdicts, and the driver.

The test session already split the CPU into 8 logical devices, so the command runs
in-process and uses the first ones (it keeps an existing split).
"""

from __future__ import annotations

import json
import logging
import os
import sys

import numpy as np
import pytest

from allreduce.bench.cli import main
from allreduce.measure import cases
from allreduce.measure.contenders import Contender, Setup, SpecContender, default_specs
from allreduce.measure.driver import run_case
from allreduce.measure.peers import NumpyFloor
from allreduce.planning.registry import algorithm_names, get_algorithm
from tests import forkserver
from tests.oracle import exact_sum
from tests.strategies import cpu

TINY_RUN = ["--quick", "--max-bytes", "4096", "--iters", "2", "--warmup", "0", "--no-progress"]
CPUS = [cpu(i) for i in range(8)]


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
    assert out.startswith("# allreduce-bench: 4 x CPU")
    rows = _rows(out)
    specs = default_specs(CPUS[:4])
    names = {row[3] for row in rows}
    assert set(specs) <= names
    assert {"numpy", "tf:ReductionToOneDevice", "tf:collective", "tf-v1:ring"} <= names
    timed = [row for row in rows if row[5] != "skipped:"]
    for size, count, dtype, _name, compression, time_us, algbw, busbw, max_err, bound, wrong, *_ in timed:
        assert compression == "none" and max_err == bound == "0"
        assert dtype == "float32" and int(size) == 4 * int(count)
        assert float(time_us) > 0 and float(busbw) == pytest.approx(float(algbw) * 1.5, rel=1e-2)
        assert float(algbw) == pytest.approx(int(size) / float(time_us) / 1e3, rel=2e-2)
        assert wrong == "0"
    assert {int(row[0]) for row in rows} == {1024, 4096}
    assert "Fastest per size" in out and "#wrong 0" in out

    document = json.loads(report.read_text())
    assert document["ok"] is True and document["interrupted"] is False
    assert document["options"]["iters"] == 2 and document["versions"]["tensorflow"]
    assert len(document["devices"]) == 4
    ran = [r for r in document["results"] if r["skipped"] is None]
    assert {r["name"] for r in ran} >= set(specs)
    for r in ran:
        assert r["wrong"] == 0 and r["replica_mismatch"] == 0 and r["error"] is None and r["ok"]
        assert len(r["samples_us"]) == 2
        assert r["time_us"] == pytest.approx(float(np.median(r["samples_us"])))
    ours = [r for r in ran if r["kind"] == "ours"]
    assert all(r["vs_best_peer"] > 0 and r["required"] for r in ours)
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
    assert int(row[10]) == want_wrong + result["replica_mismatch"]
    assert "FAILED" in out and "All results exact" not in out


def test_requested_specs_that_cannot_run_fail_the_run_with_their_whole_reason(tmp_path, capsys):
    import tensorflow as tf

    import allreduce

    values = []
    for device in CPUS[:4]:
        with tf.device(device):
            values.append(tf.ones([256]))
    with pytest.raises(ValueError) as raised:
        allreduce.all_reduce(values, "pscpu#8", devices=CPUS[:4])
    reason = str(raised.value)
    assert len(reason) > 200  # longer than a row shows

    report = tmp_path / "r.json"
    argv = ["--specs", "pscpu#8,nccl", "--peers", "numpy", *TINY_RUN, "--max-bytes", "1024"]
    status = main([*argv, "--json", str(report)])
    out = capsys.readouterr().out
    assert status == 1, out
    summary = out[out.index("# Fastest") :]
    assert reason in summary and "nccl runs on GPU only" in summary
    assert "All results exact" not in out and "FAILED: 2 contender(s)" in out
    document = json.loads(report.read_text())
    assert document["ok"] is False
    by_name = {r["name"]: r for r in document["results"]}
    assert by_name["pscpu#8"]["skipped"] == f"ValueError: {reason}"
    assert by_name["numpy"]["ok"] and by_name["numpy"]["samples_us"]


def test_benign_peer_skips_leave_the_status_zero_but_a_named_peer_must_run(capsys):
    # Three devices: TensorFlow's recursive halving-doubling needs a power of two, and
    # HierarchicalCopy (two equal halves) would leave a device out of every sum.
    argv = ["--devices", "3", "--specs", "xring", *TINY_RUN, "--max-bytes", "1024"]
    assert main(argv) == 0, capsys.readouterr().out
    rows = {row[3]: row for row in _rows(capsys.readouterr().out)}
    assert rows["tf-v1:rechd"][5] == "skipped:" and rows["tf:HierarchicalCopy"][5] == "skipped:"
    assert rows["tf:ReductionToOneDevice"][10] == "0"

    assert main([*argv, "--peers", "tf-v1:rechd,numpy"]) == 1
    out = capsys.readouterr().out
    assert "tf-v1:rechd (1KiB): asked for, did not run: needs a power-of-two" in out


def test_one_device_runs_every_default_contender(capsys):
    status = main(["--devices", "1", *TINY_RUN, "--max-bytes", "1024"])
    out = capsys.readouterr().out
    assert status == 0, out
    rows = {row[3]: row for row in _rows(out)}
    for name in ("tf:ReductionToOneDevice", "tf:collective", *default_specs(CPUS[:1])):
        assert rows[name][10] == "0", rows[name]
    assert rows["tf:HierarchicalCopy"][5] == "skipped:"  # two halves of one device


def test_many_small_workload_reduces_a_batch_with_packing(tmp_path, capsys):
    report, picture = tmp_path / "r.json", tmp_path / "r.svg"
    argv = ["--workload", "many-small", "--small-tensors", "12", "--small-elements", "10"]
    argv += ["--specs", "xring,pscpu#2", "--iters", "1", "--warmup", "0", "--no-progress"]
    status = main([*argv, "--pack-max-group", "5", "--json", str(report), "--plot", str(picture)])
    out = capsys.readouterr().out
    assert status == 0, out
    document = json.loads(report.read_text())
    assert document["options"]["pack_max_bytes"] == 64 << 10
    ours = {r["name"]: r for r in document["results"] if r["kind"] == "ours"}
    assert set(ours) == {"xring", "pscpu#2"}
    assert all(r["count"] == 120 and r["tensors"] == 12 and r["wrong"] == 0 for r in ours.values())
    peers = {r["name"]: r for r in document["results"] if r["kind"] == "peer"}
    assert peers["tf:HierarchicalCopy"]["wrong"] == 0
    assert peers["tf-v1:ring"]["skipped"]
    # 480 bytes per device: bandwidths far below 0.001 GB/s still show their digits.
    for row in _rows(out):
        if row[5] not in ("skipped:", "NOT", "ERROR:"):
            assert float(row[6]) > 0 and float(row[7]) > 0, row
    assert picture.read_text().lstrip().startswith("<?xml") and "<svg" in picture.read_text()


def test_an_unknown_model_is_a_usage_error_before_anything_runs(capsys):
    assert main(["--workload", "model", "--model", "NoSuchNet", *TINY_RUN]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "NoSuchNet" in captured.err and "ResNet50" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_too_many_devices_for_this_runtime_is_an_error(capsys):
    assert main(["--devices", "64", *TINY_RUN]) == 2
    captured = capsys.readouterr()
    assert "64" in captured.err and captured.out == ""


def test_gpu_devices_without_a_gpu_is_a_clear_error(capsys):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible")
    assert main(["--device-type", "gpu", *TINY_RUN]) == 2
    assert "no GPU" in capsys.readouterr().err


def test_verbose_logs_the_devices_the_cases_and_each_contender(caplog, capsys):
    argv = ["--specs", "xring", "--peers", "numpy", *TINY_RUN, "--max-bytes", "1024", "-v"]
    with caplog.at_level(logging.INFO, logger="allreduce"):
        assert main(argv) == 0
    messages = [
        r.getMessage() for r in caplog.records if r.name.startswith(("allreduce.bench", "allreduce.measure"))
    ]
    assert any(m.startswith("devices: ") and CPUS[3] in m for m in messages)
    assert "cases: 1KiB" in messages
    for name in ("xring", "numpy"):
        assert f"1KiB: {name} starts" in messages
        assert any(m.startswith(f"1KiB: {name} done: median ") for m in messages)
    capsys.readouterr()


def test_default_specs_come_from_the_registry_and_run_on_the_devices():
    flat = [
        n for n in algorithm_names() if "CPU" in get_algorithm(n).device_types and get_algorithm(n).reduces
    ]
    for count in (1, 3, 4):
        specs = default_specs(CPUS[:count])
        for spec in specs:
            info = get_algorithm(spec.partition("#")[0])
            assert "CPU" in info.device_types and info.reduces
            assert info.problem(CPUS[:count], int(spec.partition("#")[2] or 1)) is None
        assert set(flat) <= set(specs)
    assert not any(s.endswith("#2") for s in default_specs(CPUS[:1]))
    gpus = [d.replace("CPU", "GPU") for d in CPUS[:4]]
    every = {n for n in algorithm_names(hierarchical=True) if get_algorithm(n).reduces}
    assert every <= set(default_specs(gpus))
    # GPUs split from one: no algorithm that needs a physical device per input.
    shared = set(default_specs(gpus, logical_split=True))
    assert shared == {
        s for s in default_specs(gpus) if not get_algorithm(s.partition("#")[0]).physical_devices
    }
    assert any(get_algorithm(n).physical_devices for n in every) and shared < set(default_specs(gpus))


@pytest.mark.parametrize("count", [3, 5])
def test_every_default_spec_runs_on_an_odd_device_count(count, capsys):
    # A default spec that did not run would fail the run: the defaults must all run here.
    status = main(["--devices", str(count), "--no-peers", *TINY_RUN, "--max-bytes", "1024"])
    out = capsys.readouterr().out
    assert status == 0, out
    ran = {row[3] for row in _rows(out) if row[10] == "0"}
    assert ran == set(default_specs(CPUS[:count]))


@pytest.mark.multiworker
@pytest.mark.slow
def test_workers_run_across_a_local_cluster(tmp_path):
    report = tmp_path / "r.json"
    # A process that joins a cluster cannot leave it: run the command in its own process.
    argv = ["--workers", "2", "--devices", "2", *TINY_RUN, "--no-peers", "--json", str(report)]
    done = forkserver.run([sys.executable, "-m", "allreduce.bench", *argv], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(report.read_text())
    assert document["ok"] and len(document["devices"]) == 4
    assert {"/job:worker" in d for d in document["devices"]} == {True}


# The driver.


@pytest.mark.parametrize("witness", [False, True])
def test_run_case_checks_full_outputs_whether_or_not_timed_steps_return_them(witness):
    setup = Setup(devices=tuple(CPUS[:3]), device_type="CPU", witness=witness)
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


class _Breaks(Contender):
    """Exact until its ``fail_on``-th call, which raises a long, multi-line error."""

    name = "breaks"
    graph = False
    message = "first line\n" + "second line " + "x" * 300

    def __init__(self, fail_on: int) -> None:
        self.calls = 0
        self.fail_on = fail_on

    def prepare(self, inputs, setup):
        floor = NumpyFloor().prepare(inputs, setup)

        def step():
            self.calls += 1
            if self.calls == self.fail_on:
                raise RuntimeError(self.message)
            outs = floor()[0]
            return [outs for _ in inputs.devices]

        return step


def test_a_contender_that_fails_mid_run_keeps_its_whole_error_and_stops_while_others_go_on():
    setup = Setup(devices=tuple(CPUS[:2]), device_type="CPU")
    case = cases.Case("t", ((6,),), "float32")
    breaks = _Breaks(fail_on=3)  # the first step checks, the second is timed, the third fails
    failed, floor = run_case(case, [breaks, NumpyFloor()], setup, warmup=0, iters=4)
    assert failed.error == f"RuntimeError: {_Breaks.message}"
    assert failed.failed and len(failed.samples_s) == 1 and breaks.calls == 3
    assert floor.ok and len(floor.samples_s) == 4
