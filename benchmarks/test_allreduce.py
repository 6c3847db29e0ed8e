"""pytest-benchmark suites of allreduce-bench's cases: every spec and peer, by device kind,
device count and size, on logical CPUs (the root conftest splits the CPU into 8) and, where
TensorFlow sees GPUs, on GPUs (a single GPU is split into logical GPUs; algorithms that need
a physical GPU per input, and their peers, then skip).

    .venv/bin/pytest benchmarks --benchmark-only --benchmark-group-by=group
    .venv/bin/pytest benchmarks --benchmark-only --benchmark-autosave        # keep a run
    .venv/bin/pytest benchmarks --benchmark-only --benchmark-compare         # against the last
    .venv/bin/pytest benchmarks --benchmark-only -k gpu-                     # the GPU cases only

Groups are named ``{kind}-{devices}dev-{size}`` (``cpu-4dev-16MiB``, ``gpu-4dev-200x1000``);
within a group the rows compare specs and peers. Each benchmark first checks that its
contender's result is exact on every device. GPU cases skip, with the reason, on a machine
whose TensorFlow sees no GPU.
"""

from __future__ import annotations

import pytest
from tests.strategies import cpu

from allreduce.bench.options import BATCH_PACKING, FULL, QUICK
from allreduce.measure.cases import Case, many_small_case, sweep_cases
from allreduce.measure.contenders import Contender, Setup, SpecContender, default_specs
from allreduce.measure.driver import compile_step, count_wrong, drain, make_inputs
from allreduce.measure.peers import default_peers

KINDS = ("cpu", "gpu")
DEVICE_COUNTS = (2, 4)
CASES = [*sweep_cases(QUICK.min_bytes, QUICK.max_bytes, QUICK.factor, "float32"), many_small_case("float32")]
# Rounds per benchmark: at least a full run's timed steps, at most this many, and about
# 64 MiB per device in all between them.
MAX_ROUNDS = 50
ROUND_BYTES = 64 << 20


def _gpus() -> tuple[list[str], bool]:
    """The logical GPUs TensorFlow sees, and whether they were split from fewer physical ones."""
    import tensorflow as tf

    logical = [tf.DeviceSpec.from_string(d.name).to_string() for d in tf.config.list_logical_devices("GPU")]
    return logical, len(tf.config.list_physical_devices("GPU")) < len(logical)


def _setup(kind: str, n: int) -> Setup:
    """Where a case runs. GPU names are nominal on a machine without GPUs (the contenders
    and their ids do not depend on the devices' existence; the benchmark then skips)."""
    if kind == "cpu":
        devices = tuple(cpu(i) for i in range(n))
    else:
        found, _ = _gpus()
        devices = (
            tuple(found[:n])
            if len(found) >= n
            else tuple(f"/job:localhost/replica:0/task:0/device:GPU:{i}" for i in range(n))
        )
    return Setup(
        devices=devices,
        device_type=kind.upper(),
        pack_max_bytes=BATCH_PACKING.max_bytes,
        pack_max_group=BATCH_PACKING.max_group,
        witness=kind == "gpu",
    )


def _contenders(kind: str, n: int) -> list[Contender]:
    setup = _setup(kind, n)
    split = kind == "gpu" and _gpus()[1]
    return [
        SpecContender(spec) for spec in default_specs(setup.devices, logical_split=split)
    ] + default_peers(setup)


PARAMS = [
    (kind, n, case, c.name)
    for kind in KINDS
    for n in DEVICE_COUNTS
    for case in CASES
    for c in _contenders(kind, n)
]


_last: dict[tuple[str, int, Case], tuple] = {}


def _inputs(kind: str, n: int, case: Case) -> tuple:
    """The inputs and expected sums of one case, kept until the next case (they can be large)."""
    if (kind, n, case) not in _last:
        _last.clear()
        _last[kind, n, case] = make_inputs(case, _setup(kind, n).devices)
    return _last[kind, n, case]


def _rounds(case: Case) -> int:
    return max(FULL.iters, min(MAX_ROUNDS, ROUND_BYTES // max(case.nbytes, 1)))


@pytest.mark.parametrize(
    ("kind", "n", "case", "name"),
    PARAMS,
    ids=[f"{kind}-{n}dev-{c.name}-{name}" for kind, n, c, name in PARAMS],
)
def test_all_reduce(benchmark, kind: str, n: int, case: Case, name: str) -> None:
    if kind == "gpu" and len(_gpus()[0]) < n:
        pytest.skip(
            f"needs {n} GPUs; TensorFlow sees {len(_gpus()[0])} (tf.config.list_logical_devices('GPU'))"
        )
    setup = _setup(kind, n)
    contender = next(c for c in _contenders(kind, n) if c.name == name)
    reason = contender.skip_reason(case, setup)
    if reason:
        pytest.skip(reason)
    inputs, expected = _inputs(kind, n, case)
    full, step = compile_step(contender, inputs, setup)
    try:
        outputs = full()
    except ValueError as err:
        pytest.skip(f"cannot run here: {err}")
    assert count_wrong(outputs, expected, case) == (0, 0)
    del outputs
    benchmark.group = f"{kind}-{n}dev-{case.name}"
    benchmark.extra_info.update(
        bytes_per_device=case.nbytes,
        devices=n,
        device_type=setup.device_type,
        kind=contender.kind,
        same_as=contender.same_as,
    )
    benchmark.pedantic(lambda: drain(step()), rounds=_rounds(case), warmup_rounds=1, iterations=1)
