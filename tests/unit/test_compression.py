"""``compression=``: names and wires, what is compressed where, NaN and Inf, float16's scale.

Results are checked against the float64 oracle and :func:`allreduce.error_bound`; graphs
are inspected to see where casts are (and are not) emitted.
"""

from __future__ import annotations

import collections
import re

import numpy as np
import pytest
import tensorflow as tf

import allreduce
from allreduce.cross_device_ops import SpecCrossDeviceOps
from allreduce.graph.compression import CastWire, _bucket_scale, wire_for
from allreduce.graph.wire import PLAIN
from allreduce.planning.wire_formats import FLOAT_FORMATS, WIRE_FORMATS, scale_exponent
from tests.oracle import exact_sum, to_float64
from tests.strategies import cpu, make_tensor

CPUS = [cpu(i) for i in range(8)]
GPUS = [f"/job:localhost/replica:0/task:0/device:GPU:{i}" for i in range(4)]
BF16_EVERYWHERE = CastWire("bf16", everywhere=True)
FP16_EVERYWHERE = CastWire("fp16", everywhere=True)


def tensors_on(arrays, dtype: tf.DType, devices=CPUS) -> list[tf.Tensor]:
    return [make_tensor(np.asarray(a), dtype, d) for a, d in zip(arrays, devices)]


def traced(spec: str, tensors: list[tf.Tensor], **kwargs) -> tuple[list[tf.Tensor], collections.Counter]:
    """The results of ``all_reduce`` in a ``tf.function`` and the op types of its graph."""
    devices = [t.device for t in tensors]
    function = tf.function(
        lambda *xs: allreduce.all_reduce(list(xs), spec, devices=devices, **kwargs), autograph=False
    )
    outputs = function(*tensors)
    graph = function.get_concrete_function(*tensors).graph
    return outputs, collections.Counter(op.type for op in graph.get_operations())


def same_bits(a: list[tf.Tensor], b: list[tf.Tensor]) -> bool:
    return [t.numpy().tobytes() for t in a] == [t.numpy().tobytes() for t in b]


def bfloat16_values(t: tf.Tensor) -> bool:
    """Whether every value of a float tensor is a bfloat16 value (it crossed a bf16 wire last)."""
    return bool(np.array_equal(tf.cast(tf.cast(t, tf.bfloat16), t.dtype).numpy(), t.numpy(), equal_nan=True))


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["int8", "BF16", "", "float16"])
def test_an_unknown_name_is_a_value_error_when_the_call_is_built(name: str) -> None:
    tensors = tensors_on([np.ones(3)] * 2, tf.float32)
    message = re.escape(f"compression must be one of ['none', 'bf16', 'fp16'], got {name!r}")
    with pytest.raises(ValueError, match=message):
        allreduce.all_reduce(tensors, compression=name)
    with pytest.raises(ValueError, match=message):
        allreduce.batch_all_reduce([[t] for t in tensors], compression=name)
    with pytest.raises(ValueError, match=message):
        SpecCrossDeviceOps("xring", compression=name)
    grads = [[(t, None)] for t in tensors]
    with pytest.raises(ValueError, match=message):
        allreduce.sum_gradients_all_reduce([], grads, 1, "xring", 1, [0, 1], compression=name)
    with pytest.raises(ValueError, match=re.escape("compression must be one of ['bf16', 'fp16']")):
        CastWire(name)
    with pytest.raises(ValueError, match=f"unknown compression {name!r}"):
        allreduce.all_reduce(tensors, f"xring@{name}")


def test_a_compression_of_the_wrong_type_is_a_type_error() -> None:
    tensors = tensors_on([np.ones(3)] * 2, tf.float32)
    with pytest.raises(TypeError, match=re.escape("compression must be a str, one of")):
        allreduce.all_reduce(tensors, compression=16)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="everywhere must be a bool, got str"):
        CastWire("bf16", everywhere="yes")  # type: ignore[arg-type]


def test_names_and_wires() -> None:
    assert wire_for("none") is PLAIN and wire_for(BF16_EVERYWHERE) is BF16_EVERYWHERE
    assert wire_for("bf16") == CastWire("bf16") != BF16_EVERYWHERE
    assert hash(CastWire("fp16")) == hash(wire_for("fp16"))
    assert repr(FP16_EVERYWHERE) == "CastWire('fp16', everywhere=True)"
    ops = SpecCrossDeviceOps("xring", compression=BF16_EVERYWHERE)
    assert "compression=CastWire('bf16', everywhere=True)" in repr(ops)


