"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from hypothesis import strategies as st

from allreduce.planning.registry import algorithm_names, get_algorithm
from allreduce.planning.wire_formats import COMPRESSIONS

FLAT_NAMES = algorithm_names()
COMPOSABLE = [n for n in FLAT_NAMES if get_algorithm(n).composable]
ALL_NAMES = FLAT_NAMES + [f"{a}/{b}" for a in COMPOSABLE for b in COMPOSABLE]
SUFFIXES = {"": 1, "k": 1024, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

algorithm_name = st.sampled_from(ALL_NAMES)


@st.composite
def alg_spec_text(draw: st.DrawFn) -> str:
    """One ``alg``, ``alg#k``, ``alg@wire`` or ``alg#k@wire`` part, valid for its algorithm."""
    name = draw(algorithm_name)
    wire = draw(st.one_of(st.just(""), st.sampled_from(COMPRESSIONS).map("@{}".format)))
    if get_algorithm(name).takes_shards:
        shards = draw(st.one_of(st.none(), st.integers(1, 16)))
        if shards is not None:
            return f"{name}#{shards}{wire}"
    elif draw(st.booleans()):
        return f"{name}#1{wire}"
    return name + wire


@st.composite
def valid_spec_text(draw: st.DrawFn) -> str:
    """A valid spec string: 1-4 ranges, increasing limits written with random suffixes."""
    count = draw(st.integers(1, 4))
    parts = [draw(alg_spec_text())]
    limit = -1
    for _ in range(count - 1):
        suffix = draw(st.sampled_from(list(SUFFIXES)))
        factor = SUFFIXES[suffix]
        low = limit // factor + 1
        mantissa = draw(st.integers(low, low + 5000))
        limit = mantissa * factor
        parts += [f"{mantissa}{suffix}", draw(alg_spec_text())]
    return ":".join(parts)


#: Text that looks like specs often enough to reach every error branch.
spec_like_text = st.one_of(
    st.text(),
    st.text(alphabet=":#@/0123456789kKMGT-+ x" + "".join(sorted(set("".join([*ALL_NAMES, *COMPRESSIONS]))))),
    st.lists(
        st.sampled_from(
            [
                *ALL_NAMES,
                "",
                "#",
                ":",
                "0",
                "1",
                "2k",
                "-1",
                "x",
                "#0",
                "#2",
                "/",
                "@",
                *COMPRESSIONS,
                "@bf16",
            ]
        )
    ).map("".join),
    valid_spec_text().map(lambda s: s[: len(s) // 2]),
)

device_names = st.lists(
    st.builds(
        lambda j, t, i: f"/job:{j}/replica:0/task:{t}/device:CPU:{i}",
        st.sampled_from(["worker", "ps"]),
        st.integers(0, 3),
        st.integers(0, 7),
    ),
    min_size=1,
    max_size=12,
    unique=True,
)

TEST_DTYPES = [tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.int32]
ALL_TEST_DTYPES = [*TEST_DTYPES, tf.int64]

shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)
nonempty_shapes = st.lists(st.integers(1, 6), min_size=0, max_size=3).map(tuple)


def random_values(rng: np.random.Generator, shape: tuple[int, ...], dtype: tf.DType) -> np.ndarray:
    """Values that stay far from overflow when up to 8 of them are summed in ``dtype``."""
    if dtype.is_integer:
        return rng.integers(-1000, 1000, size=shape).astype(dtype.as_numpy_dtype)
    values = rng.standard_normal(size=shape) * rng.choice([1e-3, 1.0, 100.0])
    if dtype == tf.bfloat16:
        return values.astype(np.float32)
    return values.astype(dtype.as_numpy_dtype)


def make_tensor(values: np.ndarray, dtype: tf.DType, device: str) -> tf.Tensor:
    """A tensor of ``dtype`` on ``device``."""
    with tf.device(device):
        return tf.cast(tf.constant(values), dtype)


def cpu(i: int) -> str:
    """The full name of logical CPU ``i`` of this process."""
    return f"/job:localhost/replica:0/task:0/device:CPU:{i}"
