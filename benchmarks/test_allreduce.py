"""pytest-benchmark suites of allreduce-bench's cases: every spec and peer, by device count
and size, on logical CPUs (the root conftest splits the CPU into 8).

    .venv/bin/pytest benchmarks --benchmark-only --benchmark-group-by=group
    .venv/bin/pytest benchmarks --benchmark-only --benchmark-autosave        # keep a run
    .venv/bin/pytest benchmarks --benchmark-only --benchmark-compare         # against the last

Groups are named ``{devices}dev-{size}`` (``4dev-16MiB``, ``4dev-200x1000``); within a
group the rows compare specs and peers. Each benchmark first checks that its contender's
result is exact on every device. ``-k 4dev-16MiB`` or ``-k xring`` selects a slice.
"""

from __future__ import annotations

import pytest
from tests.strategies import cpu

from allreduce.bench.cases import Case, many_small_case, sweep_cases
from allreduce.bench.contenders import Contender, Setup, SpecContender, default_specs
from allreduce.bench.driver import compile_step, count_wrong, drain, make_inputs
from allreduce.bench.options import BATCH_PACKING, FULL, QUICK
from allreduce.bench.peers import default_peers

DEVICE_COUNTS = (2, 4)
CASES = [*sweep_cases(QUICK.min_bytes, QUICK.max_bytes, QUICK.factor, "float32"), many_small_case("float32")]
# Rounds per benchmark: at least a full run's timed steps, at most this many, and about
# 64 MiB per device in all between them.
MAX_ROUNDS = 50
ROUND_BYTES = 64 << 20


def _setup(n: int) -> Setup:
    devices = tuple(cpu(i) for i in range(n))
    return Setup(
        devices=devices,
        device_type="CPU",
        pack_max_bytes=BATCH_PACKING.max_bytes,
        pack_max_group=BATCH_PACKING.max_group,
    )


def _contenders(n: int) -> list[Contender]:
    setup = _setup(n)
    return [SpecContender(spec) for spec in default_specs(setup.devices)] + default_peers(setup)


PARAMS = [(n, case, c.name) for n in DEVICE_COUNTS for case in CASES for c in _contenders(n)]


_last: dict[tuple[int, Case], tuple] = {}


def _inputs(n: int, case: Case) -> tuple:
    """The inputs and expected sums of one case, kept until the next case (they can be large)."""
    if (n, case) not in _last:
        _last.clear()
        _last[n, case] = make_inputs(case, _setup(n).devices)
    return _last[n, case]


def _rounds(case: Case) -> int:
    return max(FULL.iters, min(MAX_ROUNDS, ROUND_BYTES // max(case.nbytes, 1)))


@pytest.mark.parametrize(
    ("n", "case", "name"), PARAMS, ids=[f"{n}dev-{c.name}-{name}" for n, c, name in PARAMS]
)
def test_all_reduce(benchmark, n: int, case: Case, name: str) -> None:
    setup = _setup(n)
    contender = next(c for c in _contenders(n) if c.name == name)
    reason = contender.skip_reason(case, setup)
    if reason:
        pytest.skip(reason)
    inputs, expected = _inputs(n, case)
    full, step = compile_step(contender, inputs, setup)
    try:
        outputs = full()
    except ValueError as err:
        pytest.skip(f"cannot run here: {err}")
    assert count_wrong(outputs, expected, case) == (0, 0)
    del outputs
    benchmark.group = f"{n}dev-{case.name}"
    benchmark.extra_info.update(
        bytes_per_device=case.nbytes, devices=n, kind=contender.kind, same_as=contender.same_as
    )
    benchmark.pedantic(lambda: drain(step()), rounds=_rounds(case), warmup_rounds=1, iterations=1)