# -- what is compressed where -----------------------------------------------------------------


@pytest.mark.parametrize("compression", ["bf16", "fp16"])
@pytest.mark.parametrize("spec", ["xring", "rechd", "pscpu#2", "pscpu/xring"])
def test_cpus_of_one_process_are_left_alone_by_default(spec: str, compression: str) -> None:
    # They share memory: a cast would only cost time, so the graph is the uncompressed one.
    rng = np.random.default_rng(0)
    tensors = tensors_on(rng.standard_normal((4, 100)), tf.float32)
    plain, plain_ops = traced(spec, tensors[:4])
    compressed, ops = traced(spec, tensors[:4], compression=compression)
    assert ops == plain_ops and ops["Cast"] == 0
    assert same_bits(plain, compressed)


@pytest.mark.parametrize(
    ("dtype", "wire"),
    [
        (tf.int32, BF16_EVERYWHERE),
        (tf.int64, FP16_EVERYWHERE),
        (tf.bfloat16, BF16_EVERYWHERE),
        (tf.float16, FP16_EVERYWHERE),
        (tf.bfloat16, FP16_EVERYWHERE),
        (tf.float16, BF16_EVERYWHERE),
    ],
)
def test_integers_and_values_as_narrow_as_the_wire_pass_unchanged(dtype: tf.DType, wire: CastWire) -> None:
    arrays = np.random.default_rng(1).integers(-100, 100, size=(5, 64))
    tensors = tensors_on(arrays, dtype)[:5]
    plain, plain_ops = traced("xring", tensors)
    compressed, ops = traced("xring", tensors, compression=wire)
    assert ops == plain_ops
    assert same_bits(plain, compressed) and all(t.dtype == dtype for t in compressed)


def test_every_hop_compresses_where_asked_and_results_keep_their_dtype() -> None:
    rng = np.random.default_rng(2)
    tensors = tensors_on(rng.standard_normal((4, 100)), tf.float32)[:4]
    outputs, ops = traced("xring", tensors, compression=BF16_EVERYWHERE)
    assert ops["Cast"] > 0
    assert all(t.dtype == tf.float32 and bfloat16_values(t) for t in outputs)
    assert len({t.numpy().tobytes() for t in outputs}) == 1


def _gpu_graph(spec: str, compression) -> tuple[list[np.ndarray], list[np.ndarray], collections.Counter]:
    """``spec`` built for four GPU names in a TensorFlow 1 graph, run with soft placement."""
    arrays = np.random.default_rng(3).standard_normal((4, 50)).astype(np.float32)
    with tf.Graph().as_default() as graph:
        tensors = []
        for a, device in zip(arrays, GPUS):
            with tf.device(device):
                tensors.append(tf.constant(a))
        results = allreduce.all_reduce(tensors, spec, compression=compression)
        ops = collections.Counter(
            op.get_attr("DstT").name for op in graph.get_operations() if op.type == "Cast"
        )
        config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
        with tf.compat.v1.Session(graph=graph, config=config) as session:
            outputs = session.run(results)
    return list(arrays), outputs, ops


@pytest.mark.parametrize(
    ("spec", "compression", "cast_to"),
    [
        ("xring", "bf16", "bfloat16"),
        ("pscpu/xring", "fp16", "float16"),
        ("rechd@bf16", "none", "bfloat16"),
        ("rechd@none", "fp16", None),
        ("xring", "none", None),
    ],
)
def test_hops_between_gpus_are_compressed_by_default(spec: str, compression: str, cast_to) -> None:
    inputs, outputs, casts = _gpu_graph(spec, compression)
    assert (casts[cast_to] > 0) if cast_to else not casts
    wire = cast_to and {"bfloat16": "bf16", "float16": "fp16"}[cast_to]
    bound = allreduce.error_bound(spec.split("@")[0], 4, wire or "none")
    magnitude = np.sum(np.abs(inputs), axis=0)
    limit = bound.limit(magnitude, np.max(np.abs(inputs)))
    for out in outputs:
        assert out.dtype == np.float32 and out.tobytes() == outputs[0].tobytes()
        assert np.all(np.abs(out - exact_sum(inputs)) <= limit)


