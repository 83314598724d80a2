#!/usr/bin/env bash
# Runs NVIDIA's cuda-samples (and two runtime-API vector adds of our own)
# natively and under Baton, and writes tests/gpu/samples.json:
#     [{"name", "native", "baton", "detail"}]   native/baton: pass|fail|skip
#
# Usage, on a GPU machine, from anywhere:
#     OUT=/dir/for/logs bash tests/gpu/samples.sh
#
# The samples are never part of this repository. What is run is whatever
# .carry/samples/build.sh builds (ignored folder, see tests/gpu/README.md):
# this script calls it as `BATON_SAMPLES=all bash build.sh DIR NVCC ARCH`
# and reads DIR/manifest.tsv (name, ok|skip|buildfail, run dir, verdict
# regex, detail, arguments). Without it only our own programs run.
#
# Our own programs: tests/gpu/vecadd_rt.cu, built here twice with nvcc, as
# vecadd_rt_static (nvcc's default static libcudart) and vecadd_rt_shared
# (-cudart shared); tests/gpu/cufft_rt.cu, as cufft_rt_shared (libcufft.so)
# and cufft_rt_static (libcufft_static.a), checked against a CPU DFT.
#
# Each program runs in its own folder, first natively, then with
# BATON_SOCKET=<our batond> LD_PRELOAD=.carry/bin/libcuda.so.1, with a time
# limit. A run passes when it exits 0, prints no failure verdict ("FAILED",
# "Test failed", "Result = FAIL", "FAIL ") and, if the native run printed a
# pass verdict ("Test passed", "PASSED", "Result = PASS", "PASS"), prints one
# too. Exit status 2 natively is the samples' EXIT_WAIVED: "skip". A sample
# in BATON_SAMPLES_STRICT (cudaGraphsPerfScaling, which checks no CUDA error
# and says "Test passed" regardless) fails under Baton when Baton reported
# any entry point as not supported during the run.
#
# Runs go BATON_SAMPLES_PAR at a time in both modes, against one daemon
# under Baton; if the daemon dies, it is started again before the next
# program (the programs that were running with it are marked as such).
# BATON_SAMPLES_ALONE (simpleAssert, simpleAssert_nvrtc: they trip a
# device-side assert on purpose, which poisons the daemon's one context) run
# last, each with a daemon of its own. Every sample that passes natively but
# fails under Baton is then run again alone, with a fresh daemon and
# BATON_TRACE=1 (trace to a file): that lone run is its result, and the
# detail names the failing CUDA call, the entry points and private export
# tables Baton reported as not supported, the failing driver calls of the
# trace, and the daemon's panic message if it died.
#
# Environment:
#   BATON_SAMPLES            names (comma-separated) to build and run; default all
#   BATON_SAMPLES_PAR        runs at once (default 4)
#   BATON_SAMPLES_NATIVE_T   seconds per native run (default 60)
#   BATON_SAMPLES_BATON_T    seconds per run under Baton (default 90)
#   BATON_SAMPLES_NO_RERUN=1 no lone traced re-runs
#   BATON_SAMPLES_ALONE      see above (default "simpleAssert simpleAssert_nvrtc")
#   BATON_SAMPLES_STRICT     see above (default "cudaGraphsPerfScaling")
#   BATON_DEADLINE           epoch seconds by which everything must be done
#                            (default: 440 s from start)
#   BATON_GPU_ARCH           SM version (default 90); NVCC as in run.sh
#   BATON_BIN_DIR            batond + libcuda.so.1 (default .carry/bin)
#   BATON_SAMPLES_JSON       where to write the results (default tests/gpu/samples.json)
# Output in $OUT: samples.json, samples-summary.txt, samples.log (builds and
# every run's output, capped per run), samples-trace.log (lone traced
# re-runs: failing calls and trace tails), batond.log.

set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2
# shellcheck source=tests/gpu/lib.sh
source "$REPO/tests/gpu/lib.sh"

