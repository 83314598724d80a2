# shellcheck shell=bash
# Shared helpers for tests/gpu/run.sh and bench/run_foundation.sh.
# Source it; it defines functions and sets no options of its own.
#
# Globals used: LOG (file every message is appended to), DAEMON_LOG,
# BATON_BIN_DIR, SHIM (the shim library), BATON_DEADLINE (epoch seconds),
# REPO (repository root). Sets: DAEMON_PID, SOCK.

# say MSG...: print to stdout and append to $LOG.
say() {
    printf '%s\n' "$*"
    if [[ -n ${LOG:-} ]]; then printf '%s\n' "$*" >>"$LOG"; fi
}

# log_only MSG...: append to $LOG only.
log_only() {
    if [[ -n ${LOG:-} ]]; then printf '%s\n' "$*" >>"$LOG"; fi
}

# append_file TITLE FILE: copy a file into $LOG under a header.
append_file() {
    {
        printf '\n----- %s -----\n' "$1"
        if [[ -f $2 ]]; then cat "$2"; else printf '(no file %s)\n' "$2"; fi
        printf -- '----- end %s -----\n' "$1"
    } >>"$LOG"
}

# find_nvcc: prints the nvcc to use, or nothing.
find_nvcc() {
    if [[ -n ${NVCC:-} && -x ${NVCC} ]]; then
        printf '%s\n' "$NVCC"
        return 0
    fi
    if command -v nvcc >/dev/null 2>&1; then
        command -v nvcc
        return 0
    fi
    local c
    for c in /usr/local/cuda/bin/nvcc /usr/local/cuda-13*/bin/nvcc /usr/local/cuda-*/bin/nvcc \
        /opt/cuda/bin/nvcc /usr/bin/nvcc; do
        if [[ -x $c ]]; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

# seconds_left: seconds until BATON_DEADLINE (may be negative).
seconds_left() {
    echo $((BATON_DEADLINE - $(date +%s)))
}

# timeout_for WANT: WANT, or fewer seconds if the deadline is nearer, but
# never less than 5 (timeout 0 would mean no limit at all).
timeout_for() {
    local left
    left=$(seconds_left)
    ((left >= 5)) || left=5
    if ((left < $1)); then echo "$left"; else echo "$1"; fi
}

# gpu_meta_json FILE: writes {"gpu","date","commit"} to FILE.
gpu_meta_json() {
    local gpu commit
    gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
    [[ -n $gpu ]] || gpu="unknown (nvidia-smi failed)"
    # BATON_COMMIT first: the machine's copy of the tree may carry a stale .git.
    commit=${BATON_COMMIT:-$(git -C "$REPO" rev-parse HEAD 2>/dev/null)}
    [[ -n $commit ]] || commit=unknown
    python3 - "$1" "$gpu" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$commit" <<'PY'
import json, sys
path, gpu, date, commit = sys.argv[1:5]
with open(path, "w") as f:
    json.dump({"gpu": gpu, "date": date, "commit": commit}, f, indent=2)
    f.write("\n")
PY
}

# ---------------------------------------------------------------- Baton daemon

# natively T CMD...: run CMD with a T-second limit.
natively() {
    timeout -k 5 "$1" "${@:2}"
}

# under_baton T CMD...: run CMD with a T-second limit, the shim ($SHIM)
# preloaded and BATON_SOCKET pointing at our daemon ($SOCK). Only CMD gets
# the preload: not timeout, not env.
under_baton() {
    timeout -k 5 "$1" env "BATON_SOCKET=$SOCK" "LD_PRELOAD=$SHIM" "${@:2}"
}

DAEMON_PID=""
SOCK=""

# baton_bins_present: batond and the shim exist.
baton_bins_present() {
    [[ -x $BATON_BIN_DIR/batond && -f $BATON_BIN_DIR/libcuda.so.1 ]]
}

# start_daemon SOCKDIR [BATOND-ARGS...]: starts batond on SOCKDIR/batond.sock
# (with any further arguments, e.g. --config FILE, then the words of
# $BATON_DAEMON_ARGS, so that a whole suite can run under a policy file:
# BATON_DAEMON_ARGS="--config tests/gpu/srpt.toml"), waits up to 20 s for the
# socket file. Sets DAEMON_PID and SOCK. Returns 1 on failure.
start_daemon() {
    mkdir -p "$1"
    SOCK="$1/batond.sock"
    rm -f "$SOCK"
    printf '\n===== batond start %s: %s --socket %s %s\n' "$(date -u +%T)" "$BATON_BIN_DIR/batond" \
        "$SOCK" "${BATON_DAEMON_ARGS:-}" >>"$DAEMON_LOG"
    local extra=()
    read -r -a extra <<<"${BATON_DAEMON_ARGS:-}"
    env -u LD_PRELOAD -u BATON_SOCKET "$BATON_BIN_DIR/batond" --socket "$SOCK" "${@:2}" "${extra[@]}" \
        >>"$DAEMON_LOG" 2>&1 </dev/null &
    DAEMON_PID=$!
    local i rc
    for ((i = 0; i < 200; i++)); do
        if [[ -S $SOCK ]]; then
            log_only "batond pid $DAEMON_PID listening on $SOCK after $((i / 10)).$((i % 10)) s"
            return 0
        fi
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            wait "$DAEMON_PID"
            rc=$?
            say "batond exited during start-up with status $rc (see batond.log)"
            DAEMON_PID=""
            return 1
        fi
        sleep 0.1
    done
    say "batond did not create $SOCK within 20 s"
    stop_daemon
    return 1
}

# daemon_alive: the daemon we started is still running.
daemon_alive() {
    [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null
}

# stop_daemon: SIGTERM, up to 10 s grace, then SIGKILL. Logs its exit status.
stop_daemon() {
    [[ -n $DAEMON_PID ]] || return 0
    local i rc
    kill -TERM "$DAEMON_PID" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$DAEMON_PID" 2>/dev/null; then
        log_only "batond pid $DAEMON_PID ignored SIGTERM for 10 s; sending SIGKILL"
        kill -KILL "$DAEMON_PID" 2>/dev/null
    fi
    wait "$DAEMON_PID" 2>/dev/null
    rc=$?
    printf '===== batond pid %s stopped %s, exit status %s\n' "$DAEMON_PID" "$(date -u +%T)" \
        "$rc" >>"$DAEMON_LOG"
    DAEMON_PID=""
}

# cap_file FILE MAXBYTES: keep the head and the tail of an over-long log.
cap_file() {
    local f=$1 max=$2 size
    [[ -f $f ]] || return 0
    size=$(stat -c %s "$f")
    ((size > max)) || return 0
    local keep=$((max / 2 - 4096))
    {
        head -c "$keep" "$f"
        printf '\n\n[... %s bytes cut by cap_file ...]\n\n' "$((size - 2 * keep))"
        tail -c "$keep" "$f"
    } >"$f.cap" && mv "$f.cap" "$f"
}
