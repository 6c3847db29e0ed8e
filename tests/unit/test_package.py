"""Package-level behaviour: public names, the TensorFlow import error, logging."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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


def test_the_license_is_an_spdx_string_with_its_text_in_the_repository() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert project["project"]["license-files"] == ["LICENSE"]
    # setuptools reads both fields from 77 on.
    assert "setuptools>=77" in project["build-system"]["requires"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_wheel_ships_the_license_and_builds_without_a_deprecation_warning(tmp_path: Path) -> None:
    import zipfile

    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "deprecated" not in output.lower(), [line for line in output.splitlines() if "eprecat" in line]
    (wheel,) = tmp_path.glob("allreduce-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        licenses = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert licenses, names
        assert archive.read(licenses[0]) == (ROOT / "LICENSE").read_bytes()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata


def test_the_cluster_backends_are_reached_from_the_package_without_tensorflow() -> None:
    result = _without_tensorflow(
        """
        import allreduce
        assert callable(allreduce.cluster.ray_cluster) and callable(allreduce.cluster.local_cluster)
        assert callable(allreduce.spmd.launch)
        print("backends ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "backends ok" in result.stdout
