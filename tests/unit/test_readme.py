"""The README's first example runs and prints what the README says it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from allreduce.registry import algorithm_names

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.timeout(120)
def test_first_example_runs_as_documented() -> None:
    code = python_blocks()[0]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=110)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = [line.split("# ")[-1].strip() for line in code.splitlines() if "print(" in line]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == expected[0]
    assert lines[1].endswith("device:CPU:3")
    assert lines[2] == expected[2]


def test_every_algorithm_is_documented() -> None:
    text = README.read_text()
    for name in algorithm_names():
        assert f"| `{name}` |" in text, name
