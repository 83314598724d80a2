#!/usr/bin/env bash
# One entry point for a GPU machine: the GPU tests (tests/gpu/run.sh), then
# the foundation benchmark (bench/run_foundation.sh); prints both short
# tables last. Meant to finish within about 8 minutes: the tests must be
# done 330 s after the start and everything 470 s after it (each script
# skips what no longer fits and says so).
#
# Usage:  OUT=/dir/for/logs bash tests/gpu/run_all.sh
#
# $OUT gets at most 7 files: gpu-tests.log, batond.log, results.json,
# results-meta.json, foundation.log, foundation.json, foundation.md.
# Exit status: non-zero if either part failed.

set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2

OUT=${OUT:-}
[[ -n $OUT ]] || OUT=$(mktemp -d /tmp/baton-all-out.XXXXXX)
export OUT
START=$(date +%s)

BATON_DEADLINE=$((START + ${BATON_TESTS_BUDGET:-330})) bash tests/gpu/run.sh
TESTS_RC=$?

echo
BATON_DEADLINE=$((START + ${BATON_TOTAL_BUDGET:-470})) BENCH_COMMAND="bash tests/gpu/run_all.sh" \
    bash bench/run_foundation.sh
BENCH_RC=$?

# fresh FILE: FILE exists and was written by this run.
fresh() { [[ -f $1 && $(stat -c %Y "$1") -ge $START ]]; }

echo
echo "=================== GPU tests (status = under Baton)"
if fresh tests/gpu/results.json; then
    cat tests/gpu/results-meta.json
    python3 tests/gpu/report.py table tests/gpu/results.json
else
    echo "(this run wrote no tests/gpu/results.json)"
fi
echo
echo "=================== foundation benchmark (medians)"
if fresh bench/results/foundation.json; then
    python3 bench/foundation_report.py table bench/results/foundation.json
else
    echo "(this run wrote no bench/results/foundation.json)"
fi
echo
echo "tests exit $TESTS_RC, benchmark exit $BENCH_RC, $(($(date +%s) - START)) s in all; logs in $OUT"
((TESTS_RC == 0 && BENCH_RC == 0))
