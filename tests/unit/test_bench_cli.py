"""allreduce-bench as a command, in child processes: what it prints, its exit status,
what it does without TensorFlow, TensorFlow's start-up noise, and Ctrl-C.

Usage errors, ``--help``, ``--version`` and ``--list-specs`` run in one child process
in which ``import tensorflow`` fails (``sys.modules["tensorflow"] = None``): each must
do its job without it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import selectors
import signal
import subprocess
import sys
import time

import pytest

from allreduce.planning.registry import algorithm_names, get_algorithm
from tests import forkserver

# Runs main() on each argv of a JSON list with the named modules blocked; prints the
# status, stdout and stderr of each, and which of the blocked modules got loaded.
_BLOCKED = r"""
import contextlib, io, json, sys
blocked = json.loads(sys.argv[1])
for name in blocked:
    sys.modules[name] = None
from allreduce.bench.cli import main
runs = []
for argv in json.loads(sys.argv[2]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except BaseException as exc:
            status = f"raised {type(exc).__name__}: {exc}"
    runs.append({"status": status, "out": out.getvalue(), "err": err.getvalue()})
loaded = sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in blocked)
print(json.dumps({"runs": runs, "loaded": loaded, "tf_shim": "allreduce.core._tf" in sys.modules}))
"""

# Restores Python's own SIGINT handler (a shell may start background jobs with SIGINT
# ignored), then runs the command.
_INTERRUPTIBLE = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from allreduce.bench.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _blocked(argvs: list[list[str]], blocked: list[str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKED, json.dumps(blocked), json.dumps(argvs)],
        env={k: v for k, v in os.environ.items() if k != "TF_CONFIG"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _usage_cases(tmp) -> dict[str, list[str]]:
    afile = tmp / "afile"
    afile.write_text("")
    return {
        "sizes below one element": ["--min-bytes", "3", "--max-bytes", "3"],
        "model without its workload": ["--model", "VGG16"],
        "plot format": ["--plot", str(tmp / "p.docx")],
        "unwritable json": ["--json", str(afile / "r.json")],
        "json is a folder": ["--json", str(tmp)],
        "unwritable plot": ["--plot", str(afile / "p.png")],
        "more memory than the machine has": ["--min-bytes", "4096G", "--max-bytes", "4096G"],
        "unknown spec": ["--specs", "nosuchalg"],
        "empty specs": ["--specs", ","],
        "an empty spec among others": ["--specs", "xring,,pscpu"],
        "negative min bytes": ["--min-bytes", "-5"],
        "unknown peer": ["--peers", "nosuchpeer"],
        "peers and no peers": ["--no-peers", "--peers", "numpy"],
        "factor": ["--factor", "1"],
        "min above max": ["--min-bytes", "2M", "--max-bytes", "1M"],
        "too many devices for bfloat16": ["--dtype", "bfloat16", "--devices", "22"],
        "zero iters": ["--iters", "0"],
        "bad timeout": ["--op-timeout", "-1"],
        "workers on gpus": ["--workers", "2", "--device-type", "gpu"],
        "unknown option": ["--nosuchoption"],
        "connect and workers": ["--connect", '{"worker": ["127.0.0.1:5000"]}', "--workers", "2"],
        "connect and devices": ["--connect", '{"worker": ["127.0.0.1:5000"]}', "--devices", "2"],
        "connect spec not json": ["--connect", '{"worker": ["127.0.0.1:5000"]'],
        "connect spec without workers": ["--connect", '{"ps": ["127.0.0.1:5000"]}'],
        "connect without tf_config": ["--connect", "--no-progress"],
        "connect to remote workers only": ["--connect", '{"worker": ["10.1.2.3:5000"]}'],
        "ray without workers": ["--ray", "--devices", "2"],
        "ray and connect": ["--ray", "auto", "--workers", "2", "--connect", '{"worker": ["127.0.0.1:5000"]}'],
        "ray address malformed": ["--ray", "no port here", "--workers", "2"],
        "spmd and connect": ["--spmd", "--workers", "2", "--connect", '{"worker": ["127.0.0.1:5000"]}'],
        "spmd and ray": ["--spmd", "--workers", "2", "--ray"],
        "spmd without workers": ["--spmd", "--devices", "2"],
        "spmd with one worker": ["--spmd", "--workers", "1"],
        "spmd spec without an spmd form": ["--spmd", "--workers", "2", "--specs", "xring,simple"],
        "spmd compression": ["--spmd", "--workers", "2", "--compression", "bf16"],
        "spmd wire": ["--spmd", "--workers", "2", "--specs", "xring@bf16"],
        "spmd model": ["--spmd", "--workers", "2", "--workload", "model"],
        "spmd other peers": ["--spmd", "--workers", "2", "--peers", "numpy"],
        "spmd peer without spmd": ["--peers", "tf:CollectiveReduceV2"],
    }


_WORDS = {
    "sizes below one element": "one float32 element",
    "model without its workload": "--workload model",
    "plot format": ".docx",
    "unwritable json": "cannot write",
    "json is a folder": "cannot write",
    "unwritable plot": "cannot write",
    "more memory than the machine has": "memory",
    "unknown spec": "nosuchalg",
    "empty specs": "--specs",
    "an empty spec among others": "got 'xring,,pscpu' (an empty name)",
    "negative min bytes": "--min-bytes: expected at least 1, got '-5'",
    "unknown peer": "nosuchpeer",
    "peers and no peers": "not allowed",
    "factor": "--factor",
    "min above max": "exceeds",
    "too many devices for bfloat16": "at most 21",
    "zero iters": "--iters",
    "bad timeout": "--op-timeout",
    "workers on gpus": "--workers",
    "unknown option": "--nosuchoption",
    "connect and workers": "--workers does not go with --connect",
    "connect and devices": "--devices does not go with --connect",
    "connect spec not json": "--connect is not JSON",
    "connect spec without workers": "job_name 'worker' is not a worker job",
    "connect without tf_config": "reads TF_CONFIG, which is not set",
    "connect to remote workers only": "need an address of this process",
    "ray without workers": "--ray needs --workers N",
    "ray and connect": "--ray does not go with --connect",
    "ray address malformed": "--ray: ",
    "spmd and connect": "--spmd does not go with --connect",
    "spmd and ray": "--spmd does not go with --ray",
    "spmd without workers": "--spmd needs --workers N with N >= 2",
    "spmd with one worker": "--spmd needs --workers N with N >= 2",
    "spmd spec without an spmd form": "--specs: spec 'simple': 'simple' cannot run across workers in SPMD",
    "spmd compression": "--compression does not go with --spmd",
    "spmd wire": "--specs xring@bf16: the SPMD sweep measures exact sums only",
    "spmd model": "--spmd measures --workload sweep or many-small",
    "spmd other peers": "with --spmd the one peer is tf:CollectiveReduceV2",
    "spmd peer without spmd": "use it with --spmd",
}
_INFO = {"help": ["--help"], "version": ["--version"], "list specs": ["--list-specs"]}


@pytest.fixture(scope="module")
def without_tensorflow(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("bench-cli")
    named = {**_usage_cases(tmp), **_INFO}
    found = _blocked(list(named.values()), ["tensorflow", "keras"])
    return {"runs": dict(zip(named, found["runs"])), "loaded": found["loaded"], "tf_shim": found["tf_shim"]}


def test_nothing_loaded_tensorflow(without_tensorflow):
    assert without_tensorflow["loaded"] == [] and not without_tensorflow["tf_shim"]


def test_a_run_without_tensorflow_is_one_line_naming_the_extras_and_exit_2():
    (run,) = _blocked([["--quick", "--no-progress"]], ["tensorflow", "keras"])["runs"]
    assert run["status"] == 2, run
    lines = run["err"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("allreduce-bench: error: "), run["err"]
    assert "allreduce[cpu]" in lines[0] and "allreduce[gpu]" in lines[0]


@pytest.mark.parametrize("name", sorted(_WORDS))
def test_usage_errors_exit_2_with_one_line_and_no_tensorflow(name, without_tensorflow):
    run = without_tensorflow["runs"][name]
    assert run["status"] == 2, run
    assert run["out"] == ""
    lines = run["err"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("allreduce-bench: error: "), run["err"]
    assert _WORDS[name] in lines[0]


def test_help_works_without_tensorflow(without_tensorflow):
    run = without_tensorflow["runs"]["help"]
    assert run["status"] == 0 and run["err"] == ""
    assert "--list-specs" in run["out"] and "--version" in run["out"] and "130" in run["out"]


def test_version_prints_the_installed_version(without_tensorflow):
    run = without_tensorflow["runs"]["version"]
    assert run["status"] == 0
    assert run["out"].strip() == f"allreduce-bench {importlib.metadata.version('allreduce')}"


def test_list_specs_describes_the_registry_without_tensorflow(without_tensorflow):
    run = without_tensorflow["runs"]["list specs"]
    assert run["status"] == 0, run
    for name in algorithm_names(hierarchical=True):
        info = get_algorithm(name)
        assert f"  {name} " in run["out"] and info.summary in run["out"]
        assert f"runs on {'/'.join(sorted(info.device_types))}" in run["out"]


def test_plot_without_matplotlib_is_a_usage_error(tmp_path):
    found = _blocked([["--plot", str(tmp_path / "p.png")]], ["tensorflow", "matplotlib"])
    (run,) = found["runs"]
    assert run["status"] == 2 and "matplotlib" in run["err"], run
    assert len(run["err"].strip().splitlines()) == 1
    assert found["loaded"] == [] and not (tmp_path / "p.png").exists()


def test_the_module_entry_point_exits_2_without_a_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "allreduce.bench", "--min-bytes", "3", "--max-bytes", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


_TINY = ["--quick", "--max-bytes", "1K", "--iters", "1", "--warmup", "0", "--no-progress"]


def test_tensorflow_start_up_noise_is_silenced():
    argv = [*_TINY, "--specs", "simple", "--peers", "numpy"]
    done = subprocess.run(
        [sys.executable, "-m", "allreduce.bench", *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for noise in ("absl::InitializeLog", "oneDNN", "cpu_feature_guard", "I0000"):
        assert noise not in done.stderr, done.stderr
    assert done.stderr == ""


def _first_row(proc: subprocess.Popen, timeout_s: float) -> bytes | None:
    """Reads stdout until a table row (a line not starting with '#') has arrived."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    seen = b""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(deadline - time.monotonic(), 0)):
                continue
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            if not chunk:
                return None
            seen += chunk
            if any(line and not line.startswith(b"#") for line in seen.split(b"\n")[:-1]):
                return seen
        return None
    finally:
        selector.close()


