#!/usr/bin/env bash
# Multi-tenant benchmark: Baton's policies against MPS and native time-slicing, same GPU, one run.
# See bench/README.md ("Multi-tenant benchmark") for the scenarios and arms.
#
# Usage, from anywhere (it changes to the repository root itself):
#     OUT=/dir bash bench/multitenant/run.sh --scenario a [--lat-model resnet50|encoder]
#                                             [--be-work gemm|train|infer64]
#     OUT=/dir bash bench/multitenant/run.sh --scenario b [--sigma 1.5|2] [--loads 0.25,0.5,..]
#                                             [--workers N] [--repeat N] [--reuse-capacity]
# Common options: --arms A,B,..  --duration S (a: measured window; b: per load)  --budget S
# (whole invocation, default 530)  --seed N  --srpt-fairness X  --issue-window-us N (Baton's
# issue_window_us for the policies that read it; default: the daemon's)  --fake (no GPU: tenants
# sleep instead of computing; results go to $OUT only, for testing this script).
#
# --repeat N (b): run the arms N times, in turn (arm 1, arm 2, ..., arm 1, ...), and report per
# model and load the median of each figure over the runs (every run's p99 is kept too).
# --reuse-capacity (b): instead of measuring each model's capacity alone (which sets the request
# rates; it varies by tens of percent between runs on one machine), take the case's stored one,
# so that arms measured by separate invocations are offered the same requests.
#
# Each invocation measures one case (scenario a: one latency model beside one best-effort work;
# scenario b: one sigma and one number of worker processes per model, case "sigma1.5" or
# "sigma1.5-w2") and merges it into bench/results/multitenant.json (other cases and arms
# already there are kept; the arms measured now replace theirs), then rewrites
# bench/results/multitenant.md and the PNGs from the merged results.
#
# Output in $OUT: multitenant-<case>.log (everything: each arm's tenants, batond, MPS),
# multitenant.json, multitenant.md, multitenant_a.png / multitenant_b.png.
# Exit status 1 if an arm that could run failed.

set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2
# shellcheck source=../../tests/gpu/lib.sh
source "$REPO/tests/gpu/lib.sh"
HERE=$REPO/bench/multitenant

SCENARIO=""
ARMS=""
DURATION=""
LAT_MODEL=resnet50
BE_WORK=gemm
SIGMA=1.5
LOADS=0.25,0.5,0.75,1.0
MODELS=mlp,resnet18,resnet50_b8,encoder_large
SEED=1
SRPT_FAIRNESS=0.5
BUDGET=530
FAKE=0
RATE=""
DEPTH=4
GEMM_N=8192
WORKERS=1
WINDOW=""
REUSE_CAPACITY=0
REPEAT=1
ORIG_ARGS=("$@")

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case $1 in
    --scenario) SCENARIO=${2:-} && shift ;;
    --arms) ARMS=${2:-} && shift ;;
    --duration) DURATION=${2:-} && shift ;;
    --lat-model) LAT_MODEL=${2:-} && shift ;;
    --be-work) BE_WORK=${2:-} && shift ;;
    --sigma) SIGMA=${2:-} && shift ;;
    --loads) LOADS=${2:-} && shift ;;
    --models) MODELS=${2:-} && shift ;;
    --seed) SEED=${2:-} && shift ;;
    --srpt-fairness) SRPT_FAIRNESS=${2:-} && shift ;;
    --budget) BUDGET=${2:-} && shift ;;
    --rate) RATE=${2:-} && shift ;;
    --depth) DEPTH=${2:-} && shift ;;
    --gemm-n) GEMM_N=${2:-} && shift ;;
    --workers) WORKERS=${2:-} && shift ;;
    --issue-window-us) WINDOW=${2:-} && shift ;;
    --reuse-capacity) REUSE_CAPACITY=1 ;;
    --repeat) REPEAT=${2:-} && shift ;;
    --fake) FAKE=1 ;;
    -h | --help) usage && exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2 && exit 2 ;;
    esac
    shift
done

num() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }
case $SCENARIO in
a)
    ARMS=${ARMS:-alone_lat,alone_be,baton_priority,native,mps_tuned,mps,baton_passthrough,baton_fair,baton_srpt}
    DURATION=${DURATION:-15}
    CASE="$LAT_MODEL+$BE_WORK"
    ;;
