#!/usr/bin/env bash
# Single-tenant framework benchmark and cold start, native vs Baton in the same run.
#
# Usage (GPU machine, repo root, .carry/bin from a release build):
#     OUT=/dir bash bench/frameworks/run.sh
# Writes bench/results/frameworks.json and frameworks.md (and copies them to $OUT), with the
# log in $OUT/frameworks-bench.log. Takes about 4 minutes.
set -u -o pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2
OUT=${OUT:-$(mktemp -d)}
LOG=$OUT/frameworks-bench.log
WORK=$(mktemp -d)
ROUNDS=${ROUNDS:-5}
: >"$LOG"
# shellcheck source=../../tests/gpu/lib.sh
source "$REPO/tests/gpu/lib.sh"
BATON_BIN_DIR=$REPO/.carry/bin
DAEMON_LOG=$LOG
trap stop_daemon EXIT
start_daemon "$WORK" || exit 1
# The daemon's context is created by its first client; cold start measures a client of a
# daemon that is already serving, which is how a service runs.
BATON=(env BATON_SOCKET="$SOCK" LD_PRELOAD="$BATON_BIN_DIR/libcuda.so.1")
"${BATON[@]}" python3 -c "import torch; torch.ones(1, device='cuda')" >>"$LOG" 2>&1

echo "== steady state" | tee -a "$LOG"
python3 bench/frameworks/bench.py "$WORK/native.json" >>"$LOG" 2>&1 || echo "native run failed" | tee -a "$LOG"
"${BATON[@]}" python3 bench/frameworks/bench.py "$WORK/baton.json" >>"$LOG" 2>&1 || echo "baton run failed" | tee -a "$LOG"

echo "== cold start ($ROUNDS rounds each, alternating)" | tee -a "$LOG"
ONES='import torch; torch.ones(1, device="cuda").sum().item()'
FIRST="import sys; sys.path.insert(0, 'tests/gpu/frameworks'); import torch; from checks import resnet50; m = resnet50(torch).cuda().eval().half(); x = torch.randn(1, 3, 224, 224, device='cuda').half(); print(float(m(x).float().sum()))"
cold() { # MODE NAME CODE -> seconds
    local t0 t1
    t0=$(date +%s.%N)
    if [[ $1 == baton ]]; then "${BATON[@]}" python3 -c "$3" >>"$LOG" 2>&1; else python3 -c "$3" >>"$LOG" 2>&1; fi
    t1=$(date +%s.%N)
    echo "$2 $1 $(awk "BEGIN{print $t1 - $t0}")" >>"$WORK/cold.txt"
}
for _ in $(seq "$ROUNDS"); do
    cold native ones "$ONES"; cold baton ones "$ONES"
    cold native resnet50_first "$FIRST"; cold baton resnet50_first "$FIRST"
done

python3 - "$WORK" "$OUT" "${BATON_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}" <<'PY'
import json, os, statistics, sys, subprocess, datetime
work, out, commit = sys.argv[1:4]
def load(p):
    try: return json.load(open(p))
    except Exception: return None
nat, bat = load(f"{work}/native.json"), load(f"{work}/baton.json")
cold = {}
for line in open(f"{work}/cold.txt"):
    name, mode, s = line.split()
    cold.setdefault(name, {}).setdefault(mode, []).append(float(s))
gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
res = {"command": "bash bench/frameworks/run.sh", "commit": commit, "gpu": gpu,
       "date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
       "native": nat, "baton": bat,
       "cold_start_s": {k: {m: {"median": statistics.median(v), "runs": v} for m, v in d.items()} for k, d in cold.items()}}
rows = []
def row(name, metric, unit, higher_better=False):
    if not nat or not bat: return
    n, b = nat[name][metric], bat[name][metric]
    over = (n / b - 1) if higher_better else (b / n - 1)
    rows.append(f"| {name} {metric} | {unit} | {n:.2f} | {b:.2f} | {b/n:.3f} | {over*100:+.1f}% |")
row("resnet50_b1", "p50_ms", "ms"); row("resnet50_b1", "p99_ms", "ms")
row("resnet50_b64", "images_per_s", "img/s", True)
row("encoder_b8", "p50_ms", "ms"); row("encoder_b8", "p99_ms", "ms")
row("train_step", "p50_ms", "ms")
for k, d in res["cold_start_s"].items():
    if "native" in d and "baton" in d:
        n, b = d["native"]["median"], d["baton"]["median"]
        rows.append(f"| cold start {k} | s | {n:.2f} | {b:.2f} | {b/n:.3f} | {(b/n-1)*100:+.1f}% |")
md = ["# Single-tenant framework benchmark", "",
      f"`{res['command']}` at {commit}, {res['date']}, {gpu}. Medians; one process per mode runs",
      "every steady-state measurement (native first, then Baton, same daemon already warm);",
      "cold start alternates native and Baton runs of a fresh `python3 -c ...` process.", "",
      "| measure | unit | native | Baton | Baton/native | overhead |", "|---|---|---|---|---|---|"] + rows
os.makedirs("bench/results", exist_ok=True)
json.dump(res, open("bench/results/frameworks.json", "w"), indent=1)
open("bench/results/frameworks.md", "w").write("\n".join(md) + "\n")
json.dump(res, open(f"{out}/frameworks-bench.json", "w"), indent=1)
open(f"{out}/frameworks-bench.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
