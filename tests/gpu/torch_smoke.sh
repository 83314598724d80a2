#!/usr/bin/env bash
# A first look at PyTorch under Baton: a few small programs run natively and under Baton, with
# every entry point Baton does not support yet listed from the shim's stderr. Writes
# $OUT/torch-smoke.log; prints a short table last. Needs .carry/bin (batond, libcuda.so.1).
set -u -o pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2
OUT=${OUT:-$(mktemp -d)}
LOG=$OUT/torch-smoke.log
: >"$LOG"
SOCK=$(mktemp -d)/batond.sock
env -u LD_PRELOAD .carry/bin/batond --socket "$SOCK" >>"$LOG" 2>&1 &
DPID=$!
for _ in $(seq 200); do [ -S "$SOCK" ] && break; sleep 0.1; done

declare -A PROGS
PROGS[import]='import torch; print(torch.cuda.is_available(), torch.cuda.device_count(), torch.cuda.get_device_name(0))'
PROGS[ones_sum]='import torch; x = torch.ones(1000, device="cuda"); print(x.sum().item())'
PROGS[matmul]='import torch; torch.manual_seed(0); a = torch.randn(512, 512, device="cuda"); b = torch.randn(512, 512, device="cuda"); c = (a @ b).cpu(); r = a.cpu().double() @ b.cpu().double(); print(float((c.double() - r).abs().max()))'
PROGS[conv_fp16]='import torch; torch.manual_seed(0); m = torch.nn.Conv2d(3, 16, 3).cuda().half(); x = torch.randn(2, 3, 32, 32, device="cuda").half(); y = m(x); torch.cuda.synchronize(); print(float(y.float().abs().sum()))'

printf '%-10s %-8s %-8s %s\n' program native baton detail >"$OUT/torch-table.txt"
for name in import ones_sum matmul conv_fp16; do
    code=${PROGS[$name]}
    n_out=$(timeout 120 python3 -c "$code" 2>&1); n_rc=$?
    b_out=$(BATON_SOCKET=$SOCK LD_PRELOAD=$REPO/.carry/bin/libcuda.so.1 timeout 180 python3 -c "$code" 2>&1); b_rc=$?
    { echo "===== $name native rc=$n_rc"; echo "$n_out" | tail -20; echo "===== $name baton rc=$b_rc"; echo "$b_out" | tail -40; } >>"$LOG"
    n_last=$(echo "$n_out" | tail -1); b_last=$(echo "$b_out" | tail -1)
    unsupported=$(echo "$b_out" | grep -o 'baton: cu[A-Za-z0-9_]* is not supported' | awk '{print $2}' | sort -u | tr '\n' ' ')
    st_n=$([ $n_rc -eq 0 ] && echo pass || echo fail); st_b=$([ $b_rc -eq 0 ] && [ "$n_last" = "$b_last" ] && echo pass || echo fail)
    printf '%-10s %-8s %-8s %s\n' "$name" "$st_n" "$st_b" "native='$n_last' baton='$b_last' unsupported: $unsupported" >>"$OUT/torch-table.txt"
done
kill $DPID 2>/dev/null; wait $DPID 2>/dev/null
cat "$OUT/torch-table.txt"
