"""Worker processes of ``allreduce.spmd.launch`` run under coverage when the tests do."""

from __future__ import annotations

import sys

import pytest

from allreduce.spmd import launcher
from tests.multiworker.conftest import _coverage_prefix


@pytest.fixture(autouse=True, scope="session")
def _workers_under_coverage():
    saved = launcher.PYTHON
    launcher.PYTHON = [sys.executable, *_coverage_prefix()]
    yield
    launcher.PYTHON = saved