def test_a_range_of_the_spec_may_leave_the_calls_compression_out() -> None:
    rng = np.random.default_rng(4)
    towers = [[make_tensor(rng.standard_normal(s), tf.float32, d) for s in (8, 300)] for d in CPUS[:3]]
    plain = allreduce.batch_all_reduce(towers, "xring")
    mixed = allreduce.batch_all_reduce(towers, "xring:16:xring@none", compression=BF16_EVERYWHERE)
    assert all(bfloat16_values(tower[0]) for tower in mixed)  # 8 elements: compressed
    assert same_bits([tower[1] for tower in plain], [tower[1] for tower in mixed])  # 300: not


# -- NaN, Inf and float16's range --------------------------------------------------------------


@pytest.mark.parametrize("wire", [BF16_EVERYWHERE, FP16_EVERYWHERE])
@pytest.mark.parametrize("spec", ["xring", "rechd", "pscpu", "simple/xring"])
def test_nan_and_inf_propagate_as_without_compression(spec: str, wire: CastWire) -> None:
    arrays = np.random.default_rng(5).uniform(-1e3, 1e3, size=(5, 40))
    arrays[0, 3] = np.nan
    arrays[2, 7] = np.inf
    arrays[1, 9], arrays[4, 9] = np.inf, -np.inf
    arrays[3, 11] = -np.inf
    tensors = tensors_on(arrays, tf.float32)[:5]
    plain = allreduce.all_reduce(tensors, spec)[0].numpy()
    for out in allreduce.all_reduce(tensors, spec, compression=wire):
        got = out.numpy()
        assert np.array_equal(np.isnan(got), np.isnan(plain))
        assert np.array_equal(got[np.isinf(plain)], plain[np.isinf(plain)])
        assert np.isfinite(got[np.isfinite(plain)]).all()
        assert np.sum(np.isfinite(got)) == 36


@pytest.mark.parametrize("largest", [1e6, 3e4, 1e30])
def test_float16_never_overflows_on_finite_inputs(largest: float) -> None:
    rng = np.random.default_rng(6)
    arrays = rng.uniform(-largest, largest, size=(8, 500))
    arrays[:, :10] = largest  # every device at the top: the sum is 8 x largest
    arrays[:, 10:20] = -largest
    tensors = tensors_on(arrays, tf.float32)
    inputs = [to_float64(t) for t in tensors]
    bound = allreduce.error_bound("xring", 8, "fp16")
    limit = bound.limit(np.sum(np.abs(inputs), axis=0), np.max(np.abs(inputs)))
    for out in allreduce.all_reduce(tensors, "xring", compression=FP16_EVERYWHERE):
        got = to_float64(out)
        assert np.isfinite(got).all()
        assert np.all(np.abs(got - exact_sum(inputs)) <= limit)


def test_bfloat16_scales_float64_values_beyond_its_range() -> None:
    arrays = np.full((4, 20), 1e300)
    tensors = tensors_on(arrays, tf.float64)[:4]
    for out in allreduce.all_reduce(tensors, "xring", compression=BF16_EVERYWHERE):
        assert np.allclose(out.numpy(), 4e300, rtol=error_bound_rel("xring", 4, "bf16", "float64"))


def error_bound_rel(spec: str, n: int, compression: str, dtype: str) -> float:
    return allreduce.error_bound(spec, n, compression, dtype=dtype).relative


def test_packs_are_scaled_by_their_largest_value_and_stay_within_the_bound() -> None:
    rng = np.random.default_rng(7)
    scales = [1e-3, 1.0, 1e5, 1e-8]
    towers = [[make_tensor(rng.standard_normal(20) * s, tf.float32, d) for s in scales] for d in CPUS[:6]]
    result = allreduce.batch_all_reduce(towers, "rechd", pack_max_bytes=1024, compression=FP16_EVERYWHERE)
    largest = max(float(np.max(np.abs(t.numpy()))) for tower in towers for t in tower)
    bound = allreduce.error_bound("rechd", 6, "fp16")
    for i in range(len(scales)):
        inputs = [to_float64(tower[i]) for tower in towers]
        limit = bound.limit(np.sum(np.abs(inputs), axis=0), largest)
        for tower in result:
            assert np.all(np.abs(to_float64(tower[i]) - exact_sum(inputs)) <= limit)


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("largest", [0.0, 1e-45, 1e-40, 2.0**-126, 1.0, 1.5, 65504.0, 3e38, np.nan])
def test_the_emitted_scale_is_the_documented_power_of_two(dtype: tf.DType, largest: float) -> None:
    values = [make_tensor(np.array([largest, -largest / 2, np.inf, np.nan]), dtype, d) for d in CPUS[:5]]
    for wire in ("fp16", "bf16"):
        fmt = FLOAT_FORMATS[dtype.name]
        scale = _bucket_scale(values, CPUS[:5], WIRE_FORMATS[wire], fmt).numpy()
        finite = 0.0 if np.isnan(largest) else float(np.asarray(largest, dtype.as_numpy_dtype))
        exponent = 0 if finite == 0 else int(np.frexp(finite)[1]) - 1 + fmt.bias
        if finite and finite < 2.0 ** (1 - fmt.bias):
            exponent = 0  # subnormal
        assert scale == 2.0 ** scale_exponent(exponent, 5, WIRE_FORMATS[wire], fmt)


