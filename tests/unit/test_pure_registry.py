"""The algorithm table: names, hierarchical pairs, registration and builder lookup."""

from __future__ import annotations

import itertools
import re

import pytest

from allreduce.planning import registry
from allreduce.planning.algorithms.hierarchical import hierarchical_cost
from allreduce.planning.registry import (
    CPU,
    GPU,
    NAMED_HIERARCHICAL,
    AlgorithmInfo,
    algorithm_names,
    get_algorithm,
    register,
    unregister,
)

SEED_NAMES = ["xring", "rechd", "pscpu", "psgpu", "nccl", "collective", "simple", "better", "trivial"]
COMPOSABLE = [n for n in algorithm_names() if get_algorithm(n).composable]


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, AlgorithmInfo]:
    """A copy of the table that registrations go to, so that no test leaves one behind."""
    table = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_REGISTRY", table)
    return table


def test_flat_names_include_every_seed_algorithm_and_no_pair() -> None:
    names = algorithm_names()
    assert names[: len(SEED_NAMES)] == SEED_NAMES
    assert len(set(names)) == len(names)
    assert not any("/" in n for n in names)


def test_hierarchical_names_are_appended_on_request() -> None:
    assert algorithm_names(hierarchical=True) == algorithm_names() + list(NAMED_HIERARCHICAL)
    assert all(get_algorithm(n).name == n for n in NAMED_HIERARCHICAL)


@pytest.mark.parametrize(("lower", "upper"), list(itertools.product(COMPOSABLE, COMPOSABLE)))
def test_every_pair_of_composable_algorithms_is_hierarchical(lower: str, upper: str) -> None:
    name = f"{lower}/{upper}"
    info = get_algorithm(name)
    low, up = get_algorithm(lower), get_algorithm(upper)
    assert info.name == name
    assert info.levels == (lower, upper) and info.is_hierarchical
    assert info.builder is None and info.reducer is None
    assert info.level_infos == (low, up)
    assert info.device_types == low.device_types
    assert info.distinct_devices == low.distinct_devices
    assert info.composable is False and info.reduces is True
    assert info.takes_shards == up.takes_shards
    if up.takes_shards:
        assert info.shards == f"{up.shards} of the across-worker level"
    assert info.summary == f"{lower} within each worker, {upper} across workers, then broadcast"
    # What the tests, tools and tuning read of a pair: the levels' declarations combined.
    assert (info.shard_rule, info.gather_type) == (up.shard_rule, up.gather_type)
    assert info.physical_devices == (low.physical_devices or up.physical_devices)
    assert info.emulable == (low.emulable and up.emulable)
    assert info.failure_note == (low.failure_note or up.failure_note)
    assert info.cost is (hierarchical_cost if low.cost and up.cost else None)


def test_the_pairs_of_nccl_and_collective_carry_their_declarations() -> None:
    assert get_algorithm("nccl/xring").physical_devices and get_algorithm("xring/nccl").physical_devices
    assert not get_algorithm("xring/collective").emulable and not get_algorithm("collective/xring").emulable
    assert get_algorithm("collective/xring").failure_note == get_algorithm("collective").failure_note
    assert get_algorithm("xring/collective").failure_note == get_algorithm("collective").failure_note
    assert get_algorithm("xring/pscpu").cost is hierarchical_cost


def test_a_shard_count_of_one_is_always_accepted() -> None:
    one = ["/job:w/replica:0/task:0/device:CPU:0"]
    assert get_algorithm("pscpu").problem(one, 1) is None
    assert "needs 2 distinct CPU" in (get_algorithm("pscpu").problem(one, 2) or "")
    assert get_algorithm("torus").problem(one * 1, 1) is None


@pytest.mark.parametrize(
    "name",
    [
        "ring",
        "XRING",
        "xring/",
        "/xring",
        "xring/xring/xring",
        "trivial/xring",
        "xring/trivial",
        "",
        "xring#2",
    ],
)
def test_unknown_names_are_rejected_listing_the_known_ones(name: str) -> None:
    with pytest.raises(ValueError) as info:
        get_algorithm(name)
    message = str(info.value)
    assert message.startswith(f"unknown all-reduce algorithm {name!r}; known: ")
    assert f"known: {', '.join(algorithm_names())}, or A/B for two of them" in message
    assert "(e.g. 'nccl/xring', 'pscpu/pscpu')" in message


