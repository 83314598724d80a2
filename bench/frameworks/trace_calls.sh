#!/usr/bin/env bash
# Where an inference's driver calls go under Baton: runs a model forward N1 and N2 times with
# BATON_TRACE=1 and prints, per driver call (and export-table slot), the calls per forward
# (difference of the two runs divided by N2 - N1), so start-up calls cancel out.
#
# Usage (GPU machine, repo root):  bash bench/frameworks/trace_calls.sh [encoder|resnet50] [N1 N2]
set -u -o pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2
MODEL=${1:-encoder}
N1=${2:-10}
N2=${3:-60}
WORK=$(mktemp -d)
# shellcheck source=../../tests/gpu/lib.sh
source "$REPO/tests/gpu/lib.sh"
BATON_BIN_DIR=$REPO/.carry/bin
LOG=$WORK/trace-calls.log
DAEMON_LOG=$WORK/batond.log
trap stop_daemon EXIT
start_daemon "$WORK" || exit 1
for n in "$N1" "$N2"; do
    BATON_SOCKET=$SOCK LD_PRELOAD=$BATON_BIN_DIR/libcuda.so.1 BATON_TRACE=1 \
        BATON_TRACE_FILE=$WORK/trace.$n python3 - "$MODEL" "$n" <<'PY'
import sys
sys.path.insert(0, "tests/gpu/frameworks")
import torch
from checks import encoder, resnet50
model, n = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
with torch.no_grad():
    if model == "encoder":
        m = encoder(torch).cuda().eval().half(); x = torch.randn(8, 128, 512).half().pin_memory()
    else:
        m = resnet50(torch).cuda().eval().half(); x = torch.randn(1, 3, 224, 224).half().pin_memory()
    for _ in range(n):
        m(x.cuda(non_blocking=True)); torch.cuda.synchronize()
PY
done
python3 - "$WORK/trace.$N1" "$WORK/trace.$N2" "$N1" "$N2" <<'PY'
import collections, re, sys
def counts(p):
    c = collections.Counter()
    for line in open(p, errors="replace"):
        m = re.match(r"baton-trace\[[^\]]*\] ([A-Za-z0-9_]+(?:\[\d+\])?)\(", line)
        if m:
            c[m.group(1)] += 1
    return c
a, b = counts(sys.argv[1]), counts(sys.argv[2])
per = (int(sys.argv[4]) - int(sys.argv[3]))
rows = sorted(((b[k] - a.get(k, 0)) / per, k) for k in b)
print(f"driver calls per forward ({sys.argv[3]} vs {sys.argv[4]} forwards):")
for v, k in reversed(rows):
    if v >= 0.5:
        print(f"{v:9.1f}  {k}")
PY
