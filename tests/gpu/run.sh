#!/usr/bin/env bash
# Baton GPU tests: driver-API test programs (tests/gpu/*.c), run natively and
# under Baton, plus optional extra programs described by .carry/samples.
#
# Usage, from anywhere (it changes to the repository root itself):
#     OUT=/dir/for/logs bash tests/gpu/run.sh
#
# What it needs on the GPU machine:
#   - nvcc: $NVCC, else PATH, else /usr/local/cuda/bin/nvcc or /usr/local/cuda-*/bin/nvcc
#   - python3, nvidia-smi, coreutils timeout
#   - .carry/bin/batond and .carry/bin/libcuda.so.1 (the shim); without them
#     every Baton result is "skip" and only the native runs happen
#     (another folder: BATON_BIN_DIR=/path)
#   - optional: .carry/samples/build.sh (+ the sources it builds). When it
#     exists it is run as `bash build.sh OUTDIR NVCC ARCH` and must write
#     OUTDIR/manifest.tsv, one program per line, tab-separated:
#         name  status(ok|skip|buildfail)  dir  verdict-regex  detail
#     Each "ok" program is run as ./name inside dir, natively and under
#     Baton; it passes if it exits 0 and its output matches verdict-regex.
#     (NVIDIA's driver-API samples come in this way: their sources and the
#     recipe that builds them stay in the ignored .carry folder, never in
#     the repository.) Without build.sh the samples row is "skip".
#     .carry/samples as prepared from NVIDIA/cuda-samples (commit c94ff366):
#       build.sh, SOURCE.txt, LICENSE
#       Common/{helper_cuda_drvapi.h,helper_functions.h,helper_string.h,
#               helper_image.h,helper_timer.h,exception.h,drvapi_error_string.h}
#       vectorAddDrv/{vectorAddDrv.cpp,vectorAdd_kernel.cu}
#       matrixMulDrv/{matrixMulDrv.cpp,matrixMul.h,matrixMul_kernel.cu}
#       deviceQueryDrv/deviceQueryDrv.cpp
#     (Common/ from the repository's Common/, the others from
#     Samples/0_Introduction/<name>/ and Samples/1_Utilities/deviceQueryDrv/.)
#
# Other environment:
#   BATON_COMMIT        commit recorded in results-meta.json when git has none
#   BATON_GPU_ARCH      SM version to build for (default 90)
#   BATON_DEADLINE      epoch seconds by which all runs must be done
#                       (default: 7 minutes from start; run_all.sh sets it)
#   BATON_TEST_TIMEOUT  seconds per run under Baton (default 120)
#
# Output:
#   tests/gpu/results.json       [{name, status (under Baton), native, detail}]
#   tests/gpu/results-meta.json  {gpu, date, commit}
#   $OUT/results.json, $OUT/results-meta.json, $OUT/gpu-tests.log (all
#   program output), $OUT/batond.log (the daemon's output)
# Exit status: 0 when nothing failed (natively or under Baton), 1 otherwise.

set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2
# shellcheck source=tests/gpu/lib.sh
source "$REPO/tests/gpu/lib.sh"

OUT=${OUT:-}
[[ -n $OUT ]] || OUT=$(mktemp -d /tmp/baton-gpu-out.XXXXXX)
mkdir -p "$OUT"
LOG=$OUT/gpu-tests.log
DAEMON_LOG=$OUT/batond.log
: >"$LOG"
: >"$DAEMON_LOG"

BATON_BIN_DIR=${BATON_BIN_DIR:-$REPO/.carry/bin}
SAMPLES_DIR=${BATON_SAMPLES_DIR:-$REPO/.carry/samples}
ARCH=${BATON_GPU_ARCH:-90}
BATON_DEADLINE=${BATON_DEADLINE:-$(($(date +%s) + 420))}
BATON_TIMEOUT=${BATON_TEST_TIMEOUT:-120}
NATIVE_TIMEOUT=60
SHIM=$BATON_BIN_DIR/libcuda.so.1