START=$(date +%s)
OUT=${OUT:-}
[[ -n $OUT ]] || OUT=$(mktemp -d /tmp/baton-samples-out.XXXXXX)
mkdir -p "$OUT"
LOG=$OUT/samples.log
TRACE_LOG=$OUT/samples-trace.log
DAEMON_LOG=$OUT/batond.log
: >"$LOG"
: >"$TRACE_LOG"
: >"$DAEMON_LOG"

BATON_BIN_DIR=${BATON_BIN_DIR:-$REPO/.carry/bin}
SHIM=$BATON_BIN_DIR/libcuda.so.1
SAMPLES_DIR=${BATON_SAMPLES_DIR:-$REPO/.carry/samples}
ARCH=${BATON_GPU_ARCH:-90}
BATON_DEADLINE=${BATON_DEADLINE:-$((START + 440))}
PAR=${BATON_SAMPLES_PAR:-4}
NATIVE_T=${BATON_SAMPLES_NATIVE_T:-60}
BATON_T=${BATON_SAMPLES_BATON_T:-90}
JSON=${BATON_SAMPLES_JSON:-$REPO/tests/gpu/samples.json}
# Samples that make the GPU fault on purpose (device-side assert): under
# Baton they run last, each against a daemon of its own.
ALONE=${BATON_SAMPLES_ALONE:-simpleAssert simpleAssert_nvrtc}
# Samples that do not check CUDA errors: under Baton, a run of theirs that
# was refused an entry point ("baton: cuXxx is not supported by Baton yet")
# fails even if the sample says it passed.
STRICT=${BATON_SAMPLES_STRICT:-cudaGraphsPerfScaling}

WORK=$(mktemp -d /tmp/baton-samples.XXXXXX)
B=$WORK/build
L=$WORK/logs
mkdir -p "$B/samples" "$B/own" "$L"
RUNS=$WORK/runs.tsv # name mode rc secs logfile daemon(-|died)
: >"$RUNS"

trap 'stop_daemon' EXIT
trap 'say "interrupted"; exit 130' INT TERM

NVCC=$(find_nvcc) || NVCC=""
say "Baton samples  $(date -u +%Y-%m-%dT%H:%M:%SZ)  nvcc ${NVCC:-not found}  par $PAR"
{
    [[ -n $NVCC ]] && "$NVCC" --version
    nvidia-smi 2>&1 | head -n 15
    command -v cmake || echo "cmake: not found"
} >>"$LOG" 2>&1

# Libraries the samples link against, wherever the toolkit keeps them.
if [[ -n $NVCC ]]; then
    CUDA_HOME=${CUDA_HOME:-$(cd "$(dirname "$NVCC")/.." && pwd)}
    export LD_LIBRARY_PATH="$CUDA_HOME/lib64:$CUDA_HOME/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# ---------------------------------------------------------------- build

# MANIFEST rows: name status dir regex detail args
MANIFEST=$WORK/manifest.tsv
: >"$MANIFEST"
if [[ -n $NVCC ]]; then
    say "building (sm_$ARCH) ..."
    T0=$(date +%s)
    # name|source|flags: our own programs (see the header).
    OWN=("vecadd_rt_static|vecadd_rt.cu|-cudart static"
        "vecadd_rt_shared|vecadd_rt.cu|-cudart shared"
        "cufft_rt_shared|cufft_rt.cu|-lcufft"
        "cufft_rt_static|cufft_rt.cu|-lcufft_static -lculibos")
    for o in "${OWN[@]}"; do
        IFS='|' read -r v src flags <<<"$o"
        (
            # shellcheck disable=SC2086 # flags are words
            "$NVCC" -O2 -arch="sm_$ARCH" -DPROG_NAME="\"$v\"" -o "$B/own/$v" "tests/gpu/$src" \
                $flags >"$B/own/build-$v.log" 2>&1
            echo $? >"$B/own/.status-$v"
        ) &
    done
    if [[ -f $SAMPLES_DIR/build.sh ]]; then
        BATON_SAMPLES=${BATON_SAMPLES:-all} timeout 300 bash "$SAMPLES_DIR/build.sh" "$B/samples" "$NVCC" "$ARCH" \
            >"$WORK/build-samples.log" 2>&1
        say "samples build: status $? after $(($(date +%s) - T0)) s"
    fi
    wait
    for o in "${OWN[@]}"; do
        IFS='|' read -r v src flags <<<"$o"
        if [[ $(cat "$B/own/.status-$v") == 0 ]]; then
            printf '%s\tok\t%s\t%s\t%s\t-\n' "$v" "$B/own" "^PASS $v" \
                "tests/gpu/$src, $flags" >>"$MANIFEST"
        else
            printf '%s\tbuildfail\t%s\t-\t%s\t-\n' "$v" "$B/own" \
                "$(grep -a error "$B/own/build-$v.log" | head -n 2 | tr '\t\n' '  ' | cut -c1-200)" >>"$MANIFEST"
        fi
        append_file "build $v" "$B/own/build-$v.log"
    done
    append_file "build.sh" "$WORK/build-samples.log"
    [[ -f $B/samples/manifest.tsv ]] && cat "$B/samples/manifest.tsv" >>"$MANIFEST"
    say "built in $(($(date +%s) - T0)) s"
