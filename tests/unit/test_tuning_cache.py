"""The tuning cache: keys, hits, corrupt and foreign files, atomic writes, threads."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from allreduce.selection import cache
from allreduce.tuning.tuner import tune_entry
from tests.unit.test_tuning_search import CPUS, MACHINE, FakeMachine

SIZES = [10, 20, 5000, 300_000]


def test_the_key_holds_devices_types_workers_dtype_versions_and_the_workload():
    workers = [f"/job:worker/replica:0/task:{t}/device:CPU:{i}" for t in range(2) for i in range(2)]
    key = cache.key_of(workers, "float16", SIZES)
    assert key["devices"] == workers
    assert key["device_types"] == ["CPU"]
    assert key["workers"] == [2, 2]
    assert key["dtype"] == "float16"
    assert key["allreduce"] and key["tensorflow"] not in ("", None)
    assert key["workload"] == {"2": 0, "3": 0, "7": 0, "10": 0}
    assert cache.entry_path(cache.cache_dir("x"), key) != cache.entry_path(
        cache.cache_dir("x"), cache.key_of(workers, "float32", SIZES)
    )


def test_the_cache_folder_comes_from_the_argument_then_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV_DIR, str(tmp_path / "env"))
    assert cache.cache_dir(tmp_path / "given") == tmp_path / "given"
    assert cache.cache_dir() == tmp_path / "env"
    monkeypatch.delenv(cache.ENV_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "allreduce"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "allreduce"


def test_a_second_call_with_the_same_key_returns_without_measuring(tmp_path):
    machine = FakeMachine(MACHINE)
    first = tune_entry(CPUS, SIZES, cache_dir=tmp_path, measure=machine)
    asked = len(machine.asked)
    again = tune_entry(CPUS, list(reversed(SIZES)), cache_dir=tmp_path, measure=machine)
    assert len(machine.asked) == asked
    assert (first["cached"], again["cached"]) == (False, True)
    assert again["spec"] == first["spec"]
    stored = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert stored["format"] == cache.FORMAT
    assert len(stored["samples"]) == len({(s["spec"], s["band"]) for s in stored["samples"]}) > 0
    assert all(len(s["seconds"]) >= 7 for s in stored["samples"])
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".json"] == []  # no temporary left


@pytest.mark.parametrize(
    "content",
    [
        "{ not json",
        "\xff\xfe",
        json.dumps(["a list"]),
        json.dumps({"format": "someone-else/3", "spec": "xring"}),
        json.dumps({"format": cache.FORMAT, "spec": "xring", "key": {"devices": ["elsewhere"]}}),
        json.dumps({"format": cache.FORMAT, "key": {}}),
    ],
)
def test_a_corrupt_or_foreign_file_is_a_warning_and_a_fresh_tuning(tmp_path, caplog, content):
    path = cache.entry_path(tmp_path, cache.key_of(CPUS, "float32", SIZES))
    path.write_text(content, encoding="latin-1")
    machine = FakeMachine(MACHINE)
    with caplog.at_level(logging.WARNING, logger="allreduce.selection.cache"):
        entry = tune_entry(CPUS, SIZES, cache_dir=tmp_path, measure=machine)
    assert machine.asked and not entry["cached"]
    assert "ignoring tuning cache file" in caplog.text
    assert json.loads(path.read_text())["spec"] == entry["spec"]  # replaced by the fresh tuning


def test_an_unwritable_cache_is_a_warning_not_an_error(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        entry = tune_entry(CPUS, SIZES, cache_dir=blocker / "sub", measure=FakeMachine(MACHINE))
    assert entry["spec"] and "cannot write the tuning cache" in caplog.text


def test_tunings_from_several_threads_measure_once_and_agree(tmp_path):
    machine = FakeMachine(MACHINE)
    lock = threading.Lock()

    def measure(sizes, specs):
        with lock:
            return machine(sizes, specs)

    results: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                tune_entry(CPUS, SIZES, cache_dir=tmp_path, measure=measure)["spec"]
            )
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and len(set(results)) == 1
    single = FakeMachine(MACHINE)
    tune_entry(CPUS, SIZES, cache_dir=tmp_path / "once", measure=single)
    assert len(machine.asked) == len(single.asked)


def test_store_writes_whole_files_only(tmp_path):
    path = tmp_path / "a" / "entry.json"
    cache.store(path, {"spec": "xring", "key": {"workload": {}}})
    assert cache.load(path)["spec"] == "xring"
    with pytest.raises(TypeError):
        cache.store(path, {"spec": object()})
    assert cache.load(path)["spec"] == "xring"
    assert sorted(p.name for p in path.parent.iterdir()) == ["entry.json"]
    assert cache.load(tmp_path / "missing.json") is None


def test_versions_come_from_the_installed_distribution_before_tensorflow_is_imported(monkeypatch):
    import sys

    import tensorflow as tf

    monkeypatch.setitem(sys.modules, "tensorflow", None)
    assert cache.topology(CPUS, "float32")["tensorflow"] == tf.__version__


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cache.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        cache.store(tmp_path / "entry.json", {"spec": "xring", "key": {}})
    assert list(tmp_path.iterdir()) == []
