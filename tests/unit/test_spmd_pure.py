"""The pure parts of the SPMD mode: per-worker programs, collective keys, argument checks.

Programs are run by simulation (:func:`allreduce.spmd.programs.simulate`), which matches
every send with its receive by (sender, receiver, slot): exact sums on every worker,
no unmatched exchange, no deadlock.
"""

from __future__ import annotations

import itertools
import os
import re
import threading

import pytest

from allreduce.core.validation import check_spmd_cluster
from allreduce.planning.algorithms.torus import torus_grid
from allreduce.spmd import keys
from allreduce.spmd.api import check_spmd_spec
from allreduce.spmd.programs import Program, Recv, Send, SumCollected, program, simulate

CASES = [("xring", 1), ("xring", 2), ("xring", 3), ("rechd", 1), ("torus", 1), ("pscpu", 1), ("pscpu", 2)]


@pytest.mark.parametrize(("alg", "shards"), CASES)
@pytest.mark.parametrize("n", range(2, 10))
def test_every_worker_program_sums_exactly(alg, shards, n):
    for length in (0, 1, n - 1, 17, 64, 129):
        inputs = [[(w * 7 + i * 3) % 11 - 5 for i in range(length)] for w in range(n)]
        expected = [sum(column) for column in zip(*inputs)]
        for index in (0, 1):
            assert simulate(alg, inputs, 4, shards, index) == [expected] * n


@pytest.mark.parametrize(("alg", "shards"), CASES)
@pytest.mark.parametrize("n", [2, 3, 5, 8, 9])
def test_through_a_rounding_wire_every_worker_ends_with_the_same_bits_within_the_bound(alg, shards, n):
    import random

    import numpy as np

    from allreduce import spmd

    rng = random.Random(n * 100 + shards)
    inputs = [[rng.uniform(-10, 10) for _ in range(67)] for _ in range(n)]
    got = simulate(alg, inputs, 8, shards, 0, wire=lambda x: float(np.float16(x)))
    assert all(row == got[0] for row in got)
    exact = [sum(column) for column in zip(*inputs)]
    bound = spmd.error_bound(f"{alg}#{shards}", n, 1, "fp16", dtype="float64")
    sum_abs = [sum(abs(x) for x in column) for column in zip(*inputs)]
    assert all(abs(g - e) <= bound.limit(s, 10.0) for g, e, s in zip(got[0], exact, sum_abs))
    assert got[0] != exact  # the wire rounded


@pytest.mark.parametrize(("n", "rows"), [(4, 2), (6, 2), (6, 3), (8, 4), (9, 3)])
def test_torus_with_given_rows_sums_exactly(n, rows):
    inputs = [[w + i for i in range(50)] for w in range(n)]
    assert simulate("torus", inputs, 4, rows) == [[sum(c) for c in zip(*inputs)]] * n


@pytest.mark.parametrize(("alg", "shards"), CASES)
def test_a_worker_never_sends_twice_with_one_instance_key(alg, shards):
    for n in (2, 3, 5, 8):
        for me in range(n):
            prog = program(alg, n, me, 1000, 4, shards)
            sent = [keys.instance_key(0, a.slot, me, a.peer) for a in prog.actions if isinstance(a, Send)]
            assert len(sent) == len(set(sent))
            assert all(a.slot < prog.slots for a in prog.actions if isinstance(a, (Send, Recv)))