WORK=$(mktemp -d /tmp/baton-gpu-tests.XXXXXX)
B=$WORK/build
L=$WORK/logs
mkdir -p "$B" "$L"
RECORDS=$WORK/records.jsonl
: >"$RECORDS"
RESULTS=$REPO/tests/gpu/results.json
META=$REPO/tests/gpu/results-meta.json
REPORT=(python3 "$REPO/tests/gpu/report.py")

PROGRAMS=(vecadd_ptx matmul_cubin streams_events copies memset launch_ex threads8 attrs_occupancy)

trap 'stop_daemon' EXIT
trap 'say "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- running

# run_prog MODE OUTFILE T DIR CMD...: sets RC and SECS.
run_prog() {
    local mode=$1 out=$2 t=$3 dir=$4 start end
    shift 4
    start=$(date +%s.%N)
    if [[ $mode == baton ]]; then
        (cd "$dir" && under_baton "$t" "$@") >"$out" 2>&1 </dev/null
    else
        (cd "$dir" && natively "$t" "$@") >"$out" 2>&1 </dev/null
    fi
    RC=$?
    end=$(date +%s.%N)
    SECS=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
}

# why_rc RC: words for an exit status.
why_rc() {
    case $1 in
    124 | 137) echo "timed out (status $1)" ;;
    0) echo "exit 0" ;;
    *) if (($1 > 128)); then echo "killed by signal $(($1 - 128))"; else echo "exit $1"; fi ;;
    esac
}

# verdict_prog NAME OUTFILE RC: sets V (pass|fail) and WHY for a test program,
# which must exit 0 AND end with the line "PASS NAME".
verdict_prog() {
    local name=$1 out=$2 rc=$3 line
    line=$(grep -aE '^(PASS|FAIL) ' "$out" | tail -n 1)
    if [[ $rc -eq 0 && $line == "PASS $name" ]]; then
        V=pass
        WHY=""
        return
    fi
    V=fail
    if [[ -n $line && $line != "PASS $name" ]]; then
        WHY="$(why_rc "$rc"): ${line:0:300}"
    elif [[ -n $line ]]; then
        WHY="$(why_rc "$rc") after printing PASS"
    else
        WHY="$(why_rc "$rc"), no PASS/FAIL line; output ends: $(tail -n 3 "$out" | tr '\n' ' ' | cut -c1-300)"
    fi
}

# verdict_regex REGEX OUTFILE RC: sets V and WHY for an external program.
verdict_regex() {
    local re=$1 out=$2 rc=$3
    if [[ $rc -eq 0 ]] && grep -aqE "$re" "$out"; then
        V=pass
        WHY=""
    else
        V=fail
        WHY="$(why_rc "$rc"); verdict /$re/ $(grep -aqE "$re" "$out" && echo found || echo missing); output ends: $(tail -n 2 "$out" | tr '\n' ' ' | cut -c1-200)"
    fi
}

# digest_compare NATIVE_OUT BATON_OUT: sets DIGEST_OK (0/1) and DIGEST_MSG.
digest_compare() {
    DIGEST_MSG=$("${REPORT[@]}" digest "$1" "$2")
    DIGEST_OK=$?
}

# ---------------------------------------------------------------- results

declare -A NAT NAT_WHY BAT BAT_WHY
ORDER=()

note_native() { # name status why secs
    NAT[$1]=$2
    NAT_WHY[$1]="native: $2${3:+ ($3)}${4:+, $4 s}"
    printf '  %-7s %-26s %-5s %s\n' native "$1" "$2" "${4:+$4 s}${3:+  $3}" | cut -c1-220
    log_only "native $1: $2 ${4:+$4 s} $3"
}

note_baton() { # name status why secs
    BAT[$1]=$2
    BAT_WHY[$1]="baton: $2${3:+ ($3)}${4:+, $4 s}"
    printf '  %-7s %-26s %-5s %s\n' baton "$1" "$2" "${4:+$4 s}${3:+  $3}" | cut -c1-220
    log_only "baton $1: $2 ${4:+$4 s} $3"
}