def test_compat_sums_gradients_with_compression() -> None:
    rng = np.random.default_rng(8)
    grads = [[(make_tensor(rng.standard_normal(30), tf.float32, d), f"v{d}")] for d in CPUS[:4]]
    summed, _ = allreduce.sum_gradients_all_reduce(
        [], grads, 1, "xring", 1, [0, 1, 2, 3], compression=BF16_EVERYWHERE
    )
    plain, _ = allreduce.sum_gradients_all_reduce([], grads, 1, "xring", 1, [0, 1, 2, 3])
    assert all(bfloat16_values(tower[0][0]) for tower in summed)
    assert not bfloat16_values(plain[0][0][0])
    inputs = [to_float64(tower[0][0]) for tower in grads]
    limit = allreduce.error_bound("xring", 4, "bf16").limit(np.sum(np.abs(inputs), axis=0))
    assert all(np.all(np.abs(to_float64(t[0][0]) - exact_sum(inputs)) <= limit) for t in summed)


@pytest.mark.parametrize("groups", [((0,), (1, 2)), ((0, 1), (2,), (3,))])
def test_a_worker_of_one_device_gets_the_same_rounded_result(groups) -> None:
    # collective's sums are not wire values: every worker's copy must be rounded alike,
    # also where a worker's only device is where its sum is.
    n = sum(len(g) for g in groups)
    tensors = tensors_on(np.random.default_rng(9).standard_normal((n, 30)), tf.float32)[:n]
    outputs = allreduce.all_reduce(
        tensors, "xring/collective", worker_groups=groups, compression=BF16_EVERYWHERE
    )
    assert len({t.numpy().tobytes() for t in outputs}) == 1
    assert all(bfloat16_values(t) for t in outputs)


def test_losses_below_float16_subnormals_add_up_over_every_rounding() -> None:
    # 2**20 on device 0 sets the scale to 2**-8; devices 1-3 hold 1.5 * 2**-16, which
    # scales to 1.5 * 2**-24, a tie between float16's two smallest subnormals: each is
    # received rounded up by 2**-17. Three inputs, not one path, make up the error.
    arrays = np.zeros((4, 2))
    arrays[0, 0] = 2.0**20
    arrays[1:, 1] = 1.5 * 2.0**-16
    tensors = tensors_on(arrays, tf.float32)[:4]
    bound = allreduce.error_bound("simple", 4, "fp16")
    limit = bound.limit(np.sum(np.abs(arrays), axis=0), 2.0**20)
    for out in allreduce.all_reduce(tensors, "simple", compression=FP16_EVERYWHERE):
        error = np.abs(to_float64(out) - arrays.sum(axis=0))
        assert error[1] == 3 * 2.0**-17
        assert np.all(error <= limit)


def test_compat_takes_a_spec_with_a_compression_per_range() -> None:
    rng = np.random.default_rng(10)
    grads = [[(make_tensor(rng.standard_normal(30), tf.float32, d), f"v{d}")] for d in CPUS[:3]]
    kept, _ = allreduce.sum_gradients_all_reduce(
        [], grads, 1, "xring@none", 1, [0, 1, 2], compression=BF16_EVERYWHERE
    )
    plain, _ = allreduce.sum_gradients_all_reduce([], grads, 1, "xring", 1, [0, 1, 2])
    assert same_bits([t[0][0] for t in kept], [t[0][0] for t in plain])
