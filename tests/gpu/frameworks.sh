#!/usr/bin/env bash
# PyTorch, CuPy and JAX checks (tests/gpu/frameworks/checks.py), each run natively and under
# Baton with the same seed; outputs compared by compare.py into tests/gpu/frameworks.json.
#
# Usage:  OUT=/dir/for/logs [ONLY=regex] [BATON_DEADLINE=epoch] bash tests/gpu/frameworks.sh
# Needs .carry/bin (batond, libcuda.so.1) from a release build. Writes $OUT/frameworks.log
# (every run's output tail), $OUT/frameworks-batond.log; prints a short table last.
set -u -o pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2
OUT=${OUT:-$(mktemp -d)}
ONLY=${ONLY:-.}
DEADLINE=${BATON_DEADLINE:-$(($(date +%s) + 3600))}
LOG=$OUT/frameworks.log
RES=tests/gpu/frameworks.json
WORK=$(mktemp -d)
: >"$LOG"
[[ -n ${KEEP_RESULTS:-} ]] || rm -f "$RES"

# shellcheck source=tests/gpu/lib.sh
source "$REPO/tests/gpu/lib.sh"
BATON_BIN_DIR=$REPO/.carry/bin
DAEMON_LOG=$OUT/frameworks-batond.log
trap stop_daemon EXIT
start_daemon "$WORK" || exit 1

export CUBLAS_WORKSPACE_CONFIG=:4096:8 XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 tests/gpu/frameworks/checks.py --list | while read -r name tol needs; do
    [[ $name =~ $ONLY ]] || continue
    if (($(date +%s) + 60 > DEADLINE)); then
        echo "$name: skipped, out of time" | tee -a "$LOG"
        continue
    fi
    if ! python3 -c "import $needs" 2>/dev/null; then
        python3 tests/gpu/frameworks/compare.py "$RES" "$name" "$tol" 1 1 /nonexistent /nonexistent "$needs not installed"
        continue
    fi
    t0=$(date +%s.%N)
    n_out=$(timeout 300 python3 tests/gpu/frameworks/checks.py "$name" "$WORK/$name.native.npz" 2>&1); n_rc=$?
    t1=$(date +%s.%N)
    b_out=$(BATON_SOCKET=$SOCK LD_PRELOAD=$BATON_BIN_DIR/libcuda.so.1 timeout 300 \
        python3 tests/gpu/frameworks/checks.py "$name" "$WORK/$name.baton.npz" 2>&1); b_rc=$?
    t2=$(date +%s.%N)
    {
        echo "===== $name native rc=$n_rc $(awk "BEGIN{print $t1 - $t0}") s"; echo "$n_out" | tail -15
        echo "===== $name baton rc=$b_rc $(awk "BEGIN{print $t2 - $t1}") s"; echo "$b_out" | tail -60
    } >>"$LOG"
    unsupported=$(echo "$b_out" | grep -o 'baton: cu[A-Za-z0-9_]* is not supported' | awk '{print $2}' | sort -u | tr '\n' ' ')
    unsupported+=$(echo "$b_out" | grep -o 'private table [0-9a-f]*' | sort -u | tr '\n' ' ')
    err=$(echo "$b_out" | grep -E 'Error|error|ERROR' | grep -v 'is not supported' | tail -1 | cut -c1-200)
    detail=""
    [[ -n $unsupported ]] && detail="unsupported: $unsupported"
    ((b_rc != 0)) && detail="$detail rc=$b_rc: $err"
    python3 tests/gpu/frameworks/compare.py "$RES" "$name" "$tol" "$n_rc" "$b_rc" \
        "$WORK/$name.native.npz" "$WORK/$name.baton.npz" "$detail" | tee -a "$OUT/frameworks-table.txt"
done
cp "$RES" "$OUT/" 2>/dev/null
echo
python3 - "$RES" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok = sum(x["baton"] == "pass" for x in r); nat = sum(x["native"] == "pass" for x in r)
print(f"frameworks: {ok} of {nat} natively passing checks pass under Baton ({len(r)} checks)")
PY