# ---------------------------------------------------------------- build

NVCC=$(find_nvcc) || NVCC=""
say "Baton GPU tests  $(date -u +%Y-%m-%dT%H:%M:%SZ)  repo $REPO"
say "work dir $WORK, logs in $OUT"
{
    echo "nvcc: ${NVCC:-not found}"
    [[ -n $NVCC ]] && "$NVCC" --version
    nvidia-smi 2>&1
    uname -a
    echo "BATON_BIN_DIR=$BATON_BIN_DIR"
    ls -la "$BATON_BIN_DIR" 2>&1
} >>"$LOG" 2>&1

# build_bg NAME CMD...: build in the background; status in $B/.status-NAME.
build_bg() {
    local name=$1
    shift
    ( "$@" >"$L/build-$name.log" 2>&1; echo $? >"$B/.status-$name" ) &
}
built() { [[ $(cat "$B/.status-$1" 2>/dev/null) == 0 ]]; }

if [[ -n $NVCC ]]; then
    say "building with $NVCC (sm_$ARCH) ..."
    KINC=(-I "$REPO/tests/gpu")
    build_bg kernels.ptx "$NVCC" "${KINC[@]}" -ptx -arch="sm_$ARCH" -o "$B/kernels.ptx" tests/gpu/kernels.cu
    build_bg kernels.cubin "$NVCC" "${KINC[@]}" -cubin -arch="sm_$ARCH" -o "$B/kernels.cubin" tests/gpu/kernels.cu
    build_bg kernels.fatbin "$NVCC" "${KINC[@]}" -fatbin \
        -gencode "arch=compute_$ARCH,code=sm_$ARCH" -gencode "arch=compute_$ARCH,code=compute_$ARCH" \
        -o "$B/kernels.fatbin" tests/gpu/kernels.cu
    for p in "${PROGRAMS[@]}" context_fault; do
        build_bg "$p" "$NVCC" --cudart none -O2 -Xcompiler -Wall "${KINC[@]}" -o "$B/$p" \
            "tests/gpu/$p.c" -lcuda -lpthread
    done
    if [[ -f $SAMPLES_DIR/build.sh ]]; then
        mkdir -p "$B/samples"
        build_bg samples bash "$SAMPLES_DIR/build.sh" "$B/samples" "$NVCC" "$ARCH"
    fi
    wait
    for f in "$L"/build-*.log; do append_file "$(basename "$f")" "$f"; done
    for k in kernels.ptx kernels.cubin kernels.fatbin; do
        built "$k" || say "BUILD FAILED: $k (see gpu-tests.log)"
    done
else
    say "nvcc not found (set NVCC=/path/to/nvcc); nothing can be built"
fi

# prog_args NAME: sets ARGS to the program's command-line arguments.
prog_args() {
    case $1 in
    vecadd_ptx) ARGS=("$B/kernels.ptx") ;;
    matmul_cubin) ARGS=("$B/kernels.cubin" "$B/kernels.fatbin") ;;
    streams_events) ARGS=("$B/kernels.fatbin") ;;
    copies) ARGS=("$B/kernels.cubin") ;;
    memset) ARGS=() ;;
    launch_ex) ARGS=("$B/kernels.fatbin") ;;
    threads8) ARGS=("$B/kernels.cubin") ;;
    attrs_occupancy) ARGS=("$B/kernels.ptx") ;;
    context_fault) ARGS=("$B/kernels.ptx") ;;
    *) ARGS=() ;;
    esac
}

