#!/usr/bin/env bash
# Measures, natively (no Baton), what each candidate mechanism for isolation domains gives,
# so the choice in docs/architecture.md ("Isolation domains") rests on this driver's
# behaviour rather than on its documentation:
#
#   contexts   several contexts in one process (what one context per domain inside batond
#              would be): does a fault or a never-ending kernel in one leave the others
#              usable, can the process make fresh contexts afterwards, can a context read
#              another's memory, and what a short kernel's latency is beside another
#              context's long kernels;
#   processes  one process per domain (the executor-process design): the same questions
#              across processes, plus how fast a new client is served after a fault and
#              whether killing a process ends its never-ending kernel;
#   mps        processes under a private MPS server (the executor processes as MPS clients,
#              so kernels of different domains overlap again).
#
# Usage (on the GPU machine, from the repository root):
#   OUT=/tmp/out bash tests/gpu/isolation/mechanisms.sh
# Needs nvcc and the driver; nvidia-cuda-mps-control for the MPS cases (skipped without).
# Writes $OUT/isolation-mechanisms.json ({case: {role: {key: value}}}), the full log
# $OUT/isolation-mechanisms.log, and prints a table last.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../../.." && pwd)
OUT=${OUT:-/tmp/baton-isolation}
mkdir -p "$OUT"
LOG=$OUT/isolation-mechanisms.log
: >"$LOG"
# shellcheck source=../lib.sh
source "$REPO/tests/gpu/lib.sh"
ARCH=${ARCH:-90}
SECS=${SECS:-5} # length of each latency measurement
WORK=$(mktemp -d /tmp/baton-isolation.XXXXXX)
RES=$WORK/results.tsv
: >"$RES"
MPS_PIPE=$WORK/mps-pipe
MPS_LOGDIR=$WORK/mps-log
MPS_UP=0
trap 'stop_mps; kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT

NVCC=$(find_nvcc) || {
    say "nvcc not found (set NVCC=/path/to/nvcc)"
    exit 1
}
say "isolation mechanisms  $(date -u +%Y-%m-%dT%H:%M:%SZ)  repo $REPO"
nvidia-smi >>"$LOG" 2>&1
if ! "$NVCC" -ptx -arch="sm_$ARCH" -o "$WORK/kernels.ptx" "$REPO/tests/gpu/isolation/kernels.cu" >>"$LOG" 2>&1 ||
    ! "$NVCC" --cudart none -O2 -Xcompiler -Wall -I "$REPO/tests/gpu" -o "$WORK/mechanisms" \
        "$REPO/tests/gpu/isolation/mechanisms.c" -lcuda -lpthread >>"$LOG" 2>&1; then
    say "build failed (see $LOG)"
    exit 1
fi
P=$WORK/mechanisms
K=$WORK/kernels.ptx

# note CASE ROLE KEY VALUE: one finding.
note() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RES"; }

# collect CASE ROLE FILE STATUS: the RESULT lines of a finished role, and its exit status.
collect() {
    local c=$1 r=$2 f=$3 st=$4 tag key value
    while read -r tag key value; do
        [[ $tag == RESULT ]] && note "$c" "$r" "$key" "$value"
    done <"$f"
    note "$c" "$r" exit_status "$st"
    append_file "$c/$r" "$f"
}

# role CASE ROLE SECONDS ARGS...: runs one role in the foreground with a time limit.
role() {
    local c=$1 r=$2 t=$3
    shift 3
    local f=$WORK/$c-$r.out st
    timeout -k 5 "$t" "$P" "$K" "$@" >"$f" 2>&1
    st=$?
    collect "$c" "$r" "$f" "$st"
    return $st
}