@pytest.mark.parametrize("value", [None, 3, ["xring"], ("xring",), b"xring"])
def test_non_string_names_are_type_errors(value: object) -> None:
    with pytest.raises(TypeError, match=f"an algorithm name must be a str, got {type(value).__name__}"):
        get_algorithm(value)  # type: ignore[arg-type]


def test_flat_entries_are_the_registered_objects() -> None:
    for name in algorithm_names():
        info = get_algorithm(name)
        assert info is registry._REGISTRY[name] and info.name == name
        assert not info.is_hierarchical and info.levels == ()
        assert info.device_types <= {CPU, GPU} and info.device_types


def test_register_adds_a_new_name(scratch_registry: dict[str, AlgorithmInfo]) -> None:
    info = AlgorithmInfo("myX-ring_2", "a test entry", None, frozenset({CPU}), shards="rings")
    assert register(info) is info
    assert get_algorithm("myX-ring_2") is info
    assert algorithm_names()[-1] == "myX-ring_2"
    assert get_algorithm("myX-ring_2/xring").levels == ("myX-ring_2", "xring")


def test_register_rejects_a_taken_name(scratch_registry: dict[str, AlgorithmInfo]) -> None:
    with pytest.raises(ValueError, match=re.escape("algorithm 'pscpu' is already registered")):
        register(AlgorithmInfo("pscpu", "again", None, frozenset({CPU})))
    assert scratch_registry["pscpu"] is get_algorithm("pscpu")


@pytest.mark.parametrize("name", ["a:b", "a#b", "a/b", ":", "#", "/", ""])
def test_register_rejects_names_with_spec_delimiters(
    scratch_registry: dict[str, AlgorithmInfo], name: str
) -> None:
    before = dict(scratch_registry)
    message = f"invalid algorithm name {name!r}: it may not contain ':', '#' or '/'"
    with pytest.raises(ValueError, match=re.escape(message)):
        register(AlgorithmInfo(name, "bad", None, frozenset({CPU})))
    assert scratch_registry == before


def test_unregister_removes_only_that_name_and_returns_its_entry(
    scratch_registry: dict[str, AlgorithmInfo],
) -> None:
    before = dict(scratch_registry)
    info = register(AlgorithmInfo("toy", "a test entry", None, frozenset({CPU})))
    assert unregister("toy") is info
    assert scratch_registry == before and algorithm_names() == list(before)
    with pytest.raises(ValueError, match=re.escape("unknown all-reduce algorithm 'toy'")):
        get_algorithm("toy")
    assert register(info) is info  # the name is free again


@pytest.mark.parametrize("name", ["toy", "xring/pscpu", ""])
def test_unregister_rejects_a_name_that_is_not_registered(
    scratch_registry: dict[str, AlgorithmInfo], name: str
) -> None:
    before = dict(scratch_registry)
    with pytest.raises(ValueError, match=f"^{re.escape(f'algorithm {name!r} is not registered')}$"):
        unregister(name)
    assert scratch_registry == before


def test_composable_flags() -> None:
    assert get_algorithm("trivial").composable is False and get_algorithm("trivial").reduces is False
    assert all(get_algorithm(n).reduces for n in algorithm_names() if n != "trivial")


def _declared_in(info: AlgorithmInfo) -> str:
    """The one module of ``allreduce.planning.algorithms`` that declares ``info`` (exports it)."""
    import importlib
    import pkgutil

    from allreduce.planning import algorithms

    found = []
    for module in pkgutil.iter_modules(algorithms.__path__):
        loaded = importlib.import_module(f"{algorithms.__name__}.{module.name}")
        found += [loaded.__name__ for name in loaded.__all__ if getattr(loaded, name) is info]
    assert len(found) == 1, (info.name, found)
    return found[0]


