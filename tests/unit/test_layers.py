"""The layer contracts of ``pyproject.toml`` hold, and an upward import breaks them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed")


def _lint(tree: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` over the package in ``tree/src`` with the contracts of ``tree``."""
    return subprocess.run(
        [str(LINT), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def copy_of_the_package(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_package_keeps_its_contracts(copy_of_the_package: Path) -> None:
    result = _lint(copy_of_the_package)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_from_the_planning_layer_breaks_the_layers(copy_of_the_package: Path) -> None:
    _append(copy_of_the_package / "src/allreduce/planning/spec.py", "import allreduce.bench.cli  # noqa")
    result = _lint(copy_of_the_package)
    assert result.returncode != 0
    assert "allreduce.planning is not allowed to import allreduce.bench" in result.stdout


def test_tensorflow_in_the_planning_layer_breaks_its_contract(copy_of_the_package: Path) -> None:
    _append(copy_of_the_package / "src/allreduce/planning/ranges.py", "import tensorflow  # noqa")
    result = _lint(copy_of_the_package)
    assert result.returncode != 0
    assert "allreduce.planning is not allowed to import tensorflow" in result.stdout
    assert "allreduce.planning.ranges -> tensorflow" in result.stdout


def test_tuning_importing_the_command_line_breaks_the_layers(copy_of_the_package: Path) -> None:
    _append(copy_of_the_package / "src/allreduce/tuning/search.py", "from allreduce.bench import cli  # noqa")
    result = _lint(copy_of_the_package)
    assert result.returncode != 0
    assert "allreduce.tuning is not allowed to import allreduce.bench" in result.stdout


def test_auto_is_recognised_in_one_function() -> None:
    # Every entry point asks allreduce.selection.auto (is_auto / resolve_spec).
    pattern = re.compile(r"""(==|!=)\s*["']auto["']|["']auto["']\s*(==|!=)|in \(["']auto["']""")
    package = ROOT / "src" / "allreduce"
    found = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert found == [], found
