#!/usr/bin/env bash
# Two CUDA programs share one GPU through one Baton daemon, each as its own tenant.
# Usage: examples/two_tenants.sh PROGRAM [ARGS...]   (e.g. a CUDA sample, or python3 train.py)
# Needs a release build: cargo build --release
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
[ -x "$BIN/baton" ] || { echo "build first: cargo build --release" >&2; exit 1; }
export BATON_SOCKET=${BATON_SOCKET:-$(mktemp -d)/baton.sock}
"$BIN/baton" run --tenant alice -- "$@" &
A=$!
# The first `baton run` starts the daemon; let it come up before the second connects.
for _ in $(seq 100); do [ -S "$BATON_SOCKET" ] && break; sleep 0.1; done
"$BIN/baton" run --tenant bob -- "$@" &
B=$!
sleep 1
"$BIN/baton" status || true
wait $A $B
