#!/usr/bin/env bash
# Runs the cuGetProcAddress probe against the real driver on a GPU machine and writes
# $OUT/proc-address.tsv (then regenerate the shim's table with gen_table.py).
set -euo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-$(mktemp -d)}
cc -O2 -o "$OUT/probe" probe.c -ldl
env -u LD_PRELOAD "$OUT/probe" input.txt > "$OUT/proc-address.tsv"
rm -f "$OUT/probe"
wc -l "$OUT/proc-address.tsv"
