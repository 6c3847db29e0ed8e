"""Package-level behaviour: public names, the TensorFlow import error, logging."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import allreduce


def test_public_names_resolve() -> None:
    for name in allreduce.__all__:
        assert getattr(allreduce, name) is not None, name


def test_import_without_tensorflow_says_which_extra_to_install() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["tensorflow"] = None  # makes "import tensorflow" fail
        try:
            import allreduce
        except ImportError as err:
            print(err)
        else:
            raise SystemExit("imported without TensorFlow")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "allreduce[cpu]" in result.stdout and "allreduce[gpu]" in result.stdout


def test_library_never_prints(capsys) -> None:
    import numpy as np
    import tensorflow as tf

    from tests.strategies import cpu, make_tensor

    towers = [[(make_tensor(np.ones(2), tf.float32, cpu(d)), "v")] * 3 for d in range(2)]
    allreduce.sum_gradients_all_reduce([], towers, 1, "xring", 1, [0, 1], agg_small_grads_max_bytes=100)
    assert capsys.readouterr().out == ""
