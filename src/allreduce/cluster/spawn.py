"""How the package starts its local worker processes: one function, and the hook around it.

Pure Python. :func:`python_process` runs ``python -m MODULE ARGS`` in a session of its
own; :mod:`allreduce.cluster.supervisor` (the servers of ``local_cluster``) and
:mod:`allreduce.spmd.launcher` (the workers of ``spmd.launch``) both call it. Each worker
module takes the pid of the process that started it as its last argument and dies with it.

:data:`PYTHON` is the interpreter command and :data:`START` the function that starts
the process (``subprocess.Popen`` by default); a test harness may replace either, for
example to run the workers under coverage or to fork them from a process that has
already imported TensorFlow.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

__all__ = ["PYTHON", "START", "python_process"]

#: The interpreter command a worker runs under.
PYTHON: list[str] = [sys.executable]


def _popen(command: Sequence[str], **options: Any) -> subprocess.Popen:
    return subprocess.Popen(list(command), **options)


#: Starts ``command`` with :class:`subprocess.Popen`'s keyword options.
START: Callable[..., Any] = _popen


def python_process(
    module: str,
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    stdin: int | IO[Any] | None,
    stdout: int | IO[Any] | None,
    stderr: int | IO[Any] | None,
) -> Any:
    """Starts ``PYTHON -m module *args`` in a new session (Ctrl-C reaches only its
    parent, which then stops it); returns the process (a :class:`subprocess.Popen`)."""
    command = [*PYTHON, "-m", module, *args]
    return START(command, stdin=stdin, stdout=stdout, stderr=stderr, env=dict(env), start_new_session=True)
