#!/usr/bin/env bash
# SM partitioning (sm_share, green contexts): how many SMs a client's kernels
# actually use, natively and under Baton.
#
# Usage, from anywhere:
#     OUT=/dir/for/results bash tests/gpu/green_ctx.sh
# Needs nvcc (as for run.sh), python3, .carry/bin/batond and
# .carry/bin/libcuda.so.1 (or BATON_BIN_DIR). Takes about a minute.
#
# Runs tests/gpu/sm_ids (smidSpin: 4 blocks per SM of 1024 threads, each
# spinning 1 ms, recording %smid) in these modes:
#   native            no Baton: all SMs expected
#   baton share 1     tenant with the default sm_share = 1: all SMs expected
#   baton share 0.25  tenant "quarter": at most its partition (0.25 of the SMs,
#                     rounded to the driver's granularity: 32 of 132 on H100)
#   two tenants 0.5   tenants "halfA" and "halfB" at once, 0.5 each: each
#                     within its partition; their overlap is reported (the
#                     same share means the same green context, so the same SMs)
# Then, natively, tests/gpu/green_overlap: how soon a 1-block kernel in the
# primary context finishes beside long work in the same context and in a green
# context of all but 12 SMs (what srpt's fast-lane SM reserve relies on);
# reported, and the program must pass (its calls work), no timing is judged.
# Prints a table; writes $OUT/green_ctx.json and $OUT/green_ctx.log (program
# and daemon output). Exit status 0 when every expectation held.

set -u -o pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2
# shellcheck source=tests/gpu/lib.sh
source "$REPO/tests/gpu/lib.sh"

OUT=${OUT:-}
[[ -n $OUT ]] || OUT=$(mktemp -d /tmp/baton-green-out.XXXXXX)
mkdir -p "$OUT"
LOG=$OUT/green_ctx.log
DAEMON_LOG=$OUT/green_ctx-batond.log
: >"$LOG"
: >"$DAEMON_LOG"
BATON_BIN_DIR=${BATON_BIN_DIR:-$REPO/.carry/bin}
SHIM=$BATON_BIN_DIR/libcuda.so.1
ARCH=${BATON_GPU_ARCH:-90}
WORK=$(mktemp -d /tmp/baton-green.XXXXXX)
trap 'stop_daemon' EXIT

NVCC=$(find_nvcc) || {
    say "nvcc not found (set NVCC=/path/to/nvcc)"
    exit 2
}
baton_bins_present || {
    say "no batond/shim in $BATON_BIN_DIR"
    exit 2
}
say "building with $NVCC (sm_$ARCH) ..."
if ! "$NVCC" -I tests/gpu -cubin -arch="sm_$ARCH" -o "$WORK/kernels.cubin" tests/gpu/kernels.cu \
    >>"$LOG" 2>&1 ||
    ! "$NVCC" --cudart none -O2 -Xcompiler -Wall -I tests/gpu -o "$WORK/sm_ids" tests/gpu/sm_ids.c \
        -lcuda -lpthread >>"$LOG" 2>&1; then
    say "build failed (see $LOG)"
    exit 2
fi

cat >"$WORK/policy.toml" <<'EOF'
[[tenant]]
name = "quarter"
sm_share = 0.25

[[tenant]]
name = "halfA"
sm_share = 0.5

[[tenant]]
name = "halfB"
sm_share = 0.5
EOF

PROG=("$WORK/sm_ids" "$WORK/kernels.cubin")
# run NAME MODE [TENANT] -- ARGS: output to $WORK/NAME.out
run() {
    local name=$1 mode=$2 tenant=$3
    shift 3
    if [[ $mode == native ]]; then
        natively 60 "${PROG[@]}" "$@" >"$WORK/$name.out" 2>&1
    else
        BATON_TENANT=$tenant under_baton 60 "${PROG[@]}" "$@" >"$WORK/$name.out" 2>&1
    fi
    echo $? >"$WORK/$name.rc"
    append_file "$name" "$WORK/$name.out"
}

say "native ..."
run native native "" 3
start_daemon "$WORK/sock" --config "$WORK/policy.toml" || exit 1
say "under Baton ..."
run baton_full baton "" 3
run baton_quarter baton quarter 3
# Long enough (200 launches) that the two tenants run at the same time.
run pair_a baton halfA 200 &
pa=$!
run pair_b baton halfB 200 &
pb=$!
# Only these two: a bare `wait` would also wait for batond, started in the background.
wait "$pa" "$pb"
stop_daemon
append_file batond "$DAEMON_LOG"