@pytest.mark.parametrize("info", registry.BUILT_IN, ids=lambda info: info.name)
def test_each_built_in_is_declared_in_one_pure_module_and_built_in_the_graph_module_of_its_name(
    info: AlgorithmInfo,
) -> None:
    from allreduce.graph.algorithms import BUILDERS, builder_of, reducer_of

    home = _declared_in(info)
    assert home.startswith("allreduce.planning.algorithms.")
    assert get_algorithm(info.name) is info and info.builder is None and info.reducer in (None, True)
    bound = BUILDERS[info.name]
    assert builder_of(info) is bound.all_reduce and reducer_of(info) is bound.reduce
    assert (bound.reduce is None) == (info.reducer is None)
    modules = {f.__module__ for f in bound if f is not None}
    assert modules == {home.replace("allreduce.planning.", "allreduce.graph.")}


def test_the_graph_layer_binds_exactly_the_built_in_names() -> None:
    from allreduce.graph.algorithms import BUILDERS, HIERARCHICAL

    assert list(BUILDERS) == [info.name for info in registry.BUILT_IN] + [HIERARCHICAL]
    assert [info.name for info in registry.BUILT_IN] == algorithm_names()


def test_hierarchical_builder_resolves() -> None:
    from allreduce.graph.algorithms import builder_of, reducer_of

    builder = builder_of(get_algorithm("pscpu/xring"))
    assert (builder.__module__, builder.__name__) == ("allreduce.graph.algorithms.hierarchical", "all_reduce")
    assert reducer_of(get_algorithm("pscpu/xring")) is None


def test_builders_given_at_registration_are_used_as_they_are() -> None:
    from allreduce.graph.algorithms import builder_of, reducer_of

    def build(values, devices, ctx):  # pragma: no cover - never built here
        return values

    def reduce(values, devices, ctx):  # pragma: no cover - never built here
        return values[0], devices[0]

    info = AlgorithmInfo("own", "own builders", build, frozenset({CPU}), reducer=reduce)
    assert builder_of(info) is build and reducer_of(info) is reduce
    assert reducer_of(AlgorithmInfo("own", "no reducer", build, frozenset({CPU}))) is None


@pytest.mark.parametrize("reducer", [None, True])
def test_an_algorithm_with_no_builder_bound_is_refused_naming_it(reducer: bool | None) -> None:
    from allreduce.graph.algorithms import builder_of, reducer_of

    info = AlgorithmInfo("unbound", "no builder", None, frozenset({CPU}), reducer=reducer)
    with pytest.raises(ValueError, match="algorithm 'unbound' has no builder"):
        builder_of(info)
    if reducer:
        with pytest.raises(ValueError, match="algorithm 'unbound' has no builder"):
            reducer_of(info)


# --- why an algorithm cannot run: the rules the registry declares ---------------------------


def cpus(n: int, task: int = 0) -> list[str]:
    return [f"/job:worker/replica:0/task:{task}/device:CPU:{i}" for i in range(n)]


def gpus(n: int, task: int = 0) -> list[str]:
    return [f"/job:worker/replica:0/task:{task}/device:GPU:{i}" for i in range(n)]


def test_device_types_are_checked_and_named() -> None:
    assert get_algorithm("xring").problem(cpus(2)) is None
    message = get_algorithm("nccl").problem([*gpus(1), cpus(1)[0]])
    assert message == (
        "algorithm 'nccl' runs on GPU devices only, but an input is on "
        "'/job:worker/replica:0/task:0/device:CPU:0' (try 'xring', 'rechd' or 'pscpu' on CPUs)"
    )
    message = get_algorithm("psgpu").problem(["/job:worker/replica:0/task:0/device:TPU:0"])
    assert message is not None and message.endswith("'/job:worker/replica:0/task:0/device:TPU:0'")


