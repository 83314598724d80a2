#!/usr/bin/env bash
# Foundation benchmark: bench/foundation/bench_foundation.c run natively,
# under Baton (its own batond) and under MPS, one after the other.
#
# Usage, from anywhere (it changes to the repository root itself):
#     OUT=/dir/for/logs bash bench/run_foundation.sh
#
# Needs nvcc (as tests/gpu/run.sh finds it), python3, nvidia-smi,
# nvidia-cuda-mps-control for the MPS column, and .carry/bin/batond +
# .carry/bin/libcuda.so.1 for the Baton column (or BATON_BIN_DIR). A mode
# that cannot run gets empty values and a note in foundation.md.
#
# Environment: BATON_COMMIT, BATON_GPU_ARCH (default 90), BATON_DEADLINE
# (epoch seconds; default 5 minutes from start), BENCH_TIMEOUT (seconds per
# mode, default 150), BENCH_COMMAND (the command written into
# foundation.md; run_all.sh sets it).
#
# Output: bench/results/foundation.json, bench/results/foundation.md, and in
# $OUT: foundation.json, foundation.md, foundation.log (everything, the
# daemon's and MPS's logs included). Exit status 1 if a mode that could run
# failed or the native run failed; 0 otherwise.

set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
# shellcheck source=tests/gpu/lib.sh
source "$REPO/tests/gpu/lib.sh"

OUT=${OUT:-}
[[ -n $OUT ]] || OUT=$(mktemp -d /tmp/baton-bench-out.XXXXXX)
mkdir -p "$OUT"
LOG=$OUT/foundation.log
: >"$LOG"
WORK=$(mktemp -d /tmp/baton-bench.XXXXXX)
DAEMON_LOG=$WORK/batond.log
: >"$DAEMON_LOG"
BATON_BIN_DIR=${BATON_BIN_DIR:-$REPO/.carry/bin}
SHIM=$BATON_BIN_DIR/libcuda.so.1
ARCH=${BATON_GPU_ARCH:-90}
BATON_DEADLINE=${BATON_DEADLINE:-$(($(date +%s) + 300))}
MODE_TIMEOUT=${BENCH_TIMEOUT:-150}
RESULTS_DIR=$REPO/bench/results
mkdir -p "$RESULTS_DIR"
COMMAND=${BENCH_COMMAND:-bash bench/run_foundation.sh}

MPS_PIPE=$WORK/mps-pipe
MPS_LOGDIR=$WORK/mps-log
MPS_UP=0

mps_quit() {
    ((MPS_UP)) || return 0
    echo quit | CUDA_MPS_PIPE_DIRECTORY=$MPS_PIPE CUDA_MPS_LOG_DIRECTORY=$MPS_LOGDIR \
        nvidia-cuda-mps-control >>"$LOG" 2>&1
    MPS_UP=0
    sleep 2 # let the control daemon and the server wind down
}
trap 'stop_daemon; mps_quit' EXIT
trap 'say "interrupted"; exit 130' INT TERM

say "Baton foundation benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  work dir $WORK"

# ---------------------------------------------------------------- build
NVCC=$(find_nvcc) || NVCC=""
if [[ -z $NVCC ]]; then
    say "nvcc not found (set NVCC=/path/to/nvcc)"
    exit 1
fi
BIN=$WORK/bench_foundation
CUBIN=$WORK/bench_kernels.cubin
if ! "$NVCC" -cubin -arch="sm_$ARCH" -o "$CUBIN" bench/foundation/bench_kernels.cu >>"$LOG" 2>&1 ||
    ! "$NVCC" --cudart none -O2 -Xcompiler -Wall -o "$BIN" bench/foundation/bench_foundation.c \
        -lcuda >>"$LOG" 2>&1; then
    say "build failed (see foundation.log)"
    tail -n 20 "$LOG"
    exit 1
fi

# ---------------------------------------------------------------- modes
declare -A NOTE
STATUS=0

# finish_mode MODE RC SECS: records how a mode went.
finish_mode() {
    local mode=$1 rc=$2 secs=$3 n
    n=$(grep -c '^{' "$WORK/$mode.jsonl" 2>/dev/null) || n=0
    append_file "$mode stdout" "$WORK/$mode.jsonl"
    append_file "$mode stderr" "$WORK/$mode.err"
    if [[ $rc -eq 0 ]]; then
        NOTE[$mode]="exit 0 after ${secs} s, $n measures"
    else
        NOTE[$mode]="FAILED (exit $rc after ${secs} s, $n measures): $(tail -n 1 "$WORK/$mode.err" | cut -c1-200)"
        STATUS=1
    fi
    say "  $mode: ${NOTE[$mode]}"
}