# Native: does a short kernel in the primary context start beside long work in a green
# context (srpt's fast-lane SM reserve relies on it; tests/gpu/green_overlap.c)?
if "$NVCC" --cudart none -O2 -I tests/gpu -o "$WORK/green_overlap" tests/gpu/green_overlap.c \
    -lcuda >>"$LOG" 2>&1; then
    natively 60 "$WORK/green_overlap" "$WORK/kernels.cubin" 12 20 >"$WORK/overlap.out" 2>&1
else
    echo "FAIL green_overlap: build failed" >"$WORK/overlap.out"
fi

python3 - "$WORK" "$OUT/green_ctx.json" <<'PY'
import json, math, os, re, sys
work, out = sys.argv[1:3]

def load(name):
    text = open(f"{work}/{name}.out", errors="replace").read()
    rc = int(open(f"{work}/{name}.rc").read().strip() or 1)
    m = re.search(r"^RESULT used=(\d+) total=(\d+) kernel_ms=([\d.]+) sms=([\d,]*)$", text, re.M)
    if not m or rc != 0 or "PASS sm_ids" not in text:
        return {"ok": False, "rc": rc, "tail": text[-400:]}
    sms = {int(x) for x in m.group(4).split(",") if x}
    return {"ok": True, "used": int(m.group(1)), "total": int(m.group(2)),
            "kernel_ms": float(m.group(3)), "sms": sms}

def cap(share, total, align=8):
    # The partition the daemon asks for (nearest multiple of the granularity, at least one
    # granule); the driver may round up to its own granularity, never beyond one more granule.
    return max(align, round(share * total / align) * align)

rows, failures = [], []
def row(mode, share, r, limit=None, at_least=None):
    ok = r["ok"]
    if ok and limit is not None and r["used"] > limit:
        ok = False
    if ok and at_least is not None and r["used"] < at_least:
        ok = False
    if not ok:
        failures.append(mode)
    rows.append({"mode": mode, "sm_share": share, "used": r.get("used"), "total": r.get("total"),
                 "kernel_ms": r.get("kernel_ms"), "limit": limit, "pass": ok,
                 **({} if r["ok"] else {"error": r})})

native = load("native")
total = native.get("total") or load("baton_full").get("total") or 0
row("native", None, native, at_least=math.ceil(0.9 * total))
row("baton", 1.0, load("baton_full"), at_least=math.ceil(0.9 * total))
row("baton", 0.25, load("baton_quarter"), limit=cap(0.25, total))
a, b = load("pair_a"), load("pair_b")
row("baton pair A", 0.5, a, limit=cap(0.5, total))
row("baton pair B", 0.5, b, limit=cap(0.5, total))
pair = None
if a["ok"] and b["ok"]:
    pair = {"overlap": len(a["sms"] & b["sms"]), "union": len(a["sms"] | b["sms"]),
            "a_only": len(a["sms"] - b["sms"]), "b_only": len(b["sms"] - a["sms"])}

print(f"{'mode':<14} {'sm_share':>8} {'SMs used':>12} {'limit':>6} {'kernel ms':>10}  result")
for r in rows:
    share = "-" if r["sm_share"] is None else f"{r['sm_share']:g}"
    used = "-" if r["used"] is None else f"{r['used']}/{r['total']}"
    lim = "-" if r["limit"] is None else str(r["limit"])
    ms = "-" if r["kernel_ms"] is None else f"{r['kernel_ms']:.2f}"
    print(f"{r['mode']:<14} {share:>8} {used:>12} {lim:>6} {ms:>10}  {'pass' if r['pass'] else 'FAIL'}")
if pair:
    print(f"two tenants at 0.5: overlap {pair['overlap']} SMs, union {pair['union']}, "
          f"A only {pair['a_only']}, B only {pair['b_only']}")
overlap_text = open(os.path.join(work, "overlap.out"), errors="replace").read()
overlap = {}
for line in overlap_text.splitlines():
    m = re.match(r"RESULT case=(\S+) short_ms=([\d.]+) long_ms=([\d.]+)", line)
    if m:
        overlap[m.group(1)] = {"short_ms": float(m.group(2)), "long_ms": float(m.group(3))}
        print(f"short kernel beside long work, {m.group(1)}: {m.group(2)} ms")
if "PASS green_overlap" not in overlap_text:
    failures.append("green_overlap")
with open(out, "w") as f:
    json.dump({"total_sms": total, "rows": rows, "pair": pair, "overlap": overlap,
               "failures": failures}, f, indent=2)
    f.write("\n")
print("PASS green_ctx" if not failures else "FAIL green_ctx: " + ", ".join(failures))
sys.exit(1 if failures else 0)
PY