# prog_ready NAME: sets WHY and returns 1 when the program or its inputs are missing.
prog_ready() {
    local a
    if ! built "$1"; then
        WHY="build failed: $(grep -aE 'error|Error' "$L/build-$1.log" 2>/dev/null | head -n 2 | tr '\n' ' ' | cut -c1-250)"
        [[ -n $NVCC ]] || WHY="build failed: nvcc not found"
        return 1
    fi
    prog_args "$1"
    for a in "${ARGS[@]}"; do
        if [[ ! -s $a ]]; then
            WHY="input $(basename "$a") was not built"
            return 1
        fi
    done
    return 0
}

# Samples manifest (name status dir regex detail), if any.
SAMPLE_NAMES=()
declare -A S_DIR S_RE S_STATUS S_DETAIL
if [[ -f $SAMPLES_DIR/build.sh ]]; then
    if [[ -f $B/samples/manifest.tsv ]]; then
        while IFS=$'\t' read -r s_name s_status s_dir s_re s_detail; do
            [[ -n $s_name ]] || continue
            SAMPLE_NAMES+=("$s_name")
            S_STATUS[$s_name]=$s_status
            S_DIR[$s_name]=$s_dir
            S_RE[$s_name]=$s_re
            S_DETAIL[$s_name]=$s_detail
        done <"$B/samples/manifest.tsv"
    else
        SAMPLE_NAMES=(samples)
        S_STATUS[samples]=buildfail
        S_DETAIL[samples]="$SAMPLES_DIR/build.sh wrote no manifest (status $(cat "$B/.status-samples" 2>/dev/null))"
    fi
else
    SAMPLE_NAMES=(samples)
    S_STATUS[samples]=skip
    S_DETAIL[samples]="no $SAMPLES_DIR/build.sh (see the header of tests/gpu/run.sh)"
fi

ORDER=("${PROGRAMS[@]}" four_at_once context_fault)
for s in "${SAMPLE_NAMES[@]}"; do ORDER+=("sample:$s"); done

# ---------------------------------------------------------------- four at once

