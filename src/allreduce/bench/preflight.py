"""Checks of the machine and the output paths, made before anything is measured.

Each raises :class:`~allreduce.bench.options.UsageError` with one line that says what
cannot be done. None of them imports TensorFlow except :func:`check_model_name`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

from allreduce.bench.options import Options, UsageError
from allreduce.measure.cases import Case, format_bytes

__all__ = [
    "available_memory",
    "check_memory",
    "check_model_name",
    "check_output",
    "check_plot_format",
    "model_names",
    "needed_memory",
]

# Bytes of scratch per element while the expected sums are computed (int64 and uint8).
_EXPECTED_SCRATCH = 10


def check_output(option: str, path: str) -> None:
    """Makes ``path``'s folder and checks that ``path`` can be written.

    Raises:
        UsageError: the folder cannot be made or the file cannot be opened for writing.
    """
    existed = os.path.lexists(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as err:
        raise UsageError(f"{option} {path}: cannot write there ({err.strerror or err})") from None
    if not existed:
        os.remove(path)


def check_plot_format(path: str) -> str:
    """The format of ``path`` (its extension, or ``png``) once matplotlib has written it.

    Raises:
        UsageError: matplotlib is not installed, or cannot write that format here.
    """
    try:
        from matplotlib.backend_bases import FigureCanvasBase
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'allreduce[bench]'") from None
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    fmt = extension or "png"
    known = FigureCanvasBase.get_supported_filetypes()
    if fmt not in known:
        raise UsageError(
            f"--plot {path}: matplotlib cannot write .{fmt}; use one of {', '.join(sorted(known))}"
        )
    figure = Figure(figsize=(1, 1), dpi=10)
    figure.text(0.5, 0.5, "GB/s")  # text is what needs LaTeX (pgf) or a font
    try:
        figure.savefig(io.BytesIO(), format=fmt)
    except Exception as err:
        raise UsageError(f"--plot {path}: matplotlib cannot write .{fmt} here ({err})") from None
    return fmt


def needed_memory(cases: Sequence[Case], num_devices: int, device_type: str) -> int:
    """A lower bound on the host memory the largest case needs, in bytes.

    Host copies of every device's inputs and the expected sums (with their int64
    scratch) always live in this process; on CPUs the input tensors and one step's
    outputs do too.
    """
    largest = max(cases, key=lambda c: c.nbytes)
    per_device = largest.nbytes
    host = num_devices * per_device + per_device + _EXPECTED_SCRATCH * largest.count
    if device_type.lower() == "cpu":
        host += 2 * num_devices * per_device
    return host


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (``MemAvailable``), if known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(cases: Sequence[Case], options: Options, available: int | None = None) -> None:
    """Refuses a run whose largest case cannot fit in ``available`` bytes (default: now).

    Raises:
        UsageError: :func:`needed_memory` exceeds the available memory.
    """
    if available is None:
        available = available_memory()
    need = needed_memory(cases, options.total_devices, options.device_type)
    if available is not None and need > available:
        largest = max(cases, key=lambda c: c.nbytes)
        raise UsageError(
            f"{largest.name} on {options.total_devices} devices needs at least {_gib(need)} of memory, "
            f"{_gib(available)} is available; lower --max-bytes or --devices"
        )


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.1f} GiB" if size >= 1 << 30 else format_bytes(size)


def model_names(tf: Any) -> list[str]:
    """The model builders of ``tf.keras.applications`` (``ResNet50``, ...)."""
    apps = tf.keras.applications
    return sorted(n for n in dir(apps) if n[:1].isupper() and callable(getattr(apps, n)))


def check_model_name(name: str, tf: Any) -> None:
    """Checks ``name`` against :func:`model_names` without building a model.

    Raises:
        UsageError: no such model.
    """
    names = model_names(tf)
    if name not in names:
        raise UsageError(
            f"--model {name!r} is not in tf.keras.applications; choose one of {', '.join(names)}"
        )
