"""Package-level behaviour: public names, the TensorFlow import error, logging."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import allreduce

ROOT = Path(__file__).resolve().parents[2]


def test_public_names_resolve() -> None:
    for name in allreduce.__all__:
        assert getattr(allreduce, name) is not None, name


def _without_tensorflow(body: str) -> subprocess.CompletedProcess:
    """Runs ``body`` in a fresh interpreter in which ``import tensorflow`` fails."""
    code = 'import sys\nsys.modules["tensorflow"] = None  # makes "import tensorflow" fail\n'
    code += textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_pure_layers_import_without_tensorflow() -> None:
    # Every module of the layers that must not need TensorFlow, found by folder.
    package = ROOT / "src" / "allreduce"
    modules = [
        ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        for folder in ("planning", "selection", "core")
        for path in sorted((package / folder).glob("*.py"))
        if path.name != "_tf.py"
    ]
    wanted = {"allreduce.planning.spec", "allreduce.planning.registry", "allreduce.selection.auto"}
    assert wanted <= set(modules)
    result = _without_tensorflow(
        f"""
        import importlib
        for name in {modules!r}:
            importlib.import_module(name)
        import allreduce
        assert allreduce.parse_all_reduce_spec("pscpu:2k:xring#2")[1].shards == 2
        assert "tensorflow" not in sys.modules or sys.modules["tensorflow"] is None
        print("pure ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "pure ok" in result.stdout


def test_tensorflow_names_without_tensorflow_say_which_extra_to_install() -> None:
    result = _without_tensorflow(
        """
        import allreduce
        try:
            allreduce.all_reduce
        except ImportError as err:
            print(err)
        else:
            raise SystemExit("all_reduce loaded without TensorFlow")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "allreduce[cpu]" in result.stdout and "allreduce[gpu]" in result.stdout


def test_unknown_attribute_is_an_attribute_error() -> None:
    import pytest

    with pytest.raises(AttributeError, match="no_such_name"):
        allreduce.no_such_name  # noqa: B018


def test_library_never_prints(capsys) -> None:
    import numpy as np
    import tensorflow as tf

    from tests.strategies import cpu, make_tensor

    towers = [[(make_tensor(np.ones(2), tf.float32, cpu(d)), "v")] * 3 for d in range(2)]
    allreduce.sum_gradients_all_reduce([], towers, 1, "xring", 1, [0, 1], agg_small_grads_max_bytes=100)
    assert capsys.readouterr().out == ""
