"""Importing TensorFlow without its start-up noise on stderr.

TensorFlow 2.21's C++ start-up writes absl's "All log messages before
absl::InitializeLog()" warning and oneDNN's notice straight to file descriptor 2, and
``TF_CPP_MIN_LOG_LEVEL`` does not silence them. So, unless asked to be verbose, the
import runs with descriptor 2 pointed at a temporary file, which is shown only when the
import fails.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["import_tensorflow"]

# Read once, when TensorFlow's C++ library loads: 3 keeps only fatal messages.
_QUIET_LEVEL = "3"


@contextmanager
def _stderr_to(file: Any) -> Iterator[None]:
    """Points file descriptor 2 at ``file`` for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _import_quietly() -> Any:
    with tempfile.TemporaryFile() as capture:
        try:
            with _stderr_to(capture):
                from allreduce.core._tf import tf
        except BaseException:
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
    return tf


def import_tensorflow(verbose: bool) -> Any:
    """Imports and returns ``tensorflow``; silences its start-up unless ``verbose``.

    Raises:
        ImportError: TensorFlow is missing or fails to load (after showing what it wrote
            to stderr).
    """
    if verbose or "tensorflow" in sys.modules:
        from allreduce.core._tf import tf
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _QUIET_LEVEL)
        tf = _import_quietly()
    if not verbose:
        tf.get_logger().setLevel("ERROR")
    return tf