def test_distinct_devices_are_checked_and_the_repeats_named() -> None:
    assert get_algorithm("collective").problem(cpus(3)) is None
    assert get_algorithm("xring").problem([cpus(1)[0]] * 2) is None
    devices = [*cpus(2), cpus(1)[0]]
    assert get_algorithm("collective").problem(devices) == (
        "collective needs every input on a different device, but "
        "['/job:worker/replica:0/task:0/device:CPU:0'] hold more than one; "
        "use e.g. 'xring' or 'pscpu' instead"
    )


@pytest.mark.parametrize(("shards", "ok"), [(1, True), (3, True), (4, True), (5, False)])
def test_a_gather_shard_count_needs_as_many_gather_devices(shards: int, ok: bool) -> None:
    problem = get_algorithm("pscpu").problem(cpus(4), shards)
    assert (problem is None) == ok
    if not ok:
        assert problem == (
            f"pscpu#{shards} needs {shards} distinct CPU gather devices but the inputs offer 4: {cpus(4)}"
        )


def test_gpu_inputs_gather_on_one_cpu_per_worker() -> None:
    devices = gpus(2, task=0) + gpus(2, task=1)
    assert get_algorithm("pscpu").problem(devices, 2) is None
    assert "offer 2" in (get_algorithm("pscpu").problem(devices, 3) or "")
    assert get_algorithm("psgpu").problem(devices, 4) is None
    assert "needs 5 distinct GPU" in (get_algorithm("psgpu").problem(devices, 5) or "")


@pytest.mark.parametrize(
    ("n", "rows", "ok"), [(6, 1, True), (6, 2, True), (6, 3, True), (6, 4, False), (7, 7, True)]
)
def test_a_torus_row_count_must_divide_the_devices(n: int, rows: int, ok: bool) -> None:
    problem = get_algorithm("torus").problem(cpus(n), rows)
    assert (problem is None) == ok
    if not ok:
        assert problem == f"torus#{rows}: {rows} does not divide the {n} devices"


def test_any_ring_count_is_accepted() -> None:
    assert get_algorithm("xring").problem(cpus(2), 9) is None


def test_hierarchical_levels_are_checked_within_and_across_workers() -> None:
    devices = gpus(2, task=0) + gpus(2, task=1)
    assert get_algorithm("psgpu/xring").problem(devices) is None
    within = get_algorithm("nccl/xring").problem([*gpus(1, task=0), cpus(1, task=0)[0], *gpus(2, task=1)])
    assert within is not None and within.startswith("nccl/xring within a worker: algorithm 'nccl'")
    # pscpu leaves each worker's sum on that worker's CPU, which psgpu cannot take.
    across = get_algorithm("pscpu/psgpu").problem(devices)
    assert across is not None and across.startswith("pscpu/psgpu across workers: algorithm 'psgpu'")
    assert "'/job:worker/replica:0/task:0/device:CPU:0'" in across
    # The shard count applies across workers, over one sum per worker.
    assert get_algorithm("pscpu/pscpu").problem(devices, 2) is None
    assert "needs 3 distinct CPU" in (get_algorithm("pscpu/pscpu").problem(devices, 3) or "")
    # Explicit groups stand for workers on one task; a single group checks the lower level only.
    assert get_algorithm("xring/pscpu").problem(cpus(4), 2, [[0, 1], [2, 3]]) is None
    assert "needs 3" in (get_algorithm("xring/pscpu").problem(cpus(4), 3, [[0, 1], [2, 3]]) or "")
    assert get_algorithm("xring/pscpu").problem(cpus(4), 3, [[0, 1, 2, 3]]) is None


def test_a_gpu_gathering_lower_level_leaves_its_sums_on_gpus() -> None:
    # psgpu/psgpu runs only if the upper level is checked on the GPUs the lower one sums on
    # (the first of each worker's group), not on the worker's CPU.
    one_each = gpus(1, task=0) + gpus(1, task=1)
    assert get_algorithm("psgpu/psgpu").problem(one_each) is None
    assert get_algorithm("psgpu/psgpu").problem(gpus(2, task=0) + gpus(2, task=1), 2) is None
    assert get_algorithm("psgpu/psgpu").problem(gpus(4), 1, [[0], [1, 2, 3]]) is None
