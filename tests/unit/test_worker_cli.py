"""``allreduce-worker``'s arguments: the task it resolves from ``--cluster-spec`` or
``TF_CONFIG``, and bad arguments that exit 2 with one line before TensorFlow loads.

Running servers, their logs and their exit on signals: tests/multiworker/test_worker_command.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from allreduce.cluster.worker_cli import EXIT_USAGE, Task, build_parser, main, resolve_task

SPEC = {"worker": ["127.0.0.1:5000", "127.0.0.1:5001"]}


def _tf_config(task: dict | None = None, cluster: dict = SPEC) -> str:
    return json.dumps({"cluster": cluster, **({"task": task} if task is not None else {})})


def _resolve(argv: list[str], environ: dict[str, str] | None = None) -> Task:
    return resolve_task(build_parser().parse_args(argv), environ or {})


def test_the_task_comes_from_the_command_line_first():
    environ = {"TF_CONFIG": _tf_config({"type": "worker", "index": 0})}
    task = _resolve(["--cluster-spec", json.dumps(SPEC), "--task-index", "1"], environ)
    assert task == Task(SPEC, "worker", 1)
    assert task.address == "127.0.0.1:5001" and task.prefix == "/job:worker/replica:0/task:1"


def test_the_task_comes_from_tf_config_with_its_job():
    cluster = {"chief": ["127.0.0.1:4999"], **SPEC, "localhost": ["127.0.0.1:6000"]}
    task = _resolve([], {"TF_CONFIG": _tf_config({"type": "chief", "index": 0}, cluster)})
    assert task == Task({"chief": ["127.0.0.1:4999"], **SPEC}, "chief", 0)


def test_another_job_name_is_taken_from_the_command_line():
    spec = {"ps": ["127.0.0.1:7000"], **SPEC}
    assert _resolve(["--cluster-spec", json.dumps(spec), "--task-index", "0", "--job-name", "ps"]).job == "ps"


@pytest.mark.parametrize(
    ("argv", "tf_config", "words"),
    [
        ([], None, "no cluster: give --cluster-spec JSON --task-index N, or set TF_CONFIG"),
        (["--cluster-spec", json.dumps(SPEC)], None, "--cluster-spec needs --task-index N"),
        (["--task-index", "0"], None, "--task-index needs --cluster-spec JSON"),
        (["--cluster-spec", "{", "--task-index", "0"], None, "--cluster-spec is not JSON"),
        (["--cluster-spec", "[]", "--task-index", "0"], None, "cluster_spec must be a dict"),
        (
            ["--cluster-spec", json.dumps(SPEC), "--task-index", "2"],
            None,
            "task index 2 is not in job 'worker'",
        ),
        (["--cluster-spec", json.dumps(SPEC), "--task-index", "-1"], None, "expected a task index"),
        (["--cluster-spec", json.dumps(SPEC), "--task-index", "0", "--job-name", "ps"], None, "'ps'"),
        (["--cluster-spec", '{"worker": ["h"]}', "--task-index", "0"], None, "is not 'host:port'"),
        (["--devices", "0"], None, "--devices: expected a positive integer, got '0'"),
        (["--devices", "2", "--gpus"], None, "--gpus: not allowed with argument --devices"),
        (["--no-such-option"], None, "unrecognized arguments: --no-such-option"),
        ([], "{not json", "TF_CONFIG is not JSON"),
        ([], '{"task": {}}', 'TF_CONFIG must be an object with a "cluster" object'),
        ([], _tf_config(), "TF_CONFIG names no task"),
        ([], _tf_config({"type": "worker"}), '"task" must be {"type": JOB, "index": N}'),
        ([], _tf_config({"type": "worker", "index": True}), '"task" must be'),
        ([], _tf_config({"type": "worker", "index": 5}), "task index 5 is not in job 'worker'"),
        ([], _tf_config({"type": "localhost", "index": 0}), "job_name 'localhost' is not a worker job"),
        (["--job-name", "ps"], _tf_config({"type": "worker", "index": 0}), "--job-name ps differs"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(monkeypatch, capsys, argv, tf_config, words):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if tf_config is not None:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    assert main(argv) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("allreduce-worker: error: "), err
    assert words in lines[0]


def test_help_exits_0_and_names_every_option(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--cluster-spec", "--task-index", "--job-name", "--devices", "--gpus"):
        assert option in text


# The installed command, with ``import tensorflow`` made to fail: bad arguments must not need it.
_WITHOUT_TF = (
    "import sys; sys.modules['tensorflow'] = None; "
    "from allreduce.cluster.worker_cli import main; "
    "print(main(sys.argv[1:]), 'allreduce.core._tf' in sys.modules)"
)


def test_the_command_exits_2_without_loading_tensorflow():
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    script = Path(sys.executable).with_name("allreduce-worker")
    done = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.count("\n") == 1 and "no cluster" in done.stderr
    argv = ["--cluster-spec", json.dumps(SPEC), "--task-index", "7"]
    blocked = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TF, *argv], env=env, capture_output=True, text=True, timeout=60
    )
    assert blocked.stdout.split() == ["2", "False"], blocked.stderr