# run_mode MODE CMD...: runs the benchmark, output to $WORK/MODE.{jsonl,err}.
run_mode() {
    local mode=$1 start rc
    shift
    start=$(date +%s)
    "$@" "$BIN" "$CUBIN" >"$WORK/$mode.jsonl" 2>"$WORK/$mode.err" </dev/null
    rc=$?
    finish_mode "$mode" "$rc" "$(($(date +%s) - start))"
}

# One untimed pass first: the first process after a build runs measurably
# slower (pageable copies by up to ~30%), which would bias the native column.
say "== warm-up (results discarded)"
run_mode warmup natively "$(timeout_for "$MODE_TIMEOUT")"

say "== native"
run_mode native natively "$(timeout_for "$MODE_TIMEOUT")"

say "== Baton"
if ! baton_bins_present; then
    NOTE[baton]="not run: no batond or libcuda.so.1 in $BATON_BIN_DIR"
    say "  baton: ${NOTE[baton]}"
elif (($(seconds_left) < 20)); then
    NOTE[baton]="not run: time budget exhausted"
    say "  baton: ${NOTE[baton]}"
elif ! start_daemon "$WORK/sock"; then
    NOTE[baton]="FAILED: batond did not start"
    STATUS=1
    say "  baton: ${NOTE[baton]}"
else
    run_mode baton under_baton "$(timeout_for "$MODE_TIMEOUT")"
    if ! daemon_alive; then
        NOTE[baton]="${NOTE[baton]}; batond died during the run"
        STATUS=1
    fi
    stop_daemon
fi
append_file "batond.log" "$DAEMON_LOG"

say "== MPS"
if ! command -v nvidia-cuda-mps-control >/dev/null 2>&1; then
    NOTE[mps]="not run: nvidia-cuda-mps-control not found"
    say "  mps: ${NOTE[mps]}"
elif (($(seconds_left) < 20)); then
    NOTE[mps]="not run: time budget exhausted"
    say "  mps: ${NOTE[mps]}"
else
    mkdir -p "$MPS_PIPE" "$MPS_LOGDIR"
    export CUDA_MPS_PIPE_DIRECTORY=$MPS_PIPE CUDA_MPS_LOG_DIRECTORY=$MPS_LOGDIR
    if nvidia-cuda-mps-control -d >>"$LOG" 2>&1; then
        MPS_UP=1
        sleep 1
        run_mode mps natively "$(timeout_for "$MODE_TIMEOUT")"
        mps_quit
        if grep -qiE 'new server|starting.*server|server.*start' "$MPS_LOGDIR/control.log" 2>/dev/null; then
            NOTE[mps]="${NOTE[mps]}; control.log shows an MPS server start"
        else
            NOTE[mps]="${NOTE[mps]}; WARNING: control.log shows no MPS server start (client may have bypassed MPS)"
        fi
    else
        NOTE[mps]="FAILED: nvidia-cuda-mps-control -d did not start"
        STATUS=1
        say "  mps: ${NOTE[mps]}"
    fi
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    for f in "$MPS_LOGDIR"/*.log; do append_file "MPS $(basename "$f")" "$f"; done
fi

# ---------------------------------------------------------------- report
META=$WORK/meta.json
gpu_meta_json "$META"
NOTES=()
for m in native baton mps; do NOTES+=(--note "$m=${NOTE[$m]:-not run}"); done
say ""
say "== foundation benchmark (medians)"
python3 "$REPO/bench/foundation_report.py" merge \
    --native "$WORK/native.jsonl" --baton "$WORK/baton.jsonl" --mps "$WORK/mps.jsonl" \
    --json "$RESULTS_DIR/foundation.json" --md "$RESULTS_DIR/foundation.md" \
    --meta "$META" --command "$COMMAND" "${NOTES[@]}" >"$WORK/table.txt" || STATUS=1
cp "$RESULTS_DIR/foundation.json" "$RESULTS_DIR/foundation.md" "$OUT/" 2>/dev/null
cat "$WORK/table.txt" >>"$LOG"
cap_file "$LOG" $((15 * 1024 * 1024))
cat "$META"
for m in native baton mps; do echo "$m: ${NOTE[$m]:-not run}"; done
cat "$WORK/table.txt"
exit "$STATUS"