# run_four MODE: 4 threads8 processes at the same time; sets V, WHY, SECS.
run_four() {
    local mode=$1 i t pids=() rc fails=() start end
    prog_args threads8
    t=$(timeout_for "$([[ $mode == baton ]] && echo "$BATON_TIMEOUT" || echo "$NATIVE_TIMEOUT")")
    start=$(date +%s.%N)
    for i in 1 2 3 4; do
        if [[ $mode == baton ]]; then
            under_baton "$t" "$B/threads8" "${ARGS[@]}" >"$L/four_at_once.$mode.$i.log" 2>&1 </dev/null &
        else
            natively "$t" "$B/threads8" "${ARGS[@]}" >"$L/four_at_once.$mode.$i.log" 2>&1 </dev/null &
        fi
        pids+=($!)
    done
    for i in 1 2 3 4; do
        wait "${pids[$((i - 1))]}"
        rc=$?
        append_file "four_at_once [$mode] instance $i" "$L/four_at_once.$mode.$i.log"
        verdict_prog threads8 "$L/four_at_once.$mode.$i.log" "$rc"
        if [[ $V == pass ]]; then
            digest_compare "$L/threads8.native.log" "$L/four_at_once.$mode.$i.log"
            if [[ $DIGEST_OK != 0 ]]; then
                fails+=("#$i results differ from the single native run: $DIGEST_MSG")
            fi
        else
            fails+=("#$i $WHY")
        fi
    done
    end=$(date +%s.%N)
    SECS=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
    if ((${#fails[@]} == 0)); then
        V=pass
        WHY="4 x threads8 concurrently, all passed"
    else
        V=fail
        WHY="${#fails[@]} of 4 failed: ${fails[*]}"
        WHY=${WHY:0:600}
    fi
}

# ---------------------------------------------------------------- kernel fault

# run_context_fault MODE: one client's kernel writes through an invalid address
# while another client works; then a third client starts. Sets V, WHY, SECS.
# Natively each process has a context of its own: the worker must see no
# error. Under Baton every client shares the daemon's context: the worker must
# get the faulter's error too (and not hang), the daemon's log must name the
# faulting tenant and report the context reset, the daemon must stay up, and
# the client started afterwards must pass.
run_context_fault() {
    local mode=$1 t stop=$WORK/context_fault.$1.stop expect="expect-ok" wpid i rc start end
    local wlog=$L/context_fault.$1.worker.log flog=$L/context_fault.$1.faulter.log
    local alog=$L/context_fault.$1.after.log fails=() log_from=0
    [[ $mode == baton ]] && expect="expect-error"
    prog_args context_fault
    t=$(timeout_for "$([[ $mode == baton ]] && echo "$BATON_TIMEOUT" || echo "$NATIVE_TIMEOUT")")
    rm -f "$stop"
    [[ -f $DAEMON_LOG ]] && log_from=$(wc -c <"$DAEMON_LOG")
    start=$(date +%s.%N)
    # run_role ROLE TENANT LOG ARGS...: one client, natively or under Baton.
    run_role() {
        local log=$3
        if [[ $mode == baton ]]; then
            (export BATON_TENANT=$2 && cd "$B" && under_baton "$t" "$B/context_fault" "$1" "${@:4}") >"$log" 2>&1 </dev/null
        else
            (cd "$B" && natively "$t" "$B/context_fault" "$1" "${@:4}") >"$log" 2>&1 </dev/null
        fi
    }
    run_role worker ctx-worker "$wlog" "${ARGS[@]}" "$stop" "$expect" &
    wpid=$!
    for ((i = 0; i < 300; i++)); do
        grep -aq READY "$wlog" 2>/dev/null && break
        kill -0 "$wpid" 2>/dev/null || break
        sleep 0.1
    done
    run_role faulter ctx-faulter "$flog" "${ARGS[@]}"
    rc=$?
    append_file "context_fault faulter [$mode]" "$flog"
    verdict_prog context_fault "$flog" "$rc"
    [[ $V == pass ]] || fails+=("faulter: $WHY")
    # Under Baton the worker ends by itself once it has the error; natively it
    # is stopped after a little more work.
    for ((i = 0; i < 150; i++)); do
        kill -0 "$wpid" 2>/dev/null || break
        [[ $mode == native && $i -ge 10 ]] && break
        sleep 0.1
    done
    touch "$stop"
    wait "$wpid"
    rc=$?
    append_file "context_fault worker [$mode]" "$wlog"
    verdict_prog context_fault "$wlog" "$rc"
    [[ $V == pass ]] || fails+=("worker ($expect): $WHY")
    if [[ $mode == baton ]] && ! daemon_alive; then
        fails+=("batond died after the fault")
    fi
    # The daemon resets the context in place, or (when the driver cannot) starts over as a
    # fresh image of itself on the same socket; a client must wait for either.
    if [[ $mode == baton ]]; then
        for ((i = 0; i < 100; i++)); do
            tail -c +"$((log_from + 1))" "$DAEMON_LOG" 2>/dev/null |
                grep -aq 'GPU context reset after the kernel fault\|batond started over after a kernel fault' && break
            sleep 0.1
        done
    fi
    run_role after ctx-after "$alog" "${ARGS[@]}"
    rc=$?
    append_file "context_fault after [$mode]" "$alog"
    verdict_prog context_fault "$alog" "$rc"
    [[ $V == pass ]] || fails+=("client started afterwards: $WHY")
    if [[ $mode == baton ]]; then
        local dlog
        dlog=$(tail -c +"$((log_from + 1))" "$DAEMON_LOG" 2>/dev/null)
        grep -aq 'caused by tenant ctx-faulter' <<<"$dlog" ||
            fails+=("batond.log has no line naming tenant ctx-faulter as the cause")
        grep -aq 'GPU context reset after the kernel fault\|batond started over after a kernel fault' <<<"$dlog" ||
            fails+=("batond.log reports neither a context reset nor a restart")
        grep -a 'kernel fault\|context reset\|starts over\|started over\|failed' <<<"$dlog" | head -n 12 >>"$LOG"
    fi
    end=$(date +%s.%N)
    SECS=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
    if ((${#fails[@]} == 0)); then
        V=pass
        if [[ $mode == baton ]]; then
            WHY="faulting client and concurrent client got the sticky error, tenant named in the log, context reset or daemon restarted, later client passed"
        else
            WHY="faulting client got the error, the other process was unaffected, later client passed"
        fi
    else
        V=fail
        WHY="${fails[*]}"
        WHY=${WHY:0:600}
    fi
}

# ---------------------------------------------------------------- native runs

say ""
say "== native runs"
for p in "${PROGRAMS[@]}"; do
    if ! prog_ready "$p"; then
        note_native "$p" fail "$WHY"
        continue
    fi
    if (($(seconds_left) < 10)); then
        note_native "$p" skip "time budget exhausted (BATON_DEADLINE)"
        continue
    fi
    run_prog native "$L/$p.native.log" "$(timeout_for "$NATIVE_TIMEOUT")" "$B" "$B/$p" "${ARGS[@]}"
    append_file "$p [native]" "$L/$p.native.log"
    verdict_prog "$p" "$L/$p.native.log" "$RC"
    note_native "$p" "$V" "$WHY" "$SECS"
done

if [[ ${NAT[threads8]:-} == pass ]]; then
    run_four native
    note_native four_at_once "$V" "$WHY" "$SECS"
else
    note_native four_at_once fail "threads8 does not pass natively"
fi

if ! prog_ready context_fault; then
    note_native context_fault fail "$WHY"
elif (($(seconds_left) < 10)); then
    note_native context_fault skip "time budget exhausted (BATON_DEADLINE)"
else
    run_context_fault native
    note_native context_fault "$V" "$WHY" "$SECS"
fi

for s in "${SAMPLE_NAMES[@]}"; do
    case ${S_STATUS[$s]} in
    ok)
        if (($(seconds_left) < 10)); then
            note_native "sample:$s" skip "time budget exhausted (BATON_DEADLINE)"
            continue
        fi
        run_prog native "$L/sample-$s.native.log" "$(timeout_for "$NATIVE_TIMEOUT")" "${S_DIR[$s]}" "./$s"
        append_file "sample $s [native]" "$L/sample-$s.native.log"
        verdict_regex "${S_RE[$s]}" "$L/sample-$s.native.log" "$RC"
        note_native "sample:$s" "$V" "$WHY" "$SECS"
        ;;
    skip) note_native "sample:$s" skip "${S_DETAIL[$s]}" ;;
    *) note_native "sample:$s" fail "build failed: ${S_DETAIL[$s]}" ;;
    esac
done

# ---------------------------------------------------------------- Baton runs

say ""
say "== runs under Baton"
BATON_OK=1
if ! baton_bins_present; then
    BATON_OK=0
    BATON_SKIP_WHY="no batond or libcuda.so.1 in $BATON_BIN_DIR"
    say "$BATON_SKIP_WHY: Baton runs skipped"
elif ! start_daemon "$WORK/sock"; then
    BATON_OK=0
    BATON_SKIP_WHY="batond did not start (see batond.log)"
fi

# baton_pre NAME: make sure the daemon is up before a run; sets PRE_NOTE.
# Returns 1 (after recording a failure) when it cannot be brought up.
baton_pre() {
    PRE_NOTE=""
    if ((BATON_OK == 0)); then
        if [[ $BATON_SKIP_WHY == no\ batond* ]]; then
            note_baton "$1" skip "$BATON_SKIP_WHY"
        else
            note_baton "$1" fail "$BATON_SKIP_WHY"
        fi
        return 1
    fi
    if (($(seconds_left) < 15)); then
        note_baton "$1" skip "time budget exhausted (BATON_DEADLINE)"
        return 1
    fi
    if ! daemon_alive; then
        stop_daemon
        PRE_NOTE="batond was not running before this test and was restarted"
        if ! start_daemon "$WORK/sock"; then
            note_baton "$1" fail "batond is down and did not restart"
            return 1
        fi
    fi
    return 0
}

# baton_post: appends to WHY if the daemon died during the run (a failure).
baton_post() {
    if ! daemon_alive; then
        V=fail
        WHY="batond died during this test (see batond.log)${WHY:+; $WHY}"
    fi
    [[ -z $PRE_NOTE ]] || WHY="$PRE_NOTE${WHY:+; $WHY}"
}

for p in "${PROGRAMS[@]}"; do
    if ! prog_ready "$p"; then
        note_baton "$p" fail "$WHY"
        continue
    fi
    baton_pre "$p" || continue
    run_prog baton "$L/$p.baton.log" "$(timeout_for "$BATON_TIMEOUT")" "$B" "$B/$p" "${ARGS[@]}"
    append_file "$p [baton]" "$L/$p.baton.log"
    verdict_prog "$p" "$L/$p.baton.log" "$RC"
    if [[ $V == pass && ${NAT[$p]:-} == pass ]]; then
        digest_compare "$L/$p.native.log" "$L/$p.baton.log"
        if [[ $DIGEST_OK != 0 ]]; then
            V=fail
            WHY="results differ from native: $DIGEST_MSG"
        else
            WHY="results equal native: $DIGEST_MSG"
        fi
    elif [[ $V == pass ]]; then
        WHY="native run failed, so results were not compared"
    fi
    baton_post
    note_baton "$p" "$V" "$WHY" "$SECS"
done

if [[ ${NAT[threads8]:-} == pass ]]; then
    if baton_pre four_at_once; then
        run_four baton
        baton_post
        note_baton four_at_once "$V" "$WHY" "$SECS"
    fi
else
    note_baton four_at_once fail "threads8 does not pass natively, so no reference"
fi

for s in "${SAMPLE_NAMES[@]}"; do
    case ${S_STATUS[$s]} in
    ok)
        baton_pre "sample:$s" || continue
        run_prog baton "$L/sample-$s.baton.log" "$(timeout_for "$BATON_TIMEOUT")" "${S_DIR[$s]}" "./$s"
        append_file "sample $s [baton]" "$L/sample-$s.baton.log"
        verdict_regex "${S_RE[$s]}" "$L/sample-$s.baton.log" "$RC"
        baton_post
        note_baton "sample:$s" "$V" "$WHY" "$SECS"
        ;;
    skip) note_baton "sample:$s" skip "${S_DETAIL[$s]}" ;;
    *) note_baton "sample:$s" fail "build failed: ${S_DETAIL[$s]}" ;;
    esac
done

# Last of the Baton runs: it resets the daemon's GPU context.
if ! prog_ready context_fault; then
    note_baton context_fault fail "$WHY"
elif baton_pre context_fault; then
    run_context_fault baton
    baton_post
    note_baton context_fault "$V" "$WHY" "$SECS"
fi

stop_daemon

# ---------------------------------------------------------------- report

for n in "${ORDER[@]}"; do
    "${REPORT[@]}" add "$RECORDS" "$n" "${NAT[$n]:-skip}" "${BAT[$n]:-skip}" \
        "${BAT_WHY[$n]:-baton: not run}; ${NAT_WHY[$n]:-native: not run}"
done
gpu_meta_json "$META"
say ""
say "== summary (status = under Baton)"
"${REPORT[@]}" finish "$RECORDS" "$RESULTS" >"$WORK/table.txt"
STATUS=$?
cp "$RESULTS" "$OUT/results.json"
cp "$META" "$OUT/results-meta.json"
cap_file "$DAEMON_LOG" $((15 * 1024 * 1024))
log_only "$(cat "$META")"
cat "$WORK/table.txt" >>"$LOG"
cap_file "$LOG" $((15 * 1024 * 1024))
cat "$META"
cat "$WORK/table.txt"
exit "$STATUS"