b)
    ARMS=${ARMS:-native,mps,baton_passthrough,baton_srpt,baton_fair}
    DURATION=${DURATION:-8}
    CASE="sigma$SIGMA"
    [[ $WORKERS =~ ^[1-9][0-9]*$ ]] || { echo "--workers must be a positive integer, got $WORKERS" >&2 && exit 2; }
    ((WORKERS > 1)) && CASE="$CASE-w$WORKERS"
    ;;
*) echo "--scenario a or --scenario b is required (see --help)" >&2 && exit 2 ;;
esac
for v in "$DURATION" "$SIGMA" "$BUDGET" "$SRPT_FAIRNESS" "$SEED" "$DEPTH" "$GEMM_N"; do
    num "$v" || { echo "not a number: $v" >&2 && exit 2; }
done
[[ -z $RATE ]] || num "$RATE" || { echo "not a number: $RATE" >&2 && exit 2; }
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "--repeat must be a positive integer, got $REPEAT" >&2 && exit 2; }
[[ $SCENARIO == b || $REPEAT == 1 ]] || { echo "--repeat is for scenario b" >&2 && exit 2; }
[[ -z $WINDOW || $WINDOW =~ ^[1-9][0-9]*$ ]] || { echo "--issue-window-us must be a positive integer, got $WINDOW" >&2 && exit 2; }