# wait_for FILE PATTERN SECONDS: until FILE exists (and contains PATTERN, if given).
wait_for() {
    local i
    for ((i = 0; i < $3 * 20; i++)); do
        if [[ -f $1 ]] && { [[ -z $2 ]] || grep -q "$2" "$1"; }; then return 0; fi
        sleep 0.05
    done
    return 1
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

start_mps() {
    mkdir -p "$MPS_PIPE" "$MPS_LOGDIR"
    export CUDA_MPS_PIPE_DIRECTORY=$MPS_PIPE CUDA_MPS_LOG_DIRECTORY=$MPS_LOGDIR
    if timeout 30 nvidia-cuda-mps-control -d >>"$LOG" 2>&1; then
        MPS_UP=1
        return 0
    fi
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    return 1
}

stop_mps() {
    ((MPS_UP)) || return 0
    echo quit | timeout -k 5 30 nvidia-cuda-mps-control >>"$LOG" 2>&1
    sleep 1
    [[ -f $MPS_LOGDIR/server.log ]] && append_file "mps server.log" "$MPS_LOGDIR/server.log"
    [[ -f $MPS_LOGDIR/control.log ]] && append_file "mps control.log" "$MPS_LOGDIR/control.log"
    rm -rf "${MPS_LOGDIR:?}"/*
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    MPS_UP=0
}

# fault_across_processes CASE KIND: a checked worker runs while another process faults
# (or hangs); a third process is started right after the fault.
fault_across_processes() {
    local c=$1 kind=$2
    local ready=$WORK/$c.ready stop=$WORK/$c.stop wf=$WORK/$c-worker.out ff=$WORK/$c-faulter.out
    rm -f "$ready" "$stop"
    timeout -k 5 60 "$P" "$K" worker 40 "$ready" "$stop" >"$wf" 2>&1 &
    local wpid=$!
    if ! wait_for "$ready" "" 30; then
        note "$c" worker setup "worker never became ready"
    fi
    sleep 0.5
    timeout -k 5 60 "$P" "$K" faulter "$kind" 3 >"$ff" 2>&1 &
    local fpid=$!
    local key=fault_error
    [[ $kind == hang ]] && key=hang_started
    wait_for "$ff" "RESULT $key" 30 || note "$c" faulter setup "no $key line"
    local t0
    t0=$(now)
    if [[ $kind == hang ]]; then
        sleep 2
        local t1
        t1=$(now)
        role "$c" after_during_hang 20 worker 0.3 "$WORK/$c.r2" "$WORK/none"
        note "$c" after_during_hang ready_s "$(elapsed "$t1" "$(now)")"
        local k0
        k0=$(now)
        kill -9 "$fpid" 2>/dev/null
        wait "$fpid" 2>/dev/null
        note "$c" faulter killed_exit_s "$(elapsed "$k0" "$(now)")"
        collect "$c" faulter "$ff" killed
        t0=$(now)
    fi
    role "$c" after 20 worker 0.3 "$WORK/$c.r3" "$WORK/none"
    note "$c" after ready_s "$(elapsed "$t0" "$(now)")"
    if [[ $kind != hang ]]; then
        wait "$fpid"
        collect "$c" faulter "$ff" $?
    fi
    touch "$stop"
    wait "$wpid"
    collect "$c" worker "$wf" $?
}

# peek_across_processes CASE: one process publishes a secret's address, another reads it.
peek_across_processes() {
    local c=$1 addr=$WORK/$1.addr stop=$WORK/$1.stop sf=$WORK/$1-secret.out
    rm -f "$addr" "$stop"
    timeout -k 5 90 "$P" "$K" secret "$addr" "$stop" >"$sf" 2>&1 &
    local spid=$!
    wait_for "$addr" "0x" 30 || note "$c" secret setup "no address published"
    role "$c" peek 30 peek "$addr"
    touch "$stop"
    wait "$spid"
    collect "$c" secret "$sf" $?
}

# latency_beside_load CASE [ENV...]: a load process and a latency process at once.
latency_beside_load() {
    local c=$1 lf=$WORK/$1-load.out
    shift
    env "$@" timeout -k 5 $((SECS + 30)) "$P" "$K" load $((SECS + 2)) >"$lf" 2>&1 &
    local lpid=$!
    sleep 0.5
    role "$c" latency $((SECS + 30)) latency "$SECS"
    wait "$lpid"
    collect "$c" load "$lf" $?
}

# ------------------------------------------------------------------------------- run
say "one process, several contexts ..."
for kind in wild trap hang; do role "contexts-$kind" process 90 contexts "$kind"; done
role contexts-peek process 60 peek-contexts

say "one process per domain ..."
for kind in wild trap hang; do fault_across_processes "processes-$kind" "$kind"; done
peek_across_processes processes-peek

say "short-kernel latency beside long kernels ..."
role latency-alone latency $((SECS + 30)) latency "$SECS"
role latency-streams process $((SECS + 30)) latency-streams "$SECS"
role latency-contexts process $((SECS + 30)) latency-contexts "$SECS"
latency_beside_load latency-processes

if command -v nvidia-cuda-mps-control >/dev/null 2>&1; then
    say "processes under a private MPS server ..."
    for kind in wild trap hang; do
        if start_mps; then
            fault_across_processes "mps-$kind" "$kind"
            stop_mps
        else
            note "mps-$kind" mps setup "nvidia-cuda-mps-control -d failed"
        fi
    done
    if start_mps; then
        peek_across_processes mps-peek
        latency_beside_load latency-mps
        latency_beside_load latency-mps-load50 CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50
        stop_mps
    fi
else
    say "nvidia-cuda-mps-control not found: MPS cases not run"
    note mps all setup "nvidia-cuda-mps-control not found"
fi

python3 - "$RES" "$OUT/isolation-mechanisms.json" <<'EOF'
import json, sys
rows = [l.rstrip("\n").split("\t", 3) for l in open(sys.argv[1]) if l.strip()]
out = {}
for case, role, key, value in rows:
    out.setdefault(case, {}).setdefault(role, {})[key] = value
json.dump(out, open(sys.argv[2], "w"), indent=1, sort_keys=True)

def g(case, role, key, default="-"):
    return out.get(case, {}).get(role, {}).get(key, default)

print()
print("%-18s %-22s %-22s %-9s %-8s %-10s" % ("case", "faulter got", "bystander got", "values", "gap ms", "new client"))
for m in ("contexts", "processes", "mps"):
    for kind in ("wild", "trap", "hang"):
        c = f"{m}-{kind}"
        if c not in out:
            continue
        if m == "contexts":
            fault, by = g(c, "process", "fault_error"), g(c, "process", "bystander_error")
            ok, gap = g(c, "process", "bystander_values_ok"), g(c, "process", "bystander_max_gap_ms")
            new = g(c, "process", "fresh_context")
        else:
            fault, by = g(c, "faulter", "fault_error"), g(c, "worker", "bystander_error")
            ok, gap = g(c, "worker", "bystander_values_ok"), g(c, "worker", "bystander_max_gap_ms")
            new = "%s %ss" % (g(c, "after", "bystander_error"), g(c, "after", "ready_s"))
        print("%-18s %-22s %-22s %-9s %-8s %s" % (c, fault, by, ok, gap, new))
print()
for c in ("contexts-peek", "processes-peek", "mps-peek"):
    if c in out:
        r = "process" if c == "contexts-peek" else "peek"
        s = "process" if c == "contexts-peek" else "secret"
        print("%-18s peek %-26s secret words seen %-6s secret intact %s" % (
            c, g(c, r, "peek_error"), g(c, r, "peek_saw_secret_words"), g(c, s, "secret_intact")))
print()
print("%-24s %10s %10s %10s" % ("short kernel latency", "p50 us", "p99 us", "max us"))
for c in ("latency-alone", "latency-streams", "latency-contexts", "latency-processes", "latency-mps", "latency-mps-load50"):
    if c in out:
        r = "latency" if "latency" in out[c] else "process"
        print("%-24s %10s %10s %10s" % (c, g(c, r, "latency_p50_us"), g(c, r, "latency_p99_us"), g(c, r, "latency_max_us")))
EOF