def test_per_worker_exchanges_grow_with_the_step_count_not_the_cluster():
    # A ring takes 2(n-1) steps per worker, halving-doubling 2 log2(n), a torus
    # 2(n/r - 1) + 2(r - 1); one worker's program has one send and one receive per step.
    for n in (4, 16, 64, 256):
        log2 = n.bit_length() - 1
        rows = int(n**0.5)
        assert len(program("xring", n, 0, 1 << 20, 4).actions) == 2 * 2 * (n - 1)
        assert len(program("rechd", n, 0, 1 << 20, 4).actions) == 2 * 2 * log2
        assert len(program("torus", n, 0, 1 << 20, 4).actions) == 2 * (2 * (n // rows - 1) + 2 * (rows - 1))


def test_group_keys_are_one_per_pair_and_above_tensorflows_own():
    seen = set()
    for b in range(64):
        for a in range(b):
            key = keys.pair_group_key(a, b)
            assert key == keys.pair_group_key(b, a)
            seen.add(key)
    assert len(seen) == 64 * 63 // 2
    assert min(seen) >= keys.KEY_BASE >= 1 << 30
    assert keys.pair_group_key(keys.MAX_WORKERS - 2, keys.MAX_WORKERS - 1) < keys.all_group_key(1) < 2**31
    with pytest.raises(ValueError, match="two tasks"):
        keys.pair_group_key(3, 3)


def test_instance_keys_differ_by_channel_slot_and_direction_and_fit_int32():
    found = {
        keys.instance_key(c, s, src, dst)
        for c in (0, 1, keys.CHANNELS - 1)
        for s in (0, 1, keys.SLOTS_PER_CHANNEL - 1)
        for src, dst in ((0, 1), (1, 0))
    }
    assert len(found) == 3 * 3 * 2
    assert min(found) >= keys.KEY_BASE and max(found) < 2**31
    with pytest.raises(ValueError, match="channel"):
        keys.instance_key(keys.CHANNELS, 0, 0, 1)


def test_slots_reserved_from_many_threads_never_overlap():
    counter = keys.SlotCounter()
    got: list[tuple[int, int, int]] = []
    lock = threading.Lock()

    def work(channel):
        for size in range(1, 200):
            first = counter.reserve(channel, size)
            with lock:
                got.append((channel, first, size))

    threads = [threading.Thread(target=work, args=(t % 2,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for channel in (0, 1):
        spans = sorted((first, first + size) for c, first, size in got if c == channel)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    with pytest.raises(ValueError, match="slots"):
        counter.reserve(0, keys.SLOTS_PER_CHANNEL)


def test_tf_config_gives_ranks_chief_first():
    config = {
        "cluster": {"worker": ["w0:1", "w1:1"], "chief": ["c:1"]},
        "task": {"type": "worker", "index": 1},
    }
    workers, rank = check_spmd_cluster(config)
    assert workers == [("chief", 0, "c:1"), ("worker", 0, "w0:1"), ("worker", 1, "w1:1")]
    assert rank == 2


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        ("worker", TypeError, "TF_CONFIG dict"),
        ({"cluster": {"worker": ["a:1"]}}, ValueError, "'task'"),
        (
            {"cluster": {"worker": ["a:1"], "ps": ["p:1"]}, "task": {"type": "worker", "index": 0}},
            ValueError,
            "ps",
        ),
        ({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 5}}, ValueError, "index': 5"),
        ({"cluster": {}, "task": {"type": "worker", "index": 0}}, ValueError, "no 'chief' or 'worker'"),
    ],
)
def test_bad_clusters_are_named(config, error, match):
    with pytest.raises(error, match=match):
        check_spmd_cluster(config)


def test_specs_without_an_spmd_form_are_named():
    from allreduce.planning.spec import parse_all_reduce_spec

    check_spmd_spec(parse_all_reduce_spec("pscpu:64k:xring#2"), ("xring", "pscpu"))
    with pytest.raises(ValueError, match="'simple' cannot run across workers"):
        check_spmd_spec(parse_all_reduce_spec("xring/simple"), ("xring", "pscpu"))
    check_spmd_spec(parse_all_reduce_spec("collective/collective"), ("collective",))
    with pytest.raises(ValueError, match=r"'collective' cannot be the within-worker level.*'pscpu/xring'"):
        check_spmd_spec(parse_all_reduce_spec("pscpu:1k:collective/xring"), ("xring", "pscpu"))
    check_spmd_spec(parse_all_reduce_spec("pscpu/xring@bf16:1k:rechd@fp16"), ("xring", "rechd", "collective"))
    check_spmd_spec(parse_all_reduce_spec("collective@none"), ("collective",), "fp16")
    with pytest.raises(ValueError, match=r"compression \('bf16'\) needs pairwise.*not 'collective'"):
        check_spmd_spec(parse_all_reduce_spec("pscpu/collective@bf16"), ("collective",))
    with pytest.raises(ValueError, match=r"compression \('fp16'\)"):
        check_spmd_spec(parse_all_reduce_spec("xring:1k:collective"), ("xring", "collective"), "fp16")


def test_error_bound_refuses_what_all_reduce_refuses():
    from allreduce import spmd

    assert spmd.error_bound("collective", 2, 2).wire == 0
    with pytest.raises(ValueError, match=r"compression \('fp16'\) needs pairwise.*not 'collective'"):
        spmd.error_bound("collective", 2, 2, "fp16")
    with pytest.raises(ValueError, match="'simple' cannot run across workers"):
        spmd.error_bound("xring:1k:simple", 2, 2)
    with pytest.raises(TypeError, match="compression"):
        spmd.error_bound("xring", 2, 2, 5)


def test_launch_checks_its_arguments_before_starting_anything():
    from allreduce import spmd

    with pytest.raises(ValueError, match="'slurm'"):
        spmd.launch(print, 2, backend="slurm")
    with pytest.raises(ValueError, match="num_workers"):
        spmd.launch(print, 0)
    with pytest.raises(TypeError, match="picklable"):
        spmd.launch(lambda: 1, 2)
    with pytest.raises(TypeError, match="callable"):
        spmd.launch("fn", 2)
    with pytest.raises(TypeError, match="poll must be callable, got int: 1"):
        spmd.launch(print, 2, poll=1)


def test_workers_that_ignore_sigterm_share_one_grace_period_before_sigkill():
    import signal
    import subprocess

    from allreduce.spmd import launcher

    now = [0.0]
    log = []

    class Process:
        def __init__(self, task):
            self.task = task

        def poll(self):
            return None

        def send_signal(self, sig):
            log.append((self.task, sig))

        def wait(self, timeout=None):
            if timeout is None:
                return -9
            log.append((self.task, "wait", timeout))
            now[0] += timeout  # the worker ignores SIGTERM: the whole wait passes
            raise subprocess.TimeoutExpired("worker", timeout)

    children = []
    for task in range(3):
        child = launcher._Child.__new__(launcher._Child)
        child.task, child.process, child.stderr = task, Process(task), open(os.devnull, "rb")  # noqa: SIM115
        children.append(child)
    launcher._stop(children, clock=lambda: now[0])
    assert log[:3] == [(t, signal.SIGTERM) for t in range(3)]
    waits = [entry[2] for entry in log if entry[1] == "wait"]
    assert waits == [launcher._STOP_S, 0.0, 0.0]
    assert [entry[0] for entry in log if entry[1] == signal.SIGKILL] == [0, 1, 2]
    assert all(child.stderr.closed for child in children)


def test_importing_the_package_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, allreduce, allreduce.spmd; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_programs_refuse_unknown_algorithms_and_tasks():
    with pytest.raises(ValueError, match="no SPMD program"):
        program("simple", 4, 0, 10, 4)
    with pytest.raises(ValueError, match="task 4 is not one of the 4 workers"):
        program("xring", 4, 4, 10, 4)
    with pytest.raises(ValueError, match="slot"):
        keys.instance_key(0, keys.SLOTS_PER_CHANNEL, 0, 1)


@pytest.mark.parametrize(
    ("actions", "match"),
    [
        ([[Send(1, 0, 2, 0)], []], "nobody received"),
        ([[Recv(1, 0, 2, 0, "add")], []], "deadlock"),
        ([[Send(1, 0, 2, 0), Send(1, 0, 2, 0)], []], "two sends"),
        ([[Send(1, 0, 2, 0)], [Recv(0, 0, 1, 0, "set")]], "size mismatch"),
    ],
)
def test_the_simulation_finds_programs_that_do_not_match_up(monkeypatch, actions, match):
    from allreduce.spmd import programs

    monkeypatch.setattr(
        programs, "program", lambda alg, n, me, *rest: programs.Program((), tuple(actions[me]), 1)
    )
    with pytest.raises(RuntimeError, match=match):
        simulate("xring", [[1, 2], [3, 4]])


def test_pair_group_keys_number_the_pairs_densely_from_the_base():
    found = [keys.pair_group_key(a, b) for b in range(6) for a in range(b)]
    assert found == list(range(keys.KEY_BASE, keys.KEY_BASE + 15))
    assert all(type(key) is int for key in found)
    top = keys.pair_group_key(keys.MAX_WORKERS - 1, keys.MAX_WORKERS - 2)
    assert top == keys.KEY_BASE + keys.MAX_WORKERS * (keys.MAX_WORKERS - 1) // 2 - 1 and type(top) is int


@pytest.mark.parametrize(("a", "b"), [(3, 3), (-1, 5), (5, -1), (0, keys.MAX_WORKERS), (keys.MAX_WORKERS, 7)])
def test_pair_group_key_rejects_tasks_outside_the_range_naming_them(a, b):
    message = f"a pair group needs two tasks in 0..{keys.MAX_WORKERS - 1}, got {a} and {b}"
    assert keys.MAX_WORKERS - 1 == 4095
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        keys.pair_group_key(a, b)


def test_the_all_group_key_counts_devices_per_worker_above_every_pair_key():
    for devices in (1, 2, 8):
        assert keys.all_group_key(devices) == keys.KEY_BASE + (1 << 24) + devices
    assert keys.all_group_key(1) > keys.pair_group_key(keys.MAX_WORKERS - 2, keys.MAX_WORKERS - 1)


@pytest.mark.parametrize(
    ("channel", "slot", "message"),
    [
        (keys.CHANNELS, 0, f"channel must be in 0..15, got {keys.CHANNELS}"),
        (-1, 0, "channel must be in 0..15, got -1"),
        (0, keys.SLOTS_PER_CHANNEL, f"slot {keys.SLOTS_PER_CHANNEL} is outside 0..{(1 << 24) - 1}"),
        (3, -1, f"slot -1 is outside 0..{(1 << 24) - 1}"),
    ],
)
def test_instance_key_rejects_channels_and_slots_out_of_range_naming_them(channel, slot, message):
    assert keys.SLOTS_PER_CHANNEL == 1 << 24
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        keys.instance_key(channel, slot, 0, 1)


def test_instance_keys_fill_the_range_above_the_base_exactly():
    assert keys.instance_key(0, 0, 0, 1) == keys.KEY_BASE
    assert keys.instance_key(0, 0, 1, 0) == keys.KEY_BASE + 1
    assert (
        keys.instance_key(keys.CHANNELS - 1, keys.SLOTS_PER_CHANNEL - 1, 1, 0)
        == keys.KEY_BASE + (1 << 29) - 1
    )


def test_a_channel_hands_out_exactly_its_slots_then_refuses_naming_the_count():
    counter = keys.SlotCounter()
    assert counter.reserve(0, keys.SLOTS_PER_CHANNEL) == 0
    used = keys.SLOTS_PER_CHANNEL
    message = (
        f"channel 0 has used {used} of its {used} exchange slots and this trace needs 1 more: "
        "trace fewer distinct all-reduces, or pack small tensors"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        counter.reserve(0, 1)
    assert counter.reserve(1, 3) == 0 and counter.reserve(1, 2) == 3


def test_the_shuffle_program_roots_shards_round_robin_and_collects_from_every_other_worker():
    # pscpu over 3 workers, 6 elements in 2 shards, the bucket at index 1: shard j's root
    # is worker (1 * 2 + j) % 3, it gathers in slot j and answers worker q in 2 + 3j + q.
    got = [program("pscpu", 3, me, 6, 4, 2, 1) for me in range(3)]
    assert got[0] == Program(
        (3,),
        (
            Send(2, 0, 3, 0),
            Recv(2, 0, 3, 2, "set"),
            Recv(1, 3, 6, 1, "collect"),
            Recv(2, 3, 6, 1, "collect"),
            SumCollected(3, 6),
            Send(1, 3, 6, 6),
            Send(2, 3, 6, 7),
        ),
        8,
    )
    assert got[1] == Program(
        (3,), (Send(2, 0, 3, 0), Recv(2, 0, 3, 3, "set"), Send(0, 3, 6, 1), Recv(0, 3, 6, 6, "set")), 8
    )
    assert got[2] == Program(
        (3,),
        (
            Recv(0, 0, 3, 0, "collect"),
            Recv(1, 0, 3, 0, "collect"),
            SumCollected(0, 3),
            Send(0, 0, 3, 2),
            Send(1, 0, 3, 3),
            Send(0, 3, 6, 1),
            Recv(0, 3, 6, 7, "set"),
        ),
        8,
    )


def test_simulate_asks_for_every_workers_program_with_the_documented_defaults(monkeypatch):
    from allreduce.spmd import programs

    calls = []
    real = programs.program

    def recording(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(programs, "program", recording)
    assert simulate("pscpu", [[1, 2], [3, 4], [5, 6]]) == [[9.0, 12.0]] * 3
    assert calls == [("pscpu", 3, w, 2, 4, 1, 0) for w in range(3)]


@pytest.mark.parametrize("alg", ["xring", "rechd", "torus", "pscpu"])
def test_a_single_worker_exchanges_nothing_and_keeps_its_vector(alg):
    prog = program(alg, 1, 0, 10, 4)
    assert prog.cuts == () and not [a for a in prog.actions if isinstance(a, (Send, Recv))]
    assert simulate(alg, [[1.5, -2.0, 3.25]]) == [[1.5, -2.0, 3.25]]


def _slots_needed(alg, n, shards):
    """The slots of one all-reduce: one per step of each ring (xring), per fold and per
    halving or doubling step (rechd), per step of the row and column rings (torus), and a
    gather and an answer per worker for each shard (pscpu)."""
    if alg == "xring":
        return 2 * (n - 1) * shards
    if alg == "rechd":
        core_log2 = n.bit_length() - 1
        return 2 + 2 * core_log2
    if alg == "torus":
        grid = torus_grid(n, shards)
        return 2 * (len(grid[0]) - 1) + 2 * (len(grid) - 1)
    k = min(shards, n)
    return k + k * n


TORUS_ROWS = [(4, 2), (4, 4), (6, 2), (6, 3), (6, 6), (9, 3)]


def _programs_to_check():
    for alg, shards in CASES:
        for n in range(2, 10):
            yield alg, n, shards
    for n, rows in TORUS_ROWS:
        yield "torus", n, rows


def test_every_worker_reserves_the_slots_its_schedule_needs():
    for alg, n, shards in _programs_to_check():
        for length in (0, 1, 64):
            slots = {program(alg, n, me, length, 4, shards).slots for me in range(n)}
            assert slots == {_slots_needed(alg, n, shards)}, (alg, n, shards, length)


def test_the_first_cuts_are_boundaries_of_exchanges_and_no_exchange_is_empty():
    for alg, n, shards in _programs_to_check():
        for length in (0, 1, n - 1, 17, 64):
            for me in range(n):
                prog = program(alg, n, me, length, 4, shards)
                where = (alg, n, shards, length, me)
                assert type(prog.cuts) is tuple and list(prog.cuts) == sorted(set(prog.cuts)), where
                assert all(0 < cut <= length for cut in prog.cuts), where
                moves = [a for a in prog.actions if isinstance(a, (Send, Recv))]
                assert all(a.stop > a.start for a in moves), where
                bounds = {x for a in prog.actions for x in (a.start, a.stop)}
                assert set(prog.cuts) <= bounds, where
                if alg in ("xring", "pscpu"):
                    assert bounds <= {0, length, *prog.cuts}, where
                if alg == "rechd":
                    assert prog.cuts == (), where


def test_a_worker_outside_a_ring_skips_its_slots():
    from allreduce.spmd import programs

    assert programs._ring([1, 2, 3], 0, [(0, 1), (1, 2), (2, 3)], 5) == ([], 9)
    assert programs._ring([0], 0, [(0, 3)], 5) == ([], 5)


def test_the_first_bucket_of_pscpu_is_rooted_on_worker_0_and_unknown_algorithms_are_named():
    # index defaults to 0: the bucket's one shard is summed by worker (0 * 1 + 0) % n.
    assert SumCollected(0, 6) in program("pscpu", 3, 0, 6, 4).actions
    assert not [a for a in program("pscpu", 3, 1, 6, 4).actions if isinstance(a, SumCollected)]
    message = "algorithm 'simple' has no SPMD program; use one of xring, rechd, torus, pscpu or collective"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        program("simple", 4, 0, 10, 4)