OUT=${OUT:-}
[[ -n $OUT ]] || OUT=$(mktemp -d /tmp/baton-mt-out.XXXXXX)
mkdir -p "$OUT"
LOG=$OUT/multitenant-${CASE//+/-}.log
: >"$LOG"
WORK=$(mktemp -d /tmp/baton-mt.XXXXXX)
DAEMON_LOG=$WORK/batond.log
: >"$DAEMON_LOG"
BATON_BIN_DIR=${BATON_BIN_DIR:-$REPO/.carry/bin}
SHIM=$BATON_BIN_DIR/libcuda.so.1
START=$(date +%s)
BATON_DEADLINE=${BATON_DEADLINE:-$((START + ${BUDGET%.*}))}
RESULTS_DIR=${MT_RESULTS_DIR:-$REPO/bench/results}
# A fake run must never land in the committed results.
((FAKE)) && RESULTS_DIR=${MT_RESULTS_DIR:-$OUT/fake-results}
mkdir -p "$RESULTS_DIR" "$WORK/results"
COMMAND=${BENCH_COMMAND:-"bash bench/multitenant/run.sh ${ORIG_ARGS[*]}"}
FAKE_ARG=()
((FAKE)) && FAKE_ARG=(--fake)

MPS_PIPE=$WORK/mps-pipe
MPS_LOGDIR=$WORK/mps-log
MPS_UP=0
DRIVER_PID=""

mps_quit() {
    ((MPS_UP)) || return 0
    echo quit | CUDA_MPS_PIPE_DIRECTORY=$MPS_PIPE CUDA_MPS_LOG_DIRECTORY=$MPS_LOGDIR \
        timeout -k 5 30 nvidia-cuda-mps-control >>"$LOG" 2>&1 || say "  MPS quit did not finish cleanly"
    MPS_UP=0
    sleep 2 # let the control daemon and the server wind down before the next arm uses the GPU
}

cleanup() {
    if [[ -n $DRIVER_PID ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
        kill -TERM "$DRIVER_PID" 2>/dev/null
        wait "$DRIVER_PID" 2>/dev/null
    fi
    stop_daemon
    mps_quit
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

say "Baton multi-tenant benchmark, scenario $SCENARIO, case $CASE  $(date -u +%Y-%m-%dT%H:%M:%SZ)"
say "arms: $ARMS; duration ${DURATION} s; budget ${BUDGET} s; work dir $WORK$( ((FAKE)) && echo '; FAKE (no GPU work)')"
if ! ((FAKE)); then
    log_only "$(nvidia-smi --query-gpu=name,driver_version,compute_mode,memory.used --format=csv 2>&1)"
    if pgrep -x nvidia-cuda-mps-control >/dev/null 2>&1; then
        say "WARNING: an nvidia-cuda-mps-control is already running; native arms may go through it"
    fi
    python3 -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print("torch", torch.__version__, torch.cuda.get_device_name(0))' >>"$LOG" 2>&1 ||
        { say "PyTorch with CUDA is not usable here (see the log)"; tail -n 5 "$LOG"; exit 1; }
fi

declare -A NOTE
STATUS=0

# arm_need ARM: seconds an arm should take, start-up included.
arm_need() {
    local span
    if [[ $SCENARIO == a ]]; then
        span=$(python3 -c "print(int($DURATION + 5 + 2 + 3))")
        [[ $1 == alone_lat ]] && span=$((span + 4))
    else
        span=$(python3 -c "print(int(len('$LOADS'.split(',')) * ($DURATION + 2) + 3))")
    fi
    # ~5-10 s to load models and warm up, more under MPS and Baton; daemon/MPS start and stop.
    echo $((span + 25))
}

# record ARM RESULT_JSON: NOTE from the driver's verdict, tenant logs into $LOG.
record() {
    local arm=$1 res=$2 f
    for f in "$WORK/logs/$SCENARIO.$arm".*.log; do
        [[ -f $f ]] && append_file "$(basename "$f" .log)" "$f"
    done
    if [[ -f $res ]] && python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["ok"] else 1)' "$res"; then
        NOTE[$arm]="ok${NOTE[$arm]:+; ${NOTE[$arm]}}"
    else
        NOTE[$arm]="FAILED${NOTE[$arm]:+; ${NOTE[$arm]}}"
        STATUS=1
    fi
}

# drive ARM TIMEOUT ARGS...: runs driver.py for one arm, killable by the EXIT trap.
drive() {
    local arm=$1 t=$2
    shift 2
    python3 "$HERE/driver.py" arm --scenario "$SCENARIO" --arm "$arm" --work-dir "$WORK" \
        --out "$WORK/results/$SCENARIO.$arm.json" --timeout "$t" --duration "$DURATION" \
        --seed "$SEED" "${FAKE_ARG[@]}" "${SCEN_ARGS[@]}" "$@" >"$WORK/driver.out" 2>&1 </dev/null &
    DRIVER_PID=$!
    wait "$DRIVER_PID"
    DRIVER_PID=""
    sed 's/^/  /' "$WORK/driver.out"
    cat "$WORK/driver.out" >>"$LOG"
}

# start_batond SOCKDIR CONFIG: lib.sh's start_daemon, with a policy file.
start_batond() {
    mkdir -p "$1"
    SOCK="$1/batond.sock"
    rm -f "$SOCK"
    printf '\n===== batond start %s --config %s\n' "$(date -u +%T)" "$2" >>"$DAEMON_LOG"
    cat "$2" >>"$DAEMON_LOG"
    # BATOND_EXTRA_ARGS: for testing this script without a GPU (--executor sim).
    # shellcheck disable=SC2086
    env -u LD_PRELOAD -u BATON_SOCKET NO_COLOR=1 "$BATON_BIN_DIR/batond" --socket "$SOCK" \
        --config "$2" ${BATOND_EXTRA_ARGS:-} >>"$DAEMON_LOG" 2>&1 </dev/null &
    DAEMON_PID=$!
    local i
    for ((i = 0; i < 200; i++)); do
        [[ -S $SOCK ]] && return 0
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            wait "$DAEMON_PID"
            say "  batond exited during start-up with status $? (see the log)"
            DAEMON_PID=""
            return 1
        fi
        sleep 0.1
    done
    say "  batond did not create $SOCK within 20 s"
    stop_daemon
    return 1
}

# run_one ARM [DRIVER ARGS...]: one arm, with batond or MPS around it as the arm needs.
run_one() {
    local arm=$1 need t
    shift
    need=$(arm_need "$arm")
    if (($(seconds_left) < need)); then
        NOTE[$arm]="not run: time budget (needs ~${need} s, $(seconds_left) s left)"
        say "== $arm: ${NOTE[$arm]}"
        return
    fi
    # Twice the expected time, but never past the deadline: a hung arm must not eat the rest.
    t=$((2 * need))
    (($(seconds_left) - 5 < t)) && t=$(($(seconds_left) - 5))
    say "== $arm (expected ~${need} s, limit ${t} s, $(seconds_left) s left)"
    NOTE[$arm]=""
    case $arm in
    mps | mps_tuned)
        if ! ((FAKE)) && ! command -v nvidia-cuda-mps-control >/dev/null 2>&1; then
            NOTE[$arm]="not run: nvidia-cuda-mps-control not found"
            say "  ${NOTE[$arm]}"
            return
        fi
        rm -rf "$MPS_PIPE" "$MPS_LOGDIR"
        mkdir -p "$MPS_PIPE" "$MPS_LOGDIR"
        export CUDA_MPS_PIPE_DIRECTORY=$MPS_PIPE CUDA_MPS_LOG_DIRECTORY=$MPS_LOGDIR
        if ((FAKE)) || timeout 30 nvidia-cuda-mps-control -d >>"$LOG" 2>&1; then
            ((FAKE)) || MPS_UP=1
            sleep 1
            drive "$arm" "$t" "$@"
            mps_quit
            if ! ((FAKE)) && ! grep -qiE 'new server|starting.*server|server.*start' "$MPS_LOGDIR/control.log" 2>/dev/null; then
                NOTE[$arm]="WARNING: control.log shows no MPS server start (clients may have bypassed MPS)"
            fi
            record "$arm" "$WORK/results/$SCENARIO.$arm.json"
        else
            NOTE[$arm]="FAILED: nvidia-cuda-mps-control -d did not start"
            STATUS=1
        fi
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
        for f in "$MPS_LOGDIR"/*.log; do [[ -f $f ]] && append_file "$arm MPS $(basename "$f")" "$f"; done
        ;;
    baton_*)
        if ! baton_bins_present; then
            NOTE[$arm]="not run: no batond or libcuda.so.1 in $BATON_BIN_DIR"
            say "  ${NOTE[$arm]}"
            return
        fi
        python3 "$HERE/driver.py" baton-config --scenario "$SCENARIO" --arm "$arm" \
            --out "$WORK/$arm.toml" --models "$MODELS" --capacity-json "$WORK/b.capacity.json" \
            --srpt-fairness "$SRPT_FAIRNESS" ${WINDOW:+--issue-window-us "$WINDOW"} >>"$LOG" 2>&1
        : >"$DAEMON_LOG"
        if start_batond "$WORK/sock" "$WORK/$arm.toml"; then
            drive "$arm" "$t" --sock "$SOCK" --shim "$SHIM" "$@"
            daemon_alive || NOTE[$arm]="batond died during the run"
            stop_daemon
            record "$arm" "$WORK/results/$SCENARIO.$arm.json"
        else
            NOTE[$arm]="FAILED: batond did not start"
            STATUS=1
        fi
        append_file "$arm batond.log" "$DAEMON_LOG"
        ;;
    *)
        drive "$arm" "$t" "$@"
        record "$arm" "$WORK/results/$SCENARIO.$arm.json"
        ;;
    esac
    say "  $arm: ${NOTE[$arm]}"
    if ! ((FAKE)); then
        local left
        left=$(nvidia-smi --query-compute-apps=pid,process_name --format=csv,noheader 2>/dev/null)
        [[ -z $left ]] || say "  WARNING: processes still on the GPU after $arm: ${left//$'\n'/, }"
    fi
}

SCEN_ARGS=()
IFS=, read -r -a ARM_LIST <<<"$ARMS"
if [[ $SCENARIO == a ]]; then
    SCEN_ARGS=(--lat-model "$LAT_MODEL" --be-work "$BE_WORK" --depth "$DEPTH" --gemm-n "$GEMM_N")
    for arm in "${ARM_LIST[@]}"; do
        if [[ $arm == alone_lat && -z $RATE ]]; then
            run_one alone_lat
            RATE=$(python3 "$HERE/driver.py" rate --from "$WORK/results/a.alone_lat.json") || RATE=""
            [[ -n $RATE ]] && say "  latency tenant's rate for the other arms: $RATE requests/s (50% of alone capacity)"
            continue
        fi
        if [[ -z $RATE ]]; then
            # Pieces of one case may come from separate invocations: reuse the stored alone rate.
            RATE=$(python3 "$HERE/report.py" rate --results "$RESULTS_DIR/multitenant.json" --case "$CASE") || RATE=""
            if [[ -z $RATE ]]; then
                say "no rate for the latency tenant: include alone_lat in --arms, or pass --rate"
                exit 1
            fi
            say "latency tenant's rate from $RESULTS_DIR/multitenant.json: $RATE requests/s"
        fi
        [[ $arm == alone_lat ]] && continue
        run_one "$arm" --rate "$RATE"
    done
else
    SCEN_ARGS=(--models "$MODELS" --loads "$LOADS" --sigma "$SIGMA" --capacity-json "$WORK/b.capacity.json"
        --workers "$WORKERS")
    if ((REUSE_CAPACITY)); then
        say "== capacity of each model alone: reused from $RESULTS_DIR/multitenant.json"
        python3 "$HERE/report.py" capacity --results "$RESULTS_DIR/multitenant.json" --case "$CASE" \
            --models "$MODELS" --out "$WORK/b.capacity.json" 2>&1 | tee -a "$LOG"
        [[ -f $WORK/b.capacity.json ]] || { say "nothing to reuse: run once without --reuse-capacity"; exit 1; }
    elif say "== capacity of each model alone (native)" && ! python3 "$HERE/driver.py" capacity --models "$MODELS" --work-dir "$WORK" --out "$WORK/b.capacity.json" \
        --timeout "$(timeout_for 120)" "${FAKE_ARG[@]}" 2>&1 | tee -a "$LOG"; then
        append_file "capacity" "$WORK/logs/b.capacity.log"
        say "capacity measurement failed; nothing else can run"
        exit 1
    fi
    append_file "capacity" "$WORK/logs/b.capacity.log"
    cp "$WORK/b.capacity.json" "$WORK/results/b.capacity.json"
    if ((REPEAT == 1)); then
        for arm in "${ARM_LIST[@]}"; do run_one "$arm"; done
    else
        declare -A RUNS
        for ((k = 1; k <= REPEAT; k++)); do
            say "== run $k of $REPEAT"
            for arm in "${ARM_LIST[@]}"; do
                rm -f "$WORK/results/b.$arm.json"
                run_one "$arm"
                if [[ -f $WORK/results/b.$arm.json ]]; then
                    mv "$WORK/results/b.$arm.json" "$WORK/b.$arm.run$k.json"
                    RUNS[$arm]+=" $WORK/b.$arm.run$k.json"
                fi
            done
        done
        for arm in "${ARM_LIST[@]}"; do
            [[ -n ${RUNS[$arm]:-} ]] || continue
            # shellcheck disable=SC2086
            python3 "$HERE/driver.py" combine --out "$WORK/results/b.$arm.json" ${RUNS[$arm]} >>"$LOG" 2>&1 ||
                { say "combining the runs of $arm failed"; STATUS=1; }
        done
    fi
fi

# ---------------------------------------------------------------- report
META=$WORK/meta.json
if ((FAKE)); then
    printf '{"gpu": "none (fake run)", "date": "%s", "commit": "%s"}\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        "$(git rev-parse HEAD 2>/dev/null)" >"$META"
else
    gpu_meta_json "$META"
fi
NOTES=()
for arm in "${ARM_LIST[@]}"; do NOTES+=(--note "$arm=${NOTE[$arm]:-not run}"); done
say ""
python3 "$HERE/report.py" update --results "$RESULTS_DIR/multitenant.json" --scenario "$SCENARIO" \
    --case "$CASE" --arm-dir "$WORK/results" --meta "$META" --command "$COMMAND" "${NOTES[@]}" \
    --md "$RESULTS_DIR/multitenant.md" --png-dir "$RESULTS_DIR" >"$WORK/table.txt" 2>>"$LOG" ||
    { say "report failed (see the log)"; STATUS=1; }
cp "$RESULTS_DIR/multitenant.json" "$RESULTS_DIR/multitenant.md" "$OUT/" 2>/dev/null
cp "$RESULTS_DIR"/multitenant_*.png "$OUT/" 2>/dev/null
cat "$WORK/table.txt" >>"$LOG"
cap_file "$LOG" $((12 * 1024 * 1024))
say "wall time $(($(date +%s) - START)) s"
for arm in "${ARM_LIST[@]}"; do echo "$arm: ${NOTE[$arm]:-not run}"; done
cat "$WORK/table.txt"
exit "$STATUS"
