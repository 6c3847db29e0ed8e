"""The shared builder helpers of ``allreduce.graph.algorithms.base``: the graphs they build.

The results of these helpers are covered by the algorithm tests; these check the
shapes of the graphs they build (the ops, their devices and inputs), which is what the
measured speed on CPUs rests on.
"""

from __future__ import annotations

from tests.strategies import cpu

CPUS = [cpu(i) for i in range(4)]


def _context():
    from allreduce.graph.algorithms.base import BuildContext
    from allreduce.planning.registry import get_algorithm

    return BuildContext(info=get_algorithm("simple"))


def _graph_ops(build):
    import tensorflow as tf

    return tf.function(build, autograph=False).get_concrete_function().graph.get_operations()


def test_a_cpu_sum_of_more_than_two_takes_no_input_from_its_own_device():
    import tensorflow as tf

    from allreduce.graph.algorithms.base import HOP_MIN_BYTES, sum_on

    large = HOP_MIN_BYTES // 4
    ctx = _context()

    def build():
        values, small = [], []
        for device in CPUS:
            with tf.device(device):
                values.append(tf.ones([large]))
                small.append(tf.ones([large - 1]))
        return (
            sum_on(values, CPUS, CPUS[0], ctx),
            sum_on(values[:2], CPUS[:2], CPUS[0], ctx),
            sum_on(small, CPUS, CPUS[0], ctx),
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

    from allreduce.graph.algorithms.base import aligned_split_sizes, split_on

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

    from allreduce.graph.algorithms.base import concat_each, shares_memory
    from allreduce.graph.wire import PLAIN

    other = "/job:worker/replica:0/task:1/device:CPU:0"
    assert shares_memory(CPUS) and not shares_memory([*CPUS, other])

    def build():
        with tf.device(CPUS[0]):
            pieces = [PLAIN.publish(t, CPUS[0], CPUS) for t in (tf.ones([8]), tf.zeros([8]))]
        return concat_each([pieces] * 4, CPUS, _context())

    assert sum(op.type == "ConcatV2" for op in _graph_ops(build)) == 1


def _window_length(n: int, itemsize: int) -> int:
    """Elements per value of the smallest sum of ``n`` values that is cut in halves."""
    from allreduce.planning.schedules import HALVES_MIN_BYTES

    return -(-HALVES_MIN_BYTES // ((n + 1) * itemsize))


def test_a_cpu_sum_of_a_few_hundred_kib_adds_two_halves_side_by_side():
    import tensorflow as tf

    from allreduce.graph.algorithms.base import sum_on
    from allreduce.graph.compression import CastWire
    from allreduce.planning.schedules import HALVES_MAX_BYTES

    inside, above = _window_length(4, 4), -(-HALVES_MAX_BYTES // 20)
    ctx = _context()

    def build():
        outs = []
        for length, count, wire in [
            (inside, 4, ctx.wire),
            (inside - 1, 4, ctx.wire),
            (above, 4, ctx.wire),
            (inside + 7, 3, ctx.wire),
            (inside + 3, 4, CastWire("bf16", everywhere=True)),
        ]:
            values = []
            for device in CPUS[:count]:
                with tf.device(device):
                    values.append(tf.ones([length]))
            outs.append(sum_on(values, CPUS[:count], CPUS[0], _context_with(wire)))
        return outs

    add_ns = [op for op in _graph_ops(build) if op.type == "AddN"]
    by_length: dict[int, list] = {}
    for op in add_ns:
        by_length.setdefault(op.inputs[0].shape[0], []).append(op)
    halves = by_length[inside]
    assert [(len(op.inputs), op.device) for op in halves] == [(2, CPUS[1]), (2, CPUS[2]), (2, CPUS[0])]
    assert [t.op for t in halves[2].inputs] == halves[:2]
    assert {t.op.device for t in halves[0].inputs} == {CPUS[0], CPUS[1]}
    assert {t.op.device for t in halves[1].inputs} == {CPUS[2], CPUS[3]}
    # Below and above the window, with three values, or with a wire that rounds every hop
    # between CPUs: one add_n on the target.
    for length in (inside - 1, above, inside + 7, inside + 3):
        assert [op.device for op in by_length[length]] == [CPUS[0]], length


def _context_with(wire):
    from dataclasses import replace

    return replace(_context(), wire=wire)