else
    say "nvcc not found: nothing to run"
fi

declare -A S_STATUS S_DIR S_DETAIL S_ARGS
NAMES=()
while IFS=$'\t' read -r n st d re det args; do
    [[ -n $n ]] || continue
    NAMES+=("$n")
    S_STATUS[$n]=$st
    S_DIR[$n]=$d
    S_DETAIL[$n]=$det
    S_ARGS[$n]=${args:--}
done <"$MANIFEST"
say "$(grep -c $'\tok\t' "$MANIFEST") built, $(grep -c $'\tbuildfail\t' "$MANIFEST") failed to build, $(grep -c $'\tskip\t' "$MANIFEST") skipped"

# ---------------------------------------------------------------- running

# run_one MODE NAME T [EXTRA_ENV...]: runs NAME in its folder; appends a row to $RUNS,
# noting whether the daemon died during a run under Baton.
run_one() {
    local mode=$1 n=$2 t=$3 out=$L/$2.$1.log start rc args=() dpid=$DAEMON_PID dstate=-
    shift 3
    [[ ${S_ARGS[$n]} == - ]] || read -ra args <<<"${S_ARGS[$n]}"
    start=$(date +%s.%N)
    if [[ $mode == native ]]; then
        (cd "${S_DIR[$n]}" && natively "$t" "./$n" "${args[@]}") >"$out" 2>&1 </dev/null
    else
        (cd "${S_DIR[$n]}" && timeout -k 5 "$t" env "$@" "BATON_SOCKET=$SOCK" "LD_PRELOAD=$SHIM" \
            "./$n" "${args[@]}") >"$out" 2>&1 </dev/null
    fi
    rc=$?
    if [[ $mode != native ]]; then
        if ! kill -0 "$dpid" 2>/dev/null ||
            grep -aqE '^baton: (lost the connection to|cannot reach) the Baton daemon' "$out"; then
            dstate=died
        fi
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$mode" "$rc" \
        "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')" "$out" "$dstate" >>"$RUNS"
}

# daemon_death_note: the reason the daemon's log gives for its last death.
daemon_death_note() {
    local why
    why=$(sed 's/\x1b\[[0-9;]*m//g' "$DAEMON_LOG" | grep -aA1 'panicked at' | grep -av 'panicked at' | tail -n 1)
    echo "${why:-no panic message; see batond.log}" | cut -c1-200
}

