# Set-up and main jobs. Every target creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HYPOTHESIS_PROFILE ?= dev
# Test processes (pytest-xdist); each test file runs whole in one of them.
TEST_WORKERS ?= 3

.PHONY: help venv test test-fast lint bench bench-full clean

help:
	@echo "make test    - install into .venv (first time) and run the test suite"
	@echo "make bench   - run allreduce-bench on logical CPU devices (writes bench-results/)"
	@echo "make lint    - ruff, and the layer contracts (lint-imports)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[cpu,test,ray]'
	@touch $(STAMP)

venv: $(STAMP)

# The layers that need no TensorFlow (modules that declare __layer__ = "pure" or
# "model", see tools/layers.py) have their own floor.
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --cov --cov-report=term --cov-fail-under=85 -q
	@echo "Pure layer (branch coverage, floor 95 %):"
	$(BIN)/python tools/layers.py --coverage 95

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -q -x --no-cov -m "not multiworker"

LINT_PATHS := $(wildcard src tests benchmarks examples tools conftest.py)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/lint-imports

bench: $(STAMP)
	mkdir -p bench-results
	$(BIN)/allreduce-bench --quick --json bench-results/latest.json --plot bench-results/latest.png

bench-full: $(STAMP)
	mkdir -p bench-results
	$(BIN)/allreduce-bench --json bench-results/full.json --plot bench-results/full.png

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache bench-results .coverage
