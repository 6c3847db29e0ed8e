"""One worker process of :func:`allreduce.spmd.launch`.

Run as ``python -m allreduce.spmd._child FOLDER TASK DEVICES PARENT_PID`` with
``TF_CONFIG`` set: it dies with its parent, splits its CPU into ``DEVICES`` logical
devices, runs the pickled function ``FOLDER/fn.pkl`` and writes ``("ok", value)`` or
``("error", (exception, traceback))`` to ``FOLDER/result-TASK.pkl``. After a result it
waits for ``SIGTERM``: its server may still be needed by the other workers (TensorFlow
resolves collective groups through the first worker) until every worker is done.
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import sys
import traceback
from pathlib import Path


def encode(outcome: tuple) -> bytes:
    """``outcome`` pickled; an unpicklable value or exception becomes an error with its text."""
    try:
        data = pickle.dumps(outcome)
        pickle.loads(data)
    except Exception as err:  # an unpicklable value or exception: send its text
        kind, detail = outcome
        text = detail[1] if kind == "error" else repr(detail)
        data = pickle.dumps(("error", (RuntimeError(f"unpicklable {kind} result: {err}"), text)))
    return data


def _write(path: Path, outcome: tuple) -> None:
    partial = path.with_suffix(".part")
    partial.write_bytes(encode(outcome))
    partial.rename(path)


def _load_main() -> None:
    """Loads the launching script as ``__main__`` (as ``__mp_main__``, so that its
    ``if __name__ == "__main__"`` block does not run), for functions pickled from it."""
    path = os.environ.get("ALLREDUCE_SPMD_MAIN")
    if not path:
        return
    import importlib.machinery
    import importlib.util

    # An explicit loader: the script may have no ".py" suffix (a console script).
    loader = importlib.machinery.SourceFileLoader("__mp_main__", path)
    spec = importlib.util.spec_from_file_location("__mp_main__", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["__mp_main__"] = module
    spec.loader.exec_module(module)
    sys.modules["__main__"] = module


def _exit(code: int) -> None:
    """Saves a running coverage measurement (the test suite measures workers), runs the
    exit handlers, then leaves at once: TensorFlow's server threads have no clean
    shutdown to wait for."""
    coverage = sys.modules.get("coverage")
    current = coverage.Coverage.current() if coverage is not None else None
    if current is not None:
        current.stop()
        current.save()
    atexit._run_exitfuncs()
    os._exit(code)


def _leave(signum: int, frame: object) -> None:
    """On ``SIGTERM``: leaves (see :func:`_exit`)."""
    del signum, frame
    _exit(0)


def main(argv: list[str]) -> int:  # pragma: no cover - runs in the worker processes
    folder, task, devices, parent = Path(argv[0]), int(argv[1]), int(argv[2]), int(argv[3])
    from allreduce.cluster.worker import die_with_parent

    die_with_parent(parent)
    signal.signal(signal.SIGTERM, _leave)
    result = folder / f"result-{task}.pkl"
    try:
        from allreduce.spmd.runtime import start

        start(devices_per_worker=devices)
        _load_main()
        fn = pickle.loads((folder / "fn.pkl").read_bytes())
        _write(result, ("ok", fn()))
    except BaseException as err:  # every failure reaches the parent, with its traceback
        _write(result, ("error", (err, traceback.format_exc())))
        sys.stderr.flush()
        _exit(1)
    sys.stdout.flush()
    while True:  # until the parent stops it, or dies (die_with_parent)
        signal.pause()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