def test_rows_stream_and_ctrl_c_keeps_them_in_the_table_and_the_json(tmp_path):
    report = tmp_path / "r.json"
    # 1 KiB is done in a fraction of a second; the sweep up to 16 MiB takes far longer.
    argv = ["--specs", "simple", "--peers", "numpy", "--min-bytes", "1K", "--max-bytes", "16M"]
    argv += ["--iters", "300", "--warmup", "0", "--no-progress", "--json", str(report)]
    proc = forkserver.popen(
        [sys.executable, "-c", _INTERRUPTIBLE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        seen = _first_row(proc, timeout_s=120)
        assert proc.poll() is None, "the run ended before its first row was read"
        assert seen is not None, "no row on stdout while the run went on"
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    out = (seen + rest).decode()
    assert proc.returncode == 130, out + err.decode()
    assert "Traceback" not in err.decode()
    assert out.startswith("# allreduce-bench:") and "INTERRUPTED" in out
    rows = [line.split() for line in out.splitlines() if line and not line.startswith("#")]
    assert {row[3] for row in rows if row[0] == "1024"} == {"simple", "numpy"}
    assert len(rows) < 2 * 15  # stopped before the last size
    document = json.loads(report.read_text())
    assert document["interrupted"] is True and document["ok"] is False
    first = [r for r in document["results"] if r["case"] == "1KiB"]
    assert {r["name"] for r in first} == {"simple", "numpy"}
    assert all(r["wrong"] == 0 and len(r["samples_us"]) == 300 for r in first)
