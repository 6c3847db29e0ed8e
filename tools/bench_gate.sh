#!/usr/bin/env bash
# Runs the pytest-benchmark suite and fails on a regression against a stored baseline.
#
#   tools/bench_gate.sh BASELINE.json OUT.json [THRESHOLD] [-- extra pytest arguments]
#
# THRESHOLD is pytest-benchmark's --benchmark-compare-fail expression, by default
# median:25% (a benchmark whose median is more than 25 % slower than in the baseline
# fails the run). Without a baseline file the suite still runs and OUT.json is written;
# commit it as BASELINE.json (from the same kind of machine) to turn the gate on.
set -euo pipefail
cd "$(dirname "$0")/.."

baseline=${1:?usage: tools/bench_gate.sh BASELINE.json OUT.json [THRESHOLD] [-- pytest args]}
out=${2:?usage: tools/bench_gate.sh BASELINE.json OUT.json [THRESHOLD] [-- pytest args]}
shift 2
threshold=median:25%
if [[ $# -gt 0 && $1 != "--" ]]; then
    threshold=$1
    shift
fi
[[ ${1:-} == "--" ]] && shift

python=${PYTHON:-python}
[[ -x .venv/bin/python && -z ${PYTHON:-} ]] && python=.venv/bin/python

args=(benchmarks --benchmark-only --benchmark-group-by=group --benchmark-json="$out" -p no:randomly)
if [[ -f $baseline ]]; then
    echo "comparing against $baseline; failing on $threshold"
    args+=(--benchmark-compare="$baseline" --benchmark-compare-fail="$threshold")
else
    echo "::warning::no benchmark baseline at $baseline: recording only. Commit $out as $baseline to enable the regression gate."
fi
exec "$python" -m pytest "${args[@]}" "$@"