# phase MODE T END NAMES...: runs NAMES, PAR at a time, none started after END.
# (The daemon is a child of this shell too: only our runs' pids are waited for.)
phase() {
    local mode=$1 t=$2 end=$3 n left p live pids=()
    shift 3
    for n in "$@"; do
        left=$((end - $(date +%s)))
        if ((left < 5)); then
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$mode" budget 0 - - >>"$RUNS"
            continue
        fi
        ((left < t)) || left=$t
        # A daemon that died (taking the programs then running with it) is
        # started again before the next program.
        if [[ $mode != native ]] && ! daemon_alive; then
            say "batond died while running beside ${n}'s predecessors ($(daemon_death_note)); starting it again"
            stop_daemon
            start_daemon "$WORK/sock" || return 1
        fi
        while :; do
            live=()
            for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && live+=("$p"); done
            pids=("${live[@]}")
            ((${#pids[@]} < PAR)) && break
            sleep 0.1
        done
        run_one "$mode" "$n" "$left" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
}

OK_NAMES=()
for n in "${NAMES[@]}"; do [[ ${S_STATUS[$n]} == ok ]] && OK_NAMES+=("$n"); done

# Time left (less 20 s to write results): 35 % for the native runs, then 70 %
# of what is left for the runs under Baton, the rest for lone re-runs.
REM=$((BATON_DEADLINE - $(date +%s) - 20))
NATIVE_END=$(($(date +%s) + REM * 35 / 100))

say ""
say "== native runs (${#OK_NAMES[@]}, until +$((NATIVE_END - START)) s)"
phase native "$NATIVE_T" "$NATIVE_END" "${OK_NAMES[@]}"
say "native done at +$(($(date +%s) - START)) s"

# verdict: python over the run rows; prints name<TAB>mode<TAB>status<TAB>why.
verdicts() {
    STRICT="$STRICT" python3 - "$RUNS" <<'PY'
import os, re, sys
STRICT = set(os.environ.get("STRICT", "").split())
NS = re.compile(r"^baton: (cu\w+) is not supported by Baton yet", re.M)
PASS = re.compile(r"Result = PASS|[Tt]est [Pp]assed|PASSED|^PASS\b|\bPASS\b|[Pp]assed", re.M)
FAIL = re.compile(r"Result = FAIL|[Tt]est [Ff]ailed|TEST FAILED|FAILED|^FAIL\b", re.M)
rows = {}
for line in open(sys.argv[1], errors="replace"):
    n, mode, rc, secs, log, dstate = line.rstrip("\n").split("\t")
    rows[(n, mode)] = (rc, secs, log, dstate)
def text(log):
    try:
        return open(log, errors="replace").read()
    except OSError:
        return ""
def errline(t):
    for l in t.splitlines():
        if re.search(r"CUDA error|error|Error|ERROR|failed|FAILED|FAIL|returned|code=|Aborted|Segmentation", l) \
                and not l.startswith("baton:") and not l.startswith("baton-trace"):
            return l.strip()[:220]
    tail = [l for l in t.splitlines() if l.strip() and not l.startswith("baton")][-1:]
    return ("output ends: " + tail[0].strip()[:200]) if tail else "no output"
for (n, mode), (rc, secs, log, dstate) in rows.items():
    if rc == "budget":
        print(f"{n}\t{mode}\tskip\tnot run: time budget exhausted")
        continue
    t = text(log)
    rc = int(rc)
    if rc in (124, 137):
        st, why = "fail", f"timed out after {secs} s; " + errline(t)
    elif rc == 2 and mode == "native":
        st, why = "skip", "waived by the sample (exit 2): " + errline(t)
    elif rc != 0:
        sig = f"killed by signal {rc - 128}" if 128 < rc <= 128 + 64 else f"exit {rc}"
        st, why = "fail", f"{sig}: " + errline(t)
    elif FAIL.search(t):
        st, why = "fail", "exit 0 but printed a failure: " + FAIL.search(t).group(0)
    else:
        st, why = "pass", f"{secs} s"
        if mode != "native" and (n, "native") in rows:
            nt = text(rows[(n, "native")][2])
            if PASS.search(nt) and not PASS.search(t):
                st, why = "fail", "exit 0 but no pass verdict (the native run printed one)"
    if st == "pass" and mode != "native" and n in STRICT and NS.search(t):
        st, why = "fail", ("hollow pass: the sample ignores CUDA errors, and Baton refused "
                           + ", ".join(dict.fromkeys(NS.findall(t))))
    if dstate == "died" and st != "pass":
        why = "batond died during this run; " + why
    print(f"{n}\t{mode}\t{st}\t{why}")
PY
}

# ---------------------------------------------------------------- Baton runs

REM=$((BATON_DEADLINE - $(date +%s) - 20))
BATON_END=$(($(date +%s) + REM * 70 / 100))
say ""
say "== runs under Baton (until +$((BATON_END - START)) s)"
BATON_NAMES=()
declare -A NV
while IFS=$'\t' read -r n mode st why; do
    [[ $mode == native ]] && NV[$n]=$st
done < <(verdicts)
ALONE_NAMES=()
for n in "${OK_NAMES[@]}"; do
    # Natively timed-out or unrun programs are not run again under Baton.
    if [[ ${NV[$n]:-skip} == skip ]] || grep -qE "^$n"$'\tnative\t(124|137)\t' "$RUNS"; then
        continue
    fi
    if [[ " $ALONE " == *" $n "* ]]; then ALONE_NAMES+=("$n"); else BATON_NAMES+=("$n"); fi
done
if ! baton_bins_present; then
    say "no batond or libcuda.so.1 in $BATON_BIN_DIR: Baton runs skipped"
elif ! start_daemon "$WORK/sock"; then
    say "batond did not start: Baton runs skipped"
else
    phase baton "$BATON_T" "$BATON_END" "${BATON_NAMES[@]}"
    daemon_alive || say "batond is not running after the Baton runs (see batond.log)"
    # Programs that fault on the device on purpose go last, one at a time,
    # each with a daemon of its own (a device-side fault poisons the one
    # shared context; see the README).
    for n in "${ALONE_NAMES[@]}"; do
        stop_daemon
        start_daemon "$WORK/sock" || break
        phase baton "$BATON_T" "$BATON_END" "$n"
        BATON_NAMES+=("$n")
    done
fi
say "Baton runs done at +$(($(date +%s) - START)) s"

# ---------------------------------------------------------------- lone traced re-runs

declare -A BV
while IFS=$'\t' read -r n mode st why; do
    [[ $mode == baton ]] && BV[$n]=$st
done < <(verdicts)
RERUN=()
for n in "${BATON_NAMES[@]}"; do
    [[ ${NV[$n]:-} == pass && ${BV[$n]:-} == fail ]] && RERUN+=("$n")
done
if [[ ${BATON_SAMPLES_NO_RERUN:-0} != 1 && ${#RERUN[@]} -gt 0 ]] && baton_bins_present; then
    say ""
    say "== lone re-runs under Baton with BATON_TRACE=1 (${#RERUN[@]})"
    for n in "${RERUN[@]}"; do
        left=$((BATON_DEADLINE - 15 - $(date +%s)))
        ((left >= 5)) || break
        ((left < 45)) || left=45
        # A fresh daemon for each: no state left by an earlier program.
        stop_daemon
        start_daemon "$WORK/sock" || break
        rm -f "$WORK/trace-$n.txt"
        run_one rerun "$n" "$left" BATON_TRACE=1 "BATON_TRACE_FILE=$WORK/trace-$n.txt"
        if ! daemon_alive; then
            daemon_death_note >"$WORK/death-$n.txt"
            say "batond died while running $n alone: $(cat "$WORK/death-$n.txt")"
        fi
        {
            printf '\n===== %s: lone re-run under Baton with BATON_TRACE=1\n' "$n"
            [[ -f $WORK/death-$n.txt ]] && echo "--- batond died during this run: $(cat "$WORK/death-$n.txt")"
            echo "--- calls that returned an error (first 25, unique; NOT_READY and cuGetProcAddress NOT_FOUND left out):"
            grep -aE -- '-> CUDA_ERROR_[A-Z_0-9]+$' "$WORK/trace-$n.txt" 2>/dev/null |
                grep -avE -- '-> CUDA_ERROR_NOT_READY$|cuGetProcAddress.*-> CUDA_ERROR_NOT_FOUND$' |
                sed -E 's/^baton-trace\[[^]]*\] //' | awk '!seen[$0]++' | head -n 25 | cut -c1-400
            echo "--- last 40 trace lines:"
            tail -n 40 "$WORK/trace-$n.txt" 2>/dev/null | cut -c1-400
            echo "--- program output (last 30 lines):"
            tail -n 30 "$L/$n.rerun.log" | cut -c1-400
        } >>"$TRACE_LOG"
    done
fi
stop_daemon

# ---------------------------------------------------------------- logs

for n in "${NAMES[@]}"; do
    for mode in native baton rerun; do
        f=$L/$n.$mode.log
        [[ -f $f ]] || continue
        if (($(wc -l <"$f") > 150)); then
            { head -n 70 "$f"; echo "[... $(($(wc -l <"$f") - 140)) lines cut ...]"; tail -n 70 "$f"; } >"$f.cut"
            mv "$f.cut" "$f"
        fi
        append_file "$n [$mode] ($(grep -P "^$n\t$mode\t" "$RUNS" | cut -f3,4 | tr '\t' ' ') : status, seconds)" "$f"
    done
    if [[ ${S_STATUS[$n]} == buildfail && -f ${S_DIR[$n]}/build.log ]]; then
        append_file "$n build" "${S_DIR[$n]}/build.log"
    fi
done

# ---------------------------------------------------------------- results

verdicts >"$WORK/verdicts.tsv"
python3 - "$MANIFEST" "$WORK/verdicts.tsv" "$RUNS" "$WORK" "$JSON" "$OUT/samples-summary.txt" <<'PY'
import collections, json, os, re, sys
manifest, verdicts, runs, work, out_json, out_sum = sys.argv[1:7]
V = {}
for line in open(verdicts):
    n, mode, st, why = line.rstrip("\n").split("\t", 3)
    V[(n, mode)] = (st, why)
LOGS = {}
for line in open(runs):
    n, mode, rc, secs, log, dstate = line.rstrip("\n").split("\t")
    LOGS[(n, mode)] = log
def read(p):
    try:
        return open(p, errors="replace").read()
    except OSError:
        return ""
NS = re.compile(r"^baton: (cu\w+) is not supported by Baton yet", re.M)
TABLE = re.compile(r"^baton: the driver's private table (\w+) is not supported by Baton", re.M)
CONN = re.compile(r"^baton: (lost the connection to|cannot reach) the Baton daemon")
# Why a sample that fails under Baton fails, where its own output does not say.
KNOWN_WHY = {
    "systemWideAtomics": "Baton's managed memory is pinned host memory shared by client and "
    "daemon, never migrated; the GPU's system-scope atomics on it (over PCIe) and the CPU's "
    "are not atomic with each other on this machine, so increments are lost",
    "watershedSegmentationNPP": "NPP asks for a device pointer to memory it registered with "
    "cuMemHostRegister; Baton keeps registered memory in the program's own pages, which the "
    "daemon's GPU context cannot map",
}


def notes(n, modes):
    """Unsupported entry points, private tables and other 'baton:' lines of those runs."""
    ns, tables, other = [], [], []
    for m in modes:
        t = read(LOGS.get((n, m), ""))
        ns += NS.findall(t)
        tables += TABLE.findall(t)
        other += [l.strip() for l in t.splitlines() if l.startswith("baton:")
                  and not NS.search(l) and not TABLE.search(l) and not CONN.search(l)]
    u = lambda xs: list(dict.fromkeys(xs))
    return u(ns), u(tables), u(other)
ERR = re.compile(r"-> (CUDA_ERROR_[A-Z_0-9]+)$")
def failing_calls(n):
    """Last (and first) driver calls of the traced re-run that returned an error."""
    errs = []
    for l in read(f"{work}/trace-{n}.txt").splitlines():
        m = ERR.search(l)
        if not l.startswith("baton-trace") or not m or m.group(1) == "CUDA_ERROR_NOT_READY":
            continue
        call = re.sub(r"^baton-trace\[[^]]*\] ", "", l)
        if call.startswith(("cuGetProcAddress", "cuGetExportTable")) and \
                m.group(1) in ("CUDA_ERROR_NOT_FOUND", "CUDA_ERROR_INVALID_VALUE") and not errs:
            continue  # the runtime's own probes at start-up, answered as the driver does
        errs.append(call[:200])
    if not errs:
        return None
    if len(errs) == 1:
        return "traced failing call: " + errs[0]
    return f"traced failing calls: first {errs[0]}; last {errs[-1]}"
res = []
for line in open(manifest):
    n, st, d, re_, det, args = (line.rstrip("\n").split("\t") + ["-"] * 6)[:6]
    if not n:
        continue
    if st == "skip":
        res.append({"name": n, "native": "skip", "baton": "skip", "detail": det})
        continue
    if st != "ok":
        res.append({"name": n, "native": "fail", "baton": "skip", "detail": "build failed: " + det})
        continue
    nat, nwhy = V.get((n, "native"), ("skip", "not run"))
    bat, bwhy = V.get((n, "baton"), ("skip", "not run under Baton"))
    detail = []
    if nat != "pass":
        detail.append(f"native {nat}: {nwhy}")
        if (n, "baton") in V:
            detail.append(f"baton {bat}: {bwhy}")
        else:
            bat = "skip"
            detail.append("not run under Baton (no native pass to compare with)")
        res.append({"name": n, "native": nat, "baton": bat, "detail": "; ".join(detail)[:1000]})
        continue
    rerun = V.get((n, "rerun"))
    death = read(f"{work}/death-{n}.txt").strip()
    ns, tables, other = notes(n, ["baton", "rerun"])
    if rerun and rerun[0] == "pass":
        bat = "pass"
        if bwhy.startswith("batond died"):
            detail.append("passed when re-run alone; its run beside other programs was cut short "
                          "when batond died (another program's doing)")
        else:
            detail.append(f"passed when re-run alone; failed beside other programs: {bwhy}")
    elif bat == "pass":
        detail.append(f"native {nwhy}, baton {bwhy}")
    elif bat == "fail":
        why = rerun[1] if rerun else bwhy
        detail.append(why)
        if death:
            detail.append(f"batond aborted while serving this program alone: {death}")
        if ns:
            detail.append("not supported by Baton: " + ", ".join(ns[:8]))
        if tables:
            detail.append("private export tables not supported: " + ", ".join(tables))
        call = failing_calls(n) if rerun else None
        if call:
            detail.append(call)
        if rerun and bwhy != rerun[1]:
            detail.append("beside other programs: " + bwhy[:200])
        if n in KNOWN_WHY:
            detail.append("why: " + KNOWN_WHY[n])
        if not rerun:
            detail.append("(not re-run alone: time budget)")
    else:
        detail.append(bwhy)
    if bat == "pass":
        if ns:
            detail.append("called, not supported, coped: " + ", ".join(ns[:8]))
        if tables:
            detail.append("asked for private tables not supported: " + ", ".join(tables))
    if other:
        detail.append("; ".join(other[:3])[:300])
    res.append({"name": n, "native": nat, "baton": bat, "detail": "; ".join(detail)[:1200]})
with open(out_json, "w") as f:
    json.dump(res, f, indent=1)
    f.write("\n")
npass = [r for r in res if r["native"] == "pass"]
bpass = [r for r in npass if r["baton"] == "pass"]
c = collections.Counter((r["native"], r["baton"]) for r in res)
lines = [f"{len(res)} programs: {sum(1 for r in res if r['native'] == 'skip' and r['baton'] == 'skip')} skipped, "
         f"{sum(1 for r in res if r['detail'].startswith('build failed'))} failed to build",
         f"pass natively: {len(npass)}; of those pass under Baton: {len(bpass)} "
         f"({100.0 * len(bpass) / max(1, len(npass)):.1f} %)",
         "by (native, baton): " + ", ".join(f"{a}/{b}: {k}" for (a, b), k in sorted(c.items())), ""]
for r in res:
    lines.append(f"{r['name']:32} {r['native']:5} {r['baton']:5} {r['detail'][:300]}")
open(out_sum, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
cp "$JSON" "$OUT/samples.json"
cat "$OUT/samples-summary.txt" >>"$LOG"
cap_file "$LOG" $((8 * 1024 * 1024))
cap_file "$TRACE_LOG" $((4 * 1024 * 1024))
cap_file "$DAEMON_LOG" $((3 * 1024 * 1024))
say "done at +$(($(date +%s) - START)) s"
