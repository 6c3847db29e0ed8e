#!/usr/bin/env bash
# One-shot GPU check, for a machine with NVIDIA GPUs and nothing prepared (about 10 minutes):
#
#   tools/gpu_check.sh            # run it
#   DRY_RUN=1 tools/gpu_check.sh  # print the steps only
#
#   1. installs .[gpu,test] into $VENV (default .venv-gpu), unless it is there already;
#   2. checks that TensorFlow sees a GPU;
#   3. runs the GPU tests (pytest -m gpu), keeping their JUnit XML;
#   4. runs allreduce-bench on the GPUs (every spec, the NCCL and tf.distribute peers);
#   5. writes docs/gpu-results.md (tools/gpu_report.py: the table, the machine, the date,
#      and whether the targets are met: every GPU test passes, #wrong 0 everywhere, nccl
#      within 10 % of the NCCL peer's bus bandwidth);
#   6. stores the baselines the GPU workflow compares against:
#      benchmarks/baseline/gpu-bench.json (allreduce-bench) and
#      benchmarks/baseline/gpu-runner.json (the pytest-benchmark GPU cases).
#
# Every step runs even when an earlier one fails; the exit status is 1 when any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv-gpu}
OUT=${OUT:-bench-results}
PY=$VENV/bin/python
failed=()

step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit}s): $*"
    [[ ${DRY_RUN:-0} == 1 ]] && return 0
    if ! timeout "$limit" "$@"; then
        echo "!! $name failed"
        failed+=("$name")
    fi
}

[[ ${DRY_RUN:-0} == 1 ]] || mkdir -p "$OUT"
if [[ ! -x $PY || ${DRY_RUN:-0} == 1 ]]; then
    step "create $VENV" 60 python3 -m venv "$VENV"
    step "install .[gpu,test]" 240 "$PY" -m pip install --quiet -e '.[gpu,test]'
fi
step "TensorFlow sees a GPU" 60 "$PY" -c \
    "import tensorflow as tf; g = tf.config.list_physical_devices('GPU'); print(g); assert g, 'no GPU'"
step "GPU tests" 180 "$PY" -m pytest -m gpu --no-cov -q -p no:randomly --junitxml="$OUT/gpu-tests.xml"
step "allreduce-bench on GPUs" 120 "$VENV/bin/allreduce-bench" --device-type gpu --quick \
    --json "$OUT/gpu-bench.json" --no-progress
step "docs/gpu-results.md" 30 "$PY" tools/gpu_report.py "$OUT/gpu-bench.json" \
    --tests "$OUT/gpu-tests.xml" --out docs/gpu-results.md
step "allreduce-bench baseline" 10 cp "$OUT/gpu-bench.json" benchmarks/baseline/gpu-bench.json
step "pytest-benchmark GPU baseline" 150 env PYTHON="$PY" tools/bench_gate.sh \
    "$OUT/none.json" benchmarks/baseline/gpu-runner.json -- -k gpu-

if ((${#failed[@]})); then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all steps passed; commit docs/gpu-results.md and benchmarks/baseline/gpu-*.json"
